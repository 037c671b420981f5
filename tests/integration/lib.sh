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

# A port nothing listens on, below the kernel's ephemeral range (ip_local_port_range, 32768+ by default): a port
# from that range can be taken between this check and the bind by any outgoing connection of a test running in
# parallel (seen in CI: "Address already in use").
free_port() {
    local p eph lo=20000 hi=32000
    read -r eph _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null && [ "${eph:-0}" -gt 21000 ] && hi=$((eph - 1))
    for _ in $(seq 200); do
        p=$((lo + RANDOM % (hi - lo)))
        if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo $p; return; fi
    done
    echo 0
}

# start_server LOGFILE ENV... -- ARGS...   sets SPID and SPORT; waits for healthz 200 (no token needed). The
# environment's bypass is dropped (a caller that wants it says so in ENV); SERVE_DEFAULTS go before ARGS; the log
# is appended to, so a restart on the same log keeps the first run's lines.
SERVE_DEFAULTS=()
start_server() {
    local log=$1; shift
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    SPORT=$(free_port)
    env -u BYPASS_EXTERNAL_AUTH -u AUTH_BYPASS_EXTERNAL "${envs[@]}" "$BIN" serve --host 127.0.0.1 --port "$SPORT" \
        "${SERVE_DEFAULTS[@]}" "$@" >>"$log" 2>&1 &
    SPID=$!
    PIDS+=("$SPID")
    for _ in $(seq 300); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SPORT/monitoring/healthz")" = 200 ] && return 0
        kill -0 "$SPID" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
