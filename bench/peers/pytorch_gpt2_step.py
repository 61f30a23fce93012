#!/usr/bin/python3
"""PyTorch CPU peer for Hotstage's benchmarks: one GPT-2 training step.

Times one full training step (zero grads, forward, mean cross-entropy loss,
backward, torch.optim.AdamW step) of the same GPT-2 as examples/gpt2.hot
(tied embedding, pre-norm blocks, tanh GELU, causal attention), in fp32 on
the CPU, with random weights and a random batch.  The model is the one of
the end-to-end reference, test/e2e/reference/gpt2_reference.py.

    /usr/bin/python3 bench/peers/pytorch_gpt2_step.py --vocab 256 --ctx 64 --dim 64 \
        --heads 4 --layers 2 --batch 8 --seq 64 --threads 4 --warmup 3 --iters 10

Prints one JSON line:
    {"peer": "pytorch", "torch": "1.13.0", "threads": 4, "config": {...},
     "ms_per_step_median": x, "ms_per_step_min": y, "tokens_per_s": z, ...}
tokens_per_s = batch * seq / median step time.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "test", "e2e", "reference"))
import gpt2_reference as ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="Time one GPT-2 training step in PyTorch (CPU, fp32).")
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=None, help="default: ctx")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--iters", type=int, default=10, help="timed steps")
    ap.add_argument("--clip", type=float, default=0.0,
                    help="clip_grad_norm_ inside the step (0: off, the default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seq = args.seq or args.ctx
    if seq > args.ctx:
        ap.error(f"--seq {seq} exceeds --ctx {args.ctx}")
    if args.iters < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("need --iters >= 1, --warmup >= 0, --threads >= 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    raw = {"vocab": args.vocab, "ctx": args.ctx, "dim": args.dim, "heads": args.heads,
           "layers": args.layers,
           "optimizer": {"lr": 6e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
                         "weight_decay": 0.1, "clip_grad_norm": args.clip}}
    try:
        cfg = ref.resolve_config(raw, steps=args.warmup + args.iters)
    except ref.ReferenceError_ as e:
        ap.error(str(e))
    model = ref.build_model(cfg, ref.init_weights(cfg, args.seed, "gpt2"))
    optimizer = ref.make_optimizer(model, cfg["optimizer"])  # AdamW, decay on rank >= 2
    params = list(model.parameters())
    g = torch.Generator().manual_seed(args.seed + 1)
    stream = torch.randint(0, args.vocab, (args.batch, seq + 1), generator=g)
    tokens = stream[:, :-1].to(torch.int32).contiguous()
    targets = stream[:, 1:].to(torch.int32).contiguous()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(tokens, targets)
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        optimizer.step()
        return loss

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        loss = step()
        times.append((time.perf_counter() - t0) * 1e3)
    median = statistics.median(times)
    print(json.dumps({
        "peer": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "config": {"vocab": args.vocab, "ctx": args.ctx, "dim": args.dim, "heads": args.heads,
                   "layers": args.layers, "batch": args.batch, "seq": seq, "warmup": args.warmup,
                   "iters": args.iters, "clip": args.clip, "precision": "fp32", "device": "cpu",
                   "params": sum(p.numel() for p in params)},
        "ms_per_step_median": round(median, 4),
        "ms_per_step_min": round(min(times), 4),
        "tokens_per_s": round(args.batch * seq / (median / 1e3), 2),
        "loss": round(loss.item(), 6),
    }))


if __name__ == "__main__":
    main()
