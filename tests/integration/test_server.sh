#!/usr/bin/env bash
# test_server.sh - `suggestd serve` on loopback with tiny checkpoints, driven by curl and the official openai npm
# package: every route, the bodies real clients send, bad input, SSE framing byte for byte, cancellation on client
# disconnect, a full queue, configuration, graceful shutdown.
# usage: test_server.sh SUGGESTD MKCKPT SOURCE_DIR
set -u
source "$(dirname "$0")/lib.sh" "$@"

command -v jq >/dev/null || { echo "jq is required"; exit 1; }
command -v curl >/dev/null || { echo "curl is required"; exit 1; }

# --- fixtures ------------------------------------------------------------------------------------------------
M=$TMP/tiny
"$MKCKPT" "$M" 2 64 4 8 256 f32 7 >/dev/null || { echo "mkckpt failed"; exit 1; }
cp "$SRC"/models/codegen-tokenizer/{vocab.json,merges.txt,added_tokens.json,special_tokens_map.json} "$M"/
# a slower model (about 10 ms a token on one thread) for cancellation and queue tests
S=$TMP/slow
"$MKCKPT" "$S" 4 256 8 16 2048 f32 11 >/dev/null || { echo "mkckpt failed"; exit 1; }
cp "$SRC"/models/codegen-tokenizer/{vocab.json,merges.txt,added_tokens.json,special_tokens_map.json} "$S"/

NODE_OK=0
if command -v node >/dev/null && command -v npm >/dev/null; then
    if [ ! -d "$HERE/node_modules/openai" ]; then
        (cd "$HERE" && npm install --no-audit --no-fund --omit=peer >/dev/null 2>&1)
    fi
    [ -d "$HERE/node_modules/openai" ] && NODE_OK=1
fi

# req METHOD PATH [BODY] -> sets CODE, BODY, HDRS
req() {
    local method=$1 path=$2 data=${3-}
    local args=(-s -X "$method" -D "$TMP/h" -o "$TMP/b" -w '%{http_code}' -H 'Content-Type: application/json')
    [ -n "$data" ] && args+=(--data-binary "$data")
    CODE=$(curl "${args[@]}" "$URL$path")
    BODY=$(cat "$TMP/b")
    HDRS=$(tr -d '\r' <"$TMP/h")
}
jqb() { jq -r "$1" <<<"$BODY" 2>/dev/null; }
is_json() { jq -e . >/dev/null 2>&1 <<<"$BODY"; }

# --- configuration and startup ---------------------------------------------------------------------------------
# authentication itself is tested by test_auth.sh; here only that a bad auth setup stops startup with a reason
out=$(env -u BYPASS_EXTERNAL_AUTH -u SUGGESTD_CACHE_SECRET USE_LOCAL_CACHE=false "$BIN" serve --model "$M" --port 1 2>&1); rc=$?
[ $rc = 2 ] && grep -q SUGGESTD_CACHE_SECRET <<<"$out" && ok "Redis auth cache without SUGGESTD_CACHE_SECRET refuses to start" \
    || bad "Redis auth cache without SUGGESTD_CACHE_SECRET refuses to start" "rc=$rc" "$out"
out=$(BYPASS_EXTERNAL_AUTH=maybe "$BIN" serve --model "$M" 2>&1); rc=$?
[ $rc = 2 ] && grep -q "env BYPASS_EXTERNAL_AUTH" <<<"$out" && ok "bad boolean names the variable" \
    || bad "bad boolean names the variable" "rc=$rc" "$out"
out=$(TRITON_PORT=http "$BIN" config 2>&1); rc=$?
[ $rc = 2 ] && grep -q "TRITON_PORT" <<<"$out" && ok "bad integer names the variable" || bad "bad integer" "$out"
out=$("$BIN" serve --help); rc=$?
miss=""
for n in SUGGESTD_MODEL SUGGESTD_QUEUE_MAX SUGGESTD_MAX_BODY_BYTES SUGGESTD_WEB_DIR TRITON_HOST TRITON_PORT \
    TRITON_VERBOSITY DOCS_URL OPENAPI_URL REDOC_URL BYPASS_EXTERNAL_AUTH AUTH_BYPASS_EXTERNAL GITLAB_API_URL \
    GITLAB_URL USE_LOCAL_CACHE REDIS_PASS API_EXTERNAL_PORT FASTAPI_API_HOST FASTAPI_API_PORT \
    FASTAPI_API_METRICS_PORT FASTAPI_DOCS_URL; do
    grep -q "$n" <<<"$out" || miss="$miss $n"
done
[ $rc = 0 ] && [ -z "$miss" ] && grep -q "default 5000" <<<"$out" && ok "serve --help lists every setting with defaults" \
    || bad "serve --help" "missing:$miss"
mkdir -p "$TMP/cfgdir"
printf '# comment\nTRITON_HOST=from-dotenv\nTRITON_PORT=7001\nexport REDIS_PASS="s3cret"\nUSE_LOCAL_CACHE=No\n' \
    >"$TMP/cfgdir/.env"
out=$(cd "$TMP/cfgdir" && env -u SUGGESTD_TRITON_PORT TRITON_PORT=7002 FASTAPI_API_PORT=6000 "$BIN" config --triton-host flaghost 2>&1)
grep -q '^SUGGESTD_TRITON_HOST=flaghost' <<<"$out" && grep -q '^SUGGESTD_TRITON_PORT=7002 .*env TRITON_PORT' <<<"$out" \
    && grep -q '^SUGGESTD_PORT=6000' <<<"$out" && grep -q '^SUGGESTD_USE_LOCAL_CACHE=No' <<<"$out" \
    && ok "config: flags over environment over .env, GitLab aliases" || bad "config precedence" "$out"
grep -q '^SUGGESTD_REDIS_PASS=\*\*\*\*\*\*\*\*' <<<"$out" && ! grep -q s3cret <<<"$out" \
    && ok "config masks secrets" || bad "config masks secrets" "$out"

# --- the main server ---------------------------------------------------------------------------------------------
start_server "$TMP/main.log" BYPASS_EXTERNAL_AUTH=true DOCS_URL=/docs REDOC_URL=/redoc OPENAPI_URL=/openapi.json \
    SUGGESTD_WEB_DIR="$HERE/node_modules" -- --model "$M" --threads 1 --max-body-bytes 65536 \
    || { echo "server did not start"; cat "$TMP/main.log"; exit 1; }
MAIN_PID=$SPID
URL=http://127.0.0.1:$SPORT

req GET /monitoring/healthz
check "healthz 200 {}" test "$CODE:$BODY" = "200:{}"

P='def f(x):'
req POST /v1/completions "{\"prompt\":\"$P\",\"max_tokens\":12,\"temperature\":0}"
GREEDY=$(jqb '.choices[0].text')
check "v1 non-stream 200" test "$CODE" = 200
check "v1 response shape" test "$(jqb '[(.id|startswith("cmpl-")) and (.id|length==34), .object, (.created|type),
    (.choices|length), .choices[0].index, .choices[0].finish_reason, .choices[0].logprobs,
    (.usage.prompt_tokens+.usage.completion_tokens==.usage.total_tokens)]|@json')" \
    = '[true,"text_completion","number",1,0,"length",null,true]'
check "usage counts tokens" test "$(jqb '[.usage.prompt_tokens,.usage.completion_tokens]|@json')" = '[5,12]'
grep -qi '^content-type: application/json' <<<"$HDRS" && grep -qi '^x-process-time: [0-9.]*$' <<<"$HDRS" \
    && grep -qi '^x-request-id: [0-9a-f]\{32\}$' <<<"$HDRS" && grep -qi '^x-engine-time: ' <<<"$HDRS" \
    && ok "X-Request-ID generated, X-Process-Time, X-Engine-Time" || bad "headers" "$HDRS"
CODE=$(curl -s -D "$TMP/h" -o /dev/null -w '%{http_code}' -H 'X-Request-ID: abc-123' "$URL/monitoring/healthz")
grep -qi '^x-request-id: abc-123' "$TMP/h" && ok "X-Request-ID echoed" || bad "X-Request-ID echoed" "$(cat "$TMP/h")"
req POST /v1/completions "{\"prompt\":\"$P\",\"max_tokens\":12,\"temperature\":0,\"stream\":false}"
check "stream:false is plain JSON with the same greedy text" test "$CODE:$(jqb '.choices[0].text')" = "200:$GREEDY"

for eng in codegen copilot-codex; do
    req POST /v1/engines/$eng/completions "{\"prompt\":\"$P\",\"max_tokens\":12,\"temperature\":0}"
    check "engine route $eng" test "$CODE:$(jqb '.choices[0].text')" = "200:$GREEDY"
done
req GET /copilot_internal/v2/token
check "copilot.vim token route" test "$CODE:$BODY" = '200:{"token":"1","expires_at":2600000000,"refresh_in":900}'
req GET /v1/models
check "v1/models lists the model" test "$CODE:$(jqb '.object + ":" + (.data|map(.id)|join(","))')" \
    = "200:list:tiny,codegen,fastertransformer"

# real clients' bodies
req POST /v1/completions '{"model":"gitlab","prompt":"import os\nimport sys\n","stop":["import re"]}'
check "GitLab Workflow body (default max_tokens 16)" test "$CODE:$(jqb '.usage.completion_tokens <= 16 and (.choices|length)==1')" = "200:true"
req POST /v1/engines/codegen/completions '{"model":"fastertransformer","prompt":"def hello():\n","max_tokens":200,"temperature":0.1,"stop":["\n"]}'
check "vscode-fauxpilot body stops before a newline" test "$CODE:$(jqb '.choices[0].text|contains("\n")')" = "200:false"

# stop: cut at the first occurrence, as a list or a string
if [ ${#GREEDY} -ge 6 ]; then
    STOP=${GREEDY:3:2}
    WANT=${GREEDY%%"$STOP"*}
    body=$(jq -nc --arg p "$P" --arg s "$STOP" '{prompt:$p,max_tokens:12,temperature:0,stop:[$s]}')
    req POST /v1/completions "$body"
    check "stop list cuts at the first occurrence" test "$(jqb '.choices[0].text')|$(jqb '.choices[0].finish_reason')" = "$WANT|stop"
    body=$(jq -nc --arg p "$P" --arg s "$STOP" '{prompt:$p,max_tokens:12,temperature:0,stop:$s}')
    req POST /v1/completions "$body"
    check "stop as a string" test "$(jqb '.choices[0].text')" = "$WANT"
else
    bad "greedy text too short for the stop test" "$GREEDY"
fi

# echo, logprobs
req POST /v1/completions "{\"prompt\":\"$P\",\"max_tokens\":12,\"temperature\":0,\"echo\":true}"
check "echo prepends the prompt" test "$(jqb '.choices[0].text')" = "$P$GREEDY"
req POST /v1/completions "{\"prompt\":\"$P\",\"max_tokens\":6,\"temperature\":0,\"logprobs\":3}"
check "logprobs: OpenAI shape, top-N + chosen, offsets from the prompt" test "$(jqb '.choices[0].logprobs as $l |
    [($l|keys_unsorted), ($l.tokens|length), ($l.token_logprobs|length), ($l.top_logprobs|length),
     ($l.text_offset[0]), ([$l.top_logprobs[]|length<=4 and length>=3]|all),
     ([range(0;6) as $i | $l.top_logprobs[$i][$l.tokens[$i]] == $l.token_logprobs[$i]]|all),
     ($l.tokens|join("")) == .choices[0].text,
     ([$l.token_logprobs[]|. <= 0]|all)]|@json')" \
    '=' '[["tokens","token_logprobs","top_logprobs","text_offset"],6,6,6,9,true,true,true,true]'
check "greedy token is the top logprob" test "$(jqb '.choices[0].logprobs as $l | [range(0;6) as $i |
    ($l.top_logprobs[$i]|to_entries|max_by(.value).key) == $l.tokens[$i]]|all')" = true
req POST /v1/completions "{\"prompt\":\"$P\",\"max_tokens\":3,\"temperature\":0,\"logprobs\":0,\"echo\":true}"
check "echo + logprobs: prompt tokens with null logprobs" test "$(jqb '.choices[0].logprobs as $l |
    [($l.tokens|length), $l.token_logprobs[0], $l.text_offset[0], $l.text_offset[5], ($l.top_logprobs[5]|length)]|@json')" \
    = '[8,null,0,9,1]'

# n, seed
body='{"prompt":"def f(x):","max_tokens":8,"temperature":1.0,"n":3,"seed":42}'
req POST /v1/completions "$body"; A=$BODY
req POST /v1/completions "$body"; B=$BODY
check "n choices with indexes" test "$(jq -c '[.choices[].index]' <<<"$A")" = "[0,1,2]"
check "seed reproduces every choice" test "$(jq -c '[.choices[].text]' <<<"$A")" = "$(jq -c '[.choices[].text]' <<<"$B")"
check "choices get distinct seeds" test "$(jq '[.choices[].text]|unique|length' <<<"$A")" -gt 1
req POST /v1/completions '{"prompt":"def f(x):","max_tokens":8,"temperature":1.0,"seed":43}'
check "choice i of seed s equals choice 0 of seed s+i" test "$(jqb '.choices[0].text')" = "$(jq -r '.choices[1].text' <<<"$A")"
check "usage sums the choices" test "$(jq '.usage.completion_tokens' <<<"$A")" = 24
req POST /v1/completions '{"prompt":"def f(x):","max_tokens":4,"suffix":"\n    return y\n","presence_penalty":0.5,"frequency_penalty":0.5,"repetition_penalty":1.2,"top_k":5,"best_of":1,"logit_bias":{},"user":"u","extra":{"a":1}}'
check "suffix, penalties, unknown fields accepted" test "$CODE" = 200
req POST /v1/completions '{"prompt":"","max_tokens":3}'
check "empty prompt starts from <|endoftext|>" test "$CODE:$(jqb '.usage.prompt_tokens')" = "200:1"

# --- prefix cache: usage.prompt_tokens_details.cached_tokens ---------------------------------------------------------
# A prompt of several whole KV blocks (16 tokens) that no earlier request shares; the second identical request finds
# its blocks in the prefix cache. (The > 0 check needs the batching scheduler with its prefix cache.)
PC=$(printf '# prefix cache probe\n'; for i in $(seq 0 11); do printf 'value_%d = compute(%d, %d)\n' $i $i $((i * 7)); done)
pc_body=$(jq -nc --arg p "$PC" '{prompt:$p,max_tokens:2,temperature:0}')
req POST /v1/completions "$pc_body"
check "fresh prompt: usage.prompt_tokens_details.cached_tokens = 0 (prompt >= 64 tokens)" \
    test "$CODE:$(jqb '[.usage.prompt_tokens >= 64, .usage.prompt_tokens_details.cached_tokens]|@json')" = '200:[true,0]'
req POST /v1/completions "$pc_body"
check "same prompt again: cached_tokens > 0 (prefix cache)" test "$CODE:$(jqb '.usage.prompt_tokens_details.cached_tokens as $c |
    ($c|type) == "number" and $c > 0 and $c <= .usage.prompt_tokens')" = "200:true"
PC_CACHED=$(jqb '.usage.prompt_tokens_details.cached_tokens')
req POST /v1/completions "$(jq -c '.n=2|.temperature=1|.seed=7' <<<"$pc_body")"
check "n=2: the prompt's cached_tokens is reported once, not summed" \
    test "$CODE:$(jqb '.usage.prompt_tokens_details.cached_tokens <= .usage.prompt_tokens')" = "200:true"

# --- SSE framing, byte for byte ------------------------------------------------------------------------------------
curl -sN -D "$TMP/sh" -o "$TMP/sse" -H 'Content-Type: application/json' \
    --data-binary "{\"prompt\":\"$P\",\"max_tokens\":12,\"temperature\":0,\"stream\":true}" "$URL/v1/completions"
grep -qi '^content-type: text/event-stream; charset=utf-8' "$TMP/sh" && grep -qi '^cache-control: no-cache' "$TMP/sh" \
    && grep -qi '^transfer-encoding: chunked' "$TMP/sh" && ok "SSE headers" || bad "SSE headers" "$(cat "$TMP/sh")"
# every byte belongs to an event `data: <json>\r\n\r\n`, the last is `data: [DONE]\r\n\r\n`
tailb=$(tail -c 20 "$TMP/sse" | od -An -c | tr -s ' ')
check "stream ends with data: [DONE]\\r\\n\\r\\n" test "$tailb" = "$(printf '\r\n\r\ndata: [DONE]\r\n\r\n' | od -An -c | tr -s ' ')"
LC_ALL=C perl -e '
    local $/; my $s = <STDIN>; my $n = 0;
    while ($s =~ s/\Adata: (\{[^\r\n]*\})\r\n\r\n//) { $n++ }
    exit(($s eq "data: [DONE]\r\n\r\n" && $n >= 2) ? 0 : 1)' <"$TMP/sse" \
    && ok "every byte is a data: {json}\\r\\n\\r\\n event" || bad "SSE framing" "$(od -c "$TMP/sse" | head -20)"
sed -n 's/^data: \({.*}\)\r$/\1/p' "$TMP/sse" >"$TMP/events"
check "stream text equals the non-stream text" test "$(jq -j '.choices[0].text' "$TMP/events")" = "$GREEDY"
check "one id for all chunks, token by token, finish + usage last" test "$(jq -s -c '[(map(.id)|unique|length),
    (length > 2), (.[-1].choices[0].finish_reason), ([.[:-1][].choices[0].finish_reason]|unique),
    (.[-1].usage.completion_tokens), ([.[].object]|unique)]' "$TMP/events")" '=' '[1,true,"length",[null],12,["text_completion"]]'
check "streamed usage carries prompt_tokens_details.cached_tokens" \
    test "$(jq -s -c '.[-1].usage.prompt_tokens_details.cached_tokens|type' "$TMP/events")" = '"number"'
# canonical bytes: with id/created fixed, the stream is exactly what these events print back to
exp=$(jq -c --arg id X '.id=$id|.created=0' "$TMP/events" | awk '{printf "data: %s\r\n\r\n", $0} END{printf "data: [DONE]\r\n\r\n"}' | od -An -tx1)
got=$(sed 's/"id":"cmpl-[A-Za-z0-9]*"/"id":"X"/; s/"created":[0-9]*/"created":0/' "$TMP/sse" | od -An -tx1)
check "SSE bytes equal the canonical serialization" test "$exp" = "$got"
curl -sN -o "$TMP/sse2" -H 'Content-Type: application/json' \
    --data-binary "{\"prompt\":\"$P\",\"max_tokens\":5,\"temperature\":0,\"stream\":true,\"n\":2,\"logprobs\":1}" "$URL/v1/completions"
sed -n 's/^data: \({.*}\)\r$/\1/p' "$TMP/sse2" >"$TMP/events2"
check "streamed n=2 with logprobs: choices in order, logprobs per chunk" test "$(jq -s -c '[([.[].choices[0].index]|unique),
    ([.[] | select(.choices[0].finish_reason==null) | .choices[0].logprobs.tokens|length>0]|all)]' "$TMP/events2")" = '[[0,1],true]'

# --- GitLab v2 --------------------------------------------------------------------------------------------------
V2='{"prompt_version":1,"project_path":"gitlab-org/gitlab-shell","project_id":33191677,"current_file":{"file_name":"test.py","content_above_cursor":"def is_even(n: int) ->","content_below_cursor":""}}'
for path in /v2/completions /v2/code/completions; do
    req POST $path "$V2"
    check "v2 $path shape" test "$CODE:$(jqb '[(.id|startswith("cmpl-")), .object, (.choices|length), .choices[0].index,
        (.choices[0].finish_reason|type), (.choices[0].text|type)]|@json')" = '200:[true,"text_completion",1,0,"string","string"]'
    check "v2 $path text has no trailing incomplete line" test "$(jqb '.choices[0].text | (contains("\n")|not) or endswith("\n")')" = true
done
req POST /v2/completions '{"current_file":{"file_name":"a.rb","content_above_cursor":"x = 1\n","content_below_cursor":"","language_identifier":"ruby"},"telemetry":[],"stream":false}'
check "v2 later fields accepted" test "$CODE" = 200
LONGNAME=$(printf 'a%.0s' $(seq 256)).py
req POST /v2/completions "{\"current_file\":{\"file_name\":\"$LONGNAME\",\"content_above_cursor\":\"\",\"content_below_cursor\":\"\"}}"
check "v2 file_name over 255 -> 422 with details" test "$CODE:$(jqb '.detail[0]|[.loc,.type,.ctx.limit_value]|@json')" \
    = '422:[["body","current_file","file_name"],"value_error.any_str.max_length",255]'
big=$(head -c 100001 /dev/zero | tr '\0' 'x')
printf '{"current_file":{"file_name":"a.py","content_above_cursor":"%s","content_below_cursor":"%s"}}' "$big" "$big" >"$TMP/big.json"
CODE=$(curl -s -o "$TMP/b" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @"$TMP/big.json" "$URL/v2/completions")
check "v2 content over 100000 chars -> 413 (over the body limit here)" test "$CODE" = 413
ubig=$(head -c 100001 /dev/zero | tr '\0' 'y')
printf '{"current_file":{"file_name":"a.py","content_above_cursor":"%s","content_below_cursor":""}}' "$ubig" >"$TMP/big2.json"
start_server "$TMP/v2.log" BYPASS_EXTERNAL_AUTH=true -- --model "$M" --threads 1 || bad "second server" "$(cat "$TMP/v2.log")"
V2PORT=$SPORT V2PID=$SPID
CODE=$(curl -s -o "$TMP/b" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @"$TMP/big2.json" "http://127.0.0.1:$V2PORT/v2/completions")
check "v2 content over 100000 chars -> 422" test "$CODE:$(jq -c '.detail[0].loc' "$TMP/b")" = '422:["body","current_file","content_above_cursor"]'
req POST /v2/completions '{"current_file":{"file_name":"a.py"}}'
check "v2 missing fields -> 422 listing each" test "$CODE:$(jqb '[.detail[]|.loc[-1]+":"+.type]|join(",")')" \
    = "422:content_above_cursor:value_error.missing,content_below_cursor:value_error.missing"
req POST /v2/completions '{"current_file":'
check "v2 invalid JSON -> 422" test "$CODE:$(jqb '.detail[0].type')" = "422:value_error.jsondecode"
req POST /v2/completions '{"project_id":"x","current_file":{"file_name":1,"content_above_cursor":"","content_below_cursor":""}}'
check "v2 wrong types -> 422" test "$CODE:$(jqb '[.detail[].type]|join(",")')" = "422:type_error.integer,type_error.str"

# --- bad input on /v1: 4xx JSON, and the server keeps serving ------------------------------------------------------
bad_req() { # NAME WANT_CODE PARAM_OR_EMPTY BODY
    req POST /v1/completions "$4"
    if [ "$CODE" = "$2" ] && is_json && [ "$(jqb '.error.type|type')" = string ] \
        && { [ -z "$3" ] || [ "$(jqb '.error.param')" = "$3" ]; }; then ok "$1"; else bad "$1" "$CODE $BODY"; fi
}
bad_req "invalid JSON -> 400" 400 "" '{"prompt": "x",'
bad_req "non-object body -> 400" 400 "" '[1,2]'
bad_req "wrong type max_tokens -> 400" 400 max_tokens '{"prompt":"x","max_tokens":"ten"}'
bad_req "negative max_tokens -> 400" 400 max_tokens '{"prompt":"x","max_tokens":-1}'
bad_req "n over the limit -> 400" 400 n '{"prompt":"x","n":1000}'
bad_req "prompt of the wrong type -> 400" 400 prompt '{"prompt":{"a":1}}'
bad_req "stop of the wrong type -> 400" 400 stop '{"prompt":"x","stop":[1]}'
bad_req "temperature out of range -> 400" 400 temperature '{"prompt":"x","temperature":7}'
bad_req "logprobs over 20 -> 400" 400 logprobs '{"prompt":"x","logprobs":21}'
bad_req "stream not a boolean -> 400" 400 stream '{"prompt":"x","stream":"yes"}'
bad_req "empty body -> 400" 400 "" ''
CODE=$(printf '{"prompt":"ab\xc3("}' | curl -s -o "$TMP/b" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @- "$URL/v1/completions")
BODY=$(cat "$TMP/b")
check "invalid UTF-8 -> 400 JSON" test "$CODE:$(jqb '.error.type')" = "400:invalid_request_error"
head -c 70000 /dev/zero | tr '\0' 'a' | sed 's/^/{"prompt":"/; s/$/"}/' >"$TMP/huge.json"
CODE=$(curl -s -o "$TMP/b" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @"$TMP/huge.json" "$URL/v1/completions")
BODY=$(cat "$TMP/b")
check "body over the limit -> 413 JSON" test "$CODE:$(jqb '.error.type')" = "413:invalid_request_error"
CODE=$(head -c 70000 /dev/zero | tr '\0' 'a' | curl -s -o "$TMP/b" -w '%{http_code}' -H 'Transfer-Encoding: chunked' --data-binary @- "$URL/v1/completions")
check "chunked body over the limit -> 413" test "$CODE" = 413
req POST /v1/completions '{"prompt":"x","max_tokens":300}'
check "context overflow -> FauxPilot's 400 byte for byte" test "$CODE:$BODY" = '400:{"error":{"message":"This model'"'"'s maximum context length is 256, however you requested 301 tokens (1 in your prompt; 300 for the completion). Please reduce your prompt; or completion length.","type":"invalid_request_error","param":null,"code":null}}'
req GET /v1/nope
check "unknown /v1 route -> 404 OpenAI JSON" test "$CODE:$(jqb '.error.type')" = "404:not_found_error"
req GET /nope
check "unknown route -> 404 JSON" test "$CODE:$BODY" = '404:{"detail":"Not Found"}'
req GET /v1/completions
check "wrong method -> 405 JSON" test "$CODE:$(jqb '.error.message')" = "405:Method Not Allowed"
req POST /v1/completions "{\"prompt\":\"$P\",\"max_tokens\":12,\"temperature\":0}"
check "still serving after bad input" test "$CODE:$(jqb '.choices[0].text')" = "200:$GREEDY"

# --- docs (on here via DOCS_URL/REDOC_URL/OPENAPI_URL, assets from npm packages) ----------------------------------
req GET /openapi.json
check "OpenAPI document" test "$CODE:$(jqb '.openapi + " " + (.paths|has("/v1/completions")|tostring)')" = "200:3.0.3 true"
if [ -f "$HERE/node_modules/swagger-ui-dist/swagger-ui-bundle.js" ]; then
    req GET /docs
    check "Swagger UI page with local assets" test "$CODE:$(grep -c '/docs-assets/swagger-ui/swagger-ui-bundle.js' <<<"$BODY")" = "200:1"
    CODE=$(curl -s -D "$TMP/h" -o /dev/null -w '%{http_code}' "$URL/docs-assets/swagger-ui/swagger-ui-bundle.js")
    check "Swagger UI asset served" test "$CODE:$(grep -ci 'content-type: application/javascript' "$TMP/h")" = "200:1"
    req GET /redoc
    CODE2=$(curl -s -o /dev/null -w '%{http_code}' "$URL/docs-assets/redoc/redoc.standalone.js")
    check "ReDoc page and asset" test "$CODE:$CODE2:$(grep -c 'redoc.standalone.js' <<<"$BODY")" = "200:200:1"
    CODE=$(curl -s --path-as-is -o /dev/null -w '%{http_code}' "$URL/docs-assets/swagger-ui/../../../etc/passwd")
    check "asset path traversal refused" test "$CODE" = 404
else
    bad "docs assets not installed (npm install in tests/integration)"
fi
check "docs off by default" test "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$V2PORT/docs"):$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$V2PORT/openapi.json")" = "404:404"

# --- the official openai npm package ---------------------------------------------------------------------------
if [ $NODE_OK = 1 ]; then
    out=$(cd "$HERE" && SUGGESTD_URL="$URL" GREEDY="$GREEDY" node openai_client.mjs 2>&1); rc=$?
    printf '%s\n' "$out" | sed 's/^/     /'
    [ $rc = 0 ] && ok "openai npm client (stream and not)" || bad "openai npm client" "rc=$rc"
else
    bad "openai npm package not available (node/npm missing or npm install failed)"
fi

# --- metrics and logs ----------------------------------------------------------------------------------------------
req GET /metrics
grep -q 'suggestd_http_requests_total{route="/v1/completions",status="200"}' <<<"$BODY" \
    && grep -q 'suggestd_http_request_duration_seconds_bucket{route="/v1/completions",le="+Inf"}' <<<"$BODY" \
    && grep -q '^suggestd_queue_depth 0' <<<"$BODY" && grep -q '^suggestd_completion_tokens_total [1-9]' <<<"$BODY" \
    && grep -q 'status="422"' <<<"$BODY" && ok "Prometheus metrics" || bad "metrics" "$BODY"
# every family has HELP and TYPE, and the batching / KV / latency series are there
NEW_SERIES="suggestd_engine_batch_size suggestd_engine_max_batch suggestd_engine_steps_total
    suggestd_engine_step_sequences_total suggestd_engine_step_rows_total suggestd_engine_forward_seconds_total suggestd_engine_kv_blocks_capacity
    suggestd_engine_kv_blocks_used suggestd_engine_kv_blocks_cached suggestd_engine_prompt_tokens_total
    suggestd_engine_cached_prompt_tokens_total suggestd_engine_prefix_cache_hit_ratio
    suggestd_engine_deadline_expired_total suggestd_engine_time_to_first_token_seconds
    suggestd_engine_time_per_output_token_seconds"
miss=""
for n in $NEW_SERIES; do
    grep -q "^# HELP $n [A-Z]" <<<"$BODY" && grep -q "^# TYPE $n \(counter\|gauge\|histogram\)$" <<<"$BODY" \
        && grep -q "^$n\(_bucket{le=\"+Inf\"}\)\? [0-9]" <<<"$BODY" || miss="$miss $n"
done
check "metrics: batch, KV block, prefix cache, deadline and token latency series with HELP/TYPE" test -z "$miss"
undoc=$(awk '/^# HELP /{h[$3]=1} /^# TYPE /{t[$3]=1} /^[a-z]/{n=$1; sub(/[{ ].*/, "", n)
    b=n; sub(/_(bucket|sum|count)$/, "", b); if (!((h[n] && t[n]) || (h[b] && t[b]))) print n}' <<<"$BODY" | sort -u)
check "metrics: every series has HELP and TYPE" test -z "$undoc"
check "metrics: token-latency buckets in milliseconds" \
    grep -q '^suggestd_engine_time_to_first_token_seconds_bucket{le="0.005"} ' <<<"$BODY"
check "metrics: cached prompt tokens counted (prefix cache)" \
    test "$(sed -n 's/^suggestd_engine_cached_prompt_tokens_total \([0-9]*\)$/\1/p' <<<"$BODY")" -ge $((PC_CACHED > 0 ? PC_CACHED : 1))
grep -q '"request_id":"abc-123","method":"GET","route":"/monitoring/healthz","status":200' "$TMP/main.log" \
    && ok "one JSON log line per request" || bad "log line" "$(tail -3 "$TMP/main.log")"
! grep -q 'def f(x)' "$TMP/main.log" && ok "prompts are not logged" || bad "prompt text found in the log"

# --- load: cancellation on disconnect, full queue (slow model, queue of 1) ---------------------------------------
# --max-batch 1: one request runs at a time, so two long ones fill the queue of 1 (a batch would seat them both)
start_server "$TMP/slow.log" BYPASS_EXTERNAL_AUTH=true -- --model "$S" --threads 1 --queue-max 1 --max-batch 1 \
    --request-timeout 2 --metrics-port "$(free_port)" \
    || bad "slow server" "$(cat "$TMP/slow.log")"
SLOW=http://127.0.0.1:$SPORT SLOWPID=$SPID
MPORT=$(sed -n 's/.*metrics on http:\/\/[0-9.]*:\([0-9]*\).*/\1/p' "$TMP/slow.log")
LONG='{"prompt":"def f(x):","max_tokens":2000,"temperature":0,"stream":true}'
t0=$(date +%s%N)
curl -sN -m 1 -o "$TMP/cut" -H 'Content-Type: application/json' --data-binary "$LONG" "$SLOW/v1/completions"
sleep 0.3
t1=$(date +%s%N)
CODE=$(curl -s -o "$TMP/b" -w '%{http_code}' -m 10 -H 'Content-Type: application/json' \
    --data-binary '{"prompt":"x","max_tokens":2,"temperature":0}' "$SLOW/v1/completions")
t2=$(date +%s%N)
ms=$(((t2 - t1) / 1000000))
check "next request served promptly after a client dropped a stream (${ms} ms)" test "$CODE" = 200 -a "$ms" -lt 2000
grep -q '"route":"/v1/completions","status":200.*"cancelled":true' "$TMP/slow.log" \
    && ok "log shows the dropped stream cancelled" || bad "cancel in log" "$(grep completions "$TMP/slow.log")"
MET=$(curl -s "http://127.0.0.1:$MPORT/metrics")
grep -q 'suggestd_engine_requests_total{outcome="cancelled"} 1' <<<"$MET" && grep -q '^suggestd_http_requests_cancelled_total 1' <<<"$MET" \
    && ok "metrics show the request cancelled (separate metrics port)" || bad "cancel in metrics" "$MET"
check "metrics port is separate" test "$(curl -s -o /dev/null -w '%{http_code}' "$SLOW/metrics")" = 404
# non-streaming client that gives up
curl -s -m 1 -o /dev/null -H 'Content-Type: application/json' --data-binary '{"prompt":"y","max_tokens":2000,"temperature":0}' "$SLOW/v1/completions"
sleep 0.3
MET=$(curl -s "http://127.0.0.1:$MPORT/metrics")
grep -q 'suggestd_engine_requests_total{outcome="cancelled"} 2' <<<"$MET" && ok "non-streaming disconnect cancels too" || bad "non-stream cancel" "$MET"

# a completion that outlives --request-timeout 2: 504, and the engine is freed
t0=$(date +%s%N)
CODE=$(curl -s -o "$TMP/b" -w '%{http_code}' -m 10 -H 'Content-Type: application/json' \
    --data-binary '{"prompt":"z","max_tokens":2040,"temperature":0}' "$SLOW/v1/completions")
ms=$((($(date +%s%N) - t0) / 1000000))
BODY=$(cat "$TMP/b")
check "request timeout -> 504 JSON (${ms} ms)" test "$CODE:$(jqb '.error.type')" = "504:timeout" -a "$ms" -lt 4000
sleep 0.2
# the same deadline on a stream: the headers went out, so it is cut (no [DONE]) and the log line says why
t0=$(date +%s%N)
curl -sN -m 10 -o "$TMP/tcut" -H 'Content-Type: application/json' \
    --data-binary '{"prompt":"w","max_tokens":2040,"temperature":0,"stream":true}' "$SLOW/v1/completions"
ms=$((($(date +%s%N) - t0) / 1000000))
grep -q '^data: {' "$TMP/tcut" && ! grep -q 'data: \[DONE\]' "$TMP/tcut" && [ "$ms" -lt 4000 ] \
    && grep -q '"route":"/v1/completions","status":200[^}]*"note":"request timed out"' "$TMP/slow.log" \
    && ok "request timeout on a stream: cut without [DONE], logged (${ms} ms)" \
    || bad "stream timeout" "${ms} ms" "$(tail -c 200 "$TMP/tcut")" "$(grep completions "$TMP/slow.log" | tail -2)"
sleep 0.2

# fill: one running + one queued, the third gets 429 with Retry-After
curl -sN -m 20 -o /dev/null -H 'Content-Type: application/json' --data-binary "$LONG" "$SLOW/v1/completions" & c1=$!
sleep 0.3
curl -sN -m 20 -o /dev/null -H 'Content-Type: application/json' --data-binary "$LONG" "$SLOW/v1/completions" & c2=$!
sleep 0.3
CODE=$(curl -s -D "$TMP/h" -o "$TMP/b" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary '{"prompt":"x","max_tokens":2}' "$SLOW/v1/completions")
BODY=$(cat "$TMP/b")
check "full queue -> 429 with Retry-After and JSON" test "$CODE:$(grep -ci '^retry-after: [0-9]' "$TMP/h"):$(jqb '.error.type')" = "429:1:server_overloaded"
CODE=$(curl -s -D "$TMP/h" -o "$TMP/b" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$V2" "$SLOW/v2/completions")
check "full queue on v2 -> 429" test "$CODE:$(grep -ci '^retry-after:' "$TMP/h")" = "429:1"
kill $c1 $c2 2>/dev/null; wait $c1 $c2 2>/dev/null
sleep 0.3
CODE=$(curl -s -o /dev/null -w '%{http_code}' -m 10 -H 'Content-Type: application/json' --data-binary '{"prompt":"x","max_tokens":2}' "$SLOW/v1/completions")
check "served again once the queue drains" test "$CODE" = 200

# many connections at once (tiny model)
cpids=()
for i in $(seq 24); do
    curl -s -o "$TMP/par$i" -w '%{http_code}\n' -H 'Content-Type: application/json' --data-binary '{"prompt":"def g():","max_tokens":4}' "$URL/v1/completions" >>"$TMP/par_codes" &
    cpids+=($!)
done
wait "${cpids[@]}"
check "24 concurrent requests all 200" test "$(sort -u "$TMP/par_codes")" = 200

# --- shutdown ---------------------------------------------------------------------------------------------------
curl -sN -m 20 -o /dev/null -H 'Content-Type: application/json' --data-binary "$LONG" "$SLOW/v1/completions" & c3=$!
sleep 0.3
t0=$(date +%s%N)
kill -TERM "$SLOWPID"; wait "$SLOWPID"; rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
check "SIGTERM with a stream in flight: exit 0 within 3 s (${ms} ms)" test "$rc" = 0 -a "$ms" -lt 3000
wait $c3 2>/dev/null
kill -INT "$MAIN_PID"; wait "$MAIN_PID"; rc=$?
check "SIGINT: exit 0" test "$rc" = 0
kill -TERM "$V2PID"; wait "$V2PID"; rc=$?
check "third server: exit 0" test "$rc" = 0
# sanitizer builds: any report in a server log fails the run
if grep -l -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$TMP"/*.log >/dev/null 2>&1; then
    bad "sanitizer report in a server log" "$(grep -h -E -A5 'Sanitizer|runtime error:' "$TMP"/*.log | head -20)"
else
    ok "no sanitizer reports in the server logs"
fi

echo "$pass passed, $fail failed"
[ $fail = 0 ]
