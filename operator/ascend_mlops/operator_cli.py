"""`ascend-mlops operator`: run the Kopf operator against the current cluster.

Credentials come from the in-cluster service account or the current kubeconfig
context. All namespaces are watched unless `--namespace` (repeatable) or
ASCEND_MLOPS_NAMESPACES names some.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import kopf

from ascend_mlops.settings import ENV_NAMESPACES, Settings, SettingsError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help=f"watch this namespace (repeatable); overrides {ENV_NAMESPACES}",
    )
    scope.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help=f"watch every namespace (the default unless {ENV_NAMESPACES} is set)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log Kopf's and the reconcilers' details")


def resolve_namespaces(args: argparse.Namespace, settings: Settings) -> list[str]:
    if args.namespace:
        return list(dict.fromkeys(args.namespace))
    if args.all_namespaces:
        return []
    return list(settings.namespaces)


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"ascend-mlops operator: {exc}", file=sys.stderr)
        return 2
    namespaces = resolve_namespaces(args, settings)
    log_format = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=args.verbose, log_format=log_format)
    # Importing registers the handlers with Kopf's default registry.
    import ascend_mlops.main  # noqa: F401

    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    try:
        asyncio.run(
            kopf.operator(
                standalone=True,
                clusterwide=not namespaces,
                namespaces=namespaces,
                liveness_endpoint=liveness,
            )
        )
    except KeyboardInterrupt:
        return 130
    return 0
