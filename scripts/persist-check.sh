#!/usr/bin/env bash
# persist-check.sh - the persistent decode kernel (cuda_persist.cu, NOTES.md v17) in one device call, for changes to
# it: build (gpu-check.sh's, benchmarks only), its parity test alone under a timeout (a wrong grid barrier hangs
# rather than fails), the goldens through it, compute-sanitizer (memcheck, racecheck, synccheck), 350M decode with
# and without it in the same call, its phase times (SUGGESTD_PERSIST_TRACE=1) and one step's timeline.
#
#   bash scripts/persist-check.sh            (on the GPU machine; carry .gpu-deps)
#
# Output in $OUT (build-gpu/out elsewhere): persist.log, and the trace as scripts/step-trace.sh writes it.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/build-gpu/out}
mkdir -p "$OUT"
B=build-gpu/build
exec > >(tee "$OUT/persist.log") 2>&1
[ -x $B/gpu_bench ] || SKIP_TESTS=1 SKIP_HF=1 SKIP_MEMCHECK=1 BASELINE="" CONTEXTS=1024 \
    bash scripts/gpu-check.sh codegen-350M >/dev/null 2>&1
cmake --build $B --target test_gpu_parity test_gpu_golden gpu_bench step_trace -j"$(nproc)" 2>&1 | grep -E "error" ||
    true
export LD_LIBRARY_PATH=$PWD/build-gpu/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name --format=csv,noheader
run() { # timeout seconds, label, command...
    local t=$1 l=$2
    shift 2
    timeout "$t" "$@" >"$OUT/step.txt" 2>&1
    local rc=$?
    echo "== $l: rc=$rc"
    grep -E "layers_decode|FAIL|PASSED|FAILED|SUMMARY|RESULT" "$OUT/step.txt" | head -20
    return $rc
}
run 120 "parity layers_decode" $B/test_gpu_parity cuda layers_decode || { echo "stopping: parity"; exit 1; }
run 120 "golden (persist by default)" $B/test_gpu_golden
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
run 300 "memcheck parity layers_decode" "$CS" --tool memcheck --error-exitcode 99 --print-limit 10 \
    $B/test_gpu_parity cuda layers_decode
run 300 "racecheck parity layers_decode (the kernel's first 6 launches)" "$CS" --tool racecheck --error-exitcode 99 \
    --print-limit 10 --kernel-name kns=persist_kernel --launch-count 6 $B/test_gpu_parity cuda layers_decode
run 300 "synccheck parity layers_decode" "$CS" --tool synccheck --error-exitcode 99 --print-limit 10 \
    $B/test_gpu_parity cuda layers_decode
run 120 "phase times, context 1024" env SUGGESTD_CUDA_GRAPHS=0 SUGGESTD_PERSIST_TRACE=1 $B/gpu_bench \
    --shape codegen-350M --device cuda --dtype f16 --prompt-tokens 1024 --prefill-chunk 1024 --decode-tokens 32 \
    --contexts 1024
grep -E "^persist|^  [ABCl]" "$OUT/step.txt"
for r in 1 2; do
    for e in SUGGESTD_PERSIST=0 SUGGESTD_PERSIST=1; do
        for c in 128 1024 2048; do
            run 120 "bench 350M ctx $c $e" env $e $B/gpu_bench --shape codegen-350M --device cuda --dtype f16 \
                --prompt-tokens $c --prefill-chunk 1024 --decode-tokens 32 --contexts $c
        done
    done
done
OUT=$OUT TAG=persist bash scripts/step-trace.sh codegen-350M | tail -12
