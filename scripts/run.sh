#!/usr/bin/env bash
# run.sh - the README's run command: installs build dependencies, builds build/suggestd, and completes a prompt with
# the default model. Until the HTTP API lands ([api]) this runs `suggestd complete`; until a trained demo model
# ships ([demo]) the default model is a tiny random-weight CodeGen checkpoint with the real tokenizer, so the
# completion is well-formed but meaningless. Pass a real model directory to use it instead:
#   scripts/run.sh [MODEL_DIR] [PROMPT]
set -eu
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target suggestd mkckpt >/dev/null
model=${1:-}
if [ -z "$model" ]; then
    model=build/models/tiny-random
    if [ ! -f "$model/model.safetensors" ]; then
        build/mkckpt "$model" 2 256 8 16 2048 f16 1
        cp models/codegen-tokenizer/* "$model"/
    fi
fi
prompt=${2:-$'def fibonacci(n):\n    '}
printf '%s' "$prompt"
build/suggestd complete --model "$model" --prompt "$prompt" --max-tokens 48
echo
