"""Times torch.nn.functional.linear (bf16, cuBLAS) on the shapes read from stdin (`m n k label` lines), timed the
same way as nvlm's matmul-bench: warm-up, then 20 iterations each followed by a synchronisation."""
import sys
import time

import torch

print(f"{'dev':<5} {'case':<26} {'m':>6} {'n':>6} {'k':>6} {'ms':>11} {'TFLOP/s':>10} {'w GB/s':>10}")
for line in sys.stdin:
    m, n, k, *label = line.split()
    m, n, k, label = int(m), int(n), int(k), " ".join(label)
    x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
    w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda")
    torch.nn.functional.linear(x, w)
    torch.cuda.synchronize()
    iterations = 20
    start = time.perf_counter()
    for _ in range(iterations):
        torch.nn.functional.linear(x, w)
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / iterations
    flops = 2.0 * m * n * k
    print(f"{'torch':<5} {label:<26} {m:>6} {n:>6} {k:>6} {seconds * 1e3:>11.3f} {flops / seconds / 1e12:>10.2f} "
          f"{n * k * 2 / seconds / 1e9:>10.1f}")
