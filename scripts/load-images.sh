#!/usr/bin/env bash
# Load the four images that scripts/build-images.sh built into a node's
# containerd, for a cluster without a registry (see docs/install.md, "Try it
# on a local cluster without a registry"):
#
#   scripts/load-images.sh [IMAGE...]     # IMAGE: operator trainer converter server
#
# The images go into containerd's k8s.io namespace under the names podman gave
# them (localhost/ascend-mlops/<image>:<version>), so a chart installed with
# imageRegistry=localhost and pullPolicy Never (or IfNotPresent) finds them.
# An image whose build is already loaded (same image id) is skipped; the ids
# loaded are kept in $ASCEND_MLOPS_IMAGES_STATE/node-images.
#
# Environment: CTR (default `ctr`; `k3s ctr` on k3s), CTR_NAMESPACE (k8s.io),
# and those of build-images.sh (ASCEND_MLOPS_IMAGES_STATE, ...). For kind:
# `kind load image-archive`, for minikube: `minikube image load` (docs/install.md).
source "$(dirname "${BASH_SOURCE[0]}")/image-lib.bash"

wanted=()
for arg in "$@"; do
    case "$arg" in
        -h | --help) sed -n '2,/^source/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        operator | trainer | converter | server | s3-test) wanted+=("$arg") ;;
        *) die "unknown argument '$arg' (images: ${IMAGES[*]})" ;;
    esac
done
[ ${#wanted[@]} -gt 0 ] || wanted=("${IMAGES[@]}")
setup_podman
read -r -a ctr <<<"${CTR:-ctr}"
command -v "${ctr[0]}" >/dev/null || die "${ctr[0]} not found: run this on the node (containerd's ctr), or set CTR"
ns="${CTR_NAMESPACE:-k8s.io}"
loaded="$STATE/node-images"
touch "$loaded"

present="$("${ctr[@]}" -n "$ns" images ls -q 2>/dev/null || true)"
refs=()
ids=()
for name in "${wanted[@]}"; do
    ref="$(image_ref "$name")"
    pm image exists "$ref" || die "$ref is not built: scripts/build-images.sh $name"
    id="$(pm image inspect --format '{{.Id}}' "$ref")"
    if grep -qxF "localhost/$ref $id" "$loaded" && grep -qxF "localhost/$ref" <<<"$present"; then
        log "localhost/$ref already loaded ($id)"
        continue
    fi
    refs+=("$ref")
    ids+=("$id")
done
[ ${#refs[@]} -gt 0 ] || exit 0

started=$SECONDS
# One archive for all of them: the TensorFlow images share their base layers, written once.
pm save --format docker-archive --multi-image-archive "${refs[@]}" | "${ctr[@]}" -n "$ns" images import - >/dev/null
for i in "${!refs[@]}"; do
    grep -vF "localhost/${refs[$i]} " "$loaded" >"$loaded.new" || true
    echo "localhost/${refs[$i]} ${ids[$i]}" >>"$loaded.new"
    mv "$loaded.new" "$loaded"
done
log "loaded ${refs[*]/#/localhost/} into containerd ($ns) in $((SECONDS - started))s"
