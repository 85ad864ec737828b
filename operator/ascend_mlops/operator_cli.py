"""`ascend-mlops operator`: run the Kopf operator against the current cluster.

Credentials come from the in-cluster service account or the current kubeconfig
context. All namespaces are watched unless `--namespace` (repeatable) or
ASCEND_MLOPS_NAMESPACES names some.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import kopf

from ascend_mlops import shutdown
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
        asyncio.run(_operate(namespaces, liveness))
    except KeyboardInterrupt:
        return 130
    return 0


async def _operate(namespaces: list[str], liveness: str | None) -> None:
    """Kopf's operator, with a stop signal that also arms the shutdown watchdog (shutdown.py)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    ready = asyncio.Event()

    main = asyncio.current_task()

    def on_signal(signum: signal.Signals) -> None:
        shutdown.arm(loop, keep={t for t in (main, operator) if t is not None})
        stop.set()

    operator = asyncio.create_task(
        kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
            stop_flag=stop,
            ready_flag=ready,
        ),
        name="kopf operator",
    )
    # Kopf installs its own SIGINT/SIGTERM handlers while it starts; once it is
    # ready, ours replace them (until then a signal takes Kopf's path, and the
    # cleanup handler arms the watchdog).
    ready_wait = asyncio.create_task(ready.wait(), name="kopf ready")
    await asyncio.wait({operator, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
    ready_wait.cancel()
    if not operator.done():
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
    await operator
