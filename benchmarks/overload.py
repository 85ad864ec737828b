"""Overload: does latency of accepted requests stay bounded at 4x the server's capacity?

    python benchmarks/overload.py                      # ResNet-50 (random weights) 128x128, tensorflow, ~3 min
    python benchmarks/overload.py --backend acl        # the same graph on the pyACL simulator
    python benchmarks/overload.py --seconds 10 --image-size 96

It starts the real server (`python -m ascend_mlops serve`, a subprocess) and
1. measures its capacity: closed loop, 32 clients posting photos (`POST /`) for
   `--capacity-seconds`; capacity = answered requests per second;
2. drives it open loop (Poisson arrivals at a fixed rate, independent of the
   answers, as real clients behave) for `--seconds`, each run on a fresh
   server: at `--reference` (0.5x) capacity with the server's default
   `--max-queue` (the latency with headroom), then at `--overload` (4x) with
   the default `--max-queue`, with a small one (`--small-queue`), and with the
   bound effectively removed (`--max-queue 1000000`: the baseline, a server
   without a bounded queue);
3. samples `ascend_mlops_server_inflight_requests` (the autoscaling metric)
   from /metrics every 0.25 s while the load runs.

Every fresh server is warmed up first (a short closed loop). Latency is measured from the moment a request was due, not when the client
got around to sending it (no coordinated omission). It prints, per run: the
offered and answered rates, the share of 503s (each must carry Retry-After),
p50/p99 of the accepted (200) requests, p99 of those sent in the last quarter
of the run (growing without a bound is visible there), the 503s' own p50, and
the in-flight gauge's mean and maximum. Requests still unanswered
`--drain-seconds` after the load stops are cancelled and counted.

Client and server share the machine's cores; on a small box the client's own
cost lowers the capacity a little, the same in every run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ascend_mlops.workloads.server.config import DEFAULT_MAX_QUEUE  # noqa: E402
from serve import build_resnet50, photos, read_port, write_simulated_om  # noqa: E402

INFLIGHT = "ascend_mlops_server_inflight_requests"
CAPACITY_CLIENTS = 32  # 4 full batches of 8 in flight: the server is never idle
SAMPLE_SECONDS = 0.25
WARMUP_SECONDS = 2.0
UNBOUNDED = 1_000_000
BOUNDARY = "overloadboundary"


@dataclass
class Run:
    label: str
    queue: str
    offered: float
    seconds: float
    sent: int = 0
    ok: list[tuple[float, float]] = field(default_factory=list)  # (due time from start, latency s)
    ok_during_load: int = 0  # 200s answered before the load stopped
    rejected: list[float] = field(default_factory=list)  # latency of the 503s
    missing_retry_after: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    unanswered: int = 0
    inflight: list[float] = field(default_factory=list)
    elapsed: float = 0.0


def bodies(images: list[bytes]) -> list[bytes]:
    return [
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"photo.jpg\"\r\n"
        f"Content-Type: image/jpeg\r\n\r\n".encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()
        for image in images
    ]


HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Server:
    """`ascend-mlops serve` in a subprocess, on a free port."""

    def __init__(self, model: Path, backend: str, max_queue: int, work: Path, env: dict[str, str], extra: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ascend_mlops", "serve", "--model", str(model), "--backend", backend,
             "--host", "127.0.0.1", "--port", "0", "--max-queue", str(max_queue),
             "--termination-log", str(work / "termination-log"), "--log-level", "INFO", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self.url = ""

    async def ready(self) -> str:
        loop = asyncio.get_running_loop()
        port = await loop.run_in_executor(None, read_port, self.process)
        self.url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                async with http.get(self.url + "/v2/health/ready") as response:
                    if response.status == 200:
                        return self.url
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}")
                await asyncio.sleep(0.2)
        raise RuntimeError("server not ready after 600 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


async def capacity(url: str, payloads: list[bytes], seconds: float) -> float:
    done = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        stop_at = time.perf_counter() + seconds

        async def client(i: int) -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                async with http.post(url + "/", data=payloads[(i + done) % len(payloads)], headers=HEADERS) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status} in the closed loop: {await response.text()}")
                done += 1

        # Warm-up (graph optimisation on the first batches), then the measurement.
        warm_until = time.perf_counter() + min(3.0, seconds / 2)
        while time.perf_counter() < warm_until:
            async with http.post(url + "/", data=payloads[0], headers=HEADERS) as response:
                await response.read()
        stop_at = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(CAPACITY_CLIENTS)))
        return done / (time.perf_counter() - started)


async def sample_inflight(http: aiohttp.ClientSession, url: str, run: Run, stop: asyncio.Event) -> None:
    pattern = re.compile(rf"^{INFLIGHT} ([0-9.e+]+)$", re.MULTILINE)
    while not stop.is_set():
        try:
            async with http.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as response:
                match = pattern.search(await response.text())
            if match:
                run.inflight.append(float(match.group(1)))
        except (aiohttp.ClientError, TimeoutError):
            pass
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)
        except TimeoutError:
            pass


async def open_loop(url: str, payloads: list[bytes], run: Run, drain_seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    # One session for the load (no connection limit: an open loop never waits for a free connection),
    # another for /metrics, so that the sampler never queues behind the load's connections.
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
        aiohttp.ClientSession() as scrape,
    ):
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_inflight(scrape, url, run, stop))
        start = loop.time()
        end = start + run.seconds

        async def one(due: float, index: int) -> None:
            try:
                async with http.post(url + "/", data=payloads[index % len(payloads)], headers=HEADERS) as response:
                    await response.read()
                    latency = loop.time() - due
                    if response.status == 200:
                        run.ok.append((due - start, latency))
                        if loop.time() <= end:
                            run.ok_during_load += 1
                    elif response.status == 503:
                        run.rejected.append(latency)
                        if "Retry-After" not in response.headers:
                            run.missing_retry_after += 1
                    else:
                        run.errors[str(response.status)] = run.errors.get(str(response.status), 0) + 1
            except aiohttp.ClientError as exc:
                name = exc.__class__.__name__
                run.errors[name] = run.errors.get(name, 0) + 1

        tasks: list[asyncio.Task[None]] = []
        due = start
        while True:
            due += rng.expovariate(run.offered)
            if due >= end:
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, len(tasks))))
        run.sent = len(tasks)
        _, pending = await asyncio.wait(tasks, timeout=drain_seconds) if tasks else (set(), set())
        run.elapsed = loop.time() - start
        stop.set()
        for task in pending:
            task.cancel()
        run.unanswered = len(pending)
        await asyncio.gather(*pending, return_exceptions=True)
        await sampler


def print_table(runs: list[Run], cap: float, model: str) -> None:
    print()
    print(f"model: {model}; capacity (closed loop, {CAPACITY_CLIENTS} clients): {cap:.1f} req/s; CPU cores: {os.cpu_count()}")
    header = (
        f"{'load':<5} {'--max-queue':<12} {'offered/s':>9} {'sent':>6} {'200/s':>7} {'503 %':>6} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'p99 last 1/4':>12} {'503 p50 ms':>10} {'in-flight mean':>14} {'max':>6} {'unanswered':>10}"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        latencies = [lat * 1000 for _, lat in run.ok]
        last = [lat * 1000 for due, lat in run.ok if due >= 0.75 * run.seconds]
        share = 100.0 * len(run.rejected) / run.sent if run.sent else 0.0
        inflight_mean = statistics.mean(run.inflight) if run.inflight else float("nan")
        inflight_max = max(run.inflight) if run.inflight else float("nan")
        print(
            f"{run.label:<5} {run.queue:<12} {run.offered:>9.1f} {run.sent:>6} {run.ok_during_load / run.seconds:>7.1f} {share:>6.1f}"
            f" {percentile(latencies, 0.5):>8.0f} {percentile(latencies, 0.99):>8.0f} {percentile(last, 0.99):>12.0f}"
            f" {percentile([r * 1000 for r in run.rejected], 0.5):>10.1f} {inflight_mean:>14.1f} {inflight_max:>6.0f}"
            f" {run.unanswered:>10}"
        )
        notes = []
        if run.errors:
            notes.append("errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(run.errors.items())))
        if run.missing_retry_after:
            notes.append(f"{run.missing_retry_after} 503s WITHOUT Retry-After")
        if run.unanswered:
            notes.append(f"{run.unanswered} requests unanswered after the drain (latency > the drain time)")
        for note in notes:
            print(f"      ^ {note}")
    print("\n200/s: accepted answers per second while the load ran (the server's throughput under it); p50/p99:")
    print("latency of every accepted request, including those answered after the load stopped; p99 last 1/4:")
    print("of the accepted requests due in the last quarter of the run. 503 %: share of the sent requests")
    print("refused with 503 + Retry-After. in-flight: the server's gauge, sampled every 0.25 s during the load.")


async def measure(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(tempfile.mkdtemp(prefix="overload-bench-"))
    model = args.model
    if model is None:
        print(f"building ResNet-50 ({args.image_size}x{args.image_size}, random weights) ...", flush=True)
        frozen = build_resnet50(work / "V001", args.image_size, 5)
        model = frozen.parent
        if args.backend == "acl":
            model = write_simulated_om(frozen, work / "V001" / "om" / "model", args.image_size, 5, [1, 2, 4, 8])
    env = dict(os.environ)
    if args.backend == "acl":
        env["ASCEND_MLOPS_SIMULATOR"] = "1"
    payloads = bodies(photos(64))
    extra = ["--max-batch-size", str(args.max_batch_size)]

    async def on_fresh_server(max_queue: int) -> Server:
        server = Server(model, args.backend, max_queue, work, env, extra)
        await server.ready()
        # TensorFlow optimises the graph on the first call of each batch size: not part of any run.
        await capacity(server.url, payloads, WARMUP_SECONDS)
        return server

    print("capacity: closed loop ...", flush=True)
    server = await on_fresh_server(args.max_queue)
    try:
        cap = await capacity(server.url, payloads, args.capacity_seconds)
    finally:
        server.stop()
    print(f"capacity: {cap:.1f} req/s", flush=True)

    default = f"{args.max_queue} (default)" if args.max_queue == DEFAULT_MAX_QUEUE else str(args.max_queue)
    over = f"{args.overload:g}x"
    plan = [
        (f"{args.reference:g}x", args.reference, args.max_queue, default),
        (over, args.overload, args.max_queue, default),
        (over, args.overload, args.small_queue, str(args.small_queue)),
        (over, args.overload, UNBOUNDED, "none (1e6)"),
    ]
    runs = []
    for seed, (label, factor, max_queue, queue_label) in enumerate(plan):
        run = Run(label, queue_label, cap * factor, args.seconds)
        print(f"{label} load ({run.offered:.0f} req/s for {args.seconds:g} s), --max-queue {max_queue} ...", flush=True)
        server = await on_fresh_server(max_queue)
        try:
            await open_loop(server.url, payloads, run, args.drain_seconds, seed)
        finally:
            server.stop()
        runs.append(run)
    backend = f"{args.backend}{', pyACL SIMULATOR' if args.backend == 'acl' else ''}"
    print_table(runs, cap, f"{model} ({backend}), --max-batch-size {args.max_batch_size}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a frozen graph dir (tensorflow) or .om / model dir (acl); default: build ResNet-50")
    parser.add_argument("--backend", choices=["tensorflow", "acl"], default="tensorflow")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=15.0, help="open-loop load per run (default: %(default)s)")
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--overload", type=float, default=4.0, help="offered load as a multiple of capacity (default: %(default)s)")
    parser.add_argument("--reference", type=float, default=0.5, help="the reference run's load, a multiple of capacity (default: %(default)s)")
    parser.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE, help="the bounded runs' --max-queue (default: the server's, %(default)s)")
    parser.add_argument("--small-queue", type=int, default=32, help="a second, smaller bound (default: %(default)s)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="(default: the server's, %(default)s)")
    parser.add_argument("--drain-seconds", type=float, default=90.0, help="wait for answers after the load stops (default: %(default)s)")
    args = parser.parse_args()
    return asyncio.run(measure(args))


if __name__ == "__main__":
    sys.exit(main())
