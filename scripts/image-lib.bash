# Shared by scripts/build-images.sh and scripts/check-images.sh (sourced, not run).
#
# Podman as it works on the CI machines: runc (crun refuses their cgroup
# layout), cgroupfs, explicit ulimits (raising limits is not permitted), and a
# storage root of its own so that the stand-in bases never mix with a user's
# images. Everything lives under $ASCEND_MLOPS_IMAGES_STATE, outside the
# repository.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${ASCEND_MLOPS_IMAGES_STATE:-/var/tmp/ascend-mlops-images}"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml" | head -n1)"
# The names the operator and the chart use by default (ascend-mlops/<image>:<version>).
PREFIX="${ASCEND_MLOPS_IMAGE_PREFIX:-ascend-mlops}"
TAG="${ASCEND_MLOPS_IMAGE_TAG:-$VERSION}"
IMAGES=(operator trainer converter server)
# Every podman run/build needs these here.
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

image_ref() { printf '%s/%s:%s' "$PREFIX" "$1" "$TAG"; }

# The Dockerfile of an image: images/<image>/, or the cluster tests' S3 server.
dockerfile_of() {
    if [ "$1" = s3-test ]; then
        echo "$REPO/tests/cluster/s3server/Dockerfile"
    else
        echo "$REPO/images/$1/Dockerfile"
    fi
}

# The default of a global ARG in one of the Dockerfiles.
dockerfile_arg() {
    sed -n "s/^ARG $2=\(.*\)$/\1/p" "$REPO/images/$1/Dockerfile" | head -n1
}

need_tools() {
    local missing=()
    for tool in podman runc "$@"; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: apt-get install podman runc debootstrap"
}

# overlay where the kernel and the filesystem under $STATE allow it, else vfs
# (slow and big, but works everywhere). A storage root keeps its driver.
storage_driver() {
    if [ -n "${ASCEND_MLOPS_IMAGES_STORAGE_DRIVER:-}" ]; then
        echo "$ASCEND_MLOPS_IMAGES_STORAGE_DRIVER"
    elif [ -s "$STATE/storage-driver" ]; then
        cat "$STATE/storage-driver"
    else
        mkdir -p "$STATE"
        local driver=vfs probe="$STATE/probe"
        if podman --root "$probe/storage" --runroot "$probe/run" --storage-driver overlay \
            info >/dev/null 2>&1; then
            driver=overlay
        fi
        rm -rf "$probe"
        echo "$driver" | tee "$STATE/storage-driver"
    fi
}

pm() {
    podman --root "$STATE/storage" --runroot "$STATE/run" --storage-driver "$DRIVER" \
        --runtime runc --cgroup-manager cgroupfs --events-backend file "$@"
}

setup_podman() {
    need_tools "$@"
    mkdir -p "$STATE"
    DRIVER="$(storage_driver)"
}
