#!/usr/bin/env bash
# Run the images built by scripts/build-images.sh as a cluster would, and check
# that each does its job (CI runs this right after the build):
#
#   scripts/check-images.sh
#
# - every image: its USER is numeric and not root, it starts as that user, and
#   with --read-only its root filesystem cannot be written;
# - operator: `ascend-mlops operator --help` in the chart's pod (uid 10001,
#   read-only root, no capabilities, an emptyDir on /tmp);
# - trainer, converter, server: in the pods the operator's own builders make
#   (rendered inside the operator image by scripts/image-pods.py; hostPath
#   file:// storage, ASCEND_MLOPS_SIMULATOR=1 as on a cluster without NPUs):
#   the trainer trains a tiny dataset mounted from the host and writes V001; the
#   converter converts its frozen graph with the ATC simulator; the server
#   serves the result, answers /v2/health/ready and `POST /` with an image,
#   and exits 0 on SIGTERM.
#
# Work files go to a temporary directory under $ASCEND_MLOPS_IMAGES_STATE,
# removed at the end unless ASCEND_MLOPS_IMAGES_KEEP=1.
source "$(dirname "${BASH_SOURCE[0]}")/image-lib.bash"
setup_podman python3

for name in "${IMAGES[@]}"; do
    pm image exists "$(image_ref "$name")" || die "$(image_ref "$name") is not built: run scripts/build-images.sh"
done
OPERATOR="$(image_ref operator)"
TRAINER="$(image_ref trainer)"
CONVERTER="$(image_ref converter)"
SERVER="$(image_ref server)"

WORK="$(mktemp -d "$STATE/check.XXXXXX")"
containers=()
cleanup() {
    local status=$?
    for container in "${containers[@]}"; do
        pm rm --force --time 0 "$container" >/dev/null 2>&1 || true
    done
    if [ "${ASCEND_MLOPS_IMAGES_KEEP:-0}" = 1 ] || [ $status -ne 0 ]; then
        log "work files kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# What every check container gets, whatever else its pod says.
HARDENED=(--read-only --read-only-tmpfs=false --cap-drop=ALL --security-opt=no-new-privileges)

check() { log "ok: $*"; }

# --- every image: non-root, read-only root -----------------------------------
for name in "${IMAGES[@]}"; do
    ref="$(image_ref "$name")"
    user="$(pm image inspect --format '{{.Config.User}}' "$ref")"
    uid="${user%%:*}"
    [[ "$uid" =~ ^[0-9]+$ ]] || die "$ref: USER '$user' is not numeric (runAsNonRoot cannot verify it)"
    [ "$uid" -ne 0 ] || die "$ref: USER is root"
    # No --user: the image's own USER, as a pod without runAsUser gets it.
    out="$(pm run --rm "${LIMITS[@]}" "${HARDENED[@]}" --network=none --entrypoint /bin/sh "$ref" \
        -c 'id -u; if touch /probe 2>/dev/null; then echo root-writable; fi')" || die "$ref: could not start /bin/sh"
    [ "$out" = "$uid" ] || die "$ref: expected to run as uid $uid with a read-only root, got: $out"
    check "$name runs as uid $uid (USER $user) and cannot write its root filesystem"
done

# --- operator: --help in the chart's pod --------------------------------------
help="$(pm run --rm "${LIMITS[@]}" "${HARDENED[@]}" --user 10001:10001 --group-add 10001 \
    --tmpfs /tmp:rw,nosuid,nodev,mode=0777,size=64m --network=none "$OPERATOR" --help)" \
    || die "$OPERATOR --help failed"
grep -qi usage <<<"$help" || die "$OPERATOR --help printed no usage: $help"
check "operator --help"

# The pod a workload would get from the operator, as podman run arguments.
# Pseudo-flags from image-pods.py: @require=PATH is a type Directory hostPath,
# which must exist; @mkdir=UID:GID:PATH a DirectoryOrCreate one. The kubelet
# would create a missing one root-owned with mode 0755, which the pod's uid
# cannot write; docs/operator.md asks for file:// output directories writable
# by uid 1000, so it is created that way here, as a user would prepare it.
render_pod() {
    local line ids path
    pod_args=()
    while IFS= read -r -d '' line; do
        case "$line" in
            @mkdir=*)
                ids="${line#@mkdir=}" && ids="${ids%:*}" && path="${line#@mkdir="$ids":}"
                [ -d "$path" ] || install -d -m 0775 -o "${ids%%:*}" -g "${ids#*:}" "$path"
                ;;
            @require=*) [ -d "${line#@require=}" ] || die "hostPath ${line#@require=} does not exist" ;;
            *) pod_args+=("$line") ;;
        esac
    done < <(pm run --rm "${LIMITS[@]}" "${HARDENED[@]}" --network=none \
        --volume "$REPO/scripts/image-pods.py:/image-pods.py:ro" --entrypoint python "$OPERATOR" \
        /image-pods.py "$@")
    [ ${#pod_args[@]} -gt 0 ] || die "image-pods.py $1 rendered nothing"
}

# Replace the {image} token and run; the rest of the arguments go before it.
run_pod() {
    local image="$1" args=() word
    shift
    for word in "${pod_args[@]}"; do
        [ "$word" = "{image}" ] && args+=("$@" "$image") || args+=("$word")
    done
    pm run "${LIMITS[@]}" "${args[@]}"
}

termination_log() {
    install -m 0666 /dev/null "$WORK/$1.termination-log"
    echo "$WORK/$1.termination-log"
}

show_log() { log "--- $1"; sed 's/^/    /' "$2" >&2; }

# --- trainer -------------------------------------------------------------------
# A tiny dataset (3 classes x 12 images of 32x32 pixels, the shapes of
# tests/helpers.py make_dataset) written with the trainer image's own Pillow,
# into a host directory that the training pod mounts read-only.
install -d -m 0755 "$WORK/data"
pm run --rm "${LIMITS[@]}" "${HARDENED[@]}" --user 0:0 --network=none --volume "$WORK/data:/data:rw" \
    --entrypoint python "$TRAINER" -c '
import numpy as np
from pathlib import Path
from PIL import Image
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:32, 0:32]
masks = {"circle": (xx - 16) ** 2 + (yy - 16) ** 2 < 110, "square": (abs(xx - 16) < 10) & (abs(yy - 16) < 10),
         "stripes": (xx // 4) % 2 == 0}
for (name, mask), colour in zip(masks.items(), [(220, 40, 40), (40, 200, 60), (40, 80, 220)]):
    Path("/data", name).mkdir()
    for n in range(12):
        img = np.full((32, 32, 3), 30.0)
        img[mask] = colour
        img += rng.normal(0, 12, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(f"/data/{name}/{name}_{n:03d}.jpg")
' || die "making the tiny dataset failed"
render_pod training --dataset "file://$WORK/data" --output "file://$WORK/runs" \
    --set epochs=1 --set image_size=32 --set batch_size=8 --termination-log "$(termination_log trainer)"
started=$SECONDS
if ! run_pod "$TRAINER" --rm >"$WORK/trainer.log" 2>&1; then
    show_log "trainer" "$WORK/trainer.log"
    die "the trainer failed"
fi
[ -d "$WORK/runs/V001" ] || { show_log trainer "$WORK/trainer.log"; die "the trainer wrote no V001 under $WORK/runs"; }
frozen="$(find "$WORK/runs/V001" -name '*.pb' -path '*frozen*' | head -n1)"
[ -n "$frozen" ] || die "V001 has no frozen graph: $(ls -R "$WORK/runs/V001")"
[ -s "$WORK/runs/V001/labels.txt" ] || die "V001 has no labels.txt"
grep -q '"V001"' "$WORK/trainer.termination-log" || die "the trainer's termination message names no V001: $(cat "$WORK/trainer.termination-log")"
check "trainer trained the tiny dataset in $((SECONDS - started))s and wrote V001 ($(cd "$WORK/runs/V001" && ls | paste -sd' ' -))"

# --- converter -----------------------------------------------------------------
render_pod conversion --source "file://$(dirname "$frozen")" --input-shape images:1,32,32,3 \
    --termination-log "$(termination_log converter)"
started=$SECONDS
if ! run_pod "$CONVERTER" --rm >"$WORK/converter.log" 2>&1; then
    show_log converter "$WORK/converter.log"
    die "the converter failed"
fi
om="$(find "$WORK/runs/V001" -name '*.om' | head -n1)"
[ -n "$om" ] || { show_log converter "$WORK/converter.log"; die "the converter wrote no .om under V001"; }
grep -q SIMULATOR "$WORK/converter.log" || die "the converter's log does not say it ran the ATC simulator"
check "converter converted $(basename "$(dirname "$frozen")") to ${om#"$WORK/runs/"} on the ATC simulator in $((SECONDS - started))s"

# --- server --------------------------------------------------------------------
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
render_pod inference --model "file://$(dirname "$om")" --labels "file://$WORK/runs/V001/labels.txt" \
    --publish "127.0.0.1:$port" --termination-log "$(termination_log server)"
server="$(run_pod "$SERVER" --detach)" || die "the server did not start"
containers+=("$server")
started=$SECONDS
if ! python3 - "$port" "$WORK/data/circle/circle_000.jpg" "$WORK/runs/V001/labels.txt" <<'PY'; then
import json, sys, time, urllib.error, urllib.request, uuid
port, image, labels = sys.argv[1], sys.argv[2], open(sys.argv[3], encoding="utf-8").read().split()
base = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 180
while True:
    try:
        with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=5) as response:
            if response.status == 200:
                break
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        pass
    if time.monotonic() > deadline:
        sys.exit("the server was not ready within 180 s")
    time.sleep(0.5)
print(f"/v2/health/ready: 200 after {180 - (deadline - time.monotonic()):.0f}s", file=sys.stderr)
boundary = uuid.uuid4().hex
body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"circle.jpg\"\r\n"
        "Content-Type: image/jpeg\r\n\r\n").encode() + open(image, "rb").read() + f"\r\n--{boundary}--\r\n".encode()
request = urllib.request.Request(f"{base}/", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
with urllib.request.urlopen(request, timeout=60) as response:
    answer = json.load(response)
print(f"POST /: {json.dumps(answer)[:300]}", file=sys.stderr)
if answer.get("predicted_label") not in labels:
    sys.exit(f"POST / answered no predicted_label among {labels}: {answer}")
PY
    pm logs "$server" >"$WORK/server.log" 2>&1 || true
    show_log server "$WORK/server.log"
    die "the server did not answer as expected"
fi
check "server answered /v2/health/ready and POST / in $((SECONDS - started))s"
pm stop --time 30 "$server" >/dev/null
exit_code="$(pm inspect --format '{{.State.ExitCode}}' "$server")"
pm logs "$server" >"$WORK/server.log" 2>&1 || true
if [ "$exit_code" != 0 ]; then
    show_log server "$WORK/server.log"
    die "the server exited $exit_code on SIGTERM (expected 0)"
fi
grep -q -i simulat "$WORK/server.log" || die "the server's log does not say it ran on the Ascend simulator"
check "server exited 0 on SIGTERM"
log "all image checks passed"
