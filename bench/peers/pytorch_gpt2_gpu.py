#!/usr/bin/env python3
"""PyTorch GPU peer for Hotstage's benchmarks: GPT-2 training steps.

The same GPT-2 as examples/gpt2.hot (tied embedding, pre-norm blocks, tanh
GELU, causal attention) as an expert writes it for speed: bf16 autocast
over fp32 master weights, torch.compile, scaled_dot_product_attention
(flash), fused AdamW (lr 6e-4, betas 0.9/0.95, eps 1e-8, weight decay
0.1) and gradient clipping at 1.0. --precision fp32 runs it in fp32 with
TF32 off, as Hotstage's fp32 build computes. Random weights and tokens.

    python3 bench/peers/pytorch_gpt2_gpu.py --batch 16 --seq 1024 --iters 20

Prints one JSON line: {"peer": "pytorch", "torch": ..., "gpu": ...,
"precision": ..., "ms_per_step_median": x, "ms_per_step_min": y,
"tokens_per_s": z, ...}; tokens_per_s = batch * seq / median step.
"""

import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import gpu_args  # the shared command line (bench/peers/gpu_args.py)


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(dim)
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.attn_proj = nn.Linear(dim, dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.c_fc = nn.Linear(dim, 4 * dim)
        self.mlp_proj = nn.Linear(4 * dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)),
                                        approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, vocab, ctx, dim, heads, layers):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(ctx, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * layers) if "proj" in name else 0.02
                nn.init.normal_(p, std=0.01 if name == "wpe.weight" else std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, tokens, targets):
        t = tokens.shape[1]
        x = self.wte(tokens) + self.wpe(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]),
                               targets.view(-1))


def main():
    ap = gpu_args.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    model = GPT2(args.vocab, args.ctx, args.dim, args.heads, args.layers).to(dev)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    step_model = model if args.no_compile else torch.compile(model)
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq), device=dev)
    targets = torch.randint(0, args.vocab, (args.batch, args.seq), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16,
                            enabled=args.precision == "bf16"):
            loss = step_model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(times)
    print(json.dumps({
        "peer": "pytorch", "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(), "precision": args.precision,
        "compiled": not args.no_compile,
        "params": sum(p.numel() for p in model.parameters()),
        "batch": args.batch, "seq": args.seq,
        "ms_per_step_median": median, "ms_per_step_min": min(times),
        "tokens_per_s": args.batch * args.seq / median * 1e3,
        "last_loss": float(loss),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}))


if __name__ == "__main__":
    main()
