#!/usr/bin/env python3
"""The library kernels Hotstage's GPU step is held against, one shape at a
time: cuBLAS's GEMM (torch.matmul) on each GEMM shape of Hotstage's plan,
PyTorch's flash SDPA forward and backward on its attention shape, cuBLAS
on a large square bf16 GEMM (what the GPU's GEMMs reach) and a device copy
(what its memory reaches). Each is timed with CUDA events, the median of
--iters runs after --warmup.

    pytorch_kernels_gpu.py --shapes kernels.json [--device cuda]

kernels.json (bench/gpu_step.py writes it from the plans it builds):
{"gemms": [{"batch", "m", "n", "k", "ta", "tb", "bf16", "name"}],
 "attention": [{"batch", "seq", "heads", "kv_heads", "head_dim",
 "causal", "name"}]}; a GEMM computes C[M, N] = op(A) op(B) with A [M, K]
(stored [K, M] when ta) and B [K, N] (stored [N, K] when tb), as the plan
does. Prints one JSON line per measurement, each with the `name`
Hotstage's profile gives the same shape. `--device cpu` runs the same
code on small shapes without a GPU (a smoke test: the numbers mean
nothing).
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def timer(device, warmup, iters):
    """median milliseconds of fn() over iters runs after warmup"""
    def measure(fn):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            if device == "cuda":
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)
    return measure


def gemm_operands(g, device):
    dtype = torch.bfloat16 if g["bf16"] else torch.float32
    b, m, n, k = g["batch"], g["m"], g["n"], g["k"]

    def make(rows, cols, transposed):
        """[rows, cols], stored [cols, rows] when transposed"""
        if transposed:
            t = torch.randn(b, cols, rows, device=device,
                            dtype=dtype).transpose(1, 2)
        else:
            t = torch.randn(b, rows, cols, device=device, dtype=dtype)
        return t if b > 1 else t[0]
    return make(m, k, g["ta"]), make(k, n, g["tb"])


def attention(q, k, v, causal):
    """PyTorch's SDPA; its math where this PyTorch predates it (< 2.0: the
    CPU smoke test on Debian's)"""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if causal:
        t = q.shape[-2]
        mask = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
        s = s.masked_fill(mask, float("-inf"))
    return s.softmax(-1) @ v


def flash_only():
    """A context in which SDPA runs its flash kernel or fails"""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(SDPBackend.FLASH_ATTENTION)
    except ImportError:  # PyTorch 2.0 - 2.2
        return torch.backends.cuda.sdp_kernel(
            enable_flash=True, enable_math=False, enable_mem_efficient=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", required=True)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--square", type=int, default=8192,
                    help="the square bf16 GEMM's size (cuBLAS's reach)")
    ap.add_argument("--copy-mib", type=int, default=2048,
                    help="the device copy's size (the memory's reach)")
    args = ap.parse_args()
    shapes = json.load(open(args.shapes))
    device = args.device
    # cuBLAS as Hotstage calls it: fp32 GEMMs in fp32 (no TF32), bf16 ones
    # accumulating in fp32.
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = \
            False
    except (AttributeError, AssertionError):  # PyTorch < 1.12... or CPU-only
        pass
    measure = timer(device, args.warmup, args.iters)

    def emit(**fields):
        print(json.dumps(fields), flush=True)

    for g in shapes.get("gemms", []):
        a, b = gemm_operands(g, device)
        ms = measure(lambda: torch.matmul(a, b))
        flops = 2.0 * g["batch"] * g["m"] * g["n"] * g["k"]
        emit(kind="gemm", name=g["name"], ms=ms, tflops=flops / ms / 1e9)
        del a, b

    for at in shapes.get("attention", []):
        bsz, t, h, kvh, d = (at["batch"], at["seq"], at["heads"],
                             at["kv_heads"], at["head_dim"])
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        q = torch.randn(bsz, h, t, d, device=device, dtype=dtype,
                        requires_grad=True)
        k = torch.randn(bsz, kvh, t, d, device=device, dtype=dtype,
                        requires_grad=True)
        v = torch.randn(bsz, kvh, t, d, device=device, dtype=dtype,
                        requires_grad=True)
        if kvh != h:
            k2 = k.repeat_interleave(h // kvh, dim=1).detach().requires_grad_()
            v2 = v.repeat_interleave(h // kvh, dim=1).detach().requires_grad_()
        else:
            k2, v2 = k, v
        if device == "cuda":
            context = flash_only()
        else:
            import contextlib
            context = contextlib.nullcontext()
        with context:
            out = attention(q, k2, v2, at["causal"])
            grad = torch.randn_like(out)
            forward = measure(lambda: attention(q, k2, v2, at["causal"]))
            backward = measure(lambda: torch.autograd.grad(
                out, (q, k2, v2), grad, retain_graph=True))
        # Forward: QK^T and PV; backward: five such products; half of
        # each under a causal mask.
        products = 2.0 * bsz * h * t * t * d * (0.5 if at["causal"] else 1)
        emit(kind="attention", name=at["name"], forward_ms=forward,
             backward_ms=backward,
             forward_tflops=2 * products / forward / 1e9,
             backward_tflops=5 * products / backward / 1e9)
        del q, k, v, k2, v2, out, grad

    n = args.square if device == "cuda" else 256
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = measure(lambda: torch.matmul(a, b))
    emit(kind="gemm_reach", name=f"{n}x{n}x{n} NN {str(dtype)[6:]}", ms=ms,
         tflops=2.0 * n ** 3 / ms / 1e9)
    del a, b

    count = (args.copy_mib if device == "cuda" else 16) * (1 << 20) // 4
    src = torch.empty(count, device=device, dtype=torch.float32).fill_(1)
    dst = torch.empty_like(src)
    ms = measure(lambda: dst.copy_(src))
    # Read once and written once.
    emit(kind="copy_reach", name=f"copy {count * 4 >> 20} MiB", ms=ms,
         gbps=2.0 * count * 4 / ms / 1e6)


if __name__ == "__main__":
    main()
