#!/usr/bin/env bash
# Argo CD health checks (docs/argocd/<group>/<Kind>/health.lua) against their
# sample resources, with Debian's lua5.1 (the dialect Argo CD embeds).
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
need lua5.1

cases="$(mktemp --suffix=.lua)"
trap 'rm -f "$cases"' EXIT
python3 scripts/argocd-health-cases.py docs/argocd >"$cases"
lua5.1 scripts/argocd-health-test.lua "$cases"
python3 scripts/sync-argocd-health.py --check
