#!/usr/bin/env python3
"""bench_hf.py - the HF transformers baseline for `suggestd bench`: CodeGen at the real shapes with random weights,
fp16, eager attention, on the GPU. Prints batch-1 decode ms/token at the given contexts (median of --decode-tokens
steps at positions C-n .. C-1, KV cache from a prefill of C-n tokens) and the prefill time of --prompt-tokens tokens
(median of 3 after a warm-up), as RESULT lines in the format cli_bench.c prints, so scripts/gpu-check.sh can put
both side by side.

    python3 tools/bench_hf.py --shape codegen-2B [--contexts 128,1024,2048] [--prompt-tokens 1536]

Needs torch with CUDA and transformers (present on the GPU machine).
"""
import argparse
import statistics
import sys
import time

SHAPES = {  # n_layer, n_embd, n_head, rotary_dim (codegen-model.md section 1)
    "codegen-350M": (20, 1024, 16, 32),
    "codegen-2B": (32, 2560, 32, 64),
    "codegen-6B": (33, 4096, 16, 64),
    "codegen-16B": (34, 6144, 24, 64),
}


def build(shape, dtype):
    import torch
    from transformers import CodeGenConfig, CodeGenForCausalLM

    n_layer, n_embd, n_head, rotary_dim = SHAPES[shape]
    cfg = CodeGenConfig(vocab_size=51200, n_positions=2048, n_ctx=2048, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, rotary_dim=rotary_dim, n_inner=None, activation_function="gelu_new",
                        tie_word_embeddings=False, bos_token_id=50256, eos_token_id=50256)
    cfg._attn_implementation = "eager"
    torch.set_default_dtype(dtype)
    with torch.device("cuda"):  # initialise on the GPU: seconds instead of minutes on the CPU
        model = CodeGenForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    return model.to(dtype).eval()


def sync_time(fn):
    import torch

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, (time.perf_counter() - t0) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--contexts", default="128,1024,2048")
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=1536)
    ap.add_argument("--dtype", default="f16", choices=["f16", "bf16"])
    args = ap.parse_args()

    import torch

    dtype = torch.float16 if args.dtype == "f16" else torch.bfloat16
    dname = "F16" if args.dtype == "f16" else "BF16"
    model = build(args.shape, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"bench_hf: {args.shape} random {dname}, transformers eager, {torch.cuda.get_device_name()}, "
          f"{n_params / 1e6:.1f} M parameters", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(0, 50000, (1, 2048), device="cuda", generator=gen)

    def fwd(x, past=None):
        return model(input_ids=x, past_key_values=past, use_cache=True)

    with torch.no_grad():
        # prefill: logits for every row, as HF's forward computes them
        n = args.prompt_tokens
        fwd(ids[:, :n])
        times = [sync_time(lambda: fwd(ids[:, :n]))[1] for _ in range(3)]
        ms = statistics.median(times)
        print(f"  prefill            {n / ms * 1e3:10.1f} tokens/s ({n} tokens in {ms:.2f} ms, median of 3)")
        print(f"RESULT {args.shape} {dname} hf-eager prefill tokens={n} ms={ms:.3f}", flush=True)
        for ctx in [int(c) for c in args.contexts.split(",")]:
            nd = args.decode_tokens
            first = ctx - nd
            past = fwd(ids[:, :first - 1]).past_key_values
            step = []
            for p in range(first - 1, ctx):  # position first - 1 is an untimed warm-up step
                out, t = sync_time(lambda: fwd(ids[:, p:p + 1], past))
                past = out.past_key_values
                out.logits[:, -1].float().argmax(-1).item()  # the sampler's read, as suggestd reads its logits
                if p >= first:
                    step.append(t)
            ms = statistics.median(step)
            print(f"  decode             {ms:10.3f} ms/token (context {ctx}: median of {nd}; best {min(step):.3f})")
            print(f"RESULT {args.shape} {dname} hf-eager decode ctx={ctx} ms={ms:.4f}", flush=True)
            del past, out
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
