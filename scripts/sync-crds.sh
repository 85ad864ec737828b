#!/usr/bin/env bash
# Copy the CRDs (crds/, the single source of truth) into the Helm chart, which
# cannot read files outside its own directory. (The wheel needs no copy in git:
# setup.py copies crds/ into it as ascend_mlops/crds/ at build time, and
# tests/sandbox/test_wheel.py checks the wheel's CRDs equal crds/.)
#
#   scripts/sync-crds.sh          # copy crds/*.yaml -> charts/ascend-mlops/files/crds/
#   scripts/sync-crds.sh --check  # fail if the copies differ (CI)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SOURCE=crds
COPY=charts/ascend-mlops/files/crds

shopt -s nullglob
sources=("$SOURCE"/*.yaml)
[ ${#sources[@]} -gt 0 ] || { echo "no CRDs in $SOURCE/" >&2; exit 1; }

if [ "${1:-}" = "--check" ]; then
    status=0
    for src in "${sources[@]}"; do
        dst="$COPY/$(basename "$src")"
        if ! cmp -s "$src" "$dst"; then
            echo "$dst differs from $src" >&2
            status=1
        fi
    done
    for dst in "$COPY"/*.yaml; do
        if [ ! -e "$SOURCE/$(basename "$dst")" ]; then
            echo "$dst has no counterpart in $SOURCE/" >&2
            status=1
        fi
    done
    if [ $status -ne 0 ]; then
        echo "The chart's CRDs drifted from crds/: run scripts/sync-crds.sh and commit the result." >&2
        exit 1
    fi
    echo "chart CRDs match crds/ (${#sources[@]} files)"
    exit 0
fi

mkdir -p "$COPY"
for dst in "$COPY"/*.yaml; do
    [ -e "$SOURCE/$(basename "$dst")" ] || rm -v "$dst"
done
for src in "${sources[@]}"; do
    cp "$src" "$COPY/"
done
echo "copied ${#sources[@]} CRDs to $COPY/"
