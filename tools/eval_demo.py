#!/usr/bin/env python3
"""Acceptance check of the demo model through the product: runs `suggestd complete` on common Python beginnings and
checks that prompt + completion parses (issue [demo]). Exits 1 if any lenient check fails.

Two decoding setups per prompt:
  default  what `suggestd complete --model DIR --prompt P` does with no options (greedy, 64 tokens, no stop);
  test     what tests/integration/test_demo.sh runs (48 tokens, repetition penalty 1.2, stop "\\n\\n\\n").
Two parse rules:
  strict   prompt + completion parses as it is;
  lenient  the rule of test_demo.sh: trailing lines may be dropped (max tokens can end mid-line) as long as at least
           one non-empty completion line is kept.

usage: python3 tools/eval_demo.py [--suggestd build/suggestd] [--model models/demo] [--strict]
"""
import argparse
import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROMPTS = [
    "def fibonacci(n):\n",
    "class Point:\n    def __init__(self, x, y):\n",
    "with open(path) as f:\n",
]
# name -> (max_tokens, repetition_penalty, stop strings)
SETUPS = {
    "default": (64, 1.0, []),
    "test": (48, 1.2, ["\n\n\n"]),
}


def parses_strict(prompt, completion):
    try:
        ast.parse(prompt + completion)
        return True
    except (SyntaxError, ValueError):
        return False


def parses_lenient(prompt, completion):
    """tests/integration/test_demo.sh's rule: drop trailing lines until prompt + the rest parses, keeping at least
    one non-empty line of the completion."""
    lines = completion.split("\n")
    for keep in range(len(lines), 0, -1):
        body = "\n".join(lines[:keep])
        if not body.strip():
            return False
        if parses_strict(prompt, body):
            return True
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suggestd", default=os.path.join(ROOT, "build", "suggestd"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument("--threads", default="2")
    ap.add_argument("--strict", action="store_true", help="fail on strict parse failures too")
    args = ap.parse_args()
    fails = 0
    for prompt in PROMPTS:
        for name, (max_tokens, rp, stops) in SETUPS.items():
            cmd = [args.suggestd, "complete", "--model", args.model, "--prompt", prompt, "--threads", args.threads]
            if name != "default":
                cmd += ["--max-tokens", str(max_tokens), "--repetition-penalty", str(rp)]
                for s in stops:
                    cmd += ["--stop", s]
            r = subprocess.run(cmd, capture_output=True, text=True)
            comp = r.stdout
            strict, lenient = parses_strict(prompt, comp), parses_lenient(prompt, comp)
            ok = r.returncode == 0 and lenient and (strict or not args.strict)
            fails += not ok
            print(f"{'ok  ' if ok else 'FAIL'} [{name}] {prompt.splitlines()[0]!r}: strict={strict} "
                  f"lenient={lenient} rc={r.returncode}")
            print("     | " + (prompt + comp).replace("\n", "\n     | "))
            if r.returncode:
                print("     stderr: " + r.stderr.strip())
    n = len(PROMPTS) * len(SETUPS)
    print(f"{n - fails} passed, {fails} failed")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
