#!/usr/bin/env bash
# Build the four images with podman on a machine that reaches no container
# registry (CI does this; see images/README.md, "Build without a registry").
#
#   scripts/build-images.sh [--fresh] [IMAGE...]     # IMAGE: operator trainer converter server
#                                                    # (or s3-test: the cluster tests' S3 server)
#
# 1. Stand-in bases, made with debootstrap from Debian's archive and
#    `podman import`:
#    - python:3.11.11-slim-bookworm (the Dockerfiles' pinned PYTHON_IMAGE, same
#      name and tag): Debian bookworm's python3 (3.11) with pip and venv,
#      `python`/`pip` on PATH and no EXTERNALLY-MANAGED marker, like the
#      official image;
#    - ascend-mlops-ci/no-cann: the same root filesystem standing in for the
#      CANN toolkit and nnrt images. It has NO CANN: the converter and the
#      server are built on it with PIP_EXTRAS=tensorflow (and the converter
#      with REQUIRE_ATC=false) and run with ASCEND_MLOPS_SIMULATOR=1. The
#      production images are the same Dockerfiles on real CANN bases.
# 2. `podman build` of each image from the repository root with the
#    Dockerfiles unchanged (only build arguments), then sizes and build times.
#
# Builds reach the package index with --network=host; the host's CA bundle
# and the host's pip index settings are bind-mounted into each RUN (mounted
# over files the stand-in base already has, so nothing is left in the image).
#
# Environment: ASCEND_MLOPS_IMAGES_STATE (podman storage, debootstrap root,
# reports; default /var/tmp/ascend-mlops-images), ASCEND_MLOPS_IMAGE_PREFIX /
# ASCEND_MLOPS_IMAGE_TAG (default ascend-mlops/<image>:<version>),
# ASCEND_MLOPS_DEBIAN_MIRROR (default: the Debian mirror apt uses here),
# ASCEND_MLOPS_IMAGES_STORAGE_DRIVER (overlay, else vfs).
# --fresh forgets everything under the state directory first (what CI does).
source "$(dirname "${BASH_SOURCE[0]}")/image-lib.bash"

fresh=0
wanted=()
for arg in "$@"; do
    case "$arg" in
        --fresh) fresh=1 ;;
        -h | --help) sed -n '2,/^source/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        operator | trainer | converter | server | s3-test) wanted+=("$arg") ;;
        *) die "unknown argument '$arg' (images: ${IMAGES[*]})" ;;
    esac
done
[ ${#wanted[@]} -gt 0 ] || wanted=("${IMAGES[@]}")

if [ $fresh -eq 1 ] && [ -d "$STATE" ]; then
    log "--fresh: removing $STATE"
    if [ -s "$STATE/storage-driver" ]; then
        DRIVER="$(cat "$STATE/storage-driver")"
        pm rm --all --force >/dev/null 2>&1 || true
    fi
    # Layers a crashed run left mounted.
    findmnt -rn -o TARGET | grep -F "$STATE/" | sort -r | xargs -r umount >/dev/null 2>&1 || true
    rm -rf "$STATE"
fi
setup_podman debootstrap python3

PYTHON_IMAGE="$(dockerfile_arg operator PYTHON_IMAGE)"
NO_CANN_IMAGE="ascend-mlops-ci/no-cann:bookworm"
[ -n "$PYTHON_IMAGE" ] || die "no ARG PYTHON_IMAGE default in images/operator/Dockerfile"
for name in trainer converter server; do
    [ "$(dockerfile_arg "$name" PYTHON_IMAGE)" = "$PYTHON_IMAGE" ] \
        || die "images/$name/Dockerfile pins another PYTHON_IMAGE than images/operator/Dockerfile ($PYTHON_IMAGE)"
done
case "$PYTHON_IMAGE" in
    python:3.11*-bookworm) ;;
    *) die "the stand-in is Debian bookworm's python3 (3.11), but the Dockerfiles pin $PYTHON_IMAGE" ;;
esac

# The Debian mirror apt uses on this machine (deb822 or one-line sources),
# so debootstrap goes where apt goes.
debian_mirror() {
    if [ -n "${ASCEND_MLOPS_DEBIAN_MIRROR:-}" ]; then
        echo "$ASCEND_MLOPS_DEBIAN_MIRROR"
        return
    fi
    python3 - /etc/apt/sources.list /etc/apt/sources.list.d/* <<'PY'
import re, sys
for path in sys.argv[1:]:
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        continue
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
        if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs"):
            print(fields["URIs"].split()[0]); sys.exit()
        for line in stanza.splitlines():
            words = [w for w in line.split() if not w.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
                print(words[1]); sys.exit()
PY
}

make_bases() {
    if pm image exists "$PYTHON_IMAGE" && pm image exists "$NO_CANN_IMAGE"; then
        log "stand-in bases already there: $PYTHON_IMAGE, $NO_CANN_IMAGE"
        return
    fi
    local root="$STATE/rootfs" mirror started=$SECONDS
    mirror="$(debian_mirror)"
    rm -rf "$root" "$root.partial"
    log "debootstrap bookworm (minbase + python3, pip, venv) from ${mirror:-the default mirror of debootstrap}"
    if ! debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        bookworm "$root.partial" ${mirror:+"$mirror"} >"$STATE/debootstrap.log" 2>&1; then
        tail -n 30 "$STATE/debootstrap.log" >&2
        die "debootstrap failed (log: $STATE/debootstrap.log)"
    fi
    # The official python image's interface: `python` and `pip` on PATH, pip
    # allowed to install into the system interpreter (the CANN images are used
    # that way too).
    ln -sf python3 "$root.partial/usr/bin/python"
    [ -e "$root.partial/usr/bin/pip" ] || ln -sf pip3 "$root.partial/usr/bin/pip"
    rm -f "$root.partial"/usr/lib/python3.*/EXTERNALLY-MANAGED
    # Mount points for the build-time pip settings (see pip_conf below): an
    # empty /etc/pip.conf changes nothing for pip.
    : >"$root.partial/etc/pip.conf"
    rm -rf "$root.partial"/var/cache/apt/archives/*.deb "$root.partial"/var/lib/apt/lists/* \
        "$root.partial"/usr/share/doc/* "$root.partial"/usr/share/man/* "$root.partial"/usr/share/locale/*
    mv "$root.partial" "$root"
    tar -C "$root" -c . | pm import \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
        --message "stand-in for $PYTHON_IMAGE: Debian bookworm python3 (debootstrap)" \
        - "$PYTHON_IMAGE" >/dev/null 2>"$STATE/import.log"
    pm tag "$PYTHON_IMAGE" "$NO_CANN_IMAGE"
    rm -rf "$root"
    log "stand-in bases $PYTHON_IMAGE and $NO_CANN_IMAGE (no CANN) in $((SECONDS - started))s"
}

# The host's CA bundle: builds reach the package index through whatever the
# host trusts.
ca_bundle() {
    local candidate
    for candidate in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}" \
        /etc/ssl/certs/ca-certificates.crt; do
        if [ -n "$candidate" ] && [ -f "$candidate" ]; then
            echo "$candidate"
            return
        fi
    done
    die "no CA bundle found (set SSL_CERT_FILE)"
}

# The host's pip index settings (environment and config files), as a pip.conf
# for the builds. Only network locations: a local directory or file:// index
# is not visible inside the build, and the public index has every pinned
# version anyway.
pip_conf() {
    local host_python=python3
    command -v python >/dev/null && python -m pip --version >/dev/null 2>&1 && host_python=python
    "$host_python" - <<'PY'
import subprocess, sys
KEYS = ("index-url", "extra-index-url", "trusted-host", "default-timeout", "timeout", "retries")
try:
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                             text=True, check=False).stdout
except OSError:
    listing = ""
found, from_env = {}, set()
for line in listing.splitlines():
    name, _, value = line.partition("=")
    section, _, key = name.rpartition(".")
    if key not in KEYS or (key in from_env and section != ":env:"):
        continue
    found[key] = value.strip().strip("'\"")
    if section == ":env:":
        from_env.add(key)
skipped = []
for key in ("index-url", "extra-index-url"):
    if key in found:
        urls = found[key].split()
        kept = [u for u in urls if u.startswith(("http://", "https://"))]
        skipped += [u for u in urls if u not in kept]
        found[key] = " ".join(kept)
print("[global]")
for key, value in found.items():
    if value:
        print(f"{key} = {value}")
for url in skipped:
    print(f"# not visible in the build, left out: {url}")
PY
}

build_args_for() {
    case "$1" in
        converter)
            echo "--build-arg=CANN_TOOLKIT_IMAGE=$NO_CANN_IMAGE"
            echo "--build-arg=PIP_EXTRAS=tensorflow"
            echo "--build-arg=REQUIRE_ATC=false"
            ;;
        server)
            echo "--build-arg=CANN_RUNTIME_IMAGE=$NO_CANN_IMAGE"
            echo "--build-arg=PIP_EXTRAS=tensorflow"
            ;;
    esac
}

human_size() { numfmt --to=si --suffix=B --format='%.1f' "$1"; }

make_bases
pip_conf >"$STATE/pip.conf"
CA="$(ca_bundle)"
if grep -q '^# not visible' "$STATE/pip.conf"; then
    log "$(grep '^# not visible' "$STATE/pip.conf" | sed 's/^# //' | paste -sd';' -)"
fi
log "builds use podman $(podman --version | awk '{print $3}'), storage driver $DRIVER, CA bundle $CA"

all_started=$SECONDS
report="$STATE/build-report.tsv"
: >"$report"
for name in "${wanted[@]}"; do
    ref="$(image_ref "$name")"
    mapfile -t extra < <(build_args_for "$name")
    log "building $ref (${name} Dockerfile${extra[*]:+ ${extra[*]}})"
    started=$SECONDS
    # --format docker: podman ignores SHELL (bash -o pipefail) in OCI format.
    if ! pm build "${LIMITS[@]}" --pull=never --network=host --layers --format docker \
        --file "$(dockerfile_of "$name")" --ignorefile "$(dockerfile_of "$name").dockerignore" \
        --volume "$CA:/etc/ssl/certs/ca-certificates.crt:ro" --volume "$STATE/pip.conf:/etc/pip.conf:ro" \
        "${extra[@]}" --tag "$ref" "$REPO" >"$STATE/build-$name.log" 2>&1; then
        tail -n 40 "$STATE/build-$name.log" >&2
        die "building $ref failed (log: $STATE/build-$name.log)"
    fi
    seconds=$((SECONDS - started))
    size="$(pm image inspect --format '{{.Size}}' "$ref")"
    printf '%s\t%s\t%s\t%s\n' "$name" "$ref" "$seconds" "$size" >>"$report"
    log "built $ref in ${seconds}s, $(human_size "$size")"
done

printf '\n%-10s %-34s %8s %10s\n' image reference build size
while IFS=$'\t' read -r name ref seconds size; do
    printf '%-10s %-34s %7ss %10s\n' "$name" "$ref" "$seconds" "$(human_size "$size")"
done <"$report"
log "built ${#wanted[@]} images in $((SECONDS - all_started))s (${SECONDS}s with the stand-in bases)"
