"""The committed messages are the API's: field numbers on the wire, and the descriptor api.proto compiles to."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from ascend_mlops.ascend.deviceplugin import api_pb2 as api
from tests.helpers import REPO_ROOT

SOURCE_ROOT = REPO_ROOT / "operator"
PROTO = "ascend_mlops/ascend/deviceplugin/api.proto"
GENERATOR = REPO_ROOT / "scripts" / "gen-deviceplugin-proto.sh"


def test_messages_encode_with_the_apis_field_numbers() -> None:
    # RegisterRequest: version = 1, endpoint = 2, resource_name = 3, options = 4 (pre_start_required = 1).
    request = api.RegisterRequest(
        version="v1beta1", endpoint="a.sock", resource_name="huawei.com/Ascend310",
        options=api.DevicePluginOptions(pre_start_required=True),
    )
    assert request.SerializeToString() == (
        b"\x0a\x07v1beta1" b"\x12\x06a.sock" b"\x1a\x14huawei.com/Ascend310" b"\x22\x02\x08\x01"
    )
    # Device: ID = 1, health = 2, inside ListAndWatchResponse.devices = 1.
    devices = api.ListAndWatchResponse(devices=[api.Device(ID="Ascend310-0", health="Healthy")])
    assert devices.SerializeToString() == b"\x0a\x16" b"\x0a\x0bAscend310-0" b"\x12\x07Healthy"
    # ContainerAllocateResponse.envs = 1 (a map: key = 1, value = 2) inside AllocateResponse.container_responses = 1.
    allocated = api.AllocateResponse(container_responses=[api.ContainerAllocateResponse(envs={"A": "1"})])
    assert allocated.SerializeToString() == b"\x0a\x08" b"\x0a\x06" b"\x0a\x01A" b"\x12\x011"


def test_services_have_the_apis_methods_and_streaming() -> None:
    plugin = api.DESCRIPTOR.services_by_name["DevicePlugin"]
    assert plugin.full_name == "v1beta1.DevicePlugin"
    methods = {m.name: (m.input_type.full_name, m.output_type.full_name) for m in plugin.methods}
    assert methods == {
        "GetDevicePluginOptions": ("v1beta1.Empty", "v1beta1.DevicePluginOptions"),
        "ListAndWatch": ("v1beta1.Empty", "v1beta1.ListAndWatchResponse"),
        "GetPreferredAllocation": ("v1beta1.PreferredAllocationRequest", "v1beta1.PreferredAllocationResponse"),
        "Allocate": ("v1beta1.AllocateRequest", "v1beta1.AllocateResponse"),
        "PreStartContainer": ("v1beta1.PreStartContainerRequest", "v1beta1.PreStartContainerResponse"),
    }
    streaming = {m.name for m in plugin.methods if m.server_streaming or m.client_streaming}
    assert streaming == {"ListAndWatch"}
    assert not any(m.client_streaming for m in plugin.methods)
    (register,) = api.DESCRIPTOR.services_by_name["Registration"].methods
    assert (register.full_name, register.input_type.name, register.output_type.name) == (
        "v1beta1.Registration.Register", "RegisterRequest", "Empty",
    )


def _generator_version() -> str:
    match = re.search(r"^GRPCIO_TOOLS_VERSION=(\S+)", GENERATOR.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, f"{GENERATOR} names no GRPCIO_TOOLS_VERSION"
    return match.group(1)


def _drop_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for item in message.field:
            item.ClearField("json_name")
        _drop_json_names(message.nested_type)


def test_generated_code_matches_api_proto(tmp_path: Path) -> None:
    """api_pb2.py is what api.proto compiles to (regenerate with scripts/gen-deviceplugin-proto.sh).

    The compiler is the generator script's grpcio-tools, installed into a
    scratch folder (not into the environment: current grpcio-tools releases
    require newer setuptools and protobuf than the rest of the project pins).
    """
    tools = tmp_path / "tools"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", str(tools), f"grpcio-tools=={_generator_version()}"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    if install.returncode != 0:
        pytest.skip(f"cannot install grpcio-tools to compile api.proto: {install.stderr.strip()[-300:]}")
    out = tmp_path / "api.desc"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={SOURCE_ROOT}", f"--descriptor_set_out={out}", PROTO],
        check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tools)}, timeout=120,
    )
    (compiled,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    _drop_json_names(compiled.message_type)  # --descriptor_set_out adds them; generated Python code leaves them out
    committed = descriptor_pb2.FileDescriptorProto.FromString(api.DESCRIPTOR.serialized_pb)
    assert committed == compiled, "api_pb2.py is stale: run scripts/gen-deviceplugin-proto.sh"
