"""Benchmark `ascend-mlops train` on the real flower photos (five classes, 1,941 photos, 128x128).

    python benchmarks/train_flowers.py                          # mobilenet_v1, 96x96, 10 epochs
    python benchmarks/train_flowers.py --algorithm resnet_v1_50 --image-size 128 --epochs 5
    python benchmarks/train_flowers.py --data DIR --set batch_size=16

Runs the real command line (as a TrainingJob pod would) from random weights
(nothing is downloaded), then prints validation accuracy (chance is 0.2),
epochs, wall time and training images/s, read back from the summary and
`metrics.json`. The learning rate defaults to 0.05, not the preset's 0.002:
the preset assumes ImageNet-pretrained weights, and from scratch a few epochs
need a larger step.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=FLOWERS)
    parser.add_argument("--algorithm", default="mobilenet_v1")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="more hyperparameters")
    parser.add_argument("--output", type=Path, default=None, help="keep the version here (default: a temporary directory)")
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: not found")

    with tempfile.TemporaryDirectory(prefix="train-flowers-") as tmp:
        output = args.output or Path(tmp) / "out"
        log = Path(tmp) / "termination-log"
        command = [
            sys.executable, "-m", "ascend_mlops", "train",
            "--algorithm", args.algorithm, "--data", str(args.data), "--output", str(output),
            "--set", f"image_size={args.image_size}", "--set", f"epochs={args.epochs}",
            "--set", f"learning_rate={args.learning_rate}",
            *[item for s in args.set for item in ("--set", s)],
            "--termination-log", str(log),
        ]
        print("$", " ".join(command), flush=True)
        started = time.monotonic()
        result = subprocess.run(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=False)
        wall = time.monotonic() - started
        summary = json.loads(log.read_text())
        if result.returncode != 0:
            print(f"training failed with exit code {result.returncode}: {summary.get('error')}")
            return result.returncode
        metrics = json.loads((output / summary["outputVersion"] / "metrics.json").read_text())

    print()
    print(f"dataset            {args.data} ({metrics['train_images']} train / {metrics['validation_images']} validation images, {len(metrics['labels'])} classes)")
    print(f"algorithm          {args.algorithm} at {args.image_size}x{args.image_size}, from random weights")
    print(f"validation accuracy {metrics['accuracy']:.4f}  (chance {1 / len(metrics['labels']):.2f})")
    print(f"validation loss    {metrics['loss']:.4f}")
    print(f"macro precision/recall/f1 {metrics['precision']:.3f} / {metrics['recall']:.3f} / {metrics['f1']:.3f}")
    print(f"epochs             {metrics['epochs']} (best {metrics['best_epoch']}{', stopped early' if metrics['stopped_early'] else ''})")
    print(f"training images/s  {metrics['images_per_second']:.1f}  ({metrics['train_seconds']:.0f}s in training steps)")
    print(f"wall time          {wall:.0f}s (process start to published version)")
    print(f"CPU cores          {len(os.sched_getaffinity(0))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
