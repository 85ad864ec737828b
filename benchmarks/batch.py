"""Benchmark `ascend-mlops predict`: images/s of a batch shard next to the raw backend, same batch size, same run.

    python benchmarks/batch.py                                   # trains resnet_v1_50 at 96px for 1 epoch first
    python benchmarks/batch.py --algorithm mobilenet_v1 --image-size 64   # a tiny model: host-bound worst case
    python benchmarks/batch.py --model V001/frozen_graph         # a model the trainer wrote
    python benchmarks/batch.py --backend acl --model V001/om/model   # a converted .om (simulator: ASCEND_MLOPS_SIMULATOR=1)

Input: the flowers photos (../shared/data/flowers, read in place, never copied).

* backend: `backend.predict` on batches of already decoded and resized images
  (in this process): the ceiling, the device's own speed.
* predict: the real `ascend-mlops predict` as a subprocess, one shard over the
  whole folder into a fresh output folder, with 1 and 2 decode threads; its
  images/s is the prediction phase (first image read to last result written,
  as in its summary), not the process start or the model load.

The ratio predict/backend is the cost of reading, decoding and writing that
the pipeline does not hide behind the device. On a CPU-only box decoding and
the TensorFlow backend share the same cores; on an Ascend 310 the model runs
off the CPU. So a second table runs the same pipeline (`ShardRunner`, in
process) against an off-CPU device: a backend that sleeps, per batch, the
time the raw backend measured for that batch size -- what an NPU looks like
to the host.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOWERS = Path(os.environ.get("ASCEND_MLOPS_FLOWERS", REPO.parent / "shared" / "data" / "flowers"))
THREADS = (1, 2)


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def train(data: Path, folder: Path, algorithm: str, size: int) -> Path:
    log = folder / "train.termination-log"
    args = [
        sys.executable, "-m", "ascend_mlops", "train", "--algorithm", algorithm, "--data", str(data),
        "--output", str(folder / "train"), "--set", "epochs=1", "--set", f"image_size={size}", "--set", "batch_size=32",
        "--termination-log", str(log),
    ]
    print(f"training {algorithm} at {size}px for 1 epoch on {data} ...", flush=True)
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env=_env())
    if result.returncode != 0:
        raise SystemExit(f"training failed ({result.returncode}):\n{result.stderr[-3000:]}")
    summary = json.loads(log.read_text())
    print(f"trained in {time.perf_counter() - started:.0f}s: {summary['outputVersion']}, accuracy {summary['metrics'].get('accuracy')}")
    return folder / "train" / summary["outputVersion"] / "frozen_graph"


def raw_backend(backend_name: str, model: Path, data: Path, batch: int, repeats: int) -> tuple[float, int, int]:
    """images/s of backend.predict on preprocessed batches; (rate, images, effective batch)."""
    import numpy as np

    from ascend_mlops.workloads.batch import inputs
    from ascend_mlops.workloads.server import processing
    from ascend_mlops.workloads.server.backends import create_backend

    items = inputs.list_inputs(str(data))
    backend = create_backend(backend_name, model)
    backend.load()
    try:
        cap = backend.max_batch_size
        batch = min(batch, cap) if cap else batch
        arrays = []
        for item in items:
            try:
                arrays.append(processing.prepare(inputs.read_image(item), backend.input_size))
            except Exception:  # noqa: BLE001 - a bad photo is skipped here, a FAILED line in predict
                continue
        stacked = [np.stack(arrays[i : i + batch]) for i in range(0, len(arrays), batch)]
        backend.predict(stacked[0])  # warm up
        best = 0.0
        for _ in range(repeats):
            started = time.perf_counter()
            for chunk in stacked:
                backend.predict(chunk)
            best = max(best, len(arrays) / (time.perf_counter() - started))
        return best, len(arrays), batch
    finally:
        backend.close()


class OffCpuDevice:
    """A Backend stand-in whose predict takes `seconds` per batch without using the CPU (an NPU's view from the host)."""

    def __init__(self, seconds_per_batch: float, size: tuple[int, int], classes: int, batch: int) -> None:
        self.seconds = seconds_per_batch
        self.input_size = size
        self.num_classes = classes
        self.max_batch_size = batch

    def predict(self, images: object) -> object:
        import numpy as np

        time.sleep(self.seconds)
        return np.zeros((len(images), self.num_classes), np.float32)  # type: ignore[arg-type]


def off_cpu(data: Path, rate: float, batch: int, threads: int, folder: Path) -> tuple[float, float]:
    """(device-only images/s, pipeline images/s) with a device as fast as `rate` that leaves the CPU free."""
    from ascend_mlops.workloads.batch import inputs
    from ascend_mlops.workloads.batch.runner import Counts, Layout, ShardRunner
    from ascend_mlops.workloads.batch.store import LocalOutput

    items = inputs.list_inputs(str(data))
    device = OffCpuDevice(batch / rate, (64, 64), 5, batch)
    started = time.perf_counter()
    for _ in range(0, len(items), batch):
        device.predict(range(batch))
    alone = len(items) / (time.perf_counter() - started)
    runner = ShardRunner(LocalOutput(folder / f"offcpu-{threads}"), Layout("bench"), batch_size=batch, top_k=5,
                         decode_threads=threads, progress=lambda line: None)
    counts = Counts(total=len(items))
    runner.predict(device, [str(i) for i in range(5)], items, counts)  # type: ignore[arg-type]
    return alone, counts.rate


def cli_predict(backend: str, model: Path, data: Path, batch: int, threads: int, folder: Path) -> dict[str, object]:
    out = folder / f"out-{threads}-{time.monotonic_ns()}"
    log = out.parent / f"{out.name}.termination-log"
    args = [
        sys.executable, "-m", "ascend_mlops", "predict", "--model", str(model), "--backend", backend,
        "--input", str(data), "--output", str(out), "--shard", "0/1", "--task-id", "bench", "--batch-size", str(batch),
        "--decode-threads", str(threads), "--termination-log", str(log),
    ]
    result = subprocess.run(args, capture_output=True, text=True, env=_env())
    if result.returncode != 0:
        raise SystemExit(f"predict failed ({result.returncode}):\n{result.stderr[-3000:]}")
    summary: dict[str, object] = json.loads(log.read_text())
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="frozen graph / saved model (tensorflow) or .om (acl)")
    parser.add_argument("--backend", default="tensorflow", choices=["tensorflow", "acl"])
    parser.add_argument("--data", type=Path, default=FLOWERS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--algorithm", default="resnet_v1_50", help="the seed's model (default)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2, help="passes of the raw backend over all images (best kept)")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"no photos at {args.data} (set ASCEND_MLOPS_FLOWERS)")
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        folder = Path(tmp)
        model = args.model or train(args.data, folder, args.algorithm, args.image_size)
        rows = []
        for threads in THREADS:
            rate, images, batch = raw_backend(args.backend, model, args.data, args.batch_size, args.repeats)
            summary = cli_predict(args.backend, model, args.data, args.batch_size, threads, folder)
            rows.append((threads, batch, images, rate, summary))
        emulated = [(threads, *off_cpu(args.data, rows[0][3], rows[0][1], threads, folder)) for threads in THREADS]
    print()
    print(f"model {args.model or f'{args.algorithm} {args.image_size}px (trained above)'}, backend {args.backend}, "
          f"{os.cpu_count()} CPUs, input {args.data}")
    print(f"{'decode threads':>14} {'batch':>5} {'images':>6} {'backend img/s':>13} {'predict img/s':>13} {'ratio':>6}  manifest")
    for threads, batch, images, rate, summary in rows:
        ips = float(summary["imagesPerSecond"])  # type: ignore[arg-type]
        counts = f"{summary['succeeded']} ok / {summary['failed']} failed"
        print(f"{threads:>14} {batch:>5} {images:>6} {rate:>13.1f} {ips:>13.1f} {ips / rate:>6.2f}  {counts}")
    best = max(float(r[4]["imagesPerSecond"]) / r[3] for r in rows)  # type: ignore[arg-type]
    print(f"\nbest ratio predict/backend: {best:.2f} (goal >= 0.90)")
    print(f"\nsame pipeline, device off the CPU (sleeps {1000 * rows[0][1] / rows[0][3]:.1f} ms per batch of {rows[0][1]}):")
    print(f"{'decode threads':>14} {'device img/s':>13} {'predict img/s':>13} {'ratio':>6}")
    for threads, alone, piped in emulated:
        print(f"{threads:>14} {alone:>13.1f} {piped:>13.1f} {piped / alone:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
