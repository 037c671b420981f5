#!/usr/bin/env python3
"""Golden files from the reference implementation (Hugging Face transformers + tokenizers).

Runs on the GPU machine (torch, transformers, tokenizers; offline). It
  1. builds models/codegen-tokenizer/tokenizer.json with HF `tokenizers` from vocab.json + merges.txt + the 38
     whitespace tokens, and checks transformers' CodeGenTokenizerFast agrees with it;
  2. tokenizes tests/golden/corpus/* and a list of edge-case strings -> tokenizer golden;
  3. builds tiny random CodeGen checkpoints from the same deterministic recipe as tests/common/testutil.c
     (splitmix64 per element, see testutil.h), so the C tests can regenerate them bit for bit, and records
     greedy continuations and per-step top-5 logprobs (log_softmax over the 50295 real tokens).

usage: python3 tools/make_goldens.py OUTDIR
"""
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKDIR = os.path.join(ROOT, "models", "codegen-tokenizer")
CORPUS = os.path.join(ROOT, "tests", "golden", "corpus")
N_VALID = 50295

EDGE_STRINGS = [
    "Hello world", " Hello world", "def hello():\n    return 1\n", "\tx\t\ty", "a  b", "x" + " " * 40 + "y",
    "<|endoftext|>def", "", " ", "  ", "\n", "\n\n", "\r\n", " \n", "a \n b", "x \t y", " \t ", "\t \t",
    "   \n   x", "a" + " " * 33 + "b", "\t" * 12 + "z", " " * 31, " " * 32, " " * 62 + "q",
    "ǅungla ʰa 〇 Ⅻ ½ ² ٣٤ ௧", "a\u00a0b", "x\u2028y", "a\u3000b", "\u200bzw", "e\u0301\u0301",
    "it's 'S 's 're 've 'm 'll 'd 'x", "1234567890 3.14 1e-5", "??!! ... ---", "$x = @y; %z",
    "👩\u200d💻🚀", "中文字符测试", "  leading", "trailing  ", "mixed\t \tws", "<|endoftext|>",
    "<|endoftext|><|endoftext|>", "<|endoftext", "a<|endoftext|>b", "  <|endoftext|>  ",
    "if x:\n\tpass\n\t\treturn", "\u0085next", "\x0b\x0c", "ÿþ", "\u0000null",
]


def whitespace_tokens():
    toks = []
    for n in range(31, 1, -1):
        toks.append((" " * n, 50257 + (31 - n)))
    for n in range(9, 1, -1):
        toks.append(("\t" * n, 50287 + (9 - n)))
    return toks


def build_tokenizer_json(out_path):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    bpe = models.BPE.from_file(os.path.join(TOKDIR, "vocab.json"), os.path.join(TOKDIR, "merges.txt"))
    tk = Tokenizer(bpe)
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    tk.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    for text, want in whitespace_tokens():
        tk.add_tokens([AddedToken(text, normalized=True)])
        got = tk.token_to_id(text)
        assert got == want, (repr(text), got, want)
    tk.save(out_path)
    return Tokenizer.from_file(out_path)


def splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def det_tensor(seed, k, shape, scale, offset):
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        base = splitmix64(np.array([seed + k], dtype=np.uint64))[0]
        z = splitmix64(base + np.arange(n, dtype=np.uint64))
    u = (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    v = ((2.0 * u - 1.0) * scale + offset).astype(np.float32)
    return v.reshape(shape)


def det_state_dict(cfg, seed, dtype):
    D, V, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_layer"]
    F = 4 * D
    spec = [("transformer.wte.weight", (V, D), 1.0, 0.0)]
    for l in range(L):
        p = f"transformer.h.{l}."
        spec += [
            (p + "ln_1.weight", (D,), 0.2, 1.0), (p + "ln_1.bias", (D,), 0.1, 0.0),
            (p + "attn.qkv_proj.weight", (3 * D, D), np.sqrt(3.0 / D), 0.0),
            (p + "attn.out_proj.weight", (D, D), np.sqrt(3.0 / D), 0.0),
            (p + "mlp.fc_in.weight", (F, D), np.sqrt(3.0 / D), 0.0), (p + "mlp.fc_in.bias", (F,), 0.1, 0.0),
            (p + "mlp.fc_out.weight", (D, F), np.sqrt(3.0 / F), 0.0), (p + "mlp.fc_out.bias", (D,), 0.1, 0.0),
        ]
    spec += [("transformer.ln_f.weight", (D,), 0.2, 1.0), ("transformer.ln_f.bias", (D,), 0.1, 0.0),
             ("lm_head.weight", (V, D), 4.0 * np.sqrt(3.0 / D), 0.0), ("lm_head.bias", (V,), 0.1, 0.0)]
    sd = {}
    for k, (name, shape, scale, offset) in enumerate(spec):
        a = det_tensor(seed, k, shape, float(scale), offset)
        if dtype == "float16":
            a = a.astype(np.float16)
        sd[name] = torch.from_numpy(a)
    return sd


def make_model(cfg, seed, dtype):
    from transformers import CodeGenConfig, CodeGenForCausalLM
    hc = CodeGenConfig(vocab_size=cfg["vocab_size"], n_positions=2048, n_ctx=2048, n_embd=cfg["n_embd"],
                       n_layer=cfg["n_layer"], n_head=cfg["n_head"], rotary_dim=cfg["rotary_dim"], n_inner=None,
                       activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                       layer_norm_epsilon=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=50256)
    model = CodeGenForCausalLM(hc).eval()
    sd = det_state_dict(cfg, seed, dtype)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    missing = [m for m in missing if not m.endswith(("causal_mask", "attn.bias", "masked_bias"))]
    assert not missing and not unexpected, (missing, unexpected)
    return model


def top5(logits_row):
    lp = torch.log_softmax(logits_row[:N_VALID].double(), dim=-1)
    v, i = torch.topk(lp, 5)
    return [[int(a), float(b)] for a, b in zip(i.tolist(), v.tolist())]


@torch.no_grad()
def greedy(model, ids, n_new, device):
    """Token-by-token greedy with the KV cache, as the engine runs it; argmax over the real tokens only."""
    inp = torch.tensor([ids], device=device)
    out = model(input_ids=inp, use_cache=True)
    past, logits = out.past_key_values, out.logits[0, -1].float()
    gen, steps = [], []
    for _ in range(n_new):
        steps.append(top5(logits))
        nxt = int(torch.argmax(logits[:N_VALID]))
        gen.append(nxt)
        out = model(input_ids=torch.tensor([[nxt]], device=device), past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[0, -1].float()
    return gen, steps


@torch.no_grad()
def teacher_forced_top5(model, ids, n_prompt, device):
    out = model(input_ids=torch.tensor([ids], device=device)).logits[0].float()
    return [top5(out[p]) for p in range(n_prompt - 1, len(ids) - 1)]


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import transformers
    import tokenizers
    print("torch", torch.__version__, "transformers", transformers.__version__, "tokenizers", tokenizers.__version__)

    tk = build_tokenizer_json(os.path.join(out_dir, "tokenizer.json"))
    from transformers import PreTrainedTokenizerFast
    hf_fast = PreTrainedTokenizerFast(tokenizer_file=os.path.join(out_dir, "tokenizer.json"))

    tok_golden = {"versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
                  "files": [], "strings": []}
    for name in sorted(os.listdir(CORPUS)):
        text = open(os.path.join(CORPUS, name), "rb").read().decode("utf-8")
        ids = tk.encode(text, add_special_tokens=False).ids
        assert ids == hf_fast.encode(text, add_special_tokens=False), name
        tok_golden["files"].append({"name": name, "ids": ids})
    for s in EDGE_STRINGS:
        ids = tk.encode(s, add_special_tokens=False).ids
        assert ids == hf_fast.encode(s, add_special_tokens=False), repr(s)
        tok_golden["strings"].append({"text": s, "ids": ids})
    with open(os.path.join(out_dir, "tokenizer-golden.json"), "w") as f:
        json.dump(tok_golden, f, ensure_ascii=False)

    prompts = [
        ("fib", "def fibonacci(n):\n    "),
        ("c_main", "#include <stdio.h>\nint main(void) {\n"),
        ("class", "import numpy as np\n\nclass Point:\n    def __init__(self, x, y):"),
        ("unicode", "// ünïcödé 中文 ✓\nconst x = "),
    ]
    corpus_text = "".join(open(os.path.join(CORPUS, n), encoding="utf-8").read() for n in sorted(os.listdir(CORPUS)))
    long_ids = tk.encode(corpus_text, add_special_tokens=False).ids[:1800]
    assert len(long_ids) == 1800, len(long_ids)

    models = [
        ("tiny-fp32", {"n_layer": 2, "n_embd": 64, "n_head": 4, "rotary_dim": 8, "vocab_size": 51200}, 1234, "float32"),
        ("tiny-fp16", {"n_layer": 3, "n_embd": 160, "n_head": 4, "rotary_dim": 16, "vocab_size": 51200}, 5678, "float16"),
    ]
    cuda = torch.cuda.is_available()
    for name, cfg, seed, dtype in models:
        ref = make_model(cfg, seed, dtype)  # fp32 math on CPU over the (possibly fp16-rounded) weights
        fp16 = make_model(cfg, seed, dtype).half().to("cuda") if (dtype == "float16" and cuda) else None
        cases = []
        for cname, text in prompts + [("long", None)]:
            ids = long_ids if text is None else tk.encode(text, add_special_tokens=False).ids
            n_new = 8 if text is None else 24
            gen, steps = greedy(ref, ids, n_new, "cpu")
            case = {"name": cname, "prompt_ids": ids, "greedy": gen, "top5": steps}
            if fp16 is not None:
                case["top5_fp16_mode"] = teacher_forced_top5(fp16, ids + gen, len(ids), "cuda")
            cases.append(case)
            print(name, cname, "prompt", len(ids), "greedy", gen[:8])
        sd = ref.state_dict()
        probes = []
        for tname in ["transformer.wte.weight", "transformer.h.0.attn.qkv_proj.weight", "transformer.h.1.mlp.fc_in.bias",
                      "lm_head.weight", "lm_head.bias"]:
            flat = sd[tname].reshape(-1)
            for idx in [0, 1, flat.numel() // 2, flat.numel() - 1]:
                probes.append({"name": tname, "index": int(idx), "value": float(flat[idx])})
        golden = {"model": name, "weight_probes": probes, "config": dict(cfg, n_positions=2048, dtype=dtype, seed=seed),
                  "reference": "HF transformers %s, CPU fp32 math over the %s weights%s" % (
                      transformers.__version__, dtype,
                      "; top5_fp16_mode: fp16 on %s" % torch.cuda.get_device_name(0) if fp16 is not None else ""),
                  "cases": cases}
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            json.dump(golden, f)


if __name__ == "__main__":
    main()
