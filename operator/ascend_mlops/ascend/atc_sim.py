"""ATC SIMULATOR: accepts Huawei ATC's command line and writes a SIMULATED model.

    python -m ascend_mlops.ascend.atc_sim --model=frozen_graph.pb --framework=3 \\
        --output=out/model --soc_version=Ascend310 --input_shape=images:1,224,224,3 ...

It validates what ATC validates before compiling (flags, values, the dynamic
batch rules, the input and output nodes against the graph), reports failures
with ATC's error codes and its "ATC run failed" line, and on success writes
`<output>.om` in the simulated container format (`ascend_mlops.ascend.simmodel`):
a header describing the inputs and outputs, plus the frozen graph itself. Only
the pyACL simulator can load that file; nothing here compiles for an NPU.

It runs only with ASCEND_MLOPS_SIMULATOR=1, and says SIMULATOR in everything
it prints and writes.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from ascend_mlops.api import contract
from ascend_mlops.ascend import atc, simmodel

SIMULATOR_NAME = "ascend-mlops ATC simulator"
BANNER = (
    f"*** {SIMULATOR_NAME}: this is NOT Huawei ATC. It writes a SIMULATED model that only the "
    "ascend-mlops pyACL simulator can load, never an Ascend NPU. ***"
)
EXIT_FAILED = 1


def _fail(out: TextIO, error: atc.AtcError) -> int:
    print(atc.FAILURE_LINE, file=out)
    print(f"{error.code}: {error.message}", file=out)
    print(f"[SIMULATOR] ATC run failed (simulated ATC, error {error.code}).", file=out, flush=True)
    return EXIT_FAILED


def build_header(command: atc.AtcCommand, argv: Sequence[str], inputs: Sequence[atc.TensorDesc],
                 outputs: Sequence[atc.TensorDesc], graph_bytes: bytes) -> dict[str, object]:
    """The simulated model's header (see simmodel's docstring for the shared fields)."""
    return {
        "simulated": True,
        "simulator": SIMULATOR_NAME,
        "format": simmodel.FORMAT_NAME,
        "formatVersion": simmodel.FORMAT_VERSION,
        "socVersion": command.soc_version,
        "framework": int(command.framework),
        "inputs": [t.to_dict() for t in inputs],
        "outputs": [t.to_dict() for t in outputs],
        "dynamicBatchSizes": list(command.dynamic_batch_size),
        # Extra fields (the reader ignores what it does not need).
        "dynamicBatchInput": atc.DYNAMIC_BATCH_INPUT if command.dynamic_batch_size else None,
        "atcArguments": list(argv),
        "precisionMode": command.precision_mode,
        "opSelectImplmode": command.op_select_implmode,
        "bufferOptimize": command.buffer_optimize,
        "outputType": command.output_type,
        "sourceModel": command.model,
        "graphSha256": hashlib.sha256(graph_bytes).hexdigest(),
        "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "note": simmodel.NOTE,
    }


def convert(argv: Sequence[str], out: TextIO) -> int:
    """Run one simulated conversion; returns ATC's exit status (0 or 1)."""
    print(BANNER, file=out)
    print("ATC start working now, please wait for a moment.", file=out, flush=True)
    try:
        command = atc.validate_flags(atc.parse_argv(argv))
        graph_bytes = atc.read_model_bytes(command.model)
        graph_def = atc.load_graph_def(graph_bytes, command.model)
        inputs, outputs = atc.describe_graph(graph_def, command)
    except atc.AtcError as exc:
        return _fail(out, exc)
    for desc in inputs:
        print(f"[SIMULATOR] input  {desc.name}: dims={list(desc.dims or [])} {desc.data_type} {desc.format}", file=out)
    for desc in outputs:
        dims = "unknown" if desc.dims is None else list(desc.dims)
        print(f"[SIMULATOR] output {desc.name}: dims={dims} {desc.data_type}", file=out)
    if command.dynamic_batch_size:
        print(f"[SIMULATOR] dynamic batch sizes: {list(command.dynamic_batch_size)}", file=out)
    header = build_header(command, argv, inputs, outputs, graph_bytes)
    target = Path(command.om_path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        simmodel.write(target, simmodel.SimulatedModel(header=header, graph_def=graph_bytes))
    except OSError as exc:
        return _fail(out, atc.AtcError(atc.E_WRITE_FILE, atc.OUTPUT, f"failed to write file {str(target)!r}: {exc}"))
    print(f"[SIMULATOR] wrote SIMULATED offline model {target} ({target.stat().st_size} bytes)", file=out)
    print(atc.SUCCESS_LINE, file=out, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in {"-h", "--help", "-help"} for a in args):
        print(__doc__)
        print("Supported flags: " + " ".join(f"--{f}" for f in atc.KNOWN_FLAGS))
        return 0
    if not contract.simulator_enabled():
        print(
            f"{SIMULATOR_NAME}: refusing to run because {contract.ENV_SIMULATOR} is not 1. The simulator "
            "writes models that cannot run on an Ascend NPU; use the real atc from the CANN toolkit, or "
            f"set {contract.ENV_SIMULATOR}=1 only for testing.",
            file=sys.stderr,
        )
        return contract.EXIT_TOOLKIT_MISSING
    return convert(args, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
