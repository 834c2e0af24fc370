"""Times PyTorch on the layer benchmark's cases: eager, and torch.compile where it works.

    layers-bench --list-cases | python3 torch_layers.py --json torch.jsonl

Each case (a JSON line from `layers-bench --list-cases`) is built in plain PyTorch the way the HF modeling code does
it (Qwen2: RMSNorm, q/k/v with bias, RoPE, SDPA with the KV heads repeated, SwiGLU; InternViT: RMSNorm, qkv over the
32 padded heads, QK-RMSNorm over all of them, SDPA, LayerScale, GELU MLP) with random bf16 weights, and timed with
CUDA events: warm-up, then the mean of several runs. Prints one line per case and writes JSON lines
`{"name", "eager_ms", "compile_ms", "note"}`. `--device cpu --scale 64` runs every case at 1/64 of its sizes on the
CPU: a check of this script, not a benchmark.
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F


def scaled(n, scale, multiple=1):
    """`n / scale`, at least `multiple`, a multiple of `multiple`."""
    return max(multiple, (n // scale) // multiple * multiple)


class Timer:
    def __init__(self, device):
        self.device = device

    def __call__(self, fn, iterations, warmup=2):
        for _ in range(warmup):
            fn()
        if self.device == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iterations):
                fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / iterations
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        return (time.perf_counter() - start) * 1e3 / iterations


def rms_norm(x, weight, eps=1e-6):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


def rope(x, positions, theta=1e6):
    """Rotate-half RoPE on `[..., tokens, heads, d]` at `positions` `[tokens]`."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = positions.float()[:, None] * inv[None, :]
    cos = torch.cat([angles.cos()] * 2, -1)[:, None, :].to(x.dtype)
    sin = torch.cat([angles.sin()] * 2, -1)[:, None, :].to(x.dtype)
    half = d // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def weights(shapes, device):
    return {name: (torch.randn(shape, device=device) * 0.02 + (1.0 if name.endswith("norm") or name.startswith("ls")
                                                                else 0.0)).to(torch.bfloat16)
            for name, shape in shapes.items()}


class Qwen2Layer:
    """One Qwen2 decoder layer (the HF eager computation), with a static KV cache for decode."""

    def __init__(self, m, device):
        h, heads, kv, d, ffn = m["hidden"], m["heads"], m["kv_heads"], m["head_dim"], m["ffn"]
        self.heads, self.kv, self.d = heads, kv, d
        self.w = weights({"in_norm": (h,), "post_norm": (h,), "wq": (heads * d, h), "bq": (heads * d,),
                          "wk": (kv * d, h), "bk": (kv * d,), "wv": (kv * d, h), "bv": (kv * d,),
                          "wo": (h, heads * d), "wg": (ffn, h), "wu": (ffn, h), "wd": (h, ffn)}, device)

    def qkv(self, x, positions):
        """`x` `[B, T, h]` -> q `[B, T, heads, d]`, k, v `[B, T, kv, d]` with RoPE applied."""
        w = self.w
        hx = rms_norm(x, w["in_norm"])
        b, t, _ = x.shape
        q = F.linear(hx, w["wq"], w["bq"]).view(b, t, self.heads, self.d)
        k = F.linear(hx, w["wk"], w["bk"]).view(b, t, self.kv, self.d)
        v = F.linear(hx, w["wv"], w["bv"]).view(b, t, self.kv, self.d)
        return rope(q, positions), rope(k, positions), v

    def finish(self, x, attn):
        """Output projection, residual, then the SwiGLU MLP and its residual."""
        w = self.w
        x = x + F.linear(attn, w["wo"])
        hx = rms_norm(x, w["post_norm"])
        return x + F.linear(F.silu(F.linear(hx, w["wg"])) * F.linear(hx, w["wu"]), w["wd"])

    def prefill(self, x, positions):
        q, k, v = self.qkv(x, positions)
        group = self.heads // self.kv
        k, v = k.repeat_interleave(group, 2), v.repeat_interleave(group, 2)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.finish(x, attn.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)), k, v

    def decode(self, x, position, cache_k, cache_v, valid):
        """One token per sequence: `x` `[B, 1, h]`, writes its K/V at `position` (a 0-d tensor) of the static caches
        `[B, kv, L, d]`, attends over the keys `valid` marks (static shapes: CUDA-graph friendly)."""
        q, k, v = self.qkv(x, position.view(1))
        cache_k.index_copy_(2, position.view(1), k.transpose(1, 2))
        cache_v.index_copy_(2, position.view(1), v.transpose(1, 2))
        group = self.heads // self.kv
        keys, values = cache_k.repeat_interleave(group, 1), cache_v.repeat_interleave(group, 1)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=valid)
        return self.finish(x, attn.transpose(1, 2).reshape(x.shape[0], 1, -1))


class VitLayer:
    """One InternViT-6B layer as the HF code runs it: the padded heads (real + dummy) all computed."""

    def __init__(self, m, device):
        c, d, ffn = m["hidden"], m["head_dim"], m["ffn"]
        self.heads, self.d = m["heads"] + m["dummy_heads"], d
        p = self.heads * d
        self.w = weights({"norm1": (c,), "qkv": (3 * p, c), "q_norm": (p,), "k_norm": (p,), "proj": (c, p),
                          "proj_b": (c,), "ls1": (c,), "norm2": (c,), "fc1": (ffn, c), "fc1_b": (ffn,),
                          "fc2": (c, ffn), "fc2_b": (c,), "ls2": (c,)}, device)

    def __call__(self, x):
        w = self.w
        b, t, c = x.shape
        q, k, v = F.linear(rms_norm(x, w["norm1"]), w["qkv"]).chunk(3, -1)
        q, k = rms_norm(q, w["q_norm"]), rms_norm(k, w["k_norm"])
        split = lambda y: y.view(b, t, self.heads, self.d).transpose(1, 2)  # noqa: E731
        attn = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, t, -1)
        x = x + w["ls1"] * F.linear(attn, w["proj"], w["proj_b"])
        hx = rms_norm(x, w["norm2"])
        return x + w["ls2"] * F.linear(F.gelu(F.linear(hx, w["fc1"], w["fc1_b"])), w["fc2"], w["fc2_b"])


def scale_model(m, scale):
    out = dict(m)
    for key in ("hidden", "ffn", "head_dim"):
        out[key] = scaled(m[key], scale, 8)
    return out


def build(case, device, scale):
    """(eager fn, fn to compile or None, iterations) of one case."""
    kind = case["kind"]
    bf16 = dict(device=device, dtype=torch.bfloat16)
    if kind == "copy":
        n = scaled(case["bytes"], scale * scale, 1 << 10)
        src, dst = torch.empty(n, dtype=torch.uint8, device=device), torch.empty(n, dtype=torch.uint8, device=device)
        return (lambda: dst.copy_(src)), None, 10
    if kind == "llm_prefill":
        layer = Qwen2Layer(scale_model(case["model"], scale), device)
        t = scaled(case["tokens"], scale, 16)
        x = torch.randn(1, t, layer.w["wq"].shape[1], **bf16)
        positions = torch.arange(t, device=device)
        return (lambda: layer.prefill(x, positions)), (lambda: layer.prefill(x, positions)), 5
    if kind == "llm_decode":
        layer = Qwen2Layer(scale_model(case["model"], scale), device)
        b, context = case["batch"], scaled(case["context"], scale, 16)
        length = context + 64
        cache_k = torch.randn(b, layer.kv, length, layer.d, **bf16)
        cache_v = torch.randn(b, layer.kv, length, layer.d, **bf16)
        position = torch.tensor(context, device=device)
        valid = (torch.arange(length, device=device) <= context).view(1, 1, 1, length)
        x = torch.randn(b, 1, layer.w["wq"].shape[1], **bf16)
        step = lambda: layer.decode(x, position, cache_k, cache_v, valid)  # noqa: E731
        return step, step, 20
    if kind == "vit_layer":
        m = case["model"]
        layer = VitLayer(scale_model(m, scale), device)
        x = torch.randn(case["tiles"], scaled(m["tokens"], scale), layer.w["norm1"].shape[0], **bf16)
        return (lambda: layer(x)), (lambda: layer(x)), 5
    if kind == "attention":
        b, tq, tk = case["batch"], scaled(case["queries"], scale, 16), scaled(case["keys"], scale, 16)
        h, kv, d = case["heads"], case["kv_heads"], case["head_dim"]
        q = torch.randn(b, h, tq, d, **bf16)
        # The KV heads repeated once, outside the timing: the attention's own work is what is measured.
        k = torch.randn(b, kv, tk, d, **bf16).repeat_interleave(h // kv, 1)
        v = torch.randn(b, kv, tk, d, **bf16).repeat_interleave(h // kv, 1)
        fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=case["causal"])  # noqa: E731
        return fn, None, 10
    if kind == "attention_decode":
        b, context = case["batch"], scaled(case["context"], scale, 16)
        h, kv, d = case["heads"], case["kv_heads"], case["head_dim"]
        q = torch.randn(b, h, 1, d, **bf16)
        # As above: the KV heads repeated outside the timing (PyTorch's SDPA has no paged cache).
        k = torch.randn(b, kv, context, d, **bf16).repeat_interleave(h // kv, 1)
        v = torch.randn(b, kv, context, d, **bf16).repeat_interleave(h // kv, 1)
        fn = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
        return fn, None, 20
    raise ValueError(f"unknown case kind {kind!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the results here as JSON lines")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--scale", type=int, default=1, help="divide the cases' sizes (CPU check of the script)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-budget-s", type=float, default=150.0,
                    help="stop trying torch.compile once this much time went into it")
    args = ap.parse_args()
    torch.manual_seed(0)
    timer = Timer(args.device)
    compile_spent = 0.0
    results = []
    print(f"{'case':<44} {'eager ms':>10} {'compile ms':>11}  note")
    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        note = ""
        with torch.inference_mode():
            compile_ms = None
            try:
                eager, to_compile, iterations = build(case, args.device, args.scale)
                eager_ms = timer(eager, iterations)
            except Exception as e:  # noqa: BLE001 - one case that cannot run (memory) must not cost the others
                print(f"{case['name']:<44} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}", flush=True)
                results.append({"name": case["name"], "eager_ms": None, "compile_ms": None,
                                "note": f"failed: {type(e).__name__}"})
                if args.device == "cuda":
                    torch.cuda.empty_cache()
                continue
            if to_compile is None:
                note = "no compiled variant (one library call)"
            elif args.no_compile or compile_spent > args.compile_budget_s:
                note = "torch.compile skipped (budget spent)" if not args.no_compile else "torch.compile off"
            else:
                started = time.perf_counter()
                try:
                    mode = "reduce-overhead" if case["kind"] == "llm_decode" and args.device == "cuda" else None
                    compiled = torch.compile(to_compile, mode=mode, fullgraph=False)
                    compile_ms = timer(compiled, iterations, warmup=3)
                except Exception as e:  # noqa: BLE001 - a failing compile is a result to record, not a crash
                    note = f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
                compile_spent += time.perf_counter() - started
            del eager, to_compile
        if args.device == "cuda":
            torch.cuda.empty_cache()
        row = {"name": case["name"], "eager_ms": eager_ms, "compile_ms": compile_ms, "note": note}
        results.append(row)
        compiled_text = "" if compile_ms is None else f"{compile_ms:.3f}"
        print(f"{case['name']:<44} {eager_ms:>10.3f} {compiled_text:>11}  {note}", flush=True)
    if args.json:
        with open(args.json + ".partial", "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in results))
        import os

        os.replace(args.json + ".partial", args.json)


if __name__ == "__main__":
    main()
