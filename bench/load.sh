#!/usr/bin/env bash
# load.sh - [sched] batching and prefix cache on vs off, in one run: starts `suggestd serve` once per configuration
# on a free loopback port, runs bench/load.c's modes against it, and prints one table with ratios.
#
#   (1) batch16+cache  --max-batch 16 --prefix-cache true     continuous batching with the prefix cache
#   (2) batch16        --max-batch 16 --prefix-cache false    batching alone
#   (3) batch1         --max-batch 1  --prefix-cache false    one request at a time (the baseline of the ratios)
#
# usage: bench/load.sh [--model DIR|tiny] [--seconds S] [--threads N] [--backend cpu|cuda] [--clients C]
#                      [--editors N] [--repeats R] [--modes "editors throughput prefix"] [--out DIR]
#                      [--bin build/suggestd] [--load build/load] [--serve-args "..."] [--load-args "..."]
#
# --model tiny makes the integration tests' tiny random checkpoint (mkckpt 2 64 4 8, f32, seed 7) with a 2048-token
# context instead of their 256, so that the prefix mode's ~1000-token prompt fits; --model small their "slow" one
# (4 256 8 16 2048 f32 11); default models/demo. Run from anywhere; paths are relative to the repository root.
# Every figure of a column comes from one server process; all columns from one run of this script (same machine,
# same load, same copy of the source files: src/ is copied once, since others edit it while this runs).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

model=models/demo seconds=20 threads="" backend="" clients=16 editors=8 repeats=7
modes="editors throughput prefix" out="" bin=build/suggestd loadbin=build/load serve_args="" load_args=""
die() { echo "load.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "$1 needs a value (see the usage at the top of bench/load.sh)"
    case $1 in
        --model) model=$2 ;;
        --seconds) seconds=$2 ;;
        --threads) threads=$2 ;;
        --backend) backend=$2 ;;
        --clients) clients=$2 ;;
        --editors) editors=$2 ;;
        --repeats) repeats=$2 ;;
        --modes) modes=$2 ;;
        --out) out=$2 ;;
        --bin) bin=$2 ;;
        --load) loadbin=$2 ;;
        --serve-args) serve_args=$2 ;;
        --load-args) load_args=$2 ;;
        *) die "unknown option '$1' (see the usage at the top of bench/load.sh)" ;;
    esac
    shift 2
done
for n in "seconds:$seconds" "clients:$clients" "editors:$editors" "repeats:$repeats" "threads:${threads:-0}"; do
    [[ ${n#*:} =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--${n%%:*}: '${n#*:}' is not a number"
done
for m in $modes; do
    case $m in editors | throughput | prefix) ;; *) die "--modes: unknown mode '$m'" ;; esac
done
[ -x "$bin" ] || die "no server binary at $bin (cmake --build build --target suggestd)"
[ -x "$loadbin" ] || die "no load tool at $loadbin (cmake --build build --target load)"
command -v curl >/dev/null || die "curl is required"

if [ -z "$out" ]; then out=$(mktemp -d /tmp/suggestd-load.XXXXXX); fi
mkdir -p "$out" || die "cannot create $out"

# tiny: the tests' tiny checkpoint; small: their "slow" one (about 10 ms a token on one thread), where a prefill
# costs enough to stand out of the HTTP and tokenizing overhead
if [ "$model" = tiny ] || [ "$model" = small ]; then
    [ -x build/mkckpt ] || die "--model $model needs build/mkckpt (cmake --build build --target mkckpt)"
    if [ "$model" = tiny ]; then shape="2 64 4 8 2048 f32 7" what="2 layers, d=64"
    else shape="4 256 8 16 2048 f32 11" what="4 layers, d=256"; fi
    model_desc="$model random checkpoint (mkckpt $shape: $what, context 2048)"
    model=$out/$model
    # shellcheck disable=SC2086
    build/mkckpt "$model" $shape >/dev/null || die "mkckpt failed"
    cp models/codegen-tokenizer/{vocab.json,merges.txt,added_tokens.json,special_tokens_map.json} "$model"/
else
    [ -f "$model/config.json" ] || die "--model: no config.json in '$model'"
    model_desc=$model
fi

# the server binary, copied: others rebuild build/suggestd while this runs, and every column must be one binary
cp "$bin" "$out/suggestd" || die "cannot copy $bin to $out"
bin_desc="$bin ($(stat -c '%y' "$bin" | cut -d. -f1))"
bin=$out/suggestd
# the text the editors type and the prompts are made of: one snapshot for every configuration
mkdir -p "$out/corpus" && (cd src && find . \( -name '*.c' -o -name '*.h' \) -exec cp --parents {} "$out/corpus/" \;) ||
    die "cannot copy src/ to $out/corpus"

SPID=""
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null; }
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000)) # below the ephemeral ports (32768+), which outgoing connections take
        if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "$p"; return; fi
    done
    echo 0
}

# start_server NAME ARGS...: sets SPID and URL; waits for /monitoring/healthz (loading a big model takes a while)
start_server() {
    local name=$1; shift
    local port; port=$(free_port)
    [ "$port" != 0 ] || die "no free loopback port"
    local extra=()
    [ -n "$threads" ] && extra+=(--threads "$threads")
    [ -n "$backend" ] && extra+=(--backend "$backend")
    # shellcheck disable=SC2206 # --serve-args is a word list on purpose
    extra+=($serve_args)
    SUGGESTD_LOG=warn BYPASS_EXTERNAL_AUTH=true "$bin" serve --model "$model" --host 127.0.0.1 --port "$port" \
        "${extra[@]}" "$@" >"$out/$name.server.log" 2>&1 &
    SPID=$!
    URL=http://127.0.0.1:$port
    for _ in $(seq 1200); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/monitoring/healthz")" = 200 ] && return 0
        kill -0 "$SPID" 2>/dev/null || { tail -5 "$out/$name.server.log" >&2; die "server ($name) exited at startup"; }
        sleep 0.1
    done
    die "server ($name) not healthy after 120 s; log: $out/$name.server.log"
}

stop_server() {
    kill "$SPID" 2>/dev/null
    wait "$SPID" 2>/dev/null
    SPID=""
}

configs=(batch16+cache batch16 batch1)
declare -A flags=(
    [batch16+cache]="--max-batch 16 --prefix-cache true"
    [batch16]="--max-batch 16 --prefix-cache false"
    [batch1]="--max-batch 1 --prefix-cache false"
)

echo "model: $model_desc"
echo "server: $bin_desc ${backend:+--backend $backend }${threads:+--threads $threads }$serve_args"
echo "load: --seconds $seconds, throughput --clients $clients, editors --editors $editors, prefix --repeats $repeats"
echo "host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); outputs in $out"
status=0
for c in "${configs[@]}"; do
    # shellcheck disable=SC2086 # the flags are a word list
    start_server "$c" ${flags[$c]}
    : >"$out/$c.results"
    for m in $modes; do
        echo "== $c ($(echo ${flags[$c]})): $m"
        # shellcheck disable=SC2086
        "$loadbin" "$m" --url "$URL" --src "$out/corpus" --seconds "$seconds" --clients "$clients" --editors "$editors" \
            --repeats "$repeats" $load_args >"$out/$c.$m.txt" 2>&1 || status=1
        grep -v '^RESULT ' "$out/$c.$m.txt" | sed 's/^/   /'
        grep '^RESULT ' "$out/$c.$m.txt" | sed 's/^RESULT //' >>"$out/$c.results"
    done
    stop_server
done

# The table: one row per figure, one column per configuration, then each batching column over the baseline.
echo
echo "== comparison (ratios: column / batch1; model: $model_desc)"
rows="throughput_requests_per_s throughput_tokens_per_s throughput_latency_p50_ms throughput_latency_p95_ms
throughput_ttft_p50_ms throughput_mean_batch editors_completed_per_s editors_tokens_per_s editors_sent
editors_completed editors_superseded editors_errors editors_single_latency_p50_ms editors_single_latency_p95_ms
editors_single_latency_p99_ms editors_single_ttft_p50_ms editors_single_ttft_p95_ms editors_single_ttft_p99_ms
editors_multi_latency_p50_ms editors_multi_latency_p95_ms editors_multi_latency_p99_ms editors_multi_ttft_p50_ms
editors_multi_ttft_p95_ms editors_multi_ttft_p99_ms editors_prefix_hit_rate editors_prefix_hit_rate_metrics
editors_mean_batch prefix_first_ttft_ms prefix_second_ttft_ms prefix_ratio prefix_second_cached_tokens"
awk -v rows="$rows" -v out="$out" -v cfgs="${configs[*]}" '
function val(c, k) { return (c SUBSEP k) in v ? v[c, k] : "-" }
function num(x) { return x ~ /^[0-9.e+-]+$/ ? sprintf("%.4g", x) : x }
function ratio(a, b) { return (a ~ /^[0-9.e+-]+$/ && b ~ /^[0-9.e+-]+$/ && b + 0 != 0) ? sprintf("%.2fx", a / b) : "-" }
BEGIN {
    nc = split(cfgs, cs, " ")
    for (i = 1; i <= nc; i++) {
        f = out "/" cs[i] ".results"
        while ((getline line < f) > 0) { split(line, kv, "="); v[cs[i], kv[1]] = kv[2] }
        close(f)
    }
    printf "%-32s", "figure"
    for (i = 1; i <= nc; i++) printf " %14s", cs[i]
    for (i = 1; i < nc; i++) printf " %14s", cs[i] "/" cs[nc]
    printf "\n"
    nr = split(rows, rs, /[ \n]+/)
    for (r = 1; r <= nr; r++) {
        k = rs[r]; any = 0
        for (i = 1; i <= nc; i++) if (val(cs[i], k) != "-") any = 1
        if (!any) continue
        printf "%-32s", k
        for (i = 1; i <= nc; i++) printf " %14s", num(val(cs[i], k))
        for (i = 1; i < nc; i++) printf " %14s", ratio(val(cs[i], k), val(cs[nc], k))
        printf "\n"
    }
    # the [sched] acceptance figures, when their modes ran
    t1 = val(cs[1], "throughput_requests_per_s"); t2 = val(cs[2], "throughput_requests_per_s")
    t3 = val(cs[nc], "throughput_requests_per_s")
    if (t3 != "-")
        printf "\nacceptance: throughput with batching / one at a time = %s (with cache), %s (without); target >= 2x\n",
            ratio(t1, t3), ratio(t2, t3)
    p1 = val(cs[1], "prefix_ratio")
    if (p1 != "-")
        printf "acceptance: extended prompt TTFT / long prompt TTFT with the prefix cache = %s (median); target <= 0.4; " \
               "without the cache %s\n", num(p1), num(val(cs[nc], "prefix_ratio"))
}'
exit $status
