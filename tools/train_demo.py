#!/usr/bin/env python3
"""Trains the small CodeGen-architecture demo model shipped in models/demo (issue [demo]).

Runs on the GPU machine (torch + transformers + tokenizers, offline). Data: the CPython standard library found on
that machine (PSF licence), files split by a hash of their path into train (95%) and held-out (5%). Tokenizer: the
real CodeGen tokenizer in models/codegen-tokenizer. The result is a normal Hugging Face model directory.

usage: python3 tools/train_demo.py OUTDIR [--minutes 4] [--dropout 0.1]
"""
import argparse
import glob
import hashlib
import json
import math
import os
import random
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKDIR = os.path.join(ROOT, "models", "codegen-tokenizer")
EOS = 50256


def stdlib_files():
    import sysconfig
    base = sysconfig.get_paths()["stdlib"]
    files = sorted(f for f in glob.glob(os.path.join(base, "**", "*.py"), recursive=True)
                   if "site-packages" not in f and "/test" not in f and "idlelib" not in f)
    return base, files


def split(path):
    return "heldout" if int(hashlib.sha256(path.encode()).hexdigest(), 16) % 20 == 0 else "train"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--d", type=int, default=96)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--dropout", type=float, default=0.1)
    args = ap.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    from tokenizers import Tokenizer
    from transformers import CodeGenConfig, CodeGenForCausalLM
    tk = Tokenizer.from_file(os.path.join(TOKDIR, "tokenizer.json"))
    base, files = stdlib_files()
    data = {"train": [], "heldout": []}
    heldout_texts = []
    for f in files:
        try:
            text = open(f, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        part = split(os.path.relpath(f, base))
        data[part].extend(tk.encode(text, add_special_tokens=False).ids + [EOS])
        if part == "heldout":
            heldout_texts.append(text)
    print(f"python stdlib at {base}: {len(files)} files, train {len(data['train'])} tokens, "
          f"held-out {len(data['heldout'])} tokens", flush=True)
    dev = "cuda"
    train = torch.tensor(data["train"], dtype=torch.long, device=dev)
    held = torch.tensor(data["heldout"], dtype=torch.long, device=dev)

    cfg = CodeGenConfig(vocab_size=51200, n_positions=2048, n_ctx=2048, n_embd=args.d, n_layer=args.layers,
                        n_head=args.heads, rotary_dim=min(16, args.d // args.heads), n_inner=None,
                        activation_function="gelu_new", resid_pdrop=args.dropout, embd_pdrop=args.dropout, attn_pdrop=0.0,
                        layer_norm_epsilon=1e-5, tie_word_embeddings=False, bos_token_id=EOS, eos_token_id=EOS)
    model = CodeGenForCausalLM(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: d={args.d} layers={args.layers} heads={args.heads} params={n_params/1e6:.2f}M", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    S, B = args.seq, args.batch

    def batch(src):
        ix = torch.randint(0, src.numel() - S - 1, (B,), device=dev)
        x = torch.stack([src[i:i + S] for i in ix])
        return x

    @torch.no_grad()
    def eval_loss(src, n=20):
        model.eval()
        tot = 0.0
        g = torch.Generator(device=dev).manual_seed(1)
        for _ in range(n):
            ix = torch.randint(0, src.numel() - S - 1, (B,), device=dev, generator=g)
            x = torch.stack([src[i:i + S] for i in ix])
            with torch.autocast("cuda", dtype=torch.bfloat16):
                tot += model(input_ids=x, labels=x).loss.item()
        model.train()
        return tot / n

    budget = args.minutes * 60
    t0 = time.time()
    step = 0
    est_steps = None
    while True:
        el = time.time() - t0
        if el > budget:
            break
        if step == 50:
            est_steps = int(budget / (el / 50))
        total = est_steps or 100000
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
        for g in opt.param_groups:
            g["lr"] = lr
        x = batch(train)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 500 == 0:
            print(f"step {step} {el:.0f}s loss {loss.item():.3f} lr {lr:.2e}", flush=True)
        step += 1
    train_loss, held_loss = eval_loss(train), eval_loss(held)
    print(f"done: {step} steps, train loss {train_loss:.3f}, held-out loss {held_loss:.3f} "
          f"(perplexity {math.exp(held_loss):.1f})", flush=True)

    # held-out next-line exact match: context = up to 192 tokens before a line start, greedy until newline
    model.eval().half()
    rnd = random.Random(3)
    hits = tries = 0
    with torch.no_grad():
        for _ in range(300):
            text = rnd.choice(heldout_texts)
            lines = text.split("\n")
            if len(lines) < 10:
                continue
            k = rnd.randrange(5, len(lines) - 1)
            target = lines[k]
            if not target.strip():
                continue
            ctx = "\n".join(lines[:k]) + "\n"
            ids = tk.encode(ctx, add_special_tokens=False).ids[-192:]
            inp = torch.tensor([ids], device=dev)
            out = []
            for _ in range(48):
                nxt = int(model(input_ids=inp).logits[0, -1, :50295].argmax())
                out.append(nxt)
                if "\n" in tk.decode(out):
                    break
                inp = torch.cat([inp, torch.tensor([[nxt]], device=dev)], dim=1)
            pred = tk.decode(out).split("\n")[0]
            tries += 1
            hits += pred.strip() == target.strip()
    em = hits / max(tries, 1)
    print(f"held-out next-line exact match: {hits}/{tries} = {em:.3f}", flush=True)

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    for f in ["vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json"]:
        with open(os.path.join(TOKDIR, f), "rb") as src, open(os.path.join(args.out, f), "wb") as dst:
            dst.write(src.read())
    stats = {"steps": step, "minutes": args.minutes, "params": n_params, "train_tokens": len(data["train"]),
             "heldout_tokens": len(data["heldout"]), "train_loss": train_loss, "heldout_loss": held_loss,
             "heldout_next_line_exact_match": em, "heldout_next_line_tries": tries,
             "d": args.d, "layers": args.layers, "heads": args.heads, "seq": S, "batch": B, "lr": args.lr, "dropout": args.dropout,
             "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "python_stdlib": base}
    json.dump(stats, open(os.path.join(args.out, "training.json"), "w"), indent=1)

    # the acceptance prompts, greedy, as suggestd will run them
    for p in ["def fibonacci(n):\n", "class Point:\n    def __init__(self, x, y):\n", "with open(path) as f:\n"]:
        ids = tk.encode(p, add_special_tokens=False).ids
        inp = torch.tensor([ids], device=dev)
        out = []
        with torch.no_grad():
            for _ in range(64):
                nxt = int(model(input_ids=inp).logits[0, -1, :50295].argmax())
                if nxt == EOS:
                    break
                out.append(nxt)
                inp = torch.cat([inp, torch.tensor([[nxt]], device=dev)], dim=1)
        print("=== " + repr(p) + "\n" + p + tk.decode(out), flush=True)


if __name__ == "__main__":
    main()
