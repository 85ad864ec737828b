#!/usr/bin/env bash
# The real cluster of tests/cluster made ready: real-k8s.sh up (../shared/k8s,
# or ASCEND_MLOPS_REAL_K8S), then our four images and the S3 test server's
# loaded into its node's containerd. Idempotent and serialized by a lock: .ci/run
# starts it in the background while the other tests run, and the tests' session
# fixture runs it again (it then waits for the first, and finds all done in a
# second or two). Prints real-k8s.sh's export lines on stdout, the rest on stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
k8s="${ASCEND_MLOPS_REAL_K8S:-$repo/../shared/k8s}"
lock="${ASCEND_MLOPS_CLUSTER_LOCK:-/var/tmp/ascend-mlops-cluster.lock}"

exec 9>"$lock"
flock 9
started=$SECONDS
exports="$("$k8s/real-k8s.sh" up)"
eval "$exports"
"$repo/scripts/build-images.sh" s3-test >&2
"$repo/scripts/load-images.sh" operator trainer converter server s3-test >&2
echo "[prepare] cluster up, images loaded in $((SECONDS - started))s" >&2
printf '%s\n' "$exports"
