#!/usr/bin/env bash
# The Helm chart: `helm lint --strict` and `helm template` with the default
# values and with each charts/ascend-mlops/ci/*-values.yaml, every rendered
# object validated against Kubernetes' JSON schemas (kubernetes-validate, the
# schemas ship in the PyPI package) for the oldest and newest Kubernetes the
# chart supports. Also checks that the chart's CRDs match crds/.
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
need helm kubernetes-validate

CHART=charts/ascend-mlops
# Oldest (Chart.yaml kubeVersion) and newest Kubernetes with bundled schemas.
K8S_VERSIONS=(1.25.0 1.37.0)
NAMESPACE=ascend-mlops-system

scripts/sync-crds.sh --check

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

value_sets=("")
for file in "$CHART"/ci/*-values.yaml; do
    [ -e "$file" ] && value_sets+=("$file")
done

for values in "${value_sets[@]}"; do
    name="$(basename "${values:-default}" .yaml)"
    args=()
    [ -n "$values" ] && args=(--values "$values")
    log "helm lint --strict ($name)"
    helm lint --strict --quiet "${args[@]}" "$CHART"
    log "helm template ($name)"
    helm template ascend-mlops "$CHART" --namespace "$NAMESPACE" "${args[@]}" >"$out/$name.yaml"
    for version in "${K8S_VERSIONS[@]}"; do
        # ServiceMonitor has no schema in the bundle: kubernetes-validate warns
        # and passes it; tests/chart checks its fields instead.
        kubernetes-validate --strict --quiet --kubernetes-version "$version" "$out/$name.yaml"
    done
    log "$name: $(grep -c '^kind:' "$out/$name.yaml") objects valid for Kubernetes ${K8S_VERSIONS[*]}"
done
