#!/usr/bin/env bash
# test.sh - the README's test command: installs build dependencies, builds, and runs every test suite
# (unit, parity, golden, integration; with nvcc present the CUDA backend is compiled in), then the suites again
# under ASan+UBSan, and a short
# run of each fuzzer. Prints one summary line at the end.
set -u
cd "$(dirname "$0")/.."
bash scripts/deps.sh || exit 1
jobs=$(nproc)
failed=0
summary=()

step() { # name, command...
    local name=$1; shift
    echo "== $name"
    if "$@"; then summary+=("ok   $name"); else summary+=("FAIL $name"); failed=$((failed + 1)); fi
}

# The release build compiles the CUDA backend too when nvcc is installed (SUGGESTD_CUDA=AUTO); its GPU tests skip
# themselves on a machine without a GPU.
step "build (release)" bash -c "cmake -S . -B build -DCMAKE_BUILD_TYPE=Release | grep 'suggestd:' ; cmake --build build -j$jobs"
step "tests (release)" ctest --test-dir build --output-on-failure -j"$jobs"
step "build (asan+ubsan)" bash -c "cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSUGGESTD_SANITIZE=ON -DSUGGESTD_CUDA=OFF -DCMAKE_C_COMPILER=clang >/dev/null && cmake --build build-asan -j$jobs"
step "tests (asan+ubsan)" env ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs" -LE golden
step "fuzz (build)" bash -c "cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DSUGGESTD_FUZZ=ON -DSUGGESTD_TESTS=OFF -DSUGGESTD_CUDA=OFF -DCMAKE_C_COMPILER=clang >/dev/null && cmake --build build-fuzz -j$jobs"
for f in build-fuzz/fuzz_*; do
    [ -x "$f" ] || continue
    # new inputs go to a scratch corpus (first dir); the committed seeds (second dir) are only read
    name=$(basename "$f" | sed 's/^fuzz_//')
    mkdir -p "build-fuzz/corpus-$name"
    step "fuzz $(basename "$f") (20 s)" bash -c "SUGGESTD_SOURCE_DIR=$PWD '$f' -max_total_time=20 -rss_limit_mb=4096 build-fuzz/corpus-$name tests/fuzz/corpus/$name >/dev/null 2>build-fuzz/$(basename "$f").log || { tail -30 build-fuzz/$(basename "$f").log; exit 1; }"
done

echo
printf '%s\n' "${summary[@]}"
total=${#summary[@]}
echo "$((total - failed)) passed, $failed failed"
[ "$failed" = 0 ]
