"""The option table: every conversion option, the ATC flag it becomes, and how.

`OPTION_TABLE` is the single place that maps ModelArts-style template options
(`ModelConversion.spec.options`, `--set NAME=VALUE`) to ATC flags. Three of the
mappings are not documented anywhere and are our reading of what the ModelArts
option must mean; they are marked `inferred=True` (docs/converter.md shows the
table). `build()` turns a template plus option overrides into the exact ATC
argument list, validating every value first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ascend_mlops.api import catalog, contract
from ascend_mlops.ascend import atc
from ascend_mlops.workloads.converter.templates import Template

OUTPUT_PREFIX: Final = contract.OM_FILE.removesuffix(atc.OM_SUFFIX)  # ATC appends ".om"

_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
PREFERRED_DATA_FORMATS: Final = ("5D",)


class OptionError(ValueError):
    """An invalid conversion option; the message names the option and its value."""

    def __init__(self, option: str, value: str | None, reason: str) -> None:
        shown = f"{option}={value!r}" if value is not None else option
        super().__init__(f"conversion option {shown} is invalid: {reason}")
        self.option = option
        self.value = value
        self.reason = reason


@dataclass(frozen=True)
class OptionMapping:
    option: str  # name in ModelConversion.spec.options and `--set`
    flag: str | None  # ATC flag (without dashes); None: ATC has no flag for it
    translate: Callable[[str], str | None]  # option text -> flag value (None: emit nothing)
    mapping: str  # how values map, for the documentation
    inferred: bool = False  # True: our inference, not a documented equivalence


def _atc_checked(parse: Callable[[str], object], normalise: Callable[[str], str] = str.strip) -> Callable[[str], str]:
    def translate(value: str) -> str:
        text = normalise(value)
        parse(text)
        return text

    return translate


def parse_bool(value: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false (or 1 / 0)")


def _high_precision(value: str) -> str:
    return "high_precision" if parse_bool(value) else "high_performance"


def _l2_optimize(value: str) -> str:
    return "l2_optimize" if parse_bool(value) else "off_optimize"


def _preferred_data_format(value: str) -> None:
    if value.strip().upper() not in PREFERRED_DATA_FORMATS:
        raise ValueError(
            "only 5D is supported: ATC always lays out tensors as 5D (NC1HWC0) internally, "
            "so the option needs no flag and no other value can be honoured"
        )
    return None


def _choice(flag: str, choices: Sequence[str], case: Callable[[str], str]) -> Callable[[str], str]:
    return _atc_checked(lambda v: atc.parse_choice(flag, v, choices), lambda v: case(v.strip()))


OPTION_TABLE: Final[tuple[OptionMapping, ...]] = (
    OptionMapping(
        "inputShape", atc.INPUT_SHAPE, _atc_checked(atc.parse_input_shape),
        "as is: `NODE:N,H,W,C`, several inputs separated by `;`; `-1` only as the batch axis, "
        "with `dynamicBatchSizes`",
    ),
    OptionMapping(
        "inputFormat", atc.INPUT_FORMAT, _choice(atc.INPUT_FORMAT, atc.INPUT_FORMATS, str.upper),
        "as is: " + ", ".join(atc.INPUT_FORMATS),
    ),
    OptionMapping(
        "outNodes", atc.OUT_NODES, _atc_checked(atc.parse_out_nodes),
        "as is: `NODE:INDEX`, several separated by `;`",
    ),
    OptionMapping(
        "outputType", atc.OUTPUT_TYPE, _choice(atc.OUTPUT_TYPE, tuple(atc.OUTPUT_TYPES), str.upper),
        "as is: " + ", ".join(atc.OUTPUT_TYPES),
    ),
    OptionMapping(
        "dynamicBatchSizes", atc.DYNAMIC_BATCH_SIZE,
        _atc_checked(atc.parse_dynamic_batch_size, lambda v: ",".join(p.strip() for p in v.split(","))),
        f"as is: {atc.DYNAMIC_BATCH_MIN_COUNT} to {atc.DYNAMIC_BATCH_MAX_COUNT} distinct sizes in "
        f"[1, {atc.DYNAMIC_BATCH_MAX_SIZE}], comma-separated; needs `-1` as the batch axis of `inputShape`",
    ),
    OptionMapping(
        "precisionMode", atc.PRECISION_MODE, _choice(atc.PRECISION_MODE, atc.PRECISION_MODES, str.lower),
        "as is: " + ", ".join(atc.PRECISION_MODES) + f" (ATC's default: {atc.DEFAULT_PRECISION_MODE})",
    ),
    OptionMapping(
        "highPrecision", atc.OP_SELECT_IMPLMODE, _high_precision,
        "`1`/`true` → `high_precision`, `0`/`false` → `high_performance`", inferred=True,
    ),
    OptionMapping(
        "l2Optimize", atc.BUFFER_OPTIMIZE, _l2_optimize,
        "`true`/`1` → `l2_optimize`, `false`/`0` → `off_optimize`", inferred=True,
    ),
    OptionMapping(
        "preferredDataFormat", None, _preferred_data_format,
        "`5D` only, emits no flag: ATC always computes in 5D (NC1HWC0)", inferred=True,
    ),
    OptionMapping("log", atc.LOG, _choice(atc.LOG, atc.LOG_LEVELS, str.lower), "as is: " + ", ".join(atc.LOG_LEVELS)),
)
OPTIONS: Final[Mapping[str, OptionMapping]] = {m.option: m for m in OPTION_TABLE}
_OPTION_OF_FLAG: Final = {m.flag: m.option for m in OPTION_TABLE if m.flag}

# The table must cover exactly the options the operator accepts.
assert set(OPTIONS) == set(catalog.CONVERSION_OPTIONS), "OPTION_TABLE and catalog.CONVERSION_OPTIONS disagree"


def markdown_table(defaults: Mapping[str, str]) -> str:
    """The option table as Markdown (docs/converter.md embeds it; a test keeps the two equal)."""
    rows = [
        "| option | ATC flag | values and mapping | seed default | documented? |",
        "| --- | --- | --- | --- | --- |",
    ]
    for m in OPTION_TABLE:
        flag = f"`--{m.flag}`" if m.flag else "(none)"
        default = f"`{defaults[m.option]}`" if m.option in defaults else "(not set)"
        origin = "**inferred**" if m.inferred else "yes"
        rows.append(f"| `{m.option}` | {flag} | {m.mapping} | {default} | {origin} |")
    return "\n".join(rows) + "\n"


def option_for_flag(flag: str | None) -> str:
    """The option (or converter flag) a user changes to fix an ATC flag."""
    if flag == atc.MODEL:
        return contract.FLAG_INPUT
    if flag == atc.OUTPUT:
        return contract.FLAG_OUTPUT
    return _OPTION_OF_FLAG.get(flag or "", f"--{flag}")


def parse_set_arguments(pairs: Sequence[str]) -> dict[str, str]:
    """`NAME=VALUE` strings from `--set`, checked against the option names."""
    options: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise OptionError(pair, None, f"{contract.FLAG_SET} takes NAME=VALUE, for example inputShape=images:1,224,224,3")
        if name not in OPTIONS:
            raise OptionError(name, value, f"unknown option; known options: {', '.join(OPTIONS)}")
        options[name] = value
    return options


@dataclass(frozen=True)
class Conversion:
    """A validated conversion: the template, the effective options and the ATC arguments."""

    template: Template
    options: Mapping[str, str]  # effective values (template defaults + overrides), normalised
    atc_args: tuple[str, ...]  # ATC's argv without the executable
    command: atc.AtcCommand

    @property
    def command_line(self) -> str:
        import shlex

        return shlex.join([atc.EXECUTABLE, *self.atc_args])


def _error_from_atc(exc: atc.AtcError, options: Mapping[str, str]) -> OptionError:
    option = option_for_flag(exc.flag)
    return OptionError(option, options.get(option), f"{exc.message} (ATC {exc.code})")


def build(template: Template, overrides: Mapping[str, str], model: str, output_dir: str) -> Conversion:
    """Template + option overrides -> the exact ATC argument list, every value validated."""
    for name in overrides:
        if name not in OPTIONS:
            raise OptionError(name, overrides[name], f"unknown option; known options: {', '.join(OPTIONS)}")
    raw = {**template.defaults, **overrides}
    options: dict[str, str] = {}
    flag_values: dict[str, str] = {}
    for mapping in OPTION_TABLE:
        if mapping.option not in raw:
            continue
        value = raw[mapping.option]
        if not value.strip():
            raise OptionError(mapping.option, value, "the value is empty")
        try:
            flag_value = mapping.translate(value)
        except atc.AtcError as exc:
            raise OptionError(mapping.option, value, exc.message) from None
        except ValueError as exc:
            raise OptionError(mapping.option, value, str(exc)) from None
        options[mapping.option] = _normalised(mapping, value, flag_value)
        if mapping.flag and flag_value is not None:
            flag_values[mapping.flag] = flag_value

    _check_template_rules(template, options)

    args = [
        atc.flag_arg(atc.MODEL, model),
        atc.flag_arg(atc.FRAMEWORK, template.framework),
        atc.flag_arg(atc.OUTPUT, os.path.join(output_dir, OUTPUT_PREFIX)),
        atc.flag_arg(atc.SOC_VERSION, template.soc_version),
    ]
    args += [atc.flag_arg(m.flag, flag_values[m.flag]) for m in OPTION_TABLE if m.flag in flag_values]
    try:
        command = atc.validate_flags(atc.parse_argv(args))
    except atc.AtcError as exc:
        raise _error_from_atc(exc, options) from None
    return Conversion(template=template, options=options, atc_args=tuple(args), command=command)


def _normalised(mapping: OptionMapping, value: str, flag_value: str | None) -> str:
    if mapping.flag is None or mapping.inferred:
        return value.strip()
    return flag_value if flag_value is not None else value.strip()


def _check_template_rules(template: Template, options: Mapping[str, str]) -> None:
    shapes = atc.parse_input_shape(options["inputShape"]) if "inputShape" in options else []
    if template.dynamic_batch:
        if "dynamicBatchSizes" not in options:
            raise OptionError(
                "dynamicBatchSizes", None, f"template {template.name} needs a list of batch sizes, such as 1,2,4,8"
            )
    else:
        if "dynamicBatchSizes" in options:
            raise OptionError(
                "dynamicBatchSizes", options["dynamicBatchSizes"],
                f"template {template.name} takes one fixed batch; use template "
                f"{catalog.TEMPLATE_DYNAMIC_BATCH} for several batch sizes",
            )
        for shape in shapes:
            if template.fixed_batch is not None and shape.dims and shape.dims[0] != template.fixed_batch:
                raise OptionError(
                    "inputShape", options["inputShape"],
                    f"template {template.name} only allows batch {template.fixed_batch} (the first axis of "
                    f"{shape.name!r} is {shape.dims[0]}); use template {catalog.TEMPLATE_DYNAMIC_BATCH} "
                    "for other or several batch sizes",
                )
    batch_sizes = (
        atc.parse_dynamic_batch_size(options["dynamicBatchSizes"]) if "dynamicBatchSizes" in options else None
    )
    try:
        atc.check_dynamic_batch(shapes, batch_sizes)
    except atc.AtcError as exc:
        raise OptionError("inputShape", options.get("inputShape"), exc.message) from None
