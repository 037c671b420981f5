#!/usr/bin/env bash
# test_cli.sh - `suggestd` as a user runs it: tokenize, complete, bench, and clear errors for bad input.
# usage: test_cli.sh SUGGESTD MKCKPT SOURCE_DIR
set -u
BIN=$1 MKCKPT=$2 SRC=$3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0

ok()  { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; shift; printf '     %s\n' "$@"; }

# expect NAME RC PATTERN -- CMD...   (PATTERN is a grep -E on stdout+stderr; empty = anything)
expect() {
    local name=$1 want_rc=$2 pat=$3
    shift 4
    local out rc
    out=$("$@" 2>&1 </dev/null)
    rc=$?
    if [ "$rc" -ge 128 ]; then bad "$name" "crashed with signal $((rc - 128))" "$out"; return; fi
    if [ "$rc" != "$want_rc" ]; then bad "$name" "exit $rc, want $want_rc" "$out"; return; fi
    if [ -n "$pat" ] && ! grep -Eq -- "$pat" <<<"$out"; then bad "$name" "output lacks /$pat/" "$out"; return; fi
    ok "$name"
}

M=$TMP/tiny
"$MKCKPT" "$M" 2 64 4 8 256 f32 7 || { echo "mkckpt failed"; exit 1; }
cp "$SRC"/models/codegen-tokenizer/{vocab.json,merges.txt,added_tokens.json,special_tokens_map.json} "$M"/

expect "version lists backends" 0 'backends: cpu ref' -- "$BIN" --version
expect "help" 0 'complete' -- "$BIN" --help
expect "unknown command" 2 "unknown command 'frobnicate'" -- "$BIN" frobnicate

out=$(printf 'def hello():\n    return 1\n' | "$BIN" tokenize --model "$SRC/models/codegen-tokenizer")
[ "$out" = "[4299,23748,33529,198,50284,7783,352,198]" ] && ok "tokenize spec vector" || bad "tokenize spec vector" "$out"
out=$(printf '\xff\xfe' | "$BIN" tokenize --model "$SRC/models/codegen-tokenizer" 2>&1); rc=$?
[ $rc = 1 ] && grep -q "UTF-8" <<<"$out" && ok "tokenize rejects invalid UTF-8" || bad "tokenize rejects invalid UTF-8" "rc=$rc" "$out"

a=$("$BIN" complete --model "$M" --prompt 'def f(x):' --max-tokens 12 --threads 2); rc=$?
b=$(printf 'def f(x):' | "$BIN" complete --model "$M" --max-tokens 12 --backend ref)
[ $rc = 0 ] && [ -n "$a" ] && ok "complete greedy" || bad "complete greedy" "rc=$rc" "$a"
[ "$a" = "$b" ] && ok "stdin prompt and ref backend give the same greedy text" || bad "stdin/ref greedy" "$a" "$b"
c=$("$BIN" complete --model "$M" --prompt 'def f(x):' --max-tokens 12 --temperature 0.9 --seed 5)
d=$("$BIN" complete --model "$M" --prompt 'def f(x):' --max-tokens 12 --temperature 0.9 --seed 5)
[ "$c" = "$d" ] && ok "seeded sampling reproducible" || bad "seeded sampling reproducible" "$c" "$d"
if [ ${#a} -ge 4 ]; then
    stop=${a:2:2}
    e=$("$BIN" complete --model "$M" --prompt 'def f(x):' --max-tokens 12 --stop "$stop")
    want=${a%%"$stop"*}
    [ "$e" = "$want" ] && ok "--stop cuts at the first occurrence" || bad "--stop" "stop=[$stop]" "got [$e]" "want [$want]"
fi

expect "complete needs --model" 2 'model DIR is required' -- "$BIN" complete --prompt x
expect "missing model dir" 1 'config.json' -- "$BIN" complete --model "$TMP/nope" --prompt x
expect "bad number" 2 'max-tokens expects an integer' -- "$BIN" complete --model "$M" --prompt x --max-tokens ten
expect "bad top-p" 2 'top-p expects' -- "$BIN" complete --model "$M" --prompt x --top-p 0
expect "unknown backend" 1 "unknown backend 'gpu9'" -- "$BIN" complete --model "$M" --prompt x --backend gpu9
expect "context overflow" 2 "exceeds the model's context of 256" -- "$BIN" complete --model "$M" --prompt x --max-tokens 300
expect "invalid UTF-8 prompt" 1 'UTF-8' -- "$BIN" complete --model "$M" --prompt $'ab\xc3('

# corrupt checkpoints: each is a copy of the good one with one thing broken
broken() { rm -rf "$TMP/$1"; cp -r "$M" "$TMP/$1"; echo "$TMP/$1"; }
B=$(broken trunc); truncate -s 1000 "$B/model.safetensors"
expect "truncated safetensors" 1 'model.safetensors' -- "$BIN" complete --model "$B" --prompt x
B=$(broken tiny8); truncate -s 5 "$B/model.safetensors"
expect "safetensors shorter than its length field" 1 'model.safetensors' -- "$BIN" complete --model "$B" --prompt x
B=$(broken hdr); printf '\xff\xff\xff\x7f\x00\x00\x00\x00' | dd of="$B/model.safetensors" conv=notrunc status=none
expect "header length outside the file" 1 'model.safetensors' -- "$BIN" complete --model "$B" --prompt x
B=$(broken json); printf '\x10\x00\x00\x00\x00\x00\x00\x00{"a":not json} ' > "$B/model.safetensors"
expect "header not JSON" 1 'model.safetensors' -- "$BIN" complete --model "$B" --prompt x
B=$(broken shape); sed -i 's/"n_embd": 64/"n_embd": 96/' "$B/config.json"
expect "shapes differ from config" 1 'transformer\.' -- "$BIN" complete --model "$B" --prompt x
B=$(broken nocfg); rm "$B/config.json"
expect "missing config.json" 1 'config.json' -- "$BIN" complete --model "$B" --prompt x
B=$(broken noweights); rm "$B/model.safetensors"
expect "missing weights" 1 'model.safetensors' -- "$BIN" complete --model "$B" --prompt x
B=$(broken notok); rm "$B/vocab.json"
expect "missing tokenizer" 1 'vocab.json' -- "$BIN" complete --model "$B" --prompt x

expect "bench on a model dir" 0 'decode / floor' -- "$BIN" bench --model "$M" --prompt-tokens 16 --decode-tokens 4 --threads 2
expect "bench needs one source" 2 'exactly one of' -- "$BIN" bench
expect "bench unknown shape" 2 'unknown shape' -- "$BIN" bench --shape codegen-99B

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
