#!/usr/bin/env bash
# test_auth.sh - authentication of `suggestd serve` on loopback against a stand-in GitLab (fake_gitlab.mjs, which
# counts its calls per token) and a real redis-server: status codes, GitLab call counts (cache hits, denial caching
# and expiry, single flight), OIDC JWTs, API keys, Redis keys and TTLs, a restarted server and a second replica
# reusing Redis decisions, Redis killed mid-run, rate limits (local and across replicas), no token in any log.
# usage: test_auth.sh SUGGESTD MKCKPT SOURCE_DIR
set -u
source "$(dirname "$0")/lib.sh" "$@"

for t in jq curl node redis-server redis-cli; do command -v $t >/dev/null || { echo "$t is required"; exit 1; }; done

M=$TMP/tiny
"$MKCKPT" "$M" 2 64 4 8 256 f32 7 >/dev/null || { echo "mkckpt failed"; exit 1; }
cp "$SRC"/models/codegen-tokenizer/{vocab.json,merges.txt,added_tokens.json,special_tokens_map.json} "$M"/

# --- the stand-in GitLab ---------------------------------------------------------------------------------------
node "$HERE/fake_gitlab.mjs" "$TMP/gl.port" >"$TMP/gitlab.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$TMP/gl.port" ] && break; sleep 0.05; done
GL=http://127.0.0.1:$(cat "$TMP/gl.port")
calls() { curl -s "$GL/_counts" | jq -r --arg t "$1" '.[$t] // 0'; }
jwt() { curl -s "$GL/_jwt?kind=$1&sub=${2:-user-1}"; }
SERVE_DEFAULTS=(--model "$M" --threads 1)
AUTH_ENV=(GITLAB_API_URL="$GL/api/v4/" GITLAB_URL="$GL" SUGGESTD_GITLAB_TIMEOUT_MS=1000)

# req URL PATH TOKEN [EXTRA_HEADER] -> CODE, BODY, HDRS (GET /v1/models: an authenticated route that skips the engine)
req() {
    local args=(-s -m 10 -D "$TMP/h" -o "$TMP/b" -w '%{http_code}')
    [ -n "$3" ] && args+=(-H "Authorization: Bearer $3")
    [ -n "${4-}" ] && args+=(-H "$4")
    CODE=$(curl "${args[@]}" "$1$2")
    BODY=$(cat "$TMP/b")
    HDRS=$(tr -d '\r' <"$TMP/h")
}
code() { req "$1" /v1/models "$2" "${3-}"; echo "$CODE"; }

# --- GitLab tokens, local cache -----------------------------------------------------------------------------------
start_server "$TMP/a.log" "${AUTH_ENV[@]}" SUGGESTD_AUTH_DENY_TTL_S=2 -- \
    || { echo "server A did not start"; cat "$TMP/a.log"; exit 1; }
A=http://127.0.0.1:$SPORT
APID=$SPID
grep -q 'authentication: gitlab, decision cache local' "$TMP/a.log" && ok "starts with authentication on, no bypass" \
    || bad "starts with authentication" "$(cat "$TMP/a.log")"
check "healthz needs no token" test "$(curl -s -o /dev/null -w '%{http_code}' "$A/monitoring/healthz")" = 200
check "metrics need no token" test "$(curl -s -o /dev/null -w '%{http_code}' "$A/metrics")" = 200

req "$A" /v1/models ""
check "no Authorization -> 401 JSON error" test "$CODE:$(jq -r '.error.type' <<<"$BODY")" = "401:authentication_error"
CODE=$(curl -s -o "$TMP/b" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary \
    '{"current_file":{"file_name":"a.py","content_above_cursor":"def f(","content_below_cursor":""}}' "$A/v2/code/completions")
check "/v2 without a token -> 401 {\"error\": \"...\"}" test "$CODE:$(jq -r '.error|type' "$TMP/b")" = "401:string"
check "Basic scheme -> 401" test "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Basic dXNlcjpwYXNz' "$A/v1/models")" = 401
check "Bearer with no token -> 401" test "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer ' "$A/v1/models")" = 401
check "Bearer with two words -> 401" test "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer a b' "$A/v1/models")" = 401

for i in 1 2 3; do c=$(code "$A" allowed-alice); [ "$c" = 200 ] || break; done
check "allowed token -> 200 three times" test "$c" = 200
check "allowed token: one GitLab call for three requests (cache hits)" test "$(calls allowed-alice)" = 1
CODE=$(curl -s -o "$TMP/b" -w '%{http_code}' -H 'Authorization: Bearer allowed-alice' -H 'Content-Type: application/json' \
    --data-binary '{"prompt":"def f(x):","max_tokens":4,"temperature":0}' "$A/v1/completions")
check "allowed token: /v1/completions 200" test "$CODE" = 200
CODE=$(curl -s -o "$TMP/b" -w '%{http_code}' -H 'Authorization: bearer allowed-alice' -H 'Content-Type: application/json' \
    --data-binary '{"current_file":{"file_name":"a.py","content_above_cursor":"def f(","content_below_cursor":""}}' "$A/v2/code/completions")
check "allowed token (scheme in lower case): /v2/code/completions 200" test "$CODE" = 200
check "still one GitLab call" test "$(calls allowed-alice)" = 1

req "$A" /v2/completions denied-bob
c1=$(code "$A" denied-bob)
check "user not allowed -> 403" test "$c1" = 403
check "denial cached: one GitLab call for two requests" test "$(calls denied-bob)" = 1
sleep 2.2
c1=$(code "$A" denied-bob)
check "denial expires after SUGGESTD_AUTH_DENY_TTL_S (2 s): asked again" test "$c1:$(calls denied-bob)" = "403:2"

c1=$(code "$A" invalid-carol); c2=$(code "$A" invalid-carol)
check "token GitLab rejects (401) -> 401, cached" test "$c1:$c2:$(calls invalid-carol)" = "401:401:1"
req "$A" /v1/models error-dave
c2=$(code "$A" error-dave)
check "GitLab 500 -> 503 with Retry-After, not cached" test "$CODE:$c2:$(calls error-dave):$(grep -ci '^retry-after: ' <<<"$HDRS")" = "503:503:2:1"
check "malformed GitLab JSON -> 503" test "$(code "$A" badjson-erin)" = 503
t0=$(date +%s%N); c1=$(code "$A" slow-frank); ms=$((($(date +%s%N) - t0) / 1000000))
check "GitLab slower than the timeout (1 s) -> 503 in ${ms} ms" test "$c1" = 503 -a "$ms" -lt 2500

rm -f "$TMP/sf_codes"
for i in $(seq 8); do curl -s -m 10 -o /dev/null -w '%{http_code}\n' -H 'Authorization: Bearer sf-gina' "$A/v1/models" >>"$TMP/sf_codes" & done
wait $(jobs -p | grep -v -x -F "$(printf '%s\n' "${PIDS[@]}")") 2>/dev/null
check "8 parallel requests, same uncached token: all 200" test "$(sort -u "$TMP/sf_codes")" = 200
check "single flight: one GitLab call for 8 parallel requests" test "$(calls sf-gina)" = 1

# OIDC
req "$A" /v1/models "$(jwt valid)" "X-Gitlab-Authentication-Type: oidc"
check "OIDC: valid RS256 JWT -> 200" test "$CODE" = 200
for k in expired wrongaud wrongkey none hs256 future newkid; do
    check "OIDC: $k JWT -> 401" test "$(code "$A" "$(jwt $k)" "X-Gitlab-Authentication-Type: oidc")" = 401
done
j0=$(calls _jwks)
check "OIDC: JWKS fetched once, plus at most one refetch a second for unknown kids ($j0)" test "$j0" -ge 1 -a "$j0" -le 2
curl -s "$GL/_rotate" >/dev/null; sleep 1.1
check "OIDC: rotated key (unknown kid) -> JWKS refetched once -> 200" \
    test "$(code "$A" "$(jwt newkid)" "X-Gitlab-Authentication-Type: oidc"):$(calls _jwks)" = "200:$((j0 + 1))"
check "a JWT without the oidc header goes to GitLab as a token -> 401" test "$(code "$A" "$(jwt valid)")" = 401

curl -s "$A/metrics" >"$TMP/metrics_a"
grep -q '^suggestd_auth_requests_total{outcome="forbidden"} [1-9]' "$TMP/metrics_a" \
    && grep -q '^suggestd_auth_cache_total{store="local",result="hit"} [1-9]' "$TMP/metrics_a" \
    && grep -q '^suggestd_auth_single_flight_waits_total [1-9]' "$TMP/metrics_a" \
    && ok "metrics count decisions, cache hits, single-flight waits" || bad "auth metrics" "$(grep auth "$TMP/metrics_a")"

# --- API keys --------------------------------------------------------------------------------------------------
printf '# keys\nfile-key-1\n\n  file-key-2  \n' >"$TMP/keys"
start_server "$TMP/k.log" "${AUTH_ENV[@]}" SUGGESTD_API_KEYS="key-one,key-two" SUGGESTD_API_KEYS_FILE="$TMP/keys" \
    SUGGESTD_RATE_LIMIT_RPM=1 SUGGESTD_RATE_LIMIT_BURST=3 -- || bad "API-key server" "$(cat "$TMP/k.log")"
K=http://127.0.0.1:$SPORT
check "API keys: listed keys and file keys -> 200" \
    test "$(code "$K" key-one):$(code "$K" key-two):$(code "$K" file-key-1):$(code "$K" file-key-2)" = "200:200:200:200"
check "API keys: a wrong key, a prefix, a longer key -> 401" \
    test "$(code "$K" key-thr):$(code "$K" key-on):$(code "$K" key-one1)" = "401:401:401"
check "API keys: nothing sent to GitLab" test "$(calls key-thr):$(calls allowed-x)" = "0:0"
check "API keys: # comment lines are not keys" test "$(code "$K" '#')" = 401
code "$K" key-two >/dev/null; code "$K" key-two >/dev/null
req "$K" /v1/models key-two
ra=$(grep -i '^retry-after:' <<<"$HDRS" | tr -dc 0-9)
check "local rate limit: 4th request within a burst of 3 -> 429 with Retry-After" \
    test "$CODE:$(jq -r '.error.type' <<<"$BODY")" = "429:rate_limit_exceeded" -a "${ra:-0}" -ge 1
check "rate limit is per key: another key still 200" test "$(code "$K" file-key-1)" = 200

# --- Redis ------------------------------------------------------------------------------------------------------
RP=$(free_port)
start_redis() {
    redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >>"$TMP/redis.log" 2>&1 &
    RPID=$!
    PIDS+=("$RPID")
    for _ in $(seq 100); do redis-cli -p "$RP" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
    return 1
}
start_redis || { echo "redis-server did not start"; cat "$TMP/redis.log"; exit 1; }
RC() { redis-cli -p "$RP" "$@"; }
R_ENV=("${AUTH_ENV[@]}" USE_LOCAL_CACHE=false REDIS_URL="redis://127.0.0.1:$RP/0" SUGGESTD_CACHE_SECRET=test-secret-1
       SUGGESTD_REDIS_TIMEOUT_MS=200)

out=$(env -u SUGGESTD_CACHE_SECRET "${AUTH_ENV[@]}" USE_LOCAL_CACHE=false REDIS_URL="redis://127.0.0.1:$RP" \
    "$BIN" serve --model "$M" --port 1 2>&1); rc=$?
check "Redis without SUGGESTD_CACHE_SECRET: refuses to start (exit 2)" test "$rc" = 2

start_server "$TMP/r1.log" "${R_ENV[@]}" -- || bad "Redis server 1" "$(cat "$TMP/r1.log")"
R1=http://127.0.0.1:$SPORT R1PID=$SPID
c1=$(code "$R1" allowed-hank); c2=$(code "$R1" allowed-hank); c3=$(code "$R1" allowed-hank)
check "Redis: allowed x3, one GitLab call" test "$c1:$c2:$c3:$(calls allowed-hank)" = "200:200:200:1"
keys=$(RC --scan --pattern 'suggestd:auth:*')
check "Redis: one decision key, named by a 64-hex HMAC" test "$(wc -l <<<"$keys"):$(grep -cE '^suggestd:auth:[0-9a-f]{64}$' <<<"$keys")" = "1:1"
ttl=$(RC ttl "$keys")
check "Redis: allowed decision value 1, TTL ~3600 s ($ttl)" test "$(RC get "$keys")" = 1 -a "$ttl" -gt 3590 -a "$ttl" -le 3600
c1=$(code "$R1" denied-ivan)
dk=$(RC --scan --pattern 'suggestd:auth:*' | grep -v -x -F "$keys")
dttl=$(RC ttl "$dk")
check "Redis: denial stored as 2 with TTL ~60 s ($dttl)" test "$c1:$(RC get "$dk")" = "403:2" -a "$dttl" -gt 50 -a "$dttl" -le 60
check "Redis: neither key nor value holds the token" test "$(RC --scan | grep -c -e hank -e ivan)" = 0

kill "$R1PID"; wait "$R1PID" 2>/dev/null
start_server "$TMP/r1.log" "${R_ENV[@]}" -- || bad "Redis server 1 restarted" "$(cat "$TMP/r1.log")"
R1=http://127.0.0.1:$SPORT R1PID=$SPID
check "restarted suggestd reuses Redis decisions (no new GitLab call)" \
    test "$(code "$R1" allowed-hank):$(code "$R1" denied-ivan):$(calls allowed-hank):$(calls denied-ivan)" = "200:403:1:1"
start_server "$TMP/r2.log" "${R_ENV[@]}" SUGGESTD_RATE_LIMIT_RPM=1 SUGGESTD_RATE_LIMIT_BURST=4 -- \
    || bad "Redis replica 2" "$(cat "$TMP/r2.log")"
R2=http://127.0.0.1:$SPORT R2PID=$SPID
check "second replica (same secret) shares the decisions" test "$(code "$R2" allowed-hank):$(calls allowed-hank)" = "200:1"

# rate limit across replicas: R3 has the same limit; the bucket lives in Redis
start_server "$TMP/r3.log" "${R_ENV[@]}" SUGGESTD_RATE_LIMIT_RPM=1 SUGGESTD_RATE_LIMIT_BURST=4 -- \
    || bad "Redis replica 3" "$(cat "$TMP/r3.log")"
R3=http://127.0.0.1:$SPORT R3PID=$SPID
seq_codes="$(code "$R2" allowed-judy):$(code "$R3" allowed-judy):$(code "$R2" allowed-judy):$(code "$R3" allowed-judy)"
req "$R2" /v1/models allowed-judy
ra=$(grep -i '^retry-after:' <<<"$HDRS" | tr -dc 0-9)
check "Redis rate limit holds across replicas: burst 4 over two servers, 5th -> 429 Retry-After ${ra:-none}" \
    test "$seq_codes:$CODE" = "200:200:200:200:429" -a "${ra:-0}" -ge 1
rk=$(RC --scan --pattern 'suggestd:rl:*' | head -1)
pttl=$(RC pttl "$rk")
check "Redis: bucket key suggestd:rl:<hmac> with an expiry ($pttl ms)" test -n "$rk" -a "${pttl:--1}" -gt 0

# Redis killed mid-run
kill "$RPID"; wait "$RPID" 2>/dev/null
t0=$(date +%s%N)
c1=$(code "$R1" allowed-kate); c2=$(code "$R1" allowed-kate); c3=$(code "$R1" denied-ivan); c4=$(code "$R1" allowed-hank)
c5=$(code "$R1" nobody-at-all)
ms=$((($(date +%s%N) - t0) / 1000000))
check "Redis down: new token decided by GitLab directly (200, each time)" test "$c1:$c2:$(calls allowed-kate)" = "200:200:2"
check "Redis down: denied stays denied, unknown stays out" test "$c3:$c5" = "403:401"
check "Redis down: cached-allowed token re-checked with GitLab (200)" test "$c4:$(calls allowed-hank)" = "200:2"
check "Redis down: no hang (5 requests in ${ms} ms)" test "$ms" -lt 3000
check "Redis down: rate limit falls back to local buckets (R2 still answers)" test "$(code "$R2" allowed-hank)" = 200
curl -s "$R1/metrics" >"$TMP/metrics_r"
grep -q '^suggestd_auth_store_errors_total [1-9]' "$TMP/metrics_r" && ok "Redis down: counted in metrics" \
    || bad "store errors metric" "$(grep store_errors "$TMP/metrics_r")"
grep -qi 'redis .*unreachable\|redis .*failed' "$TMP/r1.log" && ok "Redis down: logged" || bad "Redis down logged" "$(tail -5 "$TMP/r1.log")"
start_redis || bad "redis restart" "$(tail -3 "$TMP/redis.log")"
sleep 5.5 # past the longest reconnect backoff
c1=$(code "$R1" allowed-liam); c2=$(code "$R1" allowed-liam)
check "Redis back: decisions cached there again" \
    test "$c1:$c2:$(calls allowed-liam):$(RC --scan --pattern 'suggestd:auth:*' | wc -l)" = "200:200:1:1"

# --- secrets never leak -------------------------------------------------------------------------------------------
leaks=$(grep -l -e allowed-alice -e denied-bob -e invalid-carol -e allowed-hank -e key-one -e file-key -e eyJ \
    -e test-secret-1 "$TMP"/a.log "$TMP"/k.log "$TMP"/r*.log "$TMP"/metrics_* 2>/dev/null)
check "no token, key or secret in server logs or metrics" test -z "$leaks"

kill "$APID" "$R1PID" "$R2PID" "$R3PID" 2>/dev/null
wait "$APID" "$R1PID" "$R2PID" "$R3PID" 2>/dev/null
if grep -l -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$TMP"/*.log >/dev/null 2>&1; then
    bad "sanitizer report in a server log" "$(grep -h -E -A5 'Sanitizer|runtime error:' "$TMP"/*.log | head -20)"
else
    ok "no sanitizer reports in the server logs"
fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
