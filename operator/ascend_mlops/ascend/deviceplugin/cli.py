"""`ascend-mlops device-plugin --simulated`: a SIMULATED Ascend device plugin for clusters without NPUs.

Exit codes: 0 after SIGTERM/SIGINT (clean shutdown), 1 when the kubelet
refuses the registration, 2 for a bad command line (including a missing
--simulated: on Ascend nodes, Huawei's device plugin is the one to run) or a
missing grpcio (the `deviceplugin` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

DEFAULT_DIRECTORY = "/var/lib/kubelet/device-plugins"  # protocol.DEFAULT_DIRECTORY, without importing grpc
DEFAULT_RESOURCE = "huawei.com/Ascend310"

NOT_SIMULATED = (
    "error: ascend-mlops device-plugin only runs a SIMULATED Ascend device plugin, for clusters without "
    "Ascend NPUs (kind, minikube, k3s, CI); pass --simulated to run it. On nodes with Ascend NPUs, deploy "
    "Huawei's Ascend device plugin (MindCluster ascend-device-plugin), which advertises the real devices."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--simulated", action="store_true",
        help="required: advertise SIMULATED Ascend devices (there is no NPU behind them)",
    )
    parser.add_argument("--devices", type=int, default=4, help="simulated devices to advertise (default: %(default)s)")
    parser.add_argument(
        "--resource", default=DEFAULT_RESOURCE,
        help="extended resource name, as Huawei's plugin advertises it (default: %(default)s)",
    )
    parser.add_argument(
        "--device-plugin-dir", type=Path, default=Path(DEFAULT_DIRECTORY),
        help="the kubelet's device-plugins directory, holding kubelet.sock (default: %(default)s)",
    )
    parser.add_argument("--endpoint", default="", help="socket file name in that directory (default: <name>-simulated.sock)")
    parser.add_argument(
        "--watch-interval", type=float, default=1.0,
        help="seconds between checks for a restarted kubelet (default: %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def run(args: argparse.Namespace) -> int:
    if not args.simulated:
        print(NOT_SIMULATED, file=sys.stderr)
        return 2
    try:
        from ascend_mlops.ascend.deviceplugin.plugin import (
            PluginConfig,
            RegistrationRejected,
            SimulatedAscendPlugin,
        )
    except ImportError as exc:
        print(
            f"error: the device plugin needs grpcio and protobuf ({exc}); "
            "install them with: pip install 'ascend-mlops[deviceplugin]'",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = PluginConfig(
        resource=args.resource, devices=args.devices, directory=args.device_plugin_dir,
        endpoint=args.endpoint, watch_interval=args.watch_interval,
    )
    try:
        config.validate()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        plugin = SimulatedAscendPlugin(config)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, plugin.request_stop)
        try:
            await plugin.run()
        except RegistrationRejected as exc:
            logging.getLogger(__name__).error("%s", exc)
            return 1
        return 0

    return asyncio.run(main())
