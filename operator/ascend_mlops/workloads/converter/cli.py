"""`ascend-mlops convert`: what a ModelConversion's pod runs.

    ascend-mlops convert --template TF-FrozenGraph-To-Ascend-C32 --input V001/frozen_graph \\
        --output V001/om/model [--set inputShape=images:1,224,224,3 ...] [--termination-log PATH]

Validates the template options, checks them against the frozen graph (when
TensorFlow is importable), runs ATC, and leaves `<output>/model.om` plus a
`config.json` describing the model. The real `atc` is always preferred; the
ATC simulator runs only when no `atc` exists and ASCEND_MLOPS_SIMULATOR=1.
A JSON summary goes to the termination-message path either way.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ascend_mlops.api import catalog, contract
from ascend_mlops.ascend import atc, simmodel
from ascend_mlops.workloads import objectstore
from ascend_mlops.workloads.converter import options as conversion_options
from ascend_mlops.workloads.converter import runner, templates
from ascend_mlops.workloads.converter.options import Conversion, OptionError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        contract.FLAG_TEMPLATE, default=catalog.TEMPLATE_SEED, metavar="NAME",
        help=f"conversion template (default {catalog.TEMPLATE_SEED}; available: {', '.join(templates.TEMPLATES)})",
    )
    parser.add_argument(
        contract.FLAG_INPUT, required=True, metavar="PATH|URI",
        help=f"frozen graph: a directory holding {contract.FROZEN_GRAPH_FILE} (or one .pb), or the .pb file; "
        "local or s3:// / obs://",
    )
    parser.add_argument(
        contract.FLAG_OUTPUT, required=True, metavar="DIR|URI",
        help=f"directory that receives {contract.OM_FILE} and {contract.MODEL_CONFIG_FILE}; local or "
        "s3:// / obs:// (uploaded with a manifest, written last)",
    )
    parser.add_argument(
        contract.FLAG_SET, action="append", default=[], metavar="OPTION=VALUE", dest="set",
        help=f"template option, repeatable; options: {', '.join(conversion_options.OPTIONS)}",
    )
    parser.add_argument(
        contract.FLAG_TERMINATION_LOG, default=contract.DEFAULT_TERMINATION_LOG, metavar="PATH",
        dest="termination_log", help="where to write the JSON summary (Kubernetes termination message)",
    )
    parser.add_argument(
        contract.FLAG_PRINT_COMMAND, action="store_true", dest="print_command",
        help="print the ATC command line and exit without running it",
    )


def _log(message: str) -> None:
    print(f"[convert] {message}", flush=True)


class _Failure(Exception):
    def __init__(self, exit_code: int, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message
        self.extra = extra or {}


def resolve_input(path: str, must_exist: bool = True) -> str:
    """The frozen graph file named by --input (a directory or the .pb itself)."""
    given = Path(path)
    if given.is_file():
        return str(given)
    if not must_exist and not given.exists():
        return str(given if given.suffix == ".pb" else given / contract.FROZEN_GRAPH_FILE)
    if not given.exists():
        raise _Failure(
            contract.EXIT_INVALID_MODEL,
            f"{contract.FLAG_INPUT} {path!r} does not exist; give the trainer's "
            f"{contract.FROZEN_GRAPH_DIR} directory or its {contract.FROZEN_GRAPH_FILE}",
        )
    default = given / contract.FROZEN_GRAPH_FILE
    if default.is_file():
        return str(default)
    candidates = sorted(p for p in given.glob("*.pb") if p.is_file())
    if len(candidates) == 1:
        return str(candidates[0])
    found = ", ".join(p.name for p in candidates) or "no .pb file"
    raise _Failure(
        contract.EXIT_INVALID_MODEL,
        f"{contract.FLAG_INPUT} {path!r} holds {found}; expected {contract.FROZEN_GRAPH_FILE} "
        "(or exactly one .pb file), or give the .pb file itself",
    )


def _describe(conversion: Conversion) -> tuple[list[atc.TensorDesc], list[atc.TensorDesc], bool]:
    """Check the options against the graph; returns inputs, outputs and whether the graph was read."""
    if not atc.tensorflow_available():
        _log("TensorFlow is not importable here: the graph checks are left to ATC")
        inputs, outputs = atc.describe_without_graph(conversion.command)
        return inputs, outputs, False
    _log(f"checking the options against the graph {conversion.command.model}")
    try:
        data = atc.read_model_bytes(conversion.command.model)
        graph_def = atc.load_graph_def(data, conversion.command.model)
        inputs, outputs = atc.describe_graph(graph_def, conversion.command)
    except atc.AtcError as exc:
        if exc.flag == atc.MODEL:
            message = f"{contract.FLAG_INPUT} {conversion.command.model!r} is not usable: {exc.message}"
        else:
            option = conversion_options.option_for_flag(exc.flag)
            value = conversion.options.get(option)
            shown = f"{option}={value!r}" if value is not None else option
            message = f"{shown} does not fit the model: {exc.message}"
        raise _Failure(
            contract.EXIT_INVALID_MODEL, f"{message} (ATC {exc.code})", {contract.SUMMARY_ERROR_CODES: [exc.code]}
        ) from None
    return inputs, outputs, True


def _config(conversion: Conversion, tool: runner.AtcTool, inputs: list[atc.TensorDesc],
            outputs: list[atc.TensorDesc], source: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "model": contract.OM_FILE,
        "simulated": tool.simulated,
        "template": conversion.template.name,
        "templateDescription": conversion.template.description,
        "framework": atc.FRAMEWORKS[conversion.template.framework],
        "socVersion": conversion.template.soc_version,
        "source": source,
        "options": dict(conversion.options),
        "atcCommand": conversion.command_line,
        "atcArguments": list(conversion.atc_args),
        "atc": tool.where,
        "inputs": [t.to_dict() for t in inputs],
        "outputs": [t.to_dict() for t in outputs],
        "dynamicBatchSizes": list(conversion.command.dynamic_batch_size),
        "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if tool.simulated:
        config["note"] = simmodel.NOTE
    return config


def _convert(args: argparse.Namespace, summary: dict[str, Any]) -> int:
    try:
        template = templates.get(args.template)
        overrides = conversion_options.parse_set_arguments(args.set)
    except (templates.UnknownTemplate, OptionError) as exc:
        raise _Failure(contract.EXIT_INVALID_PARAMETERS, str(exc)) from None
    remote_output: objectstore.ObjectURI | None = None
    source = args.input
    if args.print_command:
        # Nothing is downloaded: the command shows the URI, or the .pb a directory would resolve to.
        model = args.input if objectstore.is_object_uri(args.input) else resolve_input(args.input, must_exist=False)
        output_dir = Path(args.output)
    else:
        remote_output = _remote(args.output, contract.FLAG_OUTPUT)
        if remote_output is not None:
            _storage(lambda: objectstore.check_bucket(remote_output, "write to"), contract.FLAG_OUTPUT,
                     contract.EXIT_INVALID_PARAMETERS)
        local_input = args.input
        remote_input = _remote(args.input, contract.FLAG_INPUT)
        if remote_input is not None:
            local_input = str(_storage(
                lambda: objectstore.fetch_input(
                    remote_input, objectstore.scratch_dir("source"), what=f"{contract.FLAG_INPUT} {remote_input}"
                ),
                contract.FLAG_INPUT, contract.EXIT_INVALID_MODEL,
            ))
        model = resolve_input(local_input)
        output_dir = objectstore.scratch_dir("om") if remote_output is not None else Path(args.output)
    try:
        conversion = conversion_options.build(template, overrides, model, str(output_dir))
    except OptionError as exc:
        raise _Failure(contract.EXIT_INVALID_PARAMETERS, str(exc)) from None
    summary[contract.SUMMARY_ATC_COMMAND] = conversion.command_line
    if args.print_command:
        print(conversion.command_line)
        return contract.EXIT_OK

    _log(f"template {template.name}: {template.description}")
    for name, value in conversion.options.items():
        _log(f"  option {name}={value}")
    try:
        tool = runner.choose_tool()
    except runner.ToolkitMissing as exc:
        raise _Failure(contract.EXIT_TOOLKIT_MISSING, str(exc)) from None
    summary[contract.SUMMARY_SIMULATED] = tool.simulated
    inputs, outputs, graph_read = _describe(conversion)

    om_path = output_dir / contract.OM_FILE
    config_path = output_dir / contract.MODEL_CONFIG_FILE
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for stale in (om_path, config_path):
            # A model left by an earlier attempt must not pass for this one's result.
            stale.unlink(missing_ok=True)
    except OSError as exc:
        raise _Failure(1, f"cannot prepare {contract.FLAG_OUTPUT} {str(output_dir)!r}: {exc}") from None

    if tool.simulated:
        _log("*** NO CANN TOOLKIT: running the ATC SIMULATOR (ASCEND_MLOPS_SIMULATOR=1). The result is a "
             "SIMULATED model for the pyACL simulator; it cannot run on an Ascend NPU. ***")
    else:
        _log(f"running ATC at {tool.where}")
    _log(f"$ {conversion.command_line}")
    try:
        result = runner.run_atc(tool, conversion.atc_args, sys.stdout)
    except OSError as exc:
        raise _Failure(
            contract.EXIT_TOOLKIT_MISSING, f"cannot run ATC at {tool.where}: {exc}; check the CANN installation"
        ) from None

    if result.returncode != 0:
        reason = next((line.strip() for line in result.tail if atc.ERROR_CODE_RE.search(line)), None)
        if result.returncode < 0:
            # Killed by a signal (OOM, eviction): the model is not at fault, retry.
            code = 128 - result.returncode
            message = f"ATC was killed by signal {-result.returncode}"
        else:
            code = contract.EXIT_INVALID_MODEL
            message = f"ATC failed with exit code {result.returncode}"
        if reason:
            message += f": {reason}"
        raise _Failure(code, message, _atc_output(result))
    if not om_path.is_file():
        raise _Failure(
            1, f"ATC exited 0 but wrote no {om_path}", _atc_output(result)
        )

    if tool.simulated:
        # Describe what was actually written (the simulator read the same graph).
        header = simmodel.read(om_path).header
        inputs = [_desc(d) for d in header.get("inputs", [])]
        outputs = [_desc(d) for d in header.get("outputs", [])]
    elif simmodel.is_simulated(om_path):
        raise _Failure(1, f"the atc at {tool.where} wrote a SIMULATED model; a real ATC was expected")
    config = _config(conversion, tool, inputs, outputs, source if objectstore.is_object_uri(source) else model)
    config["graphChecked"] = graph_read
    tmp = config_path.with_name(f".{config_path.name}.tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tmp.replace(config_path)
    kind = "SIMULATED model" if tool.simulated else "model"
    written = f"{om_path} and {config_path}"
    if remote_output is not None:
        _storage(
            lambda: objectstore.upload_directory(output_dir, remote_output, what=f"{contract.FLAG_OUTPUT} {remote_output}"),
            contract.FLAG_OUTPUT, contract.EXIT_INVALID_PARAMETERS,
        )
        written = f"{remote_output.join(contract.OM_FILE)} and {remote_output.join(contract.MODEL_CONFIG_FILE)}"
    _log(f"wrote {kind} {written}")
    summary[contract.SUMMARY_MODEL] = contract.OM_FILE
    return contract.EXIT_OK


def _remote(text: str, flag: str) -> objectstore.ObjectURI | None:
    if not objectstore.is_object_uri(text):
        return None
    try:
        return objectstore.parse(text, flag)
    except ValueError as exc:
        raise _Failure(contract.EXIT_USAGE, str(exc)) from None


def _storage(action: Any, flag: str, refused_code: int) -> Any:
    """Run an object-storage action; a failure becomes the input's exit code (refused) or 75 (unreachable)."""
    try:
        return action()
    except objectstore.StorageError as exc:
        raise _Failure(
            objectstore.exit_code(exc, refused_code), f"{flag}: {exc}", {contract.SUMMARY_STORAGE_ERROR: exc.summary()}
        ) from None


def _atc_output(result: runner.AtcResult) -> dict[str, Any]:
    return {contract.SUMMARY_ERROR_CODES: result.error_codes, contract.SUMMARY_LOG_TAIL: result.log_tail}


def _desc(d: dict[str, Any]) -> atc.TensorDesc:
    dims = d.get("dims")
    return atc.TensorDesc(
        name=str(d["name"]),
        dims=None if dims is None else tuple(int(x) for x in dims),
        data_type=str(d.get("dataType")),
        format=str(d.get("format")),
        tensor_name=str(d.get("tensorName")),
    )


def run(args: argparse.Namespace) -> int:
    summary: dict[str, Any] = {}
    try:
        code = _convert(args, summary)
    except _Failure as failure:
        objectstore.remove_scratch()
        print(f"[convert] ERROR: {failure.message}", file=sys.stderr, flush=True)
        summary[contract.SUMMARY_ERROR] = failure.message
        summary[contract.SUMMARY_EXIT_CODE] = failure.exit_code
        summary.update(failure.extra)
        if not args.print_command:
            contract.write_summary(args.termination_log, summary)
        return failure.exit_code
    objectstore.remove_scratch()
    if not args.print_command:
        contract.write_summary(args.termination_log, summary)
    return code
