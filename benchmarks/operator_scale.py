"""Benchmark the operator at scale: N InferenceServices applied at once, ours next to a minimal Kopf operator.

    python benchmarks/operator_scale.py                 # N = 100, 500, 1000
    python benchmarks/operator_scale.py -n 200 -n 500   # other sizes

For each N and each operator, in the same run and on the same kind of API
server (the sandbox's, in its own process, fresh for every measurement):

1. the operator process starts and opens its watches;
2. N InferenceServices (spec.model.uri on a PVC, no conversion to wait for)
   are created at once (50 in flight);
3. the clock runs until N predictor Deployments exist; then the operator gets
   `--settle` seconds more to finish what it does after creating them (status,
   events).

Printed side by side: seconds to N Deployments, the API requests the operator
made per resource by verb (GET, LIST, WATCH, POST, PATCH, PUT, DELETE) up to
that moment and up to the end of the settle time, and the operator process's
peak RSS. The benchmark's own requests are not counted (they carry their own
User-Agent).

The minimal operator is what a first Kopf operator looks like (MINIMAL below):
one `@kopf.on.create` handler that creates one Deployment per resource with the
kubernetes client, with Kopf's defaults (its progress annotations and its
"handler succeeded" Event). Ours does much more per resource (validation, the model's
resolution, a Service, status conditions, events); the ratio says what that
costs. No pod ever runs: there is no kubelet, the Deployments never get ready.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "default"
USER_AGENT = "operator-scale-benchmark"
VERBS = ("GET", "LIST", "WATCH", "POST", "PATCH", "PUT", "DELETE")

MINIMAL = textwrap.dedent('''
    import asyncio, kopf, kubernetes

    @kopf.on.create("ascend.mlops.dev", "v1alpha1", "inferenceservices")
    async def create(name, namespace, body, **_):
        labels = {"app": name}
        deployment = {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"{name}-predictor", "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
                     "spec": {"containers": [{"name": "server", "image": "ascend-mlops-server"}]}}},
        }
        kopf.adopt(deployment, owner=body)
        api = kubernetes.client.AppsV1Api()
        await asyncio.to_thread(api.create_namespaced_deployment, namespace, deployment)
''')

# The API server subprocess: the sandbox's, with a request counter and a cheap object count.
API_SERVER = textwrap.dedent('''
    import asyncio, collections, json, sys
    import aiohttp.web
    from ascend_mlops.sandbox.apiserver import APIServer, parse_target

    USER_AGENT, port, kubeconfig = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    counts = collections.Counter()

    def verb(request):
        if request.method != "GET":
            return request.method
        if request.query.get("watch") in ("true", "1"):
            return "WATCH"
        target = parse_target(request.path)
        return "LIST" if target is not None and target.name is None else "GET"

    class Counting:
        def __init__(self, inner):
            self.inner = inner
        def __getattr__(self, name):
            return getattr(self.inner, name)
        async def __call__(self, request):
            if request.path == "/_bench/counts":
                return aiohttp.web.json_response(dict(counts))
            if request.path == "/_bench/deployments":
                spec = self.inner.spec_for("apps", "v1", "deployments")
                return aiohttp.web.json_response(sum(1 for _ in self.inner.iter_objects(spec)))
            if request.headers.get("User-Agent") != USER_AGENT:
                counts[verb(request)] += 1
            return await self.inner(request)

    async def main():
        api = APIServer(port=port)
        api.handler = Counting(api.handler)
        await api.start()
        from pathlib import Path
        api.write_kubeconfig(Path(kubeconfig))
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
''')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "ascend.mlops.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"model": {"uri": "pvc://models/flowers/V001/om/model/model.om"}, "runtime": "acl"},
    }


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def measure(which: str, n: int, settle: float, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    kubeconfig = work / "kubeconfig"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    api = subprocess.Popen([sys.executable, "-c", API_SERVER, USER_AGENT, str(port), str(kubeconfig)], stdout=subprocess.PIPE, env=env)
    assert api.stdout is not None and api.stdout.readline().strip() == b"ready", "the API server did not start"
    base = f"http://127.0.0.1:{port}"
    op_env = {**env, "KUBECONFIG": str(kubeconfig), "ASCEND_MLOPS_METRICS_PORT": "0", "ASCEND_MLOPS_HEALTH_PORT": "0"}
    op_env.pop("KUBERNETES_SERVICE_HOST", None)
    if which == "ours":
        command = [sys.executable, "-m", "ascend_mlops", "operator", "--namespace", NAMESPACE]
    else:
        (work / "minimal.py").write_text(MINIMAL)
        command = [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", NAMESPACE, str(work / "minimal.py")]
    log = (work / f"{which}.log").open("wb")
    operator = subprocess.Popen(command, env=op_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession(base, headers={"User-Agent": USER_AGENT}) as http:
            async def counts() -> collections.Counter[str]:
                async with http.get("/_bench/counts") as r:
                    return collections.Counter(await r.json())

            async def deployments() -> int:
                async with http.get("/_bench/deployments") as r:
                    return int(await r.json())

            # Watching: the operator has opened its watch on InferenceServices.
            deadline = time.monotonic() + 60
            while (await counts())["WATCH"] < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # let the other watches open too
            before = await counts()
            semaphore = asyncio.Semaphore(50)

            async def create(i: int) -> None:
                async with semaphore, http.post(
                    f"/apis/ascend.mlops.dev/v1alpha1/namespaces/{NAMESPACE}/inferenceservices", json=service(f"isvc-{i:04d}")
                ) as r:
                    if r.status != 201:
                        raise RuntimeError(f"create isvc-{i}: {r.status} {await r.text()}")

            started = time.monotonic()
            await asyncio.gather(*(create(i) for i in range(n)))
            applied = time.monotonic() - started
            limit = started + max(300.0, n * 1.0)
            while (count := await deployments()) < n:
                if time.monotonic() > limit or operator.poll() is not None:
                    raise RuntimeError(f"{which}: {count} of {n} Deployments after {time.monotonic() - started:.0f}s (see {log.name})")
                await asyncio.sleep(0.2)
            to_deployments = time.monotonic() - started
            at_deployments = await counts() - before
            await asyncio.sleep(settle)
            total = await counts() - before
        rss = peak_rss_mb(operator.pid)
    finally:
        operator.terminate()
        try:
            operator.wait(15)
        except subprocess.TimeoutExpired:
            operator.kill()
        api.kill()
        api.wait()
        log.close()
    return {"which": which, "n": n, "applied": applied, "seconds": to_deployments, "at": at_deployments, "total": total, "rss": rss}


def per_resource(counter: collections.Counter[str], n: int) -> str:
    return " ".join(f"{verb}={counter[verb] / n:.1f}" for verb in VERBS if counter[verb]) or "-"


def report(rows: list[dict[str, Any]]) -> None:
    print()
    print(f"{'N':>5}  {'operator':<8} {'to N Deployments':>17} {'requests/resource':>18} {'(settled)':>10} {'peak RSS':>9}")
    by_n: dict[int, dict[str, dict[str, Any]]] = collections.defaultdict(dict)
    for row in rows:
        by_n[row["n"]][row["which"]] = row
        at, total = sum(row["at"].values()), sum(row["total"].values())
        print(
            f"{row['n']:>5}  {row['which']:<8} {row['seconds']:>16.1f}s {at / row['n']:>18.1f} {total / row['n']:>10.1f} {row['rss']:>7.0f}MB"
        )
        print(f"{'':>15}by verb, to N: {per_resource(row['at'], row['n'])}")
        print(f"{'':>15}by verb, settled: {per_resource(row['total'], row['n'])}")
    print()
    for n, pair in sorted(by_n.items()):
        if "ours" in pair and "minimal" in pair:
            ours, minimal = pair["ours"], pair["minimal"]
            time_ratio = ours["seconds"] / minimal["seconds"]
            req_ratio = sum(ours["at"].values()) / max(sum(minimal["at"].values()), 1)
            settled_ratio = sum(ours["total"].values()) / max(sum(minimal["total"].values()), 1)
            print(
                f"N={n}: ours/minimal time {time_ratio:.2f}x, requests to N {req_ratio:.2f}x, "
                f"requests settled {settled_ratio:.2f}x, RSS {ours['rss']:.0f} vs {minimal['rss']:.0f} MB"
            )
    print(f"CPU cores: {len(os.sched_getaffinity(0))}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, action="append", help="resources per measurement (repeatable; default 100, 500, 1000)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after the N-th Deployment (default %(default)s)")
    parser.add_argument("--only", choices=("ours", "minimal"), help="measure one operator only")
    args = parser.parse_args()
    sizes = args.n or [100, 500, 1000]
    rows = []
    with tempfile.TemporaryDirectory(prefix="operator-scale-") as tmp:
        for n in sizes:
            for which in ("minimal", "ours"):
                if args.only and which != args.only:
                    continue
                print(f"N={n} {which} ...", flush=True)
                row = await measure(which, n, args.settle, Path(tmp) / f"{which}-{n}")
                print(f"  {row['seconds']:.1f}s to {n} Deployments (created in {row['applied']:.1f}s), "
                      f"{sum(row['at'].values())} requests, peak RSS {row['rss']:.0f} MB", flush=True)
                rows.append(row)
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
