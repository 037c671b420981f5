#!/usr/bin/env bash
# test_pull.sh - `suggestd pull`, `suggestd models` and `--model ORG/NAME` against a stand-in hub on loopback
# (fake_hub.mjs, which logs every request): listing, redirects, Range resume after a dropped connection (checked
# in the request log: no byte sent twice), a wrong sha256 refused, a hostile file name refused, 404, 401 without
# HF_TOKEN for a gated repo, HF_ENDPOINT honoured, and a pulled model used offline by complete and serve.
# usage: test_pull.sh SUGGESTD MKCKPT SOURCE_DIR
set -u
source "$(dirname "$0")/lib.sh" "$@"

for t in jq curl node; do command -v $t >/dev/null || { echo "$t is required"; exit 1; }; done

# --- the checkpoint the stand-in serves ---------------------------------------------------------------------------
F=$TMP/files
"$MKCKPT" "$F" 2 64 4 8 256 f32 7 >/dev/null || { echo "mkckpt failed"; exit 1; }
cp "$SRC"/models/codegen-tokenizer/{vocab.json,merges.txt,added_tokens.json,special_tokens_map.json} "$F"/
WEIGHTS_SIZE=$(stat -c %s "$F/model.safetensors")

node "$HERE/fake_hub.mjs" "$TMP/hub.port" "$F" >"$TMP/hub.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$TMP/hub.port" ] && break; sleep 0.05; done
[ -s "$TMP/hub.port" ] || { echo "fake hub did not start"; cat "$TMP/hub.log"; exit 1; }
HUB=http://127.0.0.1:$(cat "$TMP/hub.port")
MD=$TMP/models
hublog() { curl -s "$HUB/_log"; }
# pull ARGS... -> OUT (stdout), ERR (stderr), RC; never the internet: HF_ENDPOINT is the stand-in unless overridden
pull() {
    OUT=$(env -u HF_TOKEN HF_ENDPOINT="$HUB" SUGGESTD_MODELS_DIR="$MD" "${ENVS[@]}" timeout 60 "$BIN" pull "$@" \
        2>"$TMP/err")
    RC=$?
    ERR=$(cat "$TMP/err")
    ENVS=()
}
ENVS=()
complete_dir() { [ -f "$1/.suggestd-complete" ]; }

# --- a plain pull ---------------------------------------------------------------------------------------------------
pull test/tiny
check "pull test/tiny exits 0 and prints the model dir" test "$RC:$OUT" = "0:$MD/test/tiny"
check "model files present, README and folder skipped" test "$(cd "$MD/test/tiny" && ls | tr '\n' ' ')" = \
    "added_tokens.json config.json merges.txt model.safetensors special_tokens_map.json vocab.json "
check "files are byte-identical to the hub's" cmp -s "$MD/test/tiny/model.safetensors" "$F/model.safetensors"
check "marked complete" complete_dir "$MD/test/tiny"
check "no staging dir or .part left" test -z "$(ls -A "$MD/test" | grep -v -e '^tiny$' -e '\.lock$')"
check "HF_ENDPOINT honoured: listing and resolve requests reached the stand-in" \
    test "$(hublog | jq '[.[] | select(.repo == "test/tiny")] | map(.route) | unique | join(",")' -r)" = "cdn,resolve,tree"
check "log lines (not a terminal): one per file" test "$(grep -c '^suggestd pull: \[[1-6]/6\] .* done' <<<"$ERR")" = 6
n_before=$(hublog | jq length)
pull test/tiny
check "second pull: already complete, no request" test "$RC:$(hublog | jq length)" = "0:$n_before"
ENVS=(HF_ENDPOINT="$HUB/")
pull test/trailing
check "HF_ENDPOINT with a trailing slash" test "$RC" = 0

# --- an interrupted transfer, resumed by the next pull ----------------------------------------------------------------
pull --retries 0 test/flaky
check "dropped connection: non-zero exit, one error line" \
    test "$RC:$(grep -c '^suggestd pull: pulling test/flaky failed: ' <<<"$ERR")" = 1:1
grep -q 'interrupted.*run the pull again to resume' <<<"$ERR" && ok "message says how to resume" || bad "resume message" "$ERR"
check "interrupted pull does not look complete" test ! -e "$MD/test/flaky"
part=$MD/test/.flaky.partial/model.safetensors.part
check ".part file kept with half the bytes" test "$(stat -c %s "$part" 2>/dev/null)" = "$((WEIGHTS_SIZE / 2))"
pull test/flaky
check "next pull completes" test "$RC" = 0
check "resumed file is byte-identical" cmp -s "$MD/test/flaky/model.safetensors" "$F/model.safetensors"
ranges=$(hublog | jq -r '[.[] | select(.repo == "test/flaky" and .route == "cdn")] | map(.range) | join(",")')
check "second transfer asked for the rest with Range (got: '$ranges')" test "$ranges" = ",bytes=$((WEIGHTS_SIZE / 2))-"
sent=$(hublog | jq '[.[] | select(.repo == "test/flaky" and .route == "cdn") | .bytes] | add')
check "no byte sent twice: $sent bytes for a $WEIGHTS_SIZE-byte file" test "$sent" = "$WEIGHTS_SIZE"
pull test/flaky2
check "default retries: a dropped connection is resumed within one pull" test "$RC" = 0
check "  ...and the file is right" cmp -s "$MD/test/flaky2/model.safetensors" "$F/model.safetensors"

# --- refusals -------------------------------------------------------------------------------------------------------
pull test/badhash
check "wrong sha256: non-zero exit" test "$RC" != 0
grep -q 'sha256 mismatch' <<<"$ERR" && ok "message names the sha256 mismatch" || bad "sha256 message" "$ERR"
check "wrong sha256: nothing looks complete" test ! -e "$MD/test/badhash"
check "wrong sha256: the bad download is deleted" test ! -e "$MD/test/.badhash.partial/model.safetensors.part" -a \
    ! -e "$MD/test/.badhash.partial/model.safetensors"

pull test/evil
check "hostile file name '../../escape.safetensors': refused" test "$RC" != 0
grep -q 'unsafe file path' <<<"$ERR" && ok "message names the unsafe path" || bad "unsafe path message" "$ERR"
check "nothing written outside the models dir" test ! -e "$TMP/escape.safetensors" -a ! -e "$MD/escape.safetensors" \
    -a ! -e "$MD/test/evil"

pull test/nothere
check "404: non-zero exit, 'not found'" test "$RC" != 0 -a -n "$(grep 'not found' <<<"$ERR")"
check "404, 401, hostile listing: nothing written at all" test ! -e "$MD/test/nothere" -a ! -e "$MD/test/.nothere.lock"
pull test/tiny@v9
check "unknown revision: non-zero exit, names it" test "$RC" != 0 -a -n "$(grep "revision 'v9' not found" <<<"$ERR")"

pull test/gated
check "gated without HF_TOKEN: non-zero exit" test "$RC" != 0
grep -q 'set HF_TOKEN' <<<"$ERR" && ok "message asks for HF_TOKEN" || bad "401 message" "$ERR"
check "gated: nothing looks complete" test ! -e "$MD/test/gated"
ENVS=(HF_TOKEN=hf_wrong)
pull test/gated
check "gated with a wrong token: refused" test "$RC" != 0 -a -n "$(grep 'HF_TOKEN was refused' <<<"$ERR")"
ENVS=(HF_TOKEN=hf_good)
pull test/gated
check "gated with HF_TOKEN: pulled" test "$RC:$(complete_dir "$MD/test/gated" && echo complete)" = 0:complete
check "the token went to the hub as a Bearer header" \
    test "$(hublog | jq -r '[.[] | select(.repo == "test/gated" and .route == "tree" and .status == 200)][0].auth')" = "Bearer hf_good"
check "the token is in no output and no file" test -z "$(grep hf_good <<<"$ERR$OUT"; grep -rl hf_good "$MD")"

ENVS=(HF_ENDPOINT=http://127.0.0.1:1)
pull test/offline
check "offline (connection refused): non-zero exit, one line" test "$RC" != 0 -a -n "$(grep 'cannot connect' <<<"$ERR")"
ENVS=(HF_ENDPOINT=http://no-such-host.invalid)
pull test/offline
check "DNS failure: non-zero exit, clear message" test "$RC" != 0 -a -n "$(grep -e 'cannot resolve' -e 'cannot connect' <<<"$ERR")"
check "offline: no directory" test ! -e "$MD/test/offline"
pull not-a-model-name
check "a name that is not ORG/NAME: usage error 2" test "$RC" = 2

# --- using pulled models -----------------------------------------------------------------------------------------
want=$("$BIN" complete --model "$MD/test/tiny" --prompt 'def f(x):' --max-tokens 8 2>/dev/null)
got=$(HF_ENDPOINT=http://127.0.0.1:1 SUGGESTD_MODELS_DIR="$MD" "$BIN" complete --model test/tiny --prompt 'def f(x):' \
    --max-tokens 8 2>"$TMP/c.err")
check "complete --model ORG/NAME works offline after a pull" test "$?:$got" = "0:$want" -a -n "$want"
HF_ENDPOINT=$HUB SUGGESTD_MODELS_DIR="$MD" "$BIN" complete --model test/fresh --prompt 'def f(x):' --max-tokens 8 \
    >/dev/null 2>"$TMP/c.err"
check "complete --model ORG/NAME pulls when absent" test "$?:$(complete_dir "$MD/test/fresh" && echo complete)" = 0:complete

port=$(free_port)
HF_ENDPOINT=$HUB SUGGESTD_MODELS_DIR="$MD" BYPASS_EXTERNAL_AUTH=true "$BIN" serve --host 127.0.0.1 --port $port \
    --model test/served --threads 1 >"$TMP/serve.log" 2>&1 &
SPID=$!
PIDS+=($SPID)
for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/monitoring/healthz")" = 200 ] && break
    kill -0 $SPID 2>/dev/null || break
    sleep 0.05
done
code=$(curl -s -o "$TMP/b" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary '{"prompt":"def f(x):","max_tokens":4,"temperature":0}' "http://127.0.0.1:$port/v1/completions")
check "serve --model ORG/NAME pulls when absent, then serves" \
    test "$code:$(complete_dir "$MD/test/served" && echo complete)" = 200:complete
kill $SPID 2>/dev/null

# --- the catalogue -------------------------------------------------------------------------------------------------
pull Salesforce/codegen-350M-mono
check "pull Salesforce/codegen-350M-mono (stand-in)" test "$RC" = 0
J=$(SUGGESTD_MODELS_DIR="$MD" "$BIN" models --json)
check "models --json: 12 CodeGen repositories" test "$(jq '.models | length' <<<"$J")" = 12
check "models --json: 350M-mono local, the others not" \
    test "$(jq -c '[.models[] | select(.local) | .name]' <<<"$J")" = '["Salesforce/codegen-350M-mono"]'
check "models --json: 16B-nl download size from the hub's .bin" \
    test "$(jq '.models[] | select(.name == "Salesforce/codegen-16B-nl") | .download_bytes' <<<"$J")" = 32207017423
check "models --json: 350M fp16 memory = weights + 2048-token KV" \
    test "$(jq '.models[0].mem_fp16_bytes' <<<"$J")" = $((356712448 * 2 + 2 * 20 * 1024 * 2048 * 2))
T=$(SUGGESTD_MODELS_DIR="$MD" "$BIN" models)
check "models: table marks the local one complete" grep -q 'codegen-350M-mono .*complete$' <<<"$T"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
