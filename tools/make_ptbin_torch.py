#!/usr/bin/env python3
"""make_ptbin_torch.py - the torch-side golden for [models]: a tiny CodeGen pytorch_model.bin written by the real
torch.save, with uint8 causal_mask buffers like the Salesforce checkpoints, next to its safetensors twin.

Run on the GPU machine (needs torch; numpy optional), not in CI:
    python3 tools/make_ptbin_torch.py OUTDIR [f16|f32|bf16]
writes OUTDIR/bin/{config.json,pytorch_model.bin} and prints the sha256 of every tensor. Then check with suggestd:
    mkckpt-style twin:  the weights follow tests/common/testutil.h (splitmix64 recipe, spec TINY below), so
    tu_write_checkpoint(dir, {2,16,4,2,32,64,dtype,4242}) writes the same tensors as safetensors;
    test_ptbin.c (test_torch_f16_*) compares them byte for byte and checks greedy tokens. The committed output is
    tests/unit/model/data/torch_tiny_f16/ (OUTDIR/bin/{pytorch_model.bin,config.json} as written, this script's
    stdout as torch_save.log); the stdlib-written tiny_*.bin fixtures beside it stay (ZIP64, protocol 4, refusals).
    Refresh it, or add torch_tiny_<dtype>/, only after review; keep each file under 100 KB.
The state dict is built the way transformers' CodeGen model of that era holds it: an OrderedDict with `_metadata`,
tensors contiguous, masks registered as persistent uint8 buffers of shape [1, 1, P, P].
"""
import collections
import hashlib
import json
import math
import os
import sys

import torch

M64 = (1 << 64) - 1
TINY = dict(n_layer=2, n_embd=16, n_head=4, rotary_dim=2, n_positions=32, vocab_size=64, seed=4242)


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def fill(seed, k, n, scale, offset):
    """float32 values exactly as tests/common/ckpt.c computes them (double, then rounded to f32)."""
    base = splitmix64((seed + k) & M64)
    vals = []
    for i in range(n):
        z = splitmix64((base + i) & M64)
        u = (z >> 11) * (1.0 / 9007199254740992.0)
        vals.append((2.0 * u - 1.0) * scale + offset)
    return torch.tensor(vals, dtype=torch.float64).to(torch.float32)


def state_dict(dtype):
    t = TINY
    D, V, L, P = t["n_embd"], t["vocab_size"], t["n_layer"], t["n_positions"]
    F = 4 * D
    spec = [("transformer.wte.weight", V, D, 1.0, 0.0)]
    for l in range(L):
        h = "transformer.h.%d." % l
        spec += [(h + "ln_1.weight", D, 0, 0.2, 1.0), (h + "ln_1.bias", D, 0, 0.1, 0.0),
                 (h + "attn.qkv_proj.weight", 3 * D, D, math.sqrt(3.0 / D), 0.0),
                 (h + "attn.out_proj.weight", D, D, math.sqrt(3.0 / D), 0.0),
                 (h + "mlp.fc_in.weight", F, D, math.sqrt(3.0 / D), 0.0), (h + "mlp.fc_in.bias", F, 0, 0.1, 0.0),
                 (h + "mlp.fc_out.weight", D, F, math.sqrt(3.0 / F), 0.0), (h + "mlp.fc_out.bias", D, 0, 0.1, 0.0)]
    spec += [("transformer.ln_f.weight", D, 0, 0.2, 1.0), ("transformer.ln_f.bias", D, 0, 0.1, 0.0),
             ("lm_head.weight", V, D, 4.0 * math.sqrt(3.0 / D), 0.0), ("lm_head.bias", V, 0, 0.1, 0.0)]
    sd = collections.OrderedDict()
    mask = torch.tril(torch.ones((P, P), dtype=torch.uint8)).view(1, 1, P, P)
    for k, (name, rows, cols, scale, off) in enumerate(spec):
        x = fill(t["seed"], k, rows * (cols or 1), scale, off).view(rows, cols) if cols else \
            fill(t["seed"], k, rows, scale, off)
        sd[name] = x.to(dtype).contiguous()  # f32 -> f16/bf16: round to nearest even, as f32_to_fp16 / f32_to_bf16
        if name.endswith("attn.out_proj.weight"):
            sd[name[: -len("out_proj.weight")] + "causal_mask"] = mask.clone()
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    return sd


def config(dtype_name):
    t = TINY
    return {"architectures": ["CodeGenForCausalLM"], "model_type": "codegen", "activation_function": "gelu_new",
            "bos_token_id": 1, "eos_token_id": 50256, "layer_norm_epsilon": 1e-05, "n_ctx": t["n_positions"],
            "n_positions": t["n_positions"], "n_embd": t["n_embd"], "n_head": t["n_head"], "n_inner": None,
            "n_layer": t["n_layer"], "rotary_dim": t["rotary_dim"], "tie_word_embeddings": False,
            "torch_dtype": dtype_name, "vocab_size": t["vocab_size"]}


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    which = argv[2] if len(argv) == 3 else "f16"
    dtype, dname = {"f16": (torch.float16, "float16"), "f32": (torch.float32, "float32"),
                    "bf16": (torch.bfloat16, "bfloat16")}[which]
    out = os.path.join(argv[1], "bin")
    os.makedirs(out, exist_ok=True)
    sd = state_dict(dtype)
    torch.save(sd, os.path.join(out, "pytorch_model.bin"))  # the zip format (torch >= 1.6 default)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config(dname), f, indent=2)
    path = os.path.join(out, "pytorch_model.bin")
    try:
        back = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13
        back = torch.load(path, map_location="cpu")
    for name, x in sd.items():
        assert torch.equal(back[name], x), name
        raw = x.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        print("%-40s %-9s %-16s %s" % (name, str(x.dtype).replace("torch.", ""), list(x.shape),
                                       hashlib.sha256(raw).hexdigest()[:16]))
    print("torch", torch.__version__, "wrote", os.path.join(out, "pytorch_model.bin"),
          os.path.getsize(os.path.join(out, "pytorch_model.bin")), "bytes")


if __name__ == "__main__":
    main(sys.argv)
