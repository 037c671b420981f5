#!/usr/bin/env bash
# step-trace.sh - the timeline of one decode step of gpu_bench, as the GPU ran it (tests/gpu/step_trace.c, CUPTI:
# kernels are not serialized, so PDL overlap, the branches and the gaps between kernels and steps show as they are).
# Needs the build of scripts/gpu-check.sh and its step_trace target (build-gpu/build/tests/gpu/libstep_trace.so).
#
#   bash scripts/step-trace.sh SHAPE [ENV=VALUE...]       e.g. codegen-2B SUGGESTD_CUDA_ATTN_FOLD=0
#
# BENCH_ARGS: more gpu_bench arguments (--host-logits). TAG names the output ($OUT/trace-SHAPE-TAG.txt, the raw
# records; the printed timeline is also in .step).
# The step printed is the one from the second-to-last cudaGraphLaunch to the last (a steady decode step at context
# 1024, with what the host does between graphs); times in us from that launch call.
set -u
cd "$(dirname "$0")/.."
SHAPE=$1
shift
B=build-gpu/build
OUT=${OUT:-build-gpu/out}
f="$OUT/trace-$SHAPE${TAG:+-$TAG}.txt"
[ -f $B/tests/gpu/libstep_trace.so ] || cmake --build $B --target step_trace >/dev/null ||
    { echo "step-trace: no step_trace target (CUPTI not found?)"; exit 1; }
env "$@" LD_PRELOAD=$PWD/$B/tests/gpu/libstep_trace.so STEP_TRACE_OUT="$f.raw" $B/gpu_bench --shape "$SHAPE" \
    --device cuda --dtype f16 --prompt-tokens 1024 --prefill-chunk 1024 --decode-tokens 16 --contexts 1024 \
    ${BENCH_ARGS:-} |
    grep -E 'decode  |decode /' || { echo "step-trace: gpu_bench failed"; exit 1; }
sort -k2,2n "$f.raw" >"$f" && rm -f "$f.raw"
awk '
function short(n,   m) { # _Z12gemv_kernelILi1EEv... -> gemv_kernel<...>
    if (match(n, /^_Z[0-9]+/)) {
        m = substr(n, 3, RLENGTH - 2) + 0
        return substr(n, RLENGTH + 1, m) substr(n, RLENGTH + 1 + m, 24)
    }
    return n
}
{ line[NR] = $0; if ($1 == "A" && $4 ~ /^cudaGraphLaunch/) gl[++ng] = NR }
END {
    if (ng < 3) { print "step-trace: fewer than 3 graph launches"; exit 1 }
    a = gl[ng - 1]; b = gl[ng]; split(line[a], r0, " "); t0 = r0[2]
    first = 0; last = 0
    for (i = a; i < b; i++) {
        split(line[i], r, " "); s = (r[2] - t0) / 1e3; d = (r[3] - r[2]) / 1e3
        if (r[1] == "K") {
            nm = short(r[9]); printf "%9.2f %8.2f  K s%-3s grid %-6s blk %-5s %s\n", s, d, r[4], r[6], r[7], nm
            if (!first) first = r[2]; if (r[3] > last) last = r[3]
            k = nm; sub(/<.*/, "", k); cnt[k]++; tot[k] += d
        } else if (r[1] == "M") printf "%9.2f %8.2f  M s%-3s %s bytes, kind %s\n", s, d, r[4], r[5], r[6]
        else printf "%9.2f %8.2f  A %s\n", s, d, r[4]
    }
    split(line[b], r, " ")
    printf "\nstep: launch to launch %.2f us; first kernel at %.2f, last kernel ends at %.2f (span %.2f)\n",
        (r[2] - t0) / 1e3, (first - t0) / 1e3, (last - t0) / 1e3, (last - first) / 1e3
    for (k in cnt) printf "  %-36s %4d launches %9.2f us kernel time\n", k, cnt[k], tot[k]
}' "$f" | tee "$f.step"
