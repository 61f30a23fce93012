#!/usr/bin/python3
"""Hotstage's host training step against PyTorch on the CPU, in one run.

For each GPT-2 configuration, compiles examples/gpt2.hot with -D overrides
into an executable, trains it on a byte-level shard of
data/tinyshakespeare.txt and takes the median step time from its metrics;
then times the same step (same model, batch, sequence, thread count,
AdamW with clipping at 1.0, fp32) in PyTorch with bench/peers/
pytorch_gpt2_step.py. Prints a table with the ratio and the command that
reproduces it.

    bench/host_step.py [--hotstage build/bin/hotstage] [--threads N]
                       [--steps 30] [--configs tiny,mid]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIGS = {
    # The tiny GPT, and a mid-size one.
    "tiny": dict(vocab=256, ctx=64, dim=64, heads=4, layers=2, batch=8, seq=64),
    "mid": dict(vocab=256, ctx=256, dim=256, heads=4, layers=4, batch=8, seq=256),
    "wide": dict(vocab=256, ctx=128, dim=512, heads=8, layers=2, batch=8, seq=128),
}


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def hotstage_step(hotstage, name, cfg, threads, steps, work):
    exe = os.path.join(work, f"gpt_{name}")
    defines = []
    for k, v in cfg.items():
        defines += ["-D", f"{k}={v}"]
    # One microbatch and one stage: the peer does a whole batch at once.
    defines += ["-D", "microbatches=1", "-D", "stages=1"]
    start = time.perf_counter()
    run([hotstage, "build", os.path.join(ROOT, "examples", "gpt2.hot"), "-o", exe] + defines)
    compile_s = time.perf_counter() - start
    metrics = os.path.join(work, f"{name}.jsonl")
    warmup = 3
    run([exe, "train", "--data", os.path.join(work, "shakespeare.bin"), "--steps",
         str(warmup + steps), "--metrics", metrics, "--threads", str(threads),
         "--log-every", str(warmup + steps)], stderr=subprocess.DEVNULL)
    with open(metrics) as f:
        ms = [json.loads(line)["ms"] for line in f][warmup:]
    return statistics.median(ms), min(ms), compile_s


def pytorch_step(cfg, threads, steps):
    out = run([sys.executable, os.path.join(ROOT, "bench", "peers", "pytorch_gpt2_step.py"),
               "--vocab", str(cfg["vocab"]), "--ctx", str(cfg["ctx"]), "--dim", str(cfg["dim"]),
               "--heads", str(cfg["heads"]), "--layers", str(cfg["layers"]),
               "--batch", str(cfg["batch"]), "--seq", str(cfg["seq"]),
               "--threads", str(threads), "--warmup", "3", "--iters", str(steps),
               "--clip", "1.0"], stdout=subprocess.PIPE)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["ms_per_step_median"], result["ms_per_step_min"], result.get("torch", "?")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hotstage", default=os.path.join(ROOT, "build", "bin", "hotstage"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per run")
    ap.add_argument("--configs", default="tiny,mid", help=f"from {', '.join(CONFIGS)}")
    args = ap.parse_args()
    names = args.configs.split(",")
    for n in names:
        if n not in CONFIGS:
            sys.exit(f"unknown config '{n}' (have {', '.join(CONFIGS)})")

    rows = []
    torch_version = "?"
    with tempfile.TemporaryDirectory(prefix="hotstage-bench-") as work:
        run([args.hotstage, "data", "--bytes", os.path.join(ROOT, "data", "tinyshakespeare.txt"),
             "-o", os.path.join(work, "shakespeare.bin")], stdout=subprocess.DEVNULL)
        for n in names:
            cfg = CONFIGS[n]
            hs_med, hs_min, compile_s = hotstage_step(args.hotstage, n, cfg, args.threads,
                                                      args.steps, work)
            pt_med, pt_min, torch_version = pytorch_step(cfg, args.threads, args.steps)
            rows.append((n, cfg, hs_med, hs_min, pt_med, pt_min, compile_s))

    print(f"GPT-2 training step on the host CPU, fp32, AdamW + clipping, "
          f"{args.threads} thread(s), median of {args.steps} steps after 3 warm-up")
    print(f"PyTorch {torch_version}; ratio = PyTorch ms / Hotstage ms (> 1: Hotstage is faster)")
    print()
    header = f"{'config':<6} {'dim':>4} {'layers':>6} {'batch x seq':>11} | " \
             f"{'hotstage ms':>11} {'tok/s':>9} | {'pytorch ms':>10} {'tok/s':>9} | {'ratio':>6} | compile s"
    print(header)
    print("-" * len(header))
    for n, cfg, hs_med, hs_min, pt_med, pt_min, compile_s in rows:
        tokens = cfg["batch"] * cfg["seq"]
        print(f"{n:<6} {cfg['dim']:>4} {cfg['layers']:>6} {cfg['batch']:>4} x {cfg['seq']:<4} | "
              f"{hs_med:>11.2f} {tokens / hs_med * 1e3:>9.0f} | {pt_med:>10.2f} {tokens / pt_med * 1e3:>9.0f} | "
              f"{pt_med / hs_med:>6.2f} | {compile_s:>8.1f}")
    print()
    print("reproduce: bench/host_step.py --hotstage " + os.path.relpath(args.hotstage, ROOT) +
          f" --threads {args.threads} --steps {args.steps} --configs {args.configs}")


if __name__ == "__main__":
    main()
