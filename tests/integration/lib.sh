# lib.sh - what the server-level integration scripts share: their arguments, a scratch dir, background processes
# killed on exit, and the ok/bad/check counters behind the closing "N passed, M failed" line.
# usage (sourced): source lib.sh SUGGESTD MKCKPT SOURCE_DIR
BIN=$(realpath "$1") MKCKPT=$(realpath "$2") SRC=$(realpath "$3")
HERE=$SRC/tests/integration
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; shift; printf '     %s\n' "$@"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name" "$*"; fi; }
