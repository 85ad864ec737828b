"""pyACL constants and error codes, with the values CANN's headers give them.

pyACL itself exposes no constants (every sample redefines them), so the `acl`
backend and the simulator share these. Sources: CANN `acl_base.h`,
`rt_error_codes.h`, `ge_error_codes.h` and the pyACL samples' `constant.py`.
"""

from __future__ import annotations

from typing import Final

ACL_SUCCESS: Final = 0

# acl.rt.malloc policies
ACL_MEM_MALLOC_HUGE_FIRST: Final = 0
ACL_MEM_MALLOC_HUGE_ONLY: Final = 1
ACL_MEM_MALLOC_NORMAL_ONLY: Final = 2

# acl.rt.memcpy directions
ACL_MEMCPY_HOST_TO_HOST: Final = 0
ACL_MEMCPY_HOST_TO_DEVICE: Final = 1
ACL_MEMCPY_DEVICE_TO_HOST: Final = 2
ACL_MEMCPY_DEVICE_TO_DEVICE: Final = 3

# acl.rt.get_run_mode: the app runs on the board's own CPU (Atlas 200 DK) or on a host.
ACL_DEVICE: Final = 0
ACL_HOST: Final = 1

# aclDataType
ACL_DT_UNDEFINED: Final = -1
ACL_FLOAT: Final = 0
ACL_FLOAT16: Final = 1
ACL_INT8: Final = 2
ACL_INT32: Final = 3
ACL_UINT8: Final = 4
ACL_INT16: Final = 6
ACL_UINT16: Final = 7
ACL_UINT32: Final = 8
ACL_INT64: Final = 9
ACL_UINT64: Final = 10
ACL_DOUBLE: Final = 11
ACL_BOOL: Final = 12

# aclFormat
ACL_FORMAT_UNDEFINED: Final = -1
ACL_FORMAT_NCHW: Final = 0
ACL_FORMAT_NHWC: Final = 1
ACL_FORMAT_ND: Final = 2

# The extra input ATC adds to a model converted with --dynamic_batch_size.
DYNAMIC_BATCH_INPUT_NAME: Final = "ascend_mbatch_shape_data"

# --- acl_base.h -----------------------------------------------------------
ACL_ERROR_INVALID_PARAM: Final = 100000
ACL_ERROR_UNINITIALIZE: Final = 100001
ACL_ERROR_REPEAT_INITIALIZE: Final = 100002
ACL_ERROR_INVALID_FILE: Final = 100003
ACL_ERROR_INVALID_MODEL_ID: Final = 100011
ACL_ERROR_DESERIALIZE_MODEL: Final = 100012
ACL_ERROR_PARSE_MODEL: Final = 100013
ACL_ERROR_READ_MODEL_FAILURE: Final = 100014
ACL_ERROR_MODEL_INPUT_NOT_MATCH: Final = 100017
ACL_ERROR_MODEL_OUTPUT_NOT_MATCH: Final = 100018
ACL_ERROR_MODEL_NOT_DYNAMIC: Final = 100019
ACL_ERROR_REPEAT_FINALIZE: Final = 100037
ACL_ERROR_BAD_ALLOC: Final = 200000
ACL_ERROR_INVALID_DEVICE: Final = 200002
ACL_ERROR_INVALID_RESOURCE_HANDLE: Final = 200005
ACL_ERROR_INTERNAL_ERROR: Final = 500000
ACL_ERROR_FAILURE: Final = 500001

# --- ge_error_codes.h -----------------------------------------------------
ACL_ERROR_GE_PARAM_INVALID: Final = 145000
ACL_ERROR_GE_DYNAMIC_BATCH_SIZE_INVALID: Final = 145013

# --- rt_error_codes.h -----------------------------------------------------
ACL_ERROR_RT_PARAM_INVALID: Final = 107000
ACL_ERROR_RT_INVALID_DEVICEID: Final = 107001
ACL_ERROR_RT_CONTEXT_NULL: Final = 107002
ACL_ERROR_RT_INVALID_MEMORY_TYPE: Final = 107016
ACL_ERROR_RT_INVALID_HANDLE: Final = 107017
ACL_ERROR_RT_INVALID_MALLOC_TYPE: Final = 107018
ACL_ERROR_RT_MEMORY_ALLOCATION: Final = 207001
ACL_ERROR_RT_MEMORY_FREE: Final = 207002
ACL_ERROR_RT_INTERNAL_ERROR: Final = 507000
ACL_ERROR_RT_MODEL_EXECUTE: Final = 507011

ERROR_NAMES: Final[dict[int, str]] = {
    value: name
    for name, value in dict(globals()).items()
    if name.startswith("ACL_ERROR_") and isinstance(value, int)
}


def error_name(code: int) -> str:
    """`ACL_ERROR_...` for a known code, else the number (real CANN has many more)."""
    return ERROR_NAMES.get(code, f"error {code}")
