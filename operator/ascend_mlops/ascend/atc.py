"""ATC's command line: its flags, the values they accept, its error codes, and
the checks that need the TensorFlow graph.

The converter (which builds an ATC command) and the ATC simulator (which
accepts one) both validate through this module, so a command the converter
lets through is one the simulator accepts, and an error is reported with the
same ATC error code either way. Facts about ATC come from Huawei's public ATC
documentation and GraphEngine's error-code table; the messages are our own.

TensorFlow is imported lazily, only by the graph functions at the bottom.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ascend_mlops.api import catalog

EXECUTABLE: Final = "atc"
# Where CANN installs atc when ASCEND_TOOLKIT_HOME is not set.
DEFAULT_TOOLKIT_HOME: Final = "/usr/local/Ascend/ascend-toolkit/latest"
SUCCESS_LINE: Final = "ATC run success, welcome to the next use."
FAILURE_LINE: Final = "ATC run failed, Please check the detail log, Try 'atc --help' for more information"
OM_SUFFIX: Final = ".om"  # ATC appends it to --output

# Flag names (without the leading dashes), in the order the converter emits them.
MODEL: Final = "model"
FRAMEWORK: Final = "framework"
OUTPUT: Final = "output"
SOC_VERSION: Final = "soc_version"
INPUT_SHAPE: Final = "input_shape"
INPUT_FORMAT: Final = "input_format"
OUT_NODES: Final = "out_nodes"
OUTPUT_TYPE: Final = "output_type"
DYNAMIC_BATCH_SIZE: Final = "dynamic_batch_size"
PRECISION_MODE: Final = "precision_mode"
OP_SELECT_IMPLMODE: Final = "op_select_implmode"
BUFFER_OPTIMIZE: Final = "buffer_optimize"
LOG: Final = "log"
MODE: Final = "mode"

REQUIRED_FLAGS: Final = (MODEL, FRAMEWORK, OUTPUT, SOC_VERSION)
KNOWN_FLAGS: Final = (
    MODEL, FRAMEWORK, OUTPUT, SOC_VERSION, INPUT_SHAPE, INPUT_FORMAT, OUT_NODES, OUTPUT_TYPE,
    DYNAMIC_BATCH_SIZE, PRECISION_MODE, OP_SELECT_IMPLMODE, BUFFER_OPTIMIZE, LOG, MODE,
)

FRAMEWORKS: Final = {"0": "Caffe", "1": "MindSpore", "3": "TensorFlow", "5": "ONNX"}
FRAMEWORK_TENSORFLOW: Final = "3"
MODE_GENERATE: Final = "0"  # the only mode that writes an offline model
SOC_VERSIONS: Final = catalog.SOC_VERSIONS
INPUT_FORMATS: Final = ("NCHW", "NHWC", "ND", "NCDHW", "NDHWC")  # accepted for TensorFlow models
OUTPUT_TYPES: Final = {"FP32": "float32", "FP16": "float16", "UINT8": "uint8"}
PRECISION_MODES: Final = (
    "force_fp16",  # ATC's default
    "force_fp32",
    "allow_fp32_to_fp16",
    "must_keep_origin_dtype",
    "allow_mix_precision",
    "cube_fp16in_fp32out",
)
DEFAULT_PRECISION_MODE: Final = "force_fp16"
OP_SELECT_IMPLMODES: Final = ("high_performance", "high_precision")
DEFAULT_OP_SELECT_IMPLMODE: Final = "high_performance"
BUFFER_OPTIMIZES: Final = ("l2_optimize", "l1_optimize", "off_optimize")
DEFAULT_BUFFER_OPTIMIZE: Final = "l2_optimize"
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "null")
DEFAULT_INPUT_FORMAT: Final = "NHWC"

DYNAMIC_BATCH_MIN_COUNT: Final = 2
DYNAMIC_BATCH_MAX_COUNT: Final = 100
DYNAMIC_BATCH_MAX_SIZE: Final = 2048

# The extra input ATC adds to a dynamic-batch model (pyACL finds it by name).
DYNAMIC_BATCH_INPUT: Final = "ascend_mbatch_shape_data"

# ATC error codes (GraphEngine's table) the checks below report.
E_INVALID_VALUE: Final = "E10001"
E_INPUT_SHAPE_SYNTAX: Final = "E10002"
E_EMPTY_VALUE: Final = "E10004"
E_REQUIRED: Final = "E10007"
E_LOG_LEVEL: Final = "E10010"
E_SHAPE_NOT_POSITIVE: Final = "E10011"
E_OUT_OF_RANGE: Final = "E10013"
E_OPNAME_NOT_FOUND: Final = "E10016"
E_INPUT_NOT_DATA: Final = "E10017"
E_ONLY_BATCH_DYNAMIC: Final = "E10018"
E_NO_DYNAMIC_BATCH_AXIS: Final = "E10031"
E_TOO_FEW_PROFILES: Final = "E10035"
E_TOO_MANY_PROFILES: Final = "E10036"
E_DIM_NOT_POSITIVE: Final = "E10038"
E_DUPLICATE_PROFILES: Final = "E10039"
E_LOAD_MODEL: Final = "E10041"
E_DIM_COUNT: Final = "E10049"
E_SHAPE_NOT_DEFINED: Final = "E11005"
E_OUT_NODE_NOT_FOUND: Final = "E11017"
E_OPEN_FILE: Final = "E13001"
E_WRITE_FILE: Final = "E13004"

# ATC prints coded errors such as E10054 or EZ9999.
ERROR_CODE_RE: Final = re.compile(r"\b(E[0-9A-Z][0-9]{4})\b")

# TensorFlow node names: ATC splits lists on ';' and a tensor from its index on ':'.
_NODE_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_.\-/>]+$")


class AtcError(ValueError):
    """A rejected flag value or model, with ATC's error code and the flag it concerns."""

    def __init__(self, code: str, flag: str | None, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.flag = flag
        self.message = message


def extract_error_codes(text: str) -> list[str]:
    """ATC's error codes in the order they first appear."""
    seen: dict[str, None] = {}
    for match in ERROR_CODE_RE.finditer(text):
        seen.setdefault(match.group(1), None)
    return list(seen)


def flag_arg(name: str, value: str) -> str:
    """ATC (gflags) syntax: one argv element per flag, `--name=value`, no quoting needed."""
    return f"--{name}={value}"


# ---------------------------------------------------------------------------
# Flag values
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class InputShape:
    name: str
    dims: tuple[int, ...]

    def text(self) -> str:
        return f"{self.name}:{','.join(str(d) for d in self.dims)}"


@dataclass(frozen=True)
class OutNode:
    name: str
    index: int

    @property
    def tensor_name(self) -> str:
        return f"{self.name}:{self.index}"


def _not_empty(flag: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise AtcError(E_EMPTY_VALUE, flag, f"value for --{flag} is empty")
    return value


def parse_input_shape(value: str) -> list[InputShape]:
    """`name:n,h,w,c[;name2:...]`; -1 marks a dynamic axis (checked with the dynamic flags)."""
    value = _not_empty(INPUT_SHAPE, value)
    sample = "images:1,224,224,3 (several inputs separated by ';')"
    shapes: list[InputShape] = []
    for part in value.split(";"):
        name, sep, dims_text = part.strip().rpartition(":")
        if not sep or not name:
            raise AtcError(
                E_INPUT_SHAPE_SYNTAX, INPUT_SHAPE,
                f"value {part!r} for --input_shape is invalid: expected NODE:DIMS, for example {sample}",
            )
        if not _NODE_NAME_RE.match(name):
            raise AtcError(
                E_INPUT_SHAPE_SYNTAX, INPUT_SHAPE,
                f"value {part!r} for --input_shape is invalid: {name!r} is not a node name",
            )
        dims: list[int] = []
        for item in dims_text.split(","):
            try:
                dim = int(item.strip())
            except ValueError:
                raise AtcError(
                    E_INPUT_SHAPE_SYNTAX, INPUT_SHAPE,
                    f"value {part!r} for --input_shape is invalid: dimension {item.strip()!r} is not an "
                    f"integer; the value must look like {sample}",
                ) from None
            if dim == 0 or dim < -1:
                raise AtcError(
                    E_SHAPE_NOT_POSITIVE, INPUT_SHAPE,
                    f"value {part!r} for --input_shape is invalid: dimension {dim} must be a positive "
                    "integer (or -1 for the dynamic batch axis with --dynamic_batch_size)",
                )
            dims.append(dim)
        if any(s.name == name for s in shapes):
            raise AtcError(E_INPUT_SHAPE_SYNTAX, INPUT_SHAPE, f"input {name!r} appears twice in --input_shape {value!r}")
        shapes.append(InputShape(name, tuple(dims)))
    return shapes


def parse_out_nodes(value: str) -> list[OutNode]:
    """`node:index[;node2:index]`."""
    value = _not_empty(OUT_NODES, value)
    nodes: list[OutNode] = []
    for part in value.split(";"):
        name, sep, index_text = part.strip().rpartition(":")
        if not sep or not name or not _NODE_NAME_RE.match(name) or not index_text.strip().isdigit():
            raise AtcError(
                E_INVALID_VALUE, OUT_NODES,
                f"value {part!r} for --out_nodes is invalid: expected NODE:INDEX such as logits:0 "
                "(several outputs separated by ';')",
            )
        nodes.append(OutNode(name, int(index_text)))
    return nodes


def parse_dynamic_batch_size(value: str) -> list[int]:
    """`1,2,4,8`: 2 to 100 distinct sizes, each 1 to 2048."""
    value = _not_empty(DYNAMIC_BATCH_SIZE, value)
    sizes: list[int] = []
    for item in value.split(","):
        try:
            size = int(item.strip())
        except ValueError:
            raise AtcError(
                E_INVALID_VALUE, DYNAMIC_BATCH_SIZE,
                f"value {value!r} for --dynamic_batch_size is invalid: {item.strip()!r} is not an integer; "
                "expected comma-separated batch sizes such as 1,2,4,8",
            ) from None
        if size <= 0:
            raise AtcError(
                E_DIM_NOT_POSITIVE, DYNAMIC_BATCH_SIZE,
                f"value {value!r} for --dynamic_batch_size is invalid: batch size {size} must be greater than 0",
            )
        if size > DYNAMIC_BATCH_MAX_SIZE:
            raise AtcError(
                E_OUT_OF_RANGE, DYNAMIC_BATCH_SIZE,
                f"value {value!r} for --dynamic_batch_size is invalid: batch size {size} is above the "
                f"maximum {DYNAMIC_BATCH_MAX_SIZE}",
            )
        sizes.append(size)
    if len(sizes) < DYNAMIC_BATCH_MIN_COUNT:
        raise AtcError(
            E_TOO_FEW_PROFILES, DYNAMIC_BATCH_SIZE,
            f"value {value!r} for --dynamic_batch_size is invalid: it has {len(sizes)} batch size(s), "
            f"at least {DYNAMIC_BATCH_MIN_COUNT} are needed (for one fixed batch, drop the option and "
            "put the batch in --input_shape)",
        )
    if len(sizes) > DYNAMIC_BATCH_MAX_COUNT:
        raise AtcError(
            E_TOO_MANY_PROFILES, DYNAMIC_BATCH_SIZE,
            f"value {value!r} for --dynamic_batch_size is invalid: it has {len(sizes)} batch sizes, "
            f"at most {DYNAMIC_BATCH_MAX_COUNT} are allowed",
        )
    if len(set(sizes)) != len(sizes):
        raise AtcError(
            E_DUPLICATE_PROFILES, DYNAMIC_BATCH_SIZE,
            f"value {value!r} for --dynamic_batch_size is invalid: batch sizes must be distinct",
        )
    return sizes


def parse_choice(flag: str, value: str, choices: Sequence[str], code: str = E_INVALID_VALUE) -> str:
    value = _not_empty(flag, value)
    if value not in choices:
        raise AtcError(
            code, flag, f"value {value!r} for --{flag} is invalid: expected one of {', '.join(choices)}"
        )
    return value


def check_dynamic_batch(shapes: Sequence[InputShape], batch_sizes: Sequence[int] | None) -> None:
    """-1 only in the batch axis, and only together with --dynamic_batch_size."""
    shape_text = ";".join(s.text() for s in shapes)
    for shape in shapes:
        if -1 in shape.dims[1:]:
            code = E_ONLY_BATCH_DYNAMIC if batch_sizes else E_SHAPE_NOT_POSITIVE
            raise AtcError(
                code, INPUT_SHAPE,
                f"value {shape_text!r} for --input_shape is invalid: only the batch axis (the first) "
                f"may be -1, and only with --dynamic_batch_size; {shape.name!r} has -1 elsewhere",
            )
    dynamic = [s for s in shapes if s.dims and s.dims[0] == -1]
    if batch_sizes and not dynamic:
        raise AtcError(
            E_NO_DYNAMIC_BATCH_AXIS, INPUT_SHAPE,
            f"value {shape_text!r} for --input_shape is invalid: --dynamic_batch_size is set, so the "
            "batch axis of the input must be -1 (for example images:-1,224,224,3)",
        )
    if dynamic and not batch_sizes:
        raise AtcError(
            E_SHAPE_NOT_POSITIVE, INPUT_SHAPE,
            f"value {shape_text!r} for --input_shape is invalid: a -1 batch axis needs "
            "--dynamic_batch_size (for example 1,2,4,8), or give a fixed batch",
        )


@dataclass(frozen=True)
class AtcCommand:
    """A validated ATC command line (the flags that matter for a TensorFlow model)."""

    model: str
    framework: str
    output: str
    soc_version: str
    input_shape: tuple[InputShape, ...] = ()
    input_format: str = DEFAULT_INPUT_FORMAT
    out_nodes: tuple[OutNode, ...] = ()
    output_type: str | None = None
    dynamic_batch_size: tuple[int, ...] = ()
    precision_mode: str = DEFAULT_PRECISION_MODE
    op_select_implmode: str = DEFAULT_OP_SELECT_IMPLMODE
    buffer_optimize: str = DEFAULT_BUFFER_OPTIMIZE
    log: str | None = None

    @property
    def om_path(self) -> str:
        return self.output + OM_SUFFIX


def validate_flags(flags: Mapping[str, str]) -> AtcCommand:
    """Check ATC flags (name -> value, as on ATC's command line) the way ATC does before parsing the model."""
    unknown = [name for name in flags if name not in KNOWN_FLAGS]
    if unknown:
        raise AtcError(
            E_INVALID_VALUE, unknown[0],
            f"unknown flag --{unknown[0]}; supported flags: {', '.join('--' + f for f in KNOWN_FLAGS)}",
        )
    for name in REQUIRED_FLAGS:
        if name not in flags:
            raise AtcError(E_REQUIRED, name, f"--{name} is required")
        _not_empty(name, flags[name])
    mode = flags.get(MODE, MODE_GENERATE).strip()
    if mode != MODE_GENERATE:
        raise AtcError(E_INVALID_VALUE, MODE, f"value {mode!r} for --mode is invalid: only 0 (generate an offline model) is supported")
    framework = parse_choice(FRAMEWORK, flags[FRAMEWORK], tuple(FRAMEWORKS))
    if framework != FRAMEWORK_TENSORFLOW:
        raise AtcError(
            E_INVALID_VALUE, FRAMEWORK,
            f"value {framework!r} for --framework is invalid: only 3 (TensorFlow frozen graph) is supported here",
        )
    soc_version = parse_choice(SOC_VERSION, flags[SOC_VERSION], SOC_VERSIONS)
    shapes = parse_input_shape(flags[INPUT_SHAPE]) if INPUT_SHAPE in flags else []
    batch_sizes = parse_dynamic_batch_size(flags[DYNAMIC_BATCH_SIZE]) if DYNAMIC_BATCH_SIZE in flags else []
    if batch_sizes and not shapes:
        raise AtcError(E_NO_DYNAMIC_BATCH_AXIS, INPUT_SHAPE, "--dynamic_batch_size needs --input_shape with a -1 batch axis")
    check_dynamic_batch(shapes, batch_sizes)
    output_type = flags.get(OUTPUT_TYPE)
    log = flags.get(LOG)
    return AtcCommand(
        model=flags[MODEL].strip(),
        framework=framework,
        output=flags[OUTPUT].strip(),
        soc_version=soc_version,
        input_shape=tuple(shapes),
        input_format=parse_choice(INPUT_FORMAT, flags.get(INPUT_FORMAT, DEFAULT_INPUT_FORMAT), INPUT_FORMATS),
        out_nodes=tuple(parse_out_nodes(flags[OUT_NODES])) if OUT_NODES in flags else (),
        output_type=None if output_type is None else parse_choice(OUTPUT_TYPE, output_type, tuple(OUTPUT_TYPES)),
        dynamic_batch_size=tuple(batch_sizes),
        precision_mode=parse_choice(PRECISION_MODE, flags.get(PRECISION_MODE, DEFAULT_PRECISION_MODE), PRECISION_MODES),
        op_select_implmode=parse_choice(
            OP_SELECT_IMPLMODE, flags.get(OP_SELECT_IMPLMODE, DEFAULT_OP_SELECT_IMPLMODE), OP_SELECT_IMPLMODES
        ),
        buffer_optimize=parse_choice(
            BUFFER_OPTIMIZE, flags.get(BUFFER_OPTIMIZE, DEFAULT_BUFFER_OPTIMIZE), BUFFER_OPTIMIZES
        ),
        log=None if log is None else parse_choice(LOG, log, LOG_LEVELS, code=E_LOG_LEVEL),
    )


def parse_argv(argv: Sequence[str]) -> dict[str, str]:
    """ATC's gflags syntax: `--name=value`, `--name value`, or one dash; the last one given wins."""
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg in {"-", "--"}:
            raise AtcError(E_INVALID_VALUE, None, f"unexpected argument {arg!r}: ATC takes only --flag=value arguments")
        body = arg.lstrip("-")
        name, sep, value = body.partition("=")
        if not sep:
            if i + 1 >= len(argv):
                raise AtcError(E_EMPTY_VALUE, name, f"value for --{name} is empty")
            value = argv[i + 1]
            i += 1
        flags[name] = value
        i += 1
    return flags


# ---------------------------------------------------------------------------
# The TensorFlow graph (lazy TensorFlow import)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorDesc:
    """One model input or output, as the simulated model header and config.json describe it."""

    name: str
    dims: tuple[int, ...] | None  # None: unknown (no TensorFlow to infer it)
    data_type: str
    format: str
    tensor_name: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dims": None if self.dims is None else list(self.dims),
            "dataType": self.data_type,
            "format": self.format,
            "tensorName": self.tensor_name,
        }


def tensorflow_available() -> bool:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def read_model_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise AtcError(E_OPEN_FILE, MODEL, f"failed to open model file {str(path)!r}: {exc.strerror or exc}") from exc


def load_graph_def(data: bytes, path: str | Path) -> Any:
    """Parse a frozen GraphDef; anything else is ATC's E10041."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise AtcError(
            E_LOAD_MODEL, MODEL,
            f"failed to load the model from {str(path)!r}: not a TensorFlow frozen graph (GraphDef) ({exc}); "
            "check --model and that --framework=3 matches the file",
        ) from exc
    if not graph_def.node:
        raise AtcError(E_LOAD_MODEL, MODEL, f"failed to load the model from {str(path)!r}: the graph has no nodes")
    return graph_def


def _dims_of(shape_proto: Any) -> tuple[int, ...] | None:
    if shape_proto.unknown_rank:
        return None
    return tuple(int(d.size) for d in shape_proto.dim)


def describe_graph(graph_def: Any, command: AtcCommand) -> tuple[list[TensorDesc], list[TensorDesc]]:
    """Check the command against the graph and describe the model ATC would produce.

    Inputs are the graph's placeholders with the shapes from --input_shape;
    outputs are the --out_nodes tensors, their shapes found by TensorFlow's
    shape inference with those input shapes.
    """
    import tensorflow as tf

    nodes = {node.name: node for node in graph_def.node}
    listed = {shape.name: shape for shape in command.input_shape}
    for shape in command.input_shape:
        node = nodes.get(shape.name)
        if node is None:
            placeholders = [n.name for n in graph_def.node if n.op == "Placeholder"]
            raise AtcError(
                E_OPNAME_NOT_FOUND, INPUT_SHAPE,
                f"node {shape.name!r} given in --input_shape is not in the model; its inputs are: "
                f"{', '.join(placeholders) or 'none'}",
            )
        if node.op != "Placeholder":
            raise AtcError(
                E_INPUT_NOT_DATA, INPUT_SHAPE,
                f"node {shape.name!r} given in --input_shape is a {node.op}, not an input (Placeholder)",
            )
        graph_dims = _dims_of(node.attr["shape"].shape) if "shape" in node.attr else None
        if graph_dims is not None:
            if len(graph_dims) != len(shape.dims):
                raise AtcError(
                    E_DIM_COUNT, INPUT_SHAPE,
                    f"value {shape.text()!r} for --input_shape is invalid: {len(shape.dims)} dimensions "
                    f"given, but input {shape.name!r} has {len(graph_dims)} ({_shape_text(graph_dims)})",
                )
            for axis, (want, have) in enumerate(zip(shape.dims, graph_dims, strict=True)):
                if have >= 0 and want != have:
                    raise AtcError(
                        E_INVALID_VALUE, INPUT_SHAPE,
                        f"value {shape.text()!r} for --input_shape is invalid: axis {axis} of input "
                        f"{shape.name!r} is fixed to {have} in the graph ({_shape_text(graph_dims)})",
                    )

    inputs: list[TensorDesc] = []
    input_map: dict[str, Any] = {}
    graph = tf.Graph()
    with graph.as_default():
        for node in graph_def.node:
            if node.op != "Placeholder":
                continue
            dtype = tf.dtypes.as_dtype(node.attr["dtype"].type)
            if node.name in listed:
                dims = listed[node.name].dims
            else:
                graph_dims = _dims_of(node.attr["shape"].shape) if "shape" in node.attr else None
                if graph_dims is None or any(d < 0 for d in graph_dims):
                    raise AtcError(
                        E_SHAPE_NOT_DEFINED, INPUT_SHAPE,
                        f"the shape of input {node.name!r} is not fully known "
                        f"({_shape_text(graph_dims)}); give it in --input_shape",
                    )
                dims = graph_dims
            inputs.append(TensorDesc(node.name, dims, dtype.name, command.input_format, f"{node.name}:0"))
            placeholder = tf.compat.v1.placeholder(
                dtype, shape=[None if d < 0 else d for d in dims], name=f"ascend_mlops_input_{len(input_map)}"
            )
            input_map[f"{node.name}:0"] = placeholder
        try:
            tf.compat.v1.import_graph_def(graph_def, input_map=input_map, name="")
        except (ValueError, tf.errors.OpError) as exc:
            raise AtcError(
                E_LOAD_MODEL, MODEL, f"failed to load the model from {command.model!r}: {exc}"
            ) from exc

        out_nodes = command.out_nodes or _default_out_nodes(graph_def)
        batch = _fixed_batch(command)
        outputs: list[TensorDesc] = []
        for out in out_nodes:
            if out.name not in nodes:
                raise AtcError(
                    E_OUT_NODE_NOT_FOUND, OUT_NODES,
                    f"node {out.name!r} given in --out_nodes is not in the model",
                )
            try:
                tensor = graph.get_tensor_by_name(out.tensor_name)
            except (KeyError, ValueError):
                raise AtcError(
                    E_OUT_NODE_NOT_FOUND, OUT_NODES,
                    f"node {out.name!r} given in --out_nodes has no output {out.index}",
                ) from None
            out_dims = tuple(-1 if d is None else int(d) for d in tensor.shape.as_list()) if tensor.shape.rank is not None else None
            if out_dims and out_dims[0] == -1 and batch is not None:
                # The graph's batch axis is symbolic; with a fixed input batch ATC
                # compiles the whole model for that batch, outputs included.
                out_dims = (batch, *out_dims[1:])
            data_type = OUTPUT_TYPES[command.output_type] if command.output_type else tensor.dtype.name
            outputs.append(TensorDesc(out.name, out_dims, data_type, "ND", out.tensor_name))
    return inputs, outputs


def describe_without_graph(command: AtcCommand) -> tuple[list[TensorDesc], list[TensorDesc]]:
    """What the command alone says, when TensorFlow is not there to read the graph."""
    inputs = [
        TensorDesc(s.name, s.dims, "float32", command.input_format, f"{s.name}:0") for s in command.input_shape
    ]
    outputs = [
        TensorDesc(o.name, None, OUTPUT_TYPES.get(command.output_type or "", "unknown"), "ND", o.tensor_name)
        for o in command.out_nodes
    ]
    return inputs, outputs


def _fixed_batch(command: AtcCommand) -> int | None:
    if command.dynamic_batch_size or not command.input_shape or not command.input_shape[0].dims:
        return None
    return command.input_shape[0].dims[0]


def _default_out_nodes(graph_def: Any) -> list[OutNode]:
    """Without --out_nodes ATC takes the graph's final nodes: those no other node reads."""
    consumed = {inp.lstrip("^").split(":")[0] for node in graph_def.node for inp in node.input}
    return [
        OutNode(node.name, 0)
        for node in graph_def.node
        if node.name not in consumed and node.op not in {"NoOp", "Placeholder", "Const"}
    ]


def _shape_text(dims: Sequence[int] | None) -> str:
    if dims is None:
        return "unknown rank"
    return "[" + ",".join("?" if d < 0 else str(d) for d in dims) + "]"
