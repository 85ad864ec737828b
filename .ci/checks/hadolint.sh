#!/usr/bin/env bash
# hadolint on every Dockerfile under images/.
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
need hadolint

mapfile -t dockerfiles < <(find images -name Dockerfile -type f | sort)
[ ${#dockerfiles[@]} -gt 0 ] || die "no Dockerfile under images/"
hadolint --no-color "${dockerfiles[@]}"
log "${#dockerfiles[@]} Dockerfiles pass hadolint: ${dockerfiles[*]}"
