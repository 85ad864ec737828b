# Shared by the .ci/checks/*.sh scripts: repository root, tool directory, logging.
# Sourced, not executed (hence not *.sh: .ci/run executes every .ci/checks/*.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$ROOT/.ci/tools"
TOOLS_BIN="$TOOLS/bin"
export PATH="$TOOLS_BIN:$PATH"
cd "$ROOT"

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Make sure the named tools are in .ci/tools/bin (or on PATH for lua5.1);
# tools.sh is a no-op for the ones already there.
need() { "$ROOT/.ci/checks/tools.sh" "$@"; }
