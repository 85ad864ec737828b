"""Benchmark `ascend-mlops train` on the real flower photos: the old recipe against the new one.

    python benchmarks/train_flowers.py                     # mobilenet_v1, 128x128, 3 runs, same budget
    python benchmarks/train_flowers.py --runs tuned        # only the new recipe
    python benchmarks/train_flowers.py --epochs 8 --set batch_size=16   # --set applies to every run

Runs the real command line (as a TrainingJob pod would) once per recipe, from
random weights (nothing is downloaded), on the same data, split, seed, image
size and number of epochs, then prints validation accuracy, macro-F1, wall time
and training images/s side by side, read back from `metrics.json`. The runs:

  modelarts        recipe=modelarts: the preset's documented defaults, learning
                   rate 0.002 (ModelArts' value, meant for pretrained weights),
                   constant, flips only
  modelarts-lr0.05 recipe=modelarts with learning_rate=0.05: what this benchmark
                   ran before the tuned recipe existed (the old trainer was the
                   preset with a from-scratch learning rate)
  tuned            recipe=tuned: the defaults (warm-up + cosine, label smoothing,
                   random resized crops, colour jitter)

One run at a time: with 2 cores, parallel runs only slow each other down.
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
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FLOWERS = Path(os.environ.get("ASCEND_MLOPS_FLOWERS", REPO.parent / "shared" / "data" / "flowers"))

RUNS: dict[str, list[str]] = {
    "modelarts": ["recipe=modelarts"],
    "modelarts-lr0.05": ["recipe=modelarts", "learning_rate=0.05"],
    "tuned": ["recipe=tuned"],
}
DEFAULT_EPOCHS = 8  # 4.1-4.6 min per run on 2 quiet cores (mobilenet_v1, 128x128, 1,554 training photos); 10 took 5.6


def train(args: argparse.Namespace, name: str, tmp: Path) -> dict[str, Any]:
    output = tmp / name
    log = tmp / f"{name}.termination-log"
    sets = [*RUNS[name], f"image_size={args.image_size}", f"epochs={args.epochs}", *args.set]
    command = [
        sys.executable, "-m", "ascend_mlops", "train",
        "--algorithm", args.algorithm, "--data", str(args.data), "--output", str(output),
        "--seed", str(args.seed), *[item for s in sets for item in ("--set", s)],
        "--termination-log", str(log),
    ]
    print(f"\n== {name}\n$", " ".join(command), flush=True)
    started = time.monotonic()
    result = subprocess.run(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=False)
    wall = time.monotonic() - started
    summary = json.loads(log.read_text())
    if result.returncode != 0:
        raise SystemExit(f"{name}: training failed with exit code {result.returncode}: {summary.get('error')}")
    metrics: dict[str, Any] = json.loads((output / summary["outputVersion"] / "metrics.json").read_text())
    metrics["wall_seconds"] = wall
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        (args.keep / f"{name}.metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=FLOWERS)
    parser.add_argument("--algorithm", default="mobilenet_v1")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="every run's (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--runs", nargs="+", choices=list(RUNS), default=list(RUNS), metavar="RUN",
        help=f"which of {', '.join(RUNS)} (default: all, in this order)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="more hyperparameters, every run")
    parser.add_argument("--keep", type=Path, default=None, help="write each run's metrics.json here")
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: not found")

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="train-flowers-") as tmp:
        for name in args.runs:
            results[name] = train(args, name, Path(tmp))

    first = next(iter(results.values()))
    print()
    print(f"dataset    {args.data}: {first['train_images']} train / {first['validation_images']} validation images, "
          f"{len(first['labels'])} classes (chance {1 / len(first['labels']):.2f})")
    print(f"budget     {args.algorithm} at {args.image_size}x{args.image_size}, {args.epochs} epochs, seed {args.seed}, "
          f"from random weights, {len(os.sched_getaffinity(0))} CPU cores"
          + (f", --set {' '.join(args.set)}" if args.set else ""))
    print()
    header = f"{'run':<18} {'accuracy':>8} {'macro-F1':>8} {'val loss':>8} {'epochs':>7} {'best':>4} {'images/s':>8} {'wall':>6}"
    print(header)
    print("-" * len(header))
    for name, m in results.items():
        print(f"{name:<18} {m['accuracy']:>8.4f} {m['f1']:>8.4f} {m['loss']:>8.4f} {m['epochs']:>7} {m['best_epoch']:>4} "
              f"{m['images_per_second']:>8.1f} {m['wall_seconds']:>5.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
