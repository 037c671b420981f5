#!/usr/bin/env bash
# run.sh - the README's run command: installs build dependencies, builds build/suggestd, and serves the default
# model on http://127.0.0.1:5000 (FauxPilot/OpenAI /v1 and GitLab /v2 routes).
#
# The default model is models/demo (a small CodeGen trained on the Python standard library; without it, a tiny
# random-weight checkpoint with the real tokenizer). Serve a real model directory instead with
#   scripts/run.sh /path/to/codegen-350M-mono
# Authentication: this quickstart listens on loopback only and sets BYPASS_EXTERNAL_AUTH=true unless you set it
# (or configure API keys / GitLab, see docs/API.md); extra arguments after the model go to `suggestd serve`.
set -eu
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target suggestd mkckpt >/dev/null
model=${1:-}
[ $# -gt 0 ] && shift
if [ -z "$model" ]; then
    if [ -f models/demo/config.json ]; then
        model=models/demo
    else
        model=build/models/tiny-random
        if [ ! -f "$model/model.safetensors" ]; then
            build/mkckpt "$model" 2 256 8 16 2048 f16 1
            cp models/codegen-tokenizer/* "$model"/
        fi
    fi
fi
export BYPASS_EXTERNAL_AUTH=${BYPASS_EXTERNAL_AUTH:-true}
echo "serving $model on http://127.0.0.1:5000 - try:"
echo "  curl -s http://127.0.0.1:5000/v1/completions -H 'Content-Type: application/json' -d '{\"prompt\":\"with open(path) as f:\\n\",\"max_tokens\":32,\"repetition_penalty\":1.2}'"
exec build/suggestd serve --model "$model" --host 127.0.0.1 --port 5000 "$@"
