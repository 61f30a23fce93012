#!/usr/bin/env python3
"""GPT-2 124M training steps on one GPU: Hotstage against PyTorch and JAX.

Builds examples/gpt2.hot for the GPU (--target cuda, one stage, one
microbatch of BATCH x SEQ tokens) and trains it on random tokens; runs the
PyTorch and JAX peers (bench/peers/*_gpt2_gpu.py) on the same GPU with the
same model, batch and optimizer; prints tokens/s, ms/step and MFU for
each, with the ratios to Hotstage, and the command that reproduces the
table. MFU counts 6N + 6LCT FLOPs per token (N parameters, L layers, C
width, T sequence) against the GPU's dense bf16 peak (H100/H200 989
TFLOP/s, A100 312).

The GPU machines have no compiler, so the two halves can run apart:

    bench/gpu_step.py --build-only DIR     # here: the executable and data
    bench/gpu_step.py --prebuilt DIR       # there: the runs and the table

Without either, it does both in a temporary folder.
"""

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "test", "gpu"))
import bundle  # noqa: E402  (the libraries a GPU machine may lack)
GPT2 = dict(vocab=50257, ctx=1024, dim=768, heads=12, layers=12)
PRECISIONS = ("bf16", "fp32")
# Builds beside each precision's default, measured in the same run to
# choose defaults: cuBLASLt's fused GELU and its gradient (llm.c found the
# fused GELU slower in bf16 on A100); cross entropy's statistics and
# gradient in two passes over the logits rather than the gradient written
# in the forward's (what the fused classifier saves); the residual stream
# and its gradient in bf16 (llm.c's), alone and with the fused GELU.
VARIANTS = {"bf16-gelu": ["-Dprecision=bf16", "--gemm-epilogues=gelu"],
            "bf16-two-pass-ce": ["-Dprecision=bf16",
                                 "--loss-gradient-in-forward=false"],
            "bf16-residual": ["-Dprecision=bf16", "--bf16-residual"]}
# The variants profiled beside the defaults (--profile).
PROFILED_VARIANTS = ("bf16-gelu",)
# Runs of a build with another environment: the bf16 build with its GEMMs'
# algorithms timed at startup rather than the heuristic's first, and with
# its launches queued one by one rather than replayed as one CUDA graph a
# step (what the graph saves).
RUN_VARIANTS = {"bf16-autotune": ("bf16", {"HOTSTAGE_GEMM_AUTOTUNE": "1"}),
                "bf16-launches": ("bf16", {"HOTSTAGE_CUDA_GRAPHS": "0"})}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12}


def write_random_shard(path, tokens, vocab, seed=0):
    """An llm.c token shard (v1, uint16) of uniformly random tokens."""
    import random
    rng = random.Random(seed)
    header = [0] * 256
    header[0], header[1], header[2] = 20240520, 1, tokens
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(struct.pack(f"<{tokens}H",
                            *(rng.randrange(vocab) for _ in range(tokens))))


def tokens_path():
    """The random token shard, written where the benchmark runs (outside
    the carried build folder: 8 MB less to carry to a GPU machine)."""
    return os.path.join(tempfile.gettempdir(), "hotstage-gpu-bench-tokens.bin")


def kernel_shapes(plan):
    """The distinct GEMM and attention shapes of a plan's text, named as
    HOTSTAGE_PROFILE names them (PlanAction::profileName)."""
    dtypes, gemms, attention = {}, {}, {}
    for line in plan.splitlines():
        words = line.split()
        if words[:1] == ["buffer"]:
            dtypes[int(words[1])] = words[4]
        elif words[:1] == ["gemm"]:
            body, _, note = line.partition("#")
            b, m, n, k, ta, tb = (int(w) for w in body.split()[1:7])
            bf16 = dtypes.get(int(body.split()[8])) == "bf16"
            name = (f"gemm {note.strip()} {f'{b}x' if b > 1 else ''}"
                    f"{m}x{n}x{k} {'T' if ta else 'N'}{'T' if tb else 'N'} "
                    f"{'bf16' if bf16 else 'f32'}")
            gemms[name] = dict(batch=b, m=m, n=n, k=k, ta=bool(ta),
                               tb=bool(tb), bf16=bf16, name=name)
        elif words[:1] == ["attention"]:
            b, t, h, kvh, d, causal = (int(w) for w in words[1:7])
            name = (f"B{b} T{t} H{h}/{kvh} D{d}"
                    + (" causal" if causal else ""))
            attention[name] = dict(batch=b, seq=t, heads=h, kv_heads=kvh,
                                   head_dim=d, causal=bool(causal), name=name)
    return {"gemms": list(gemms.values()), "attention": list(attention.values())}


def build(hotstage, out, batch, seq):
    os.makedirs(out, exist_ok=True)
    defines = [f"-D{k}={v}" for k, v in GPT2.items()]
    defines += [f"-Dbatch={batch}", f"-Dseq={seq}", "-Dmicrobatches=1",
                "-Dstages=1"]
    builds = {p: [f"-Dprecision={p}"] for p in PRECISIONS}
    builds.update(VARIANTS)
    for name, flags in builds.items():
        command = [hotstage, "build", os.path.join(ROOT, "examples", "gpt2.hot"),
                   "--target", "cuda"] + flags + defines
        subprocess.run(command + ["-o", os.path.join(out, f"gpt2-{name}")],
                       check=True)
        # The shapes the peers' library kernels are timed on (--profile).
        plan = subprocess.run(command + ["--emit=plan"], check=True,
                              capture_output=True, text=True).stdout
        with open(os.path.join(out, f"kernels-{name}.json"), "w") as f:
            json.dump(kernel_shapes(plan), f)
    bundle.copy_libraries([os.path.join(out, "gpt2-fp32")],
                          os.path.join(out, "lib"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"batch": batch, "seq": seq}, f)


def carried_env(out):
    """The environment with the libraries build() carried on the path."""
    return bundle.gpu_env(os.path.join(out, "lib"))


def hotstage_run(out, precision, warmup, iters):
    metrics = os.path.join(out, f"metrics-{precision}.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)
    env = carried_env(out)
    build, extra = RUN_VARIANTS.get(precision, (precision, {}))
    env.update(extra)
    done = subprocess.run([os.path.join(out, f"gpt2-{build}"), "train", "--data",
                           tokens_path(), "--steps",
                           str(warmup + iters), "--metrics", metrics,
                           "--log-every", str(warmup + iters)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    ms = [json.loads(line)["ms"] for line in open(metrics)][warmup:]
    return {"ms_per_step_median": statistics.median(ms),
            "ms_per_step_min": min(ms), "precision": precision,
            "last_loss": json.loads(open(metrics).readlines()[-1])["loss"]}


def hotstage_profile(out, precision, steps=3):
    """HOTSTAGE_PROFILE's table (each action timed with CUDA events; GEMMs
    with their TFLOP/s, kernels with their GB/s) over a few steps: its
    lines, or one line saying why there is none."""
    env = carried_env(out)
    env["HOTSTAGE_PROFILE"] = "1"
    done = subprocess.run([os.path.join(out, f"gpt2-{precision}"), "train",
                           "--data", tokens_path(),
                           "--steps", str(steps), "--log-every", str(steps)],
                          capture_output=True, text=True, env=env)
    lines = done.stderr.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith("profile")), None)
    if start is None:
        return [f"(no profile: {' '.join(lines[-1:])})"]
    return [l for l in lines[start:] if l.strip()]


def profile_rows(lines):
    """The rows of a profile table: {ms, share, calls, tflops, gbps,
    function, action} (printf columns: CudaDevice::printProfile)."""
    rows = []
    for line in lines[2:]:
        try:
            ms, share, calls = float(line[0:10]), float(line[11:17]), int(line[18:28])
        except ValueError:
            continue
        tflops, gbps = line[29:38].strip(), line[39:48].strip()
        function, _, action = line[50:].partition(" / ")
        rows.append(dict(ms=ms, share=share, calls=calls,
                         tflops=float(tflops) if tflops else None,
                         gbps=float(gbps) if gbps else None,
                         function=function, action=action))
    return rows


def peer_kernels(out, build, warmup, iters, device="cuda"):
    """bench/peers/pytorch_kernels_gpu.py on `build`'s shapes: {name:
    measurement}, or {"error": ...}."""
    cmd = [sys.executable, os.path.join(ROOT, "bench", "peers",
                                        "pytorch_kernels_gpu.py"),
           "--shapes", os.path.join(out, f"kernels-{build}.json"),
           "--warmup", str(warmup), "--iters", str(iters), "--device", device]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stdout + done.stderr).strip().splitlines()[-1:]}
    found = {}
    for line in done.stdout.splitlines():
        m = json.loads(line)
        found[m["kind"] if m["kind"].endswith("_reach") else m["name"]] = m
    return found


def kernel_table(lines, peers, top=12):
    """Hotstage's GEMMs against cuBLAS (torch.matmul) on the same shapes,
    its attention against PyTorch's flash SDPA, and its other kernels'
    GB/s against a device copy's, from a profile and peer_kernels()."""
    rows = profile_rows(lines)
    if not rows:
        return lines
    if "error" in peers:
        return lines + [f"(no peer kernels: {' '.join(peers['error'])})"]
    reach, copy = peers.get("gemm_reach", {}), peers.get("copy_reach", {})
    table = [f"cuBLAS reaches {reach.get('tflops', 0):.0f} TFLOP/s on "
             f"{reach.get('name', '?')}; a device copy moves "
             f"{copy.get('gbps', 0):.0f} GB/s ({copy.get('name', '?')})", ""]
    header = (f"{'GEMM (function / action M x N x K)':<62} {'%step':>6} "
              f"{'TFLOP/s':>8} {'cuBLAS':>8} {'ratio':>6}")
    table += [header, "-" * len(header)]
    gemms = sorted((r for r in rows if r["action"].startswith("gemm")),
                   key=lambda r: -r["ms"])
    for r in gemms:
        # The ratio of times per call (exact where the printed rates round).
        peer = peers.get(r["action"], {})
        mine_ms = r["ms"] / max(r["calls"], 1)
        table.append(f"{r['function'] + ' / ' + r['action']:<62} "
                     f"{r['share']:>5.1f}% {r['tflops'] or 0:>8.1f} "
                     f"{peer.get('tflops', 0):>8.1f} "
                     + (f"{peer['ms'] / mine_ms:>6.2f}"
                        if peer.get("ms") and mine_ms > 0 else "     -"))
    header = (f"{'attention (per call, ms)':<62} {'%step':>6} "
              f"{'Hotstage':>8} {'SDPA':>8} {'ratio':>6}")
    table += ["", header, "-" * len(header)]
    for r in rows:
        words = r["action"].split(" ", 1)
        if words[0] not in ("attention", "attention_grad") or len(words) < 2:
            continue
        peer = peers.get(words[1], {}).get(
            "forward_ms" if words[0] == "attention" else "backward_ms")
        mine = r["ms"] / max(r["calls"], 1)
        table.append(f"{r['function'] + ' / ' + r['action']:<62} "
                     f"{r['share']:>5.1f}% {mine:>8.3f} {peer or 0:>8.3f} "
                     + (f"{peer / mine:>6.2f}" if peer else "     -"))
    header = (f"{'other kernels, by time':<62} {'%step':>6} "
              f"{'GB/s':>8} {'%copy':>8}")
    table += ["", header, "-" * len(header)]
    others = [r for r in rows if r["gbps"] is not None][:top]
    for r in others:
        share = (f"{100 * r['gbps'] / copy['gbps']:>7.0f}%"
                 if copy.get("gbps") else "       -")
        table.append(f"{r['function'] + ' / ' + r['action']:<62} "
                     f"{r['share']:>5.1f}% {r['gbps']:>8.0f} {share}")
    return table


def peer_run(script, batch, seq, warmup, iters, precision):
    cmd = [sys.executable, os.path.join(ROOT, "bench", "peers", script),
           "--batch", str(batch), "--seq", str(seq), "--warmup", str(warmup),
           "--iters", str(iters), "--precision", precision]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stdout + done.stderr).strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def gpu_name():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name",
                               "--format=csv,noheader"], capture_output=True,
                              text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hotstage", default=os.path.join(ROOT, "build", "bin", "hotstage"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--peers", default="pytorch,jax")
    ap.add_argument("--precisions", default="bf16,fp32",
                    help="bf16 (Hotstage: bf16 GEMM operands), fp32 or both")
    ap.add_argument("--profile", action="store_true",
                    help="also print Hotstage's per-action profile (TFLOP/s, GB/s)")
    ap.add_argument("--build-only", metavar="DIR")
    ap.add_argument("--prebuilt", metavar="DIR")
    args = ap.parse_args()
    if args.build_only:
        build(args.hotstage, args.build_only, args.batch, args.seq)
        print(f"built {args.build_only}; on the GPU machine: "
              f"bench/gpu_step.py --prebuilt {args.build_only}")
        return
    temp = None
    out = args.prebuilt
    if not out:
        temp = out = tempfile.mkdtemp(prefix="hotstage-gpu-bench-")
        build(args.hotstage, out, args.batch, args.seq)
    cfg = json.load(open(os.path.join(out, "config.json")))
    batch, seq = cfg["batch"], cfg["seq"]
    if not os.path.exists(tokens_path()):
        write_random_shard(tokens_path(), 4 * 1024 * 1024, GPT2["vocab"])

    precisions = args.precisions.split(",")
    # Each precision's default build, then its variants (rows without a
    # ratio: compare their ms/step with the default's).
    builds = [p for p in precisions] + [
        v for v in VARIANTS if v.split("-")[0] in precisions
        and os.path.exists(os.path.join(out, f"gpt2-{v}"))] + [
        v for v, (b, _) in RUN_VARIANTS.items() if b in precisions]
    rows = [(f"hotstage {b}", hotstage_run(out, b, args.warmup, args.iters))
            for b in builds]
    scripts = {"pytorch": "pytorch_gpt2_gpu.py", "jax": "jax_gpt2_gpu.py"}
    for peer in args.peers.split(","):
        for precision in precisions:
            rows.append((f"{peer} {precision}",
                         peer_run(scripts[peer], batch, seq, args.warmup,
                                  args.iters, precision)))
    # Profiled: each precision's default build and bf16-gelu (the epilogue
    # GEMMs against plain cuBLAS on their shapes, what choosing that
    # default needs); the other variants' ms/step say what they need to,
    # and each profile costs the run's time budget (scripts/gpu-check.sh).
    profiled = [b for b in builds if b in precisions or b in PROFILED_VARIANTS]
    profiles = ({b: kernel_table(hotstage_profile(out, b),
                                 peer_kernels(out, b, args.warmup, args.iters))
                 for b in profiled}
                if args.profile else {})
    if temp:
        shutil.rmtree(temp)

    name = gpu_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    n = 124439808  # `hotstage info examples/gpt2.hot`
    flops_per_token = 6 * n + 6 * GPT2["layers"] * GPT2["dim"] * seq
    tokens = batch * seq
    # Each peer against Hotstage in the same precision.
    base = {label.split()[1]: r.get("ms_per_step_median")
            for label, r in rows if label.startswith("hotstage")}
    print(f"GPT-2 124M training step on {name}: batch {batch} x seq {seq}, "
          f"AdamW + clipping; median of {args.iters} steps after "
          f"{args.warmup} warm-up")
    print("ratio = Hotstage tokens/s / peer tokens/s in the same precision "
          "(> 1: Hotstage is faster); "
          f"MFU: {flops_per_token / 1e9:.3f} GFLOP per token vs "
          + (f"{peak / 1e12:.0f} TFLOP/s bf16 peak" if peak else "unknown peak"))
    print()
    header = f"{'run':<24} {'precision':>9} | {'ms/step':>9} {'tokens/s':>10} {'MFU':>6} | {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for label, r in rows:
        if "error" in r:
            print(f"{label:<24} failed: {' '.join(r['error'])}")
            continue
        ms = r["ms_per_step_median"]
        tps = tokens / ms * 1e3
        mfu = f"{tps * flops_per_token / peak * 100:5.1f}%" if peak else "    -"
        mine = base.get(label.split()[1])
        ratio = (f"{ms / mine:6.2f}" if mine and not label.startswith("hotstage")
                 else "     -")
        print(f"{label:<24} {r.get('precision', '?'):>9} | {ms:>9.2f} "
              f"{tps:>10.0f} {mfu:>6} | {ratio}")
    for precision, table in profiles.items():
        print()
        print(f"Hotstage {precision}, where the time goes (HOTSTAGE_PROFILE, "
              "3 steps, each action timed apart), against PyTorch's library "
              "kernels on the same shapes (bench/peers/pytorch_kernels_gpu.py; "
              "ratio > 1: Hotstage's is faster):")
        print("\n".join(table))
    print()
    print(f"reproduce: bench/gpu_step.py --batch {batch} --seq {seq} "
          f"--warmup {args.warmup} --iters {args.iters} --peers {args.peers} "
          f"--precisions {args.precisions}"
          + (" --profile" if args.profile else "")
          + ("  (--build-only DIR here, --prebuilt DIR there)"))


if __name__ == "__main__":
    main()
