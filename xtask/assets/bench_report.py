"""Sets our layer-benchmark figures beside PyTorch's and the rooflines, checks the Hopper goals, and writes the
machine-readable results.

    python3 bench_report.py ours.jsonl torch.jsonl --gpu "NVIDIA H200" --out gpu-results.json

`ours.jsonl` is `layers-bench --json`, `torch.jsonl` is `torch_layers.py --json` (may be missing: PyTorch rows are
then empty). Prints a table (ours, PyTorch eager and compiled, roofline, ratios) and the goals of issue #7 met or
missed; writes a JSON array, one object per benchmark: name, shape, ours, pytorch_eager, pytorch_compile, ceiling,
unit, date, gpu.
"""

import argparse
import datetime
import json
import os


def read_lines(path):
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def ratio(a, b):
    return None if a is None or b is None or b <= 0 else a / b


def goals(rows):
    """(goal, figure, met) for each Hopper goal the figures can judge."""
    by = {r["name"]: r for r in rows}
    out = []
    decode = by.get("llm-layer-decode-b1")
    if decode:
        share = decode["ceiling"] / decode["ours"]
        out.append(("decode step, batch 1: >= 85% of the weight-bytes roofline", f"{100 * share:.0f}%", share >= 0.85))
    cases = ("attention-llm-causal-2k", "attention-llm-causal-8k", "attention-llm-causal-32k")
    # Each tensor-core kernel: the default (mma.sync), and the Hopper ones a GPU run decides about.
    for name in (case + kernel for case in cases for kernel in ("", "-wgmma", "-tma")):
        r = by.get(name)
        if r:
            # The roofline is FLOPs over the 989 TFLOP/s peak, so the achieved rate is peak * ceiling / ours.
            tflops = 989.0 * r["ceiling"] / r["ours"]
            out.append((f"{name}: >= 450 TFLOP/s", f"{tflops:.0f} TFLOP/s", tflops >= 450))
    vit = by.get("vit-45-layers-projector-7-tiles-extrapolated")
    if vit:
        out.append(("ViT on 7 tiles, 45 layers: <= 120 ms", f"{vit['ours']:.1f} ms", vit["ours"] <= 120))
    for name in ("llm-layer-prefill-1852", "llm-layer-decode-b1", "vit-layer-7-tiles"):
        r = by.get(name)
        if r and r["pytorch_eager"] is not None:
            x = r["pytorch_eager"] / r["ours"]
            out.append((f"{name}: >= 2x PyTorch eager", f"{x:.2f}x", x >= 2))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ours")
    ap.add_argument("torch", nargs="?")
    ap.add_argument("--gpu", default="unknown GPU")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    torch_rows = {r["name"]: r for r in read_lines(args.torch)}
    rows = []
    for r in read_lines(args.ours):
        if "ms" not in r:
            continue  # the copy-bandwidth line
        t = torch_rows.get(r["name"], {})
        rows.append({"name": r["name"], "shape": r["shape"], "ours": r["ms"], "pytorch_eager": t.get("eager_ms"),
                     "pytorch_compile": t.get("compile_ms"), "ceiling": r["roofline_ms"], "unit": "ms",
                     "ceiling_basis": r["basis"], "date": date, "gpu": args.gpu})
    print(f"{'case':<46} {'ours ms':>9} {'eager ms':>9} {'comp. ms':>9} {'roof ms':>9} {'x eager':>8} {'% roof':>7}")
    cell = lambda v, f="{:.3f}": "" if v is None else f.format(v)  # noqa: E731
    for r in rows:
        print(f"{r['name']:<46} {cell(r['ours']):>9} {cell(r['pytorch_eager']):>9} {cell(r['pytorch_compile']):>9} "
              f"{cell(r['ceiling']):>9} {cell(ratio(r['pytorch_eager'], r['ours']), '{:.2f}'):>8} "
              f"{cell(ratio(r['ceiling'], r['ours']), '{:.0%}'):>7}")
    print("goals:")
    for goal, figure, met in goals(rows):
        print(f"GOAL {'MET ' if met else 'MISSED'} {goal}: {figure}")
    with open(args.out + ".partial", "w") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")
    os.replace(args.out + ".partial", args.out)


if __name__ == "__main__":
    main()
