#!/usr/bin/env bash
# gpu-prof.sh - per-kernel GPU time of the decode and prefill steps (Nsight Compute, kernels replayed one at a time,
# clocks left as they are). Needs the build of scripts/gpu-check.sh (build-gpu/build/gpu_bench).
#
#   bash scripts/gpu-prof.sh SHAPE [ENV=VALUE...]     e.g. codegen-2B SUGGESTD_CUDA_GEMV=1
#
# TAG names the output files ($OUT/ncu-SHAPE-decode-TAG.csv); PHASES (default "decode prefill") picks the steps.
# Caches are not flushed between kernels (as in a real step). Prints, for one decode step at context 1024 and for
# one 1024-token prefill, each kernel's count, total and mean time in microseconds, and the sum. The sum is GPU time
# only: a graph replay adds the gaps between kernels.
set -u
cd "$(dirname "$0")/.."
SHAPE=$1
shift
B=build-gpu/build
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
OUT=${OUT:-build-gpu/out}
prof() { # label, launch-skip, launch-count, layers
    local f="$OUT/ncu-$SHAPE-$1${TAG:+-$TAG}.csv"
    env SUGGESTD_CUDA_GRAPHS=0 "${ENVS[@]}" "$NCU" --clock-control none --cache-control none --csv --page raw \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum --launch-skip "$2" --launch-count "$3" \
        $B/gpu_bench --shape "$SHAPE" --device cuda --dtype f16 --prompt-tokens 1024 --prefill-chunk 1024 \
        --decode-tokens 8 --contexts 1024 >"$f" 2>"$f.err" || { tail -5 "$f.err"; return 1; }
    python3 - "$f" "$1" "$4" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
hdr = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
h = rows[hdr]; ki = h.index("Kernel Name"); ti = h.index("gpu__time_duration.sum")
bi = h.index("dram__bytes_read.sum") if "dram__bytes_read.sum" in h else -1
num = lambda v: v.replace(',', '').replace('.', '').isdigit()
data = [r for r in rows[hdr + 1:] if len(r) == len(h) and num(r[ti])]
unit = rows[hdr + 1][ti] if not num(rows[hdr + 1][ti]) else "ns"
scale = {"ns": 1e-3, "usecond": 1, "us": 1, "msecond": 1e3, "nsecond": 1e-3}.get(unit, 1e-3)
bunit = rows[hdr + 1][bi] if bi >= 0 and not num(rows[hdr + 1][bi]) else "byte"
bscale = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9}.get(bunit, 1)
us = lambda r: float(r[ti].replace(',', '')) * scale
mb = lambda r: float(r[bi].replace(',', '')) * bscale / 1e6 if bi >= 0 else 0.0
layers = int(sys.argv[3])
# steps covered: LayerNorm runs layers + 1 times a step (ln_1 of each layer, ln_f), as its own kernel or folded into
# the GEMV (gemv_layernorm_kernel, NOTES.md v8)
steps = max(1.0, sum(1 for r in data if "layernorm" in r[ki]) / (layers + 1))
agg = collections.OrderedDict()
for r in data:
    name = r[ki].split("(")[0][:70]
    c, t, b = agg.get(name, (0, 0.0, 0.0))
    agg[name] = (c + 1, t + us(r), b + mb(r))
tot = sum(t for c, t, b in agg.values())
print(f"## {sys.argv[2]}: {len(data)} kernels over {steps:g} step(s), GPU time per step {tot / steps:.1f} us")
for n, (c, t, b) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"  {c / steps:7.1f} x {t / c:8.2f} us = {t / steps:9.1f} us  {b / t:5.2f} TB/s read  {n}")
# one layer in launch order (the second LayerNorm-bearing launch starts layer 1), with each launch's DRAM read rate
starts = [i for i, r in enumerate(data) if "layernorm" in r[ki]]
if len(starts) > 2:
    print("  layer 1, in launch order:")
    for r in data[starts[1]:starts[2]]:
        print(f"    {us(r):8.2f} us {mb(r):8.2f} MB {mb(r) / us(r):5.2f} TB/s  {r[ki].split('(')[0][:60]}")
PY
}
ENVS=("$@")
# launches: 4 prefills (warm-up + median of 3) of ~12 kernels a layer, then 9 decode steps (8 decode tokens and the
# warm-up: since the LayerNorm fold a decode step has one launch a layer fewer, and 4 tokens could end inside the
# window); counts from the layer count
L=$(awk -v s="$SHAPE" 'BEGIN { n["codegen-350M"] = 20; n["codegen-2B"] = 32; n["codegen-6B"] = 33; n["codegen-16B"] = 34; print n[s] }')
PER=$((L * 14 + 8))
for ph in ${PHASES:-decode prefill}; do
    case $ph in
    decode) prof decode $((PER * 5)) $((PER * 2)) $L ;;
    prefill) prof prefill $PER $PER $L ;;
    esac
done
