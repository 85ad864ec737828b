"""Benchmark `ascend-mlops serve`: server throughput and latency next to the backend's own.

    python benchmarks/serve.py                       # ResNet-50 (random weights), 224x224, tensorflow
    python benchmarks/serve.py --backend acl         # same graph through the pyACL simulator
    python benchmarks/serve.py --model V001/frozen_graph --backend tensorflow

For concurrency 1, 8 and 32 it prints the server's requests/s and p50/p99
latency (real HTTP POST / with a photo, the ModelArts API), and the backend's
own images/s when called directly with batches of 1, 8 and 32 preprocessed
images, measured in the same run on the same machine. It ends with the
server/backend ratio at concurrency 32 and the per-stage time of one request
(from the Server-Timing header).

The client, the server and (for the backend measurement) this process share
the machine's cores, so on a small CPU-only box the client's own cost lowers
the server's numbers; on an Ascend 310 the model runs off the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parent.parent
FLOWERS = Path(os.environ.get("ASCEND_MLOPS_FLOWERS", REPO.parent / "shared" / "data" / "flowers"))
LEVELS = (1, 8, 32)


def build_resnet50(folder: Path, size: int, classes: int) -> Path:
    """A ResNet-50 frozen graph with the trainer's interface (`images` 0..255 -> `logits`), random weights."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    body = tf.keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=classes, classifier_activation=None)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])  # type: ignore[untyped-decorator]
    def forward(images: tf.Tensor) -> tf.Tensor:
        return tf.identity(body(images / 127.5 - 1.0, training=False), name="logits")

    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()  # holds `images` and `logits` nodes, as the trainer's
    (folder / "frozen_graph").mkdir(parents=True, exist_ok=True)
    path = folder / "frozen_graph" / "frozen_graph.pb"
    path.write_bytes(graph_def.SerializeToString())
    (folder / "labels.txt").write_text("\n".join(["daisy", "dandelion", "rose", "sunflower", "tulip"][:classes]) + "\n")
    return path


def write_simulated_om(frozen: Path, out: Path, size: int, classes: int, batches: list[int]) -> Path:
    from ascend_mlops.ascend import simmodel

    header = {
        "socVersion": "Ascend310", "framework": 3,
        "inputs": [{"name": "images", "dims": [-1, size, size, 3], "dataType": "float32", "format": "NHWC", "tensorName": "images:0"}],
        "outputs": [{"name": "logits", "dims": [-1, classes], "dataType": "float32", "format": "ND", "tensorName": "logits:0"}],
        "dynamicBatchSizes": batches,
    }
    out.mkdir(parents=True, exist_ok=True)
    simmodel.write(out / "model.om", simmodel.SimulatedModel(header=header, graph_def=frozen.read_bytes()))
    return out


def photos(count: int) -> list[bytes]:
    files = sorted(FLOWERS.glob("*/*.jpg"))[:count]
    if files:
        return [f.read_bytes() for f in files]
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(buf, "JPEG")
        out.append(buf.getvalue())
    return out


class BackendBench:
    """The backend alone, loaded in this process, timed on batches of preprocessed photos."""

    def __init__(self, backend_name: str, model: Path, images: list[bytes]) -> None:
        from ascend_mlops.workloads.server import processing
        from ascend_mlops.workloads.server.backends import create_backend

        self.backend = create_backend(backend_name, model)
        self.backend.load()
        size = self.backend.input_size
        self.arrays = [processing.to_input(processing.decode(d, size), size) for d in images]

    def images_per_second(self, batch_size: int, seconds: float) -> float:
        batch = np.stack([self.arrays[i % len(self.arrays)] for i in range(batch_size)])
        self.backend.predict(batch)  # warm-up for this shape
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or done < 3 * batch_size:
            self.backend.predict(batch)
            done += batch_size
        return done / (time.perf_counter() - start)

    def close(self) -> None:
        self.backend.close()


async def load_test(
    url: str, images: list[bytes], concurrency: int, requests: int
) -> tuple[float, list[float], list[str], list[int]]:
    latencies: list[float] = []
    timings: list[str] = []
    batches: list[int] = []
    counter = iter(range(requests))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        # Bodies encoded once, so the client spends as little of the shared CPU as it can.
        boundary = "benchboundary"
        bodies = [
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"photo.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n".encode() + image + f"\r\n--{boundary}--\r\n".encode()
            for image in images
        ]
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

        async def worker() -> None:
            for i in counter:
                t0 = time.perf_counter()
                async with http.post(url + "/", data=bodies[i % len(bodies)], headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}: {await response.text()}")
                    timings.append(response.headers.get("Server-Timing", ""))
                    batches.append(int(response.headers.get("X-Batch-Size", "0")))
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return requests / elapsed, latencies, timings, batches


def stage_means(headers: list[str]) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for header in headers:
        for name, dur in re.findall(r"(\w+);dur=([\d.]+)", header):
            values.setdefault(name, []).append(float(dur))
    return {name: statistics.median(v) for name, v in values.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a frozen graph (tensorflow) or .om / model dir (acl); default: build ResNet-50")
    parser.add_argument("--backend", choices=["tensorflow", "acl"], default="tensorflow")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--requests", type=int, default=0, help="requests per concurrency level (default: 4 x concurrency, at least 32)")
    parser.add_argument("--backend-seconds", type=float, default=5.0)
    parser.add_argument("--max-batch-delay-ms", type=float, default=None, help="default: the server's own default")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    model = args.model
    if model is None:
        print(f"building ResNet-50 ({args.image_size}x{args.image_size}, random weights) ...", flush=True)
        frozen = build_resnet50(work / "V001", args.image_size, 5)
        model = frozen.parent
        if args.backend == "acl":
            model = write_simulated_om(frozen, work / "V001" / "om" / "model", args.image_size, 5, [1, 2, 4, 8, 16, 32])
    env = dict(os.environ)
    if args.backend == "acl":
        try:
            import acl  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            env["ASCEND_MLOPS_SIMULATOR"] = os.environ["ASCEND_MLOPS_SIMULATOR"] = "1"

    images = photos(64)
    bench = BackendBench(args.backend, model, images)

    server = subprocess.Popen(
        [sys.executable, "-m", "ascend_mlops", "serve", "--model", str(model), "--backend", args.backend,
         "--host", "127.0.0.1", "--port", "0", "--max-batch-size", str(max(LEVELS)),
         *(["--max-batch-delay-ms", str(args.max_batch_delay_ms)] if args.max_batch_delay_ms is not None else []),
         "--termination-log", str(work / "termination-log"),
         "--log-level", "INFO"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        url = asyncio.run(wait_ready(server))
        rows = []
        stages: dict[str, float] = {}
        for c in LEVELS:
            # Backend alone right before the server at the same size: on a shared machine
            # the load drifts, and adjacent measurements drift least.
            print(f"concurrency {c}: backend alone at batch {c}, then the server ...", flush=True)
            own = bench.images_per_second(c, args.backend_seconds)
            n = args.requests or max(32, 4 * c)
            asyncio.run(load_test(url, images, c, min(n, 2 * c)))  # warm-up
            rps, lat, timings, batches = asyncio.run(load_test(url, images, c, n))
            lat_ms = sorted(x * 1000 for x in lat)
            p50 = lat_ms[len(lat_ms) // 2]
            p99 = lat_ms[min(len(lat_ms) - 1, int(round(0.99 * (len(lat_ms) - 1))))]
            rows.append((c, rps, p50, p99, own, statistics.mean(batches)))
            if c == 1:
                stages = stage_means(timings)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)
        bench.close()

    print()
    print(f"model: {model} ({args.backend}{', pyACL SIMULATOR' if args.backend == 'acl' else ''}), CPU cores: {os.cpu_count()}")
    print(
        f"{'concurrency':>11} {'server req/s':>13} {'p50 ms':>9} {'p99 ms':>9} {'mean batch':>11}"
        f" {'backend img/s @batch':>22} {'ratio':>7}"
    )
    for c, rps, p50, p99, b, mean_batch in rows:
        print(f"{c:>11} {rps:>13.1f} {p50:>9.1f} {p99:>9.1f} {mean_batch:>11.1f} {b:>16.1f} @{c:<4} {rps / b:>7.2f}")
    ratio = rows[-1][1] / rows[-1][4]
    print(f"\nserver/backend ratio at concurrency {LEVELS[-1]}: {ratio:.2f} (goal >= 0.9)")
    print("per-stage time of one request at concurrency 1 (median, ms): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    return 0


def read_port(server: subprocess.Popen[str]) -> int:
    """The port from the server's "listening on" line; a thread keeps draining its output after."""
    found: list[int] = []
    ready = threading.Event()

    def drain() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            match = re.search(r"listening on http://[^:]+:(\d+)", line)
            if match and not found:
                found.append(int(match.group(1)))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(600)
    if not found:
        raise RuntimeError(f"server exited with {server.wait()} before listening")
    return found[0]


async def wait_ready(server: subprocess.Popen[str]) -> str:
    url = f"http://127.0.0.1:{read_port(server)}"
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            async with http.get(url + "/v2/health/ready") as response:
                if response.status == 200:
                    return url
            if server.poll() is not None:
                raise RuntimeError(f"server exited with {server.returncode}")
            await asyncio.sleep(0.2)
    raise RuntimeError("server not ready after 600 s")


if __name__ == "__main__":
    sys.exit(main())
