"""`ascend-mlops sandbox up|run|down|status`: the whole flow on this machine, no cluster needed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ascend_mlops.api import constants
from ascend_mlops.kube import ApiError, KubeClient
from ascend_mlops.sandbox import scheduling
from ascend_mlops.sandbox.cluster import (
    STATE_FILE,
    Sandbox,
    SandboxConfig,
    SandboxError,
    default_root,
    pid_alive,
    read_state,
    sandbox_processes,
)
from ascend_mlops.sandbox.datasets import DatasetError, check_dataset
from ascend_mlops.sandbox.flow import (
    Example,
    ExampleRun,
    FlowError,
    Report,
    RunOptions,
    object_summary,
)
from ascend_mlops.sandbox.objectstorage import is_object_uri
from ascend_mlops.sandbox.proxy import ANNOTATION_URL

T = TypeVar("T")
RESOURCES = "trainingjobs,modelconversions,inferenceservices"
ENV_GATEWAY = "ASCEND_MLOPS_GATEWAY"  # the operator's setting (settings.ENV_GATEWAY): "<namespace>/<Gateway name>"
SANDBOX_GATEWAY = "ascend-mlops-system/sandbox"  # the Gateway the sandbox plays (it serves every HTTPRoute)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir", type=Path, default=None,
        help="the sandbox folder (kubeconfig, logs, volumes); default $ASCEND_MLOPS_SANDBOX_DIR "
        "or ~/.local/state/ascend-mlops/sandbox",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log the sandbox's own components too")
    gateway = argparse.ArgumentParser(add_help=False)
    gateway.add_argument(
        "--gateway", nargs="?", const=SANDBOX_GATEWAY, default=None, metavar="NAMESPACE/NAME",
        help=f"run the operator with {ENV_GATEWAY} set (default {SANDBOX_GATEWAY}): InferenceServices get an HTTPRoute, "
        "which the sandbox serves on its own local port with exact canary weights per request",
    )
    sub = parser.add_subparsers(dest="sandbox_command", metavar="{up,run,down,status}")
    sub.required = True

    up = sub.add_parser("up", parents=[common, gateway], help="start the API, the operator and the local kubelet; stay up until stopped")
    up.add_argument("--detach", action="store_true", help="run in the background and return once it is up")
    up.add_argument("--npus", type=int, default=4, help="Ascend 310 devices the simulated node advertises (default 4)")
    up.add_argument("--no-operator", action="store_true", help="do not start the operator (to run one yourself against the kubeconfig)")

    run = sub.add_parser("run", parents=[common, gateway], help="run an example end to end: train, convert, serve, classify an image")
    run.add_argument("example", type=Path, help="an example folder, such as examples/flowers")
    run.add_argument("--data", type=Path, help="a dataset folder (one sub-folder of images per class); default: download, else generate")
    profile = run.add_mutually_exclusive_group()
    profile.add_argument("--quick", dest="profile", action="store_const", const="quick", help="small images, one epoch (default)")
    profile.add_argument("--full", dest="profile", action="store_const", const="full", help="the manifests' own settings (224x224, the seed's defaults)")
    stay = run.add_mutually_exclusive_group()
    stay.add_argument("--keep", dest="keep", action="store_true", default=True, help="stay up after the prediction until Ctrl-C or `sandbox down` (default)")
    stay.add_argument("--exit-after-predict", dest="keep", action="store_false", help="stop the sandbox once the prediction is printed")
    run.add_argument("--max-per-class", type=int, help="use at most N images of each class (a quicker, smaller run)")
    run.add_argument("--epochs", type=int, help="train for this many epochs (overrides the profile)")
    run.add_argument("--timeout", type=float, help="give up after this many seconds")
    run.add_argument(
        "--batch", action="store_true",
        help="also run the example's BatchPrediction over the dataset and print its counts and accuracy",
    )
    run.add_argument("--no-download", action="store_true", help="do not try to download the dataset (generate it when no --data)")
    run.add_argument("--npus", type=int, default=4, help=argparse.SUPPRESS)
    run.set_defaults(profile="quick")

    sub.add_parser("down", parents=[common], help="stop the sandbox running in the folder (and everything it started)")
    sub.add_parser("status", parents=[common], help="show the sandbox's API, nodes, resources and service URLs")


def run(args: argparse.Namespace) -> int:
    root = (args.dir or default_root()).expanduser().resolve()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    command = args.sandbox_command
    try:
        if command == "up":
            if args.detach:
                return _up_detached(root, args)
            return asyncio.run(_up(root, args))
        if command == "run":
            return asyncio.run(_run(root, args))
        if command == "down":
            return _down(root)
        return asyncio.run(_status(root))
    except (SandboxError, FlowError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _patient_signals() -> Iterator[None]:
    """While stopping, a second Ctrl-C must not abandon half-stopped processes."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: print("still stopping the sandbox, please wait ...", flush=True))
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _race_signal(work: Awaitable[T]) -> tuple[bool, T | None]:
    """Run `work` until it ends or SIGINT/SIGTERM arrives: (finished, result)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(_until_signal())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        return True, task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return False, None


def _operator_env(args: argparse.Namespace) -> dict[str, str]:
    """Operator settings the command line asks for (the rest of ASCEND_MLOPS_* comes from the environment)."""
    return {ENV_GATEWAY: args.gateway} if args.gateway else {}


def _usage(sandbox_root: Path, api: str, gateway: str | None = None) -> str:
    kubeconfig = sandbox_root / "kubeconfig"
    return "\n".join([
        f"  API:        {api}",
        f"  kubeconfig: {kubeconfig}",
        f"  nodes:      {scheduling.CPU_NODE}, {scheduling.ASCEND_NODE} ({scheduling.ASCEND_RESOURCE})",
        *([f"  gateway:    {gateway} (each HTTPRoute on its own local port: `sandbox status` lists them)"] if gateway else []),
        f"  logs:       {sandbox_root / 'logs' / 'operator.log'}, {sandbox_root / 'pods'}/<namespace>/<pod>/",
        "  try:",
        f"    export KUBECONFIG={kubeconfig}",
        f"    kubectl get {RESOURCES}",
        "    kubectl apply -f examples/flowers/   # the dataset goes to <sandbox>/data/pvc/flowers-data/datasets/flowers",
    ])


async def _up(root: Path, args: argparse.Namespace) -> int:
    sandbox = Sandbox(SandboxConfig(root=root, npus=args.npus, run_operator=not args.no_operator, env=_operator_env(args)))
    finished, _ = await _race_signal(sandbox.start())
    if not finished:
        with _patient_signals():
            await sandbox.stop()
        return 130
    print(f"sandbox up in {root}")
    print(_usage(root, sandbox.url, args.gateway))
    print(f"stop it with Ctrl-C or `ascend-mlops sandbox down --dir {root}`", flush=True)
    try:
        await _until_signal()
    finally:
        print("stopping the sandbox ...", flush=True)
        with _patient_signals():
            await sandbox.stop()
    print("sandbox stopped")
    return 0


def _up_detached(root: Path, args: argparse.Namespace) -> int:
    existing = read_state(root)
    if existing is not None:
        print(f"a sandbox is already up in {root}")
        print(_usage(root, str(existing["api"])))
        return 0
    root.mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "ascend_mlops", "sandbox", "up", "--dir", str(root), "--npus", str(args.npus)]
    if args.no_operator:
        command.append("--no-operator")
    if args.gateway:
        command += ["--gateway", args.gateway]
    with (root / "logs" / "sandbox.log").open("ab") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = read_state(root)
        if state is not None and state.get("pid") == child.pid:
            print(f"sandbox up in {root} (pid {child.pid})")
            print(_usage(root, str(state["api"]), args.gateway))
            print(f"stop it with `ascend-mlops sandbox down --dir {root}`")
            return 0
        if child.poll() is not None:
            break
        time.sleep(0.2)
    tail = "\n".join((root / "logs" / "sandbox.log").read_text(errors="replace").splitlines()[-20:])
    if child.poll() is None:
        child.terminate()
    print(f"error: the sandbox did not come up:\n{tail}", file=sys.stderr)
    return 1


def _print_report(report: Report, root: Path, api: str) -> None:
    print()
    print(f"prediction: {json.dumps(report.prediction)}")
    print(f"service:    {report.service_url}/   (inside a cluster: {report.cluster_url})")
    if report.route_url:
        print(f"route:      {report.route_url}/   (the HTTPRoute through the sandbox gateway: exact canary weights)")
    print(f"try:        curl -F images=@{report.sample} {report.service_url}/")
    print(f"            open {report.service_url}/ in a browser to upload a photo")
    print(f"            KUBECONFIG={root / 'kubeconfig'} kubectl get {RESOURCES}")
    if report.artifacts:
        print("artifacts:" + (f"  (in the embedded S3 server {report.object_storage}, in memory: gone when the sandbox run ends)" if report.object_storage else ""))
        for key, fields in report.artifacts.items():
            for name, uri in fields.items():
                where = ""
                if report.object_storage and is_object_uri(uri):
                    where = f"  [{object_summary(report, uri)}]"
                print(f"  {key} {name}: {uri}{where}")
    print("stage times (s): " + ", ".join(f"{k} {v}" for k, v in report.stages.items()))
    print(f"API {api}", flush=True)


async def _run(root: Path, args: argparse.Namespace) -> int:
    options = RunOptions(
        example=args.example, profile=args.profile, data=args.data, max_per_class=args.max_per_class,
        timeout=args.timeout, download=not args.no_download, epochs=args.epochs, batch=args.batch,
    )
    # Mistakes in the command line are reported before anything starts.
    example = Example.load(args.example, batch=args.batch)
    example.profile(args.profile)
    if args.data is not None:
        check_dataset(args.data)
    state = read_state(root)
    own: Sandbox | None = None
    started = time.monotonic()
    if state is None:
        own = Sandbox(SandboxConfig(root=root, npus=args.npus, env=_operator_env(args)))
        print(f"[{0.0:7.1f}s] starting the sandbox in {root} (API, operator, kubelet)", flush=True)
        finished, _ = await _race_signal(own.start())
        if not finished:
            with _patient_signals():
                await own.stop()
            return 130
        api = own.url
        print(f"[{time.monotonic() - started:7.1f}s] sandbox up: API {api}, kubeconfig {own.kubeconfig}", flush=True)
    else:
        api = str(state["api"])
        print(f"using the sandbox already up in {root} (API {api})", flush=True)
        if args.gateway:
            print(f"note: --gateway applies to a sandbox this command starts; start this one with `sandbox up --gateway {args.gateway}`", flush=True)
    boot = round(time.monotonic() - started, 1)
    client = KubeClient(api)
    flow = ExampleRun(client, root, options, out=lambda line: print(line, flush=True))
    flow.started = started
    flow.report.stages["sandbox start"] = boot
    flow._last_stage = time.monotonic()
    code = 0
    try:
        try:
            finished, report = await _race_signal(flow.run())
        except (FlowError, DatasetError, ApiError) as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            _hint_logs(root)
            return 1
        _write_run(root, flow.report)
        if not finished:
            print("interrupted", flush=True)
            return 130
        assert report is not None
        _print_report(report, root, api)
        if args.keep:
            print(f"the sandbox stays up until Ctrl-C or `ascend-mlops sandbox down --dir {root}`", flush=True)
            await _until_signal()
        return code
    finally:
        await client.close()
        if own is not None:
            print("stopping the sandbox ...", flush=True)
            with _patient_signals():
                await own.stop()
                flow.stop_storage()  # after the pods: none of them sees its storage vanish
            print("sandbox stopped", flush=True)
        else:
            flow.stop_storage()


def _write_run(root: Path, report: Report) -> None:
    (root / "run.json").write_text(json.dumps(report.__dict__, indent=2, default=str))


def _hint_logs(root: Path) -> None:
    print(f"logs: {root / 'logs' / 'operator.log'} and {root / 'pods'}/<namespace>/<pod>/<container>.log", file=sys.stderr)


def _down(root: Path) -> int:
    state = read_state(root)
    if state is None:
        leftovers = sandbox_processes(root)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        print(f"no sandbox is running in {root}" + (f" (killed {len(leftovers)} leftover processes)" if leftovers else ""))
        return 0
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    for leftover in sandbox_processes(root):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(leftover, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        (root / STATE_FILE).unlink()
    print(f"sandbox in {root} stopped")
    return 0


async def _status(root: Path) -> int:
    state = read_state(root)
    if state is None:
        print(f"no sandbox is running in {root}; start one with `ascend-mlops sandbox up` or `sandbox run examples/flowers`")
        return 3
    api = str(state["api"])
    print(f"sandbox up in {root} (pid {state['pid']})")
    print(_usage(root, api))
    async with KubeClient(api) as client:
        nodes = (await client.listing("v1", "nodes")).get("items", [])
        print("nodes:")
        for node in nodes:
            capacity = node.get("status", {}).get("capacity", {})
            npus = capacity.get(scheduling.ASCEND_RESOURCE)
            print(f"  {node['metadata']['name']}" + (f"  {scheduling.ASCEND_RESOURCE}={npus}" if npus else ""))
        print("resources:")
        for kind, plural in constants.PLURALS.items():
            for obj in (await client.listing(constants.API_VERSION, plural)).get("items", []):
                status = obj.get("status") or {}
                extra = status.get("url") or (status.get("address") or {}).get("url") or ""
                print(f"  {kind}/{obj['metadata']['name']} ({obj['metadata'].get('namespace')}): {status.get('phase', '-')} {extra}")
        print("pods:")
        for pod in (await client.listing("v1", "pods")).get("items", []):
            print(f"  {pod['metadata'].get('namespace')}/{pod['metadata']['name']}: {pod.get('status', {}).get('phase')} on {pod.get('spec', {}).get('nodeName') or '-'}")
        services: list[dict[str, Any]] = (await client.listing("v1", "services")).get("items", [])
        exposed = [(s, (s["metadata"].get("annotations") or {}).get(ANNOTATION_URL)) for s in services]
        if any(url for _, url in exposed):
            print("services:")
            for service, url in exposed:
                if url:
                    print(f"  {service['metadata'].get('namespace')}/{service['metadata']['name']}: {url}")
        routes = await _httproutes(client)
        if routes:
            print("httproutes:  (the sandbox gateway: each request to one backend, by weight)")
            for line in routes:
                print(f"  {line}")
    return 0


async def _httproutes(client: KubeClient) -> list[str]:
    """`ns/name: URL  backend=weight, ...` for each HTTPRoute (none where the API serves no HTTPRoute)."""
    try:
        items = (await client.listing(constants.GATEWAY_API_VERSION, constants.HTTPROUTES)).get("items", [])
    except ApiError as e:
        if e.status == 404:
            return []
        raise
    lines = []
    for route in items:
        meta = route["metadata"]
        url = (meta.get("annotations") or {}).get(ANNOTATION_URL) or "(no local port: no Gateway parentRef)"
        rules = route.get("spec", {}).get("rules") or []
        weights = " | ".join(
            ", ".join(f"{ref.get('name')}={ref.get('weight', 1)}" for ref in rule.get("backendRefs") or []) or "no backends"
            for rule in rules
        )
        lines.append(f"{meta.get('namespace')}/{meta['name']}: {url}  {weights}")
    return lines
