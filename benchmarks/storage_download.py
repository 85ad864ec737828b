"""Dataset download throughput from object storage versus a plain local copy of the same files.

    python benchmarks/storage_download.py                 # the 1,941 flower photos, 3 rounds
    python benchmarks/storage_download.py --workers 1 16 32
    python benchmarks/storage_download.py --large 32        # 8 files of 32 MB: bandwidth

Starts a real S3 server on loopback (moto's server mode, signatures checked),
uploads the dataset into a bucket once, then per round times, side by side:
the trainer's download (`objectstore.download`, what `train --data s3://...`
runs) into a fresh scratch folder, and `shutil.copytree` of the local folder
(the baseline: what a pvc:// dataset costs to read once). Prints MB/s and
files/s for each and the ratio download / local copy (median of the rounds).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
FLOWERS = Path(os.environ.get("ASCEND_MLOPS_FLOWERS", REPO.parent / "shared" / "data" / "flowers"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=FLOWERS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[16])
    parser.add_argument(
        "--large", type=int, default=0, metavar="MB",
        help="instead of --data, a generated dataset of 8 random files of MB megabytes each (bandwidth, not per-file cost)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as generated:
        if args.large:
            args.data = Path(generated) / "large"
            args.data.mkdir()
            for index in range(8):
                (args.data / f"part-{index}.bin").write_bytes(os.urandom(args.large * 1024 * 1024))
        if not args.data.is_dir():
            print(f"no dataset at {args.data}; pass --data DIR", file=sys.stderr)
            return 2
        return _bench(args)


def _bench(args: argparse.Namespace) -> int:
    from tests.s3server import running_s3_server

    from ascend_mlops.workloads import objectstore

    files = [p for p in sorted(args.data.rglob("*")) if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    print(f"dataset {args.data}: {len(files)} files, {total / 1e6:.1f} MB")
    with tempfile.TemporaryDirectory() as work, running_s3_server(Path(work) / "moto.log") as s3:
        os.environ.update(s3.env())
        bucket = s3.make_bucket(f"bench-{uuid.uuid4().hex[:8]}")
        uri = objectstore.parse(f"s3://{bucket}/datasets/flowers")
        started = time.monotonic()
        objectstore.upload_directory(args.data, uri, manifest=False, what="dataset")
        print(f"uploaded once in {time.monotonic() - started:.1f}s")

        results: dict[str, list[float]] = {"local copy": []}
        results.update({f"s3 download, {w} workers": [] for w in args.workers})
        for round_index in range(args.rounds):
            target = Path(work) / f"copy-{round_index}"
            t0 = time.monotonic()
            shutil.copytree(args.data, target)
            results["local copy"].append(time.monotonic() - t0)
            shutil.rmtree(target)
            for workers in args.workers:
                target = Path(work) / f"download-{round_index}-{workers}"
                t0 = time.monotonic()
                objectstore.download(uri, target, what="dataset", workers=workers)
                results[f"s3 download, {workers} workers"].append(time.monotonic() - t0)
                got = sum(1 for p in target.rglob("*") if p.is_file())
                assert got == len(files), f"downloaded {got} of {len(files)} files"
                shutil.rmtree(target)

    baseline = statistics.median(results["local copy"])
    print(f"\n{'method':<26} {'median s':>9} {'MB/s':>9} {'files/s':>9} {'vs local':>9}")
    for name, seconds in results.items():
        median = statistics.median(seconds)
        print(f"{name:<26} {median:>9.2f} {total / 1e6 / median:>9.1f} {len(files) / median:>9.0f} {baseline / median:>9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
