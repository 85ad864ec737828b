"""Does the input pipeline keep up with the model? Training images/s with the real tf.data
pipeline versus the same training step fed from tensors already in memory.

    python benchmarks/train_input.py                        # mobilenet_v1, 96x96, batch 32, flowers
    python benchmarks/train_input.py --algorithm resnet_v1_50 --image-size 128 --uncached

Both measurements use the trainer's own model, optimizer and distributed train
step at the same batch size, on the real flower photos; the pipeline is the
trainer's (parallel decode and resize, cache, shuffle, batch, flip, prefetch).
The first epoch (decoding into the cache, tracing) is not timed. Rounds
alternate between the two feeds so that a neighbour's load on a shared CPU
hits both alike. Goal: pipeline / in-memory >= 0.9.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOWERS = Path(os.environ.get("ASCEND_MLOPS_FLOWERS", REPO.parent / "shared" / "data" / "flowers"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=FLOWERS)
    parser.add_argument("--algorithm", default="mobilenet_v1")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--uncached", action="store_true", help="also time the pipeline without its cache (decode every step)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from ascend_mlops.workloads.trainer import dataset, params, pipeline, train
    from ascend_mlops.workloads.trainer.distribute import Cluster

    hp = params.hyperparameters({"image_size": args.image_size, "batch_size": args.batch_size, "learning_rate": 0.01})
    config = params.TrainConfig(args.algorithm, args.data, Path("/nonexistent"), 0.8, hp, seed=0, weights=None)
    index = dataset.scan(args.data, size_hint=args.image_size)
    split = dataset.split(index, config.train_ratio, config.seed)
    trainer = train.Trainer(config, len(split.classes), train.make_strategy(Cluster(1, None, 0)))
    epoch_steps = -(-len(split.train) // args.batch_size)

    feeds = {}
    cached = trainer.distribute(pipeline.training_dataset(split.train, args.image_size, args.batch_size, 0, cache=True))
    t0 = time.monotonic()
    trainer.run_steps(cached, epoch_steps)  # fills the cache, traces the step
    print(f"warm-up epoch (decode {len(split.train)} photos into the cache, trace): {time.monotonic() - t0:.1f}s", flush=True)
    feeds["pipeline"] = cached
    batch = next(cached)
    feeds["in-memory"] = itertools.repeat(batch)  # the very same tensors every step: no input work at all
    if args.uncached:
        uncached = trainer.distribute(pipeline.training_dataset(split.train, args.image_size, args.batch_size, 0, cache=False))
        trainer.run_steps(uncached, 2)
        feeds["pipeline, no cache"] = uncached

    rates: dict[str, list[float]] = {name: [] for name in feeds}
    for r in range(args.rounds):
        for name, feed in feeds.items():
            t0 = time.monotonic()
            trainer.run_steps(feed, args.steps)
            rate = args.steps * args.batch_size / (time.monotonic() - t0)
            rates[name].append(rate)
            print(f"round {r + 1}: {name:20s} {rate:7.1f} images/s", flush=True)

    print()
    print(f"{args.algorithm} {args.image_size}x{args.image_size}, batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds, "
          f"{len(os.sched_getaffinity(0))} CPU cores")
    median = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in median.items():
        print(f"{name:20s} {value:7.1f} images/s (median)")
    ratio = median["pipeline"] / median["in-memory"]
    print(f"pipeline / in-memory  {ratio:.3f}  (goal >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
