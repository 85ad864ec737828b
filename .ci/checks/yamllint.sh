#!/usr/bin/env bash
# yamllint on the CRDs, the chart (its templates are Go templates, not YAML:
# they are checked by helm.sh instead), the examples and the YAML in docs/.
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
need yamllint

targets=()
for dir in crds charts examples docs .github; do
    [ -d "$dir" ] && targets+=("$dir")
done
yamllint --strict -c .ci/checks/yamllint.yaml "${targets[@]}"
log "yamllint passed on ${targets[*]}"
