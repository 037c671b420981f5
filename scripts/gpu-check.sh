#!/usr/bin/env bash
# gpu-check.sh - the GPU machine's one-call check of the CUDA backend: build with CUDA, the GPU parity test (every
# op against ref), the golden tests on the cuda backend, compute-sanitizer memcheck, and the benchmarks
# (`suggestd bench` with the bandwidth floor, and HF transformers eager fp16 on the same shapes) with a summary table.
#
#   bash scripts/gpu-check.sh [SHAPE...]        default shapes: codegen-350M codegen-2B
#
# Everything goes to $OUT (the device tool's output folder; build-gpu/out elsewhere): gpu-check.log (all output),
# bench.txt (RESULT lines), summary.txt. Libraries the GPU machine lacks come from .gpu-deps/*.deb (fetched on a
# dev machine by scripts/gpu-deps.sh; carry .gpu-deps), unpacked with dpkg -x into build-gpu/deps, never into /.
# Environment: CUDA_ARCHS (default 90: this machine only, to build fast), SKIP_TESTS=1 (benchmarks only),
# SKIP_MEMCHECK=1, SKIP_HF=1, INT8=1 (int8 weights' decode and prefill of the first two shapes, int8.txt),
# BATCH="8 32 64" (decode steps of that many sequences at once, --batch, at BATCH_CTX (default 1536) on
# BATCH_SHAPE (default codegen-2B): what a server batching editors does per step, beside its floor),
# SCHED=1 (also the [sched] benchmarks at the codegen-2B shape, RESULT lines in sched.txt: closed-loop editors,
# SCHED_EDITORS (default 64), for throughput against one at a time; IDE-like typing editors, SCHED_TYPISTS
# (default "32 64"), for single-line latency, with single-line requests ending where a real model's lines did;
# SCHED_FULL (default 32): the same with every single-line request running its whole 16 tokens),
# CONTEXTS (default 128,1024,2048), PROMPT (default 1536), BASELINE (default: the first two shapes; "" for none):
# shapes benched again at context 1024 with BASELINE_ENV set (default SUGGESTD_CUDA_GEMV=0: cuBLAS for decode rows;
# SUGGESTD_CUDA_GRAPHS=0 for the no-graph run), the same-card "before" in the summary's last column.
# VARIANTS="label:ENV=v,ENV=v label2:ENV=v ...": VARIANT_SHAPES (default: the first two shapes) benched again at
# context 1024 with each label's environment (after a `ref` run with none), RESULT lines in variants.txt and a table
# of ms/token in the summary: same-run comparisons of the backend's switches.
# Per-kernel times: scripts/gpu-prof.sh after this script's build; one decode step's timeline: scripts/step-trace.sh.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/build-gpu/out}
mkdir -p "$OUT"
SHAPES=${*:-codegen-350M codegen-2B}
BASELINE=${BASELINE-$(echo $SHAPES | cut -d' ' -f1-2)}
BASELINE_ENV=${BASELINE_ENV:-SUGGESTD_CUDA_GEMV=0}
CONTEXTS=${CONTEXTS:-128,1024,2048}
PROMPT=${PROMPT:-1536}
T_START=$(date +%s)
summary=()
failed=0

step() { # name, timeout seconds, command...
    local name=$1 limit=$2 t0 rc
    shift 2
    t0=$(date +%s)
    echo
    echo "== $name  (limit ${limit}s, at +$((t0 - T_START))s)"
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    if [ $rc = 0 ]; then
        summary+=("ok    $name ($(($(date +%s) - t0)) s)")
    else
        summary+=("FAIL  $name (exit $rc$([ $rc = 124 ] && echo ', timed out'), $(($(date +%s) - t0)) s)")
        failed=$((failed + 1))
    fi
    return $rc
}

main() {
echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
"$NVCC" --version | tail -2 || true
cmake --version | head -1
cc --version | head -1

# --- libraries missing here -> build-gpu/deps ---------------------------------------------------------------
cmake_extra=()
if [ ! -f /usr/include/jansson.h ] || [ ! -f /usr/include/microhttpd.h ]; then
    DEPS=$ROOT/build-gpu/deps
    LIBDIR=$DEPS/usr/lib/x86_64-linux-gnu
    mkdir -p "$DEPS"
    for f in .gpu-deps/*.deb; do dpkg -x "$f" "$DEPS" || echo "cannot unpack $f"; done
    if ! ldconfig -p | grep -q 'libgnutls.so.30 '; then
        echo "(no libgnutls.so.30 here: unpacking the fallback libraries too)"
        for f in .gpu-deps/extra/*.deb; do dpkg -x "$f" "$DEPS"; done
    fi
    export LD_LIBRARY_PATH=$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    cmake_extra=(-DCMAKE_PREFIX_PATH="$DEPS/usr" -DCMAKE_LIBRARY_PATH="$LIBDIR"
                 -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$LIBDIR")
fi

# --- build -----------------------------------------------------------------------------------------------------
# A GPU-only project: the top-level CMakeLists.txt without the server side (cache, auth, server, app, bench), whose
# libraries (hiredis, OpenSSL, curl, libmicrohttpd) the GPU machine need not have; the benchmark is gpu_bench
# (tests/gpu), the same cli_bench.c as `suggestd bench`.
P=$ROOT/build-gpu/proj
mkdir -p "$P"
sed -e '/^add_subdirectory(src\/\(cache\|auth\|hub\|server\|app\))/d' -e '/^add_subdirectory(bench)/d' \
    -e 's|^add_subdirectory(\(src/[a-z]*\))|add_subdirectory('"$ROOT"'/\1 \1)|' \
    -e 's|add_subdirectory(tests/gpu)|add_subdirectory('"$ROOT"'/tests/gpu tests/gpu)|' CMakeLists.txt >"$P/CMakeLists.txt"
B=build-gpu/build
step "configure (CUDA, archs ${CUDA_ARCHS:-90})" 120 cmake -S "$P" -B $B -DCMAKE_BUILD_TYPE=Release -DSUGGESTD_CUDA=ON \
    -DSUGGESTD_TESTS=OFF -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" "${cmake_extra[@]}" >/dev/null
step "build GPU tests and gpu_bench" 300 cmake --build $B -j"$(nproc)" --target test_gpu_parity test_gpu_golden gpu_bench

# --- tests -----------------------------------------------------------------------------------------------------
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    step "GPU parity: every op vs ref" 420 $B/test_gpu_parity
    # one-row steps run as one persistent kernel (cuda_persist.cu) where the device holds it (sm_90, 132 SMs)
    step "golden: cuda vs HF" 240 $B/test_gpu_golden
    # the same with every launch waiting for the one before: PDL (NOTES.md v12) must not change a result
    step "golden: cuda vs HF, SUGGESTD_CUDA_PDL=0" 240 env SUGGESTD_CUDA_PDL=0 $B/test_gpu_golden
    # without it, one-row steps take the late layout (w2's GEMV beside attention: cuda_gemv_late.cu), as 2B does;
    # then the branch layouts of 6B and 16B (2, with RoPE folded into decode attention), 1, and 2 unfolded
    step "golden: cuda vs HF, SUGGESTD_PERSIST=0" 240 env SUGGESTD_PERSIST=0 $B/test_gpu_golden
    step "golden: cuda vs HF, SUGGESTD_PERSIST=0 SUGGESTD_LATE=0" 240 env SUGGESTD_PERSIST=0 SUGGESTD_LATE=0 \
        $B/test_gpu_golden
    step "golden: cuda vs HF, SUGGESTD_PERSIST=0 SUGGESTD_LATE=0 SUGGESTD_BRANCHES=1" 240 env SUGGESTD_PERSIST=0 \
        SUGGESTD_LATE=0 SUGGESTD_BRANCHES=1 $B/test_gpu_golden
    step "golden: cuda vs HF, SUGGESTD_PERSIST=0 SUGGESTD_LATE=0 SUGGESTD_CUDA_ATTN_FOLD=0" 240 env \
        SUGGESTD_PERSIST=0 SUGGESTD_LATE=0 SUGGESTD_CUDA_ATTN_FOLD=0 $B/test_gpu_golden
fi

# --- benchmarks ------------------------------------------------------------------------------------------------
: >"$OUT/bench.txt"
for s in $SHAPES; do
    step "bench suggestd $s" 300 bash -c "set -o pipefail; $B/gpu_bench --shape $s --device cuda --dtype f16 \
        --prompt-tokens $PROMPT --prefill-chunk $PROMPT --decode-tokens 32 --contexts $CONTEXTS | tee -a '$OUT/bench.txt'"
done
for s in $BASELINE; do
    step "bench suggestd $s, $BASELINE_ENV" 300 bash -c "set -o pipefail; env $BASELINE_ENV $B/gpu_bench \
        --shape $s --device cuda --dtype f16 --prompt-tokens 1024 --prefill-chunk 1024 --decode-tokens 32 \
        --contexts 1024 | sed 's/^RESULT \([^ ]*\) \([^ ]*\) cuda /RESULT \1 \2 cuda-baseline /' | tee -a '$OUT/bench.txt'"
done
if [ -n "${VARIANTS:-}" ]; then
    : >"$OUT/variants.txt"
    for s in ${VARIANT_SHAPES:-$(echo $SHAPES | cut -d' ' -f1-2)}; do
        for v in ref: $VARIANTS; do
            label=${v%%:*} envs=${v#*:}
            step "variant $label: $s" 300 bash -c "set -o pipefail; env ${envs//,/ } $B/gpu_bench --shape $s \
                --device cuda --dtype f16 --prompt-tokens 1024 --prefill-chunk 1024 --decode-tokens 32 --contexts 1024 \
                | grep '^RESULT' | sed 's/^RESULT \([^ ]*\) \([^ ]*\) cuda /RESULT \1 \2 $label /' \
                | tee -a '$OUT/variants.txt'"
        done
    done
fi
for bsz in ${BATCH:-}; do
    step "bench suggestd ${BATCH_SHAPE:-codegen-2B} batch $bsz" 300 bash -c "set -o pipefail; $B/gpu_bench \
        --shape ${BATCH_SHAPE:-codegen-2B} --device cuda --dtype f16 --prompt-tokens 512 --prefill-chunk 512 \
        --decode-tokens 16 --contexts ${BATCH_CTX:-1536} --batch $bsz | tee -a '$OUT/bench.txt'"
done
if [ "${SKIP_HF:-0}" != 1 ]; then
    for s in $SHAPES; do
        step "bench HF eager $s" 300 bash -c "set -o pipefail; PYTHONUNBUFFERED=1 python3 tools/bench_hf.py \
            --shape $s --contexts $CONTEXTS --prompt-tokens $PROMPT | tee -a '$OUT/bench.txt'"
    done
fi

# --- [models]: int8 weights on the GPU (INT8=1): decode and prefill of the first two shapes with --dtype int8, beside
# the f16 numbers above (RESULT lines in int8.txt, not in the summary table)
if [ "${INT8:-0}" = 1 ]; then
    for s in $(echo $SHAPES | cut -d' ' -f1-2); do
        step "bench suggestd $s int8" 300 bash -c "set -o pipefail; $B/gpu_bench --shape $s --device cuda --dtype int8 \
            --prompt-tokens $PROMPT --prefill-chunk $PROMPT --decode-tokens 32 --contexts 1024 | tee -a '$OUT/int8.txt'"
    done
fi

# --- [models]: the real torch.save fixture (FIXTURE=1; seconds; comes back in $OUT/torch-fixture-*/bin for tests/unit/model/data)
for dt in $([ "${FIXTURE:-0}" = 1 ] && echo f16 f32); do
    step "torch.save fixture $dt" 120 bash -c "python3 tools/make_ptbin_torch.py '$OUT/torch-fixture-$dt' $dt \
        > '$OUT/torch-fixture-$dt.txt' 2>&1 || { tail -20 '$OUT/torch-fixture-$dt.txt'; exit 1; }"
done

# --- [sched]: batching on the GPU (SCHED=1): a random codegen-2B-shaped checkpoint, 32 editors' latency and 64 editors'
# throughput against one at a time, 1536-token files (bench/sched_bench.c "editors")
if [ "${SCHED:-0}" = 1 ]; then
    SCK=build-gpu/ckpt-2B
    step "build sched bench" 300 cmake --build $B -j"$(nproc)" --target gpu_sched_bench gpu_mkckpt
    step "2B-shaped checkpoint" 300 bash -c "[ -f $SCK/model.safetensors ] || { $B/gpu_mkckpt $SCK 32 2560 32 64 2048 f16 7 \
        >/dev/null && cp models/codegen-tokenizer/* $SCK/; }"
    for e in ${SCHED_EDITORS-64}; do
        step "sched editors $e" 420 bash -c "set -o pipefail; $B/gpu_sched_bench $SCK --backend cuda --mode editors \
            --editors $e --max-batch $e --edits 12 --editor-prompt 1536 --editor-gen 16 --think-ms 100 \
            | sed 's/^RESULT editors_/RESULT editors${e}_/' | tee -a '$OUT/sched.txt'"
    done
    for e in ${SCHED_TYPISTS-32 64}; do
        step "sched typing $e" 200 bash -c "set -o pipefail; $B/gpu_sched_bench $SCK --backend cuda --mode typing \
            --editors $e --max-batch $e --editor-prompt 1536 --seconds 20 \
            | sed 's/^RESULT typing_/RESULT typing${e}_/' | tee -a '$OUT/sched.txt'"
    done
    for e in ${SCHED_FULL-32}; do # every single-line request runs its whole 16 tokens (no emulated line ends)
        step "sched typing $e, full lines" 200 bash -c "set -o pipefail; $B/gpu_sched_bench $SCK --backend cuda \
            --mode typing --editors $e --max-batch $e --editor-prompt 1536 --seconds 20 --line-stops 0 \
            | sed 's/^RESULT typing_/RESULT typing${e}_/' | tee -a '$OUT/sched.txt'"
    done
fi

# --- memcheck last: the slowest step, so a tight time limit cuts it rather than the numbers -----------------
if [ "${SKIP_MEMCHECK:-0}" != 1 ]; then
    CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
    step "memcheck: golden" 300 "$CS" --tool memcheck --error-exitcode 99 --print-limit 20 $B/test_gpu_golden
    step "memcheck: parity (every op)" 400 "$CS" --tool memcheck --error-exitcode 99 \
        --print-limit 20 $B/test_gpu_parity cuda embed layernorm gelu rope add attention attention_prefill matmul \
        matmul_late rope_kv_attention layers_decode
    step "racecheck: attention, matmul_late" 300 "$CS" --tool racecheck --error-exitcode 99 --print-limit 20 \
        $B/test_gpu_parity cuda attention_prefill attention matmul_late
    # the persistent kernel's first six launches (the tiny, 350M and bf16 cases' steps); the op path beside them runs
    # unchecked, at full speed
    step "racecheck: layers_decode" 300 "$CS" --tool racecheck --error-exitcode 99 --print-limit 20 \
        --kernel-name kns=persist_kernel --launch-count 6 $B/test_gpu_parity cuda layers_decode
fi

# --- summary ---------------------------------------------------------------------------------------------------
{
    echo
    echo "== summary ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(($(date +%s) - T_START)) s)"
    printf '%s\n' "${summary[@]}"
    echo
    echo "benchmarks (fp16, batch 1; floor = bytes per token / measured device-to-device copy bandwidth;"
    echo "baseline = the same binary with $BASELINE_ENV):"
    awk '/^RESULT/ {
            shape = $2; who = $4; kind = $5
            for (i = 6; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            if (kind == "prefill") { key = shape " prefill " v["tokens"]; }
            else { key = shape " decode ctx " v["ctx"] (("batch" in v) ? " batch " v["batch"] : ""); }
            if (!(key in seen)) { seen[key] = 1; order[++n] = key }
            if (who == "hf-eager") hf[key] = v["ms"];
            else if (who == "cuda-baseline") { if (kind != "prefill") ng[key] = v["ms"] }
            else { ours[key] = v["ms"]; fl[key] = v["floor_ms"] }
            delete v
         }
         END {
            printf "  %-34s %12s %12s %8s %12s %8s %12s\n", "", "suggestd ms", "floor ms", "x floor", "HF eager ms", "HF/ours",
                   "baseline ms"
            for (i = 1; i <= n; i++) {
                k = order[i]
                printf "  %-34s %12s %12s %8s %12s %8s %12s\n", k, ours[k], (k in fl && fl[k] != "") ? fl[k] : "-",
                       (k in fl && fl[k] > 0) ? sprintf("%.2f", ours[k] / fl[k]) : "-", (k in hf) ? hf[k] : "-",
                       (k in hf && ours[k] > 0) ? sprintf("%.2f", hf[k] / ours[k]) : "-", (k in ng) ? ng[k] : "-"
            }
         }' "$OUT/bench.txt"
    if [ -s "$OUT/variants.txt" ]; then
        echo
        echo "variants (ms; prefill 1024 tokens, decode at context 1024, batch 1): ${VARIANTS:-}"
        awk '/^RESULT/ {
                for (i = 6; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                key = $2 " " $5; if (!(key in seen)) { seen[key] = 1; keys[++nk] = key }
                if (!($4 in lseen)) { lseen[$4] = 1; labels[++nl] = $4 }
                ms[key, $4] = v["ms"]; delete v
             }
             END {
                printf "  %-22s", ""; for (j = 1; j <= nl; j++) printf " %10s", labels[j]; printf "\n"
                for (i = 1; i <= nk; i++) {
                    printf "  %-22s", keys[i]
                    for (j = 1; j <= nl; j++)
                        printf " %10s", ((keys[i], labels[j]) in ms) ? ms[keys[i], labels[j]] : "-"
                    printf "\n"
                }
             }' "$OUT/variants.txt"
    fi
    echo
    echo "$((${#summary[@]} - failed)) passed, $failed failed"
} | tee "$OUT/summary.txt"
[ "$failed" = 0 ]
}

main 2>&1 | tee "$OUT/gpu-check.log"
exit "${PIPESTATUS[0]}"
