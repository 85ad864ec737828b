"""`ascend-mlops`: one console script, one subcommand per entry point.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`; modules are imported only when their subcommand runs, so
`ascend-mlops operator` never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ascend_mlops import __version__

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "operator": ("ascend_mlops.operator_cli", "run the Kubernetes operator"),
    "train": ("ascend_mlops.workloads.trainer.cli", "train an image classifier (TrainingJob pods)"),
    "convert": (
        "ascend_mlops.workloads.converter.cli",
        "convert a frozen graph to an Ascend .om model with ATC (ModelConversion pods)",
    ),
    "serve": ("ascend_mlops.workloads.server.cli", "serve a model over HTTP (InferenceService pods)"),
    "predict": (
        "ascend_mlops.workloads.batch.cli",
        "classify a folder or .manifest of images, one shard of a batch (BatchPrediction pods)",
    ),
    "sandbox": ("ascend_mlops.sandbox.cli", "run the whole flow on this machine, no cluster needed"),
    "device-plugin": (
        "ascend_mlops.ascend.deviceplugin.cli",
        "a SIMULATED Ascend device plugin for clusters without NPUs (kubelet device plugin API v1beta1)",
    ),
}


def _wanted(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ascend-mlops",
        description="Train, convert and serve image classifiers on Huawei Ascend 310 from Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"ascend-mlops {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = _wanted(argv)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            module = importlib.import_module(module_name)
            module.add_arguments(child)
            child.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    code: int = args._run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
