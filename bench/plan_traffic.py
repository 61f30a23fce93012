#!/usr/bin/env python3
"""Memory traffic of a training step as its plan names it, without a GPU.

Builds a model's plan (`hotstage build FILE --emit=plan ...`) and sums, per
function and per kind of action, the bytes of the buffers each action
names: every buffer once (a GEMM's C twice when it accumulates, the
logits twice in cross entropy's kernel that writes its gradient over them
as it reads them, an optimizer update's states, parameters and zeroed
gradients twice: read, then written back). That is a
lower bound on what the action moves through memory (a kernel may read a
buffer more than once, a GEMM re-reads its operands from cache), and it
counts the GEMMs' operands too (a grouped optimizer update names only the
first buffer of each run it updates; its note's element count gives the
runs' bytes).
Divided by a memory bandwidth it bounds the
time of the memory-bound part of a step: a yardstick for changes to the
compiler between GPU runs, not a measurement.

  /usr/bin/python3 bench/plan_traffic.py -- -D stages=1 -D precision=bf16

prints GPT-2 124M's table for --target cuda (everything after `--` goes to
`hotstage build`). `--compare OTHER_HOTSTAGE` adds a column for another
build of the compiler (say, the last commit's). `--roofline` adds a model
of the step (one-stage plans): each action the longer of its FLOPs at an
assumed rate (`--gemm-tflops`, `--attention-tflops`) and its bytes at
`--bandwidth`, plus `--launch-us` between actions, summed per function and kind of action, and the MFU that
step would reach: where the plan leaves time on the table before any GPU
measures it.
"""

import argparse
import collections
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def plan_of(hotstage, model, target, flags):
    cmd = [hotstage, "build", model, "--target", target, "--emit=plan", *flags]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"plan_traffic: {shlex.join(cmd)} failed:\n{run.stderr}")
    return run.stdout


def traffic(plan):
    """{function: (actions, bytes, {note: bytes}, [(kind, note, flops,
    bytes) per action])}"""
    sizes, kernels, functions, current = {}, {}, {}, None
    kinds_of, dtype_bytes = {}, {}
    for line in plan.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "buffer":
            sizes[int(words[1])] = int(words[words.index("bytes") + 1])
            kinds_of[int(words[1])] = words[2]
            dtype_bytes[int(words[1])] = 2 if words[4] == "bf16" else 4
        elif words[0] == "kernel":
            kernels[words[1]] = words[2]
        elif words[0] == "function":
            current = functions.setdefault(
                words[1], [0, 0, collections.Counter(), []])
        elif current is not None and words[0] in ("call", "gemm", "attention",
                                                  "attention_grad"):
            body, _, note = line.partition("#")
            body = body.split()
            if words[0] == "call":  # call KERNEL RANGE N BUFFERS... [block B]
                ids = body[4:4 + int(body[3])]
            elif words[0] == "gemm":  # gemm B M N K TA TB ACC A B C SA SB SC ...
                ids = body[8:11]
                for key in ("bias", "addend", "aux"):
                    if key in body:
                        ids.append(body[body.index(key) + 1])
                if body[7] == "1":
                    ids.append(body[10])
            else:  # attention B T H KVH D CAUSAL SCALE BUFFERS... [qkv] [dqkv]
                ids = [i for i in body[8:] if i.isdigit()]
            # A buffer named twice moves once (attention's packed q, k and
            # v; an operand read twice), but for a fused group's output
            # that is also its input (an optimizer state, a parameter, a
            # gradient zeroed after use): read, then written back.
            in_place = set()
            if words[0] == "call" and note.strip().startswith("fused"):
                in_place = {i for i in ids if ids.count(i) > 1}
            if words[0] != "gemm":
                ids = list(dict.fromkeys(ids))
            moved = sum(sizes.get(int(i), 0) * (2 if i in in_place else 1)
                        for i in ids)
            if words[0] == "call" and kernels.get(body[1], "").endswith(
                    "_cross_entropy_and_grad"):
                moved += sizes.get(int(ids[0]), 0)  # read, then overwritten
            group = re.search(r"fused update of \d+ parameters?, (\d+) elements",
                              note)
            if words[0] == "call" and group:
                # A grouped update names each run of parameters, gradients
                # and states by its first buffer: the run moves all its
                # elements (scalars are themselves).
                elements = int(group.group(1))
                moved = sum(
                    (elements * dtype_bytes[int(i)] if kinds_of[int(i)] in
                     ("param", "state") else sizes.get(int(i), 0)) *
                    (2 if i in in_place else 1) for i in ids)
            note = re.sub(r", \d+ elements$", "", note.strip())
            current[0] += 1
            current[1] += moved
            current[2][note or words[0]] += moved
            flops = 0.0
            if words[0] == "gemm":
                b, m, n, k = (int(w) for w in body[1:5])
                flops = 2.0 * b * m * n * k
            elif words[0] != "call":
                # QK^T and PV (forward), five such products (backward),
                # half of each under a causal mask.
                b, t, h, _, d, causal = (int(w) for w in body[1:7])
                products = 2.0 * b * h * t * t * d * (0.5 if causal else 1)
                flops = products * (2 if words[0] == "attention" else 5)
            kind = "kernel" if words[0] == "call" else (
                "gemm" if words[0] == "gemm" else "attention")
            current[3].append((kind, note or words[0], flops, moved))
        elif words[0] == "end":
            current = None
    return functions


def plan_header(plan):
    """The plan's first lines: {"microbatches": N, "batch": B, "seq": T}
    and its parameters' element count and attention layers' shapes."""
    info = {"params": 0, "attention": []}
    for line in plan.splitlines():
        words = line.split()
        if words[:1] and words[0] in ("microbatches", "batch", "seq"):
            info.setdefault(words[0], int(words[1]))
        elif words[:1] == ["buffer"] and words[2] == "param":
            info["params"] += int(words[words.index("bytes") + 1]) // 4
        elif words[:1] == ["attention"]:
            info["attention"].append([int(w) for w in words[1:6]])
        elif words[:1] == ["end"]:
            break
    return info


def roofline(functions, info, bandwidth, gemm_tflops, attention_tflops,
             peak_tflops, launch_us):
    """A model of the step's time without a GPU: each action takes the
    longer of its FLOPs at its kind's rate and its bytes at the memory
    bandwidth, plus `launch_us` between actions; printed per function and
    kind, with the step's MFU."""
    print(f"\nModel (not a measurement): each action the longer of its FLOPs at "
          f"{gemm_tflops:.0f} TFLOP/s (GEMMs) or {attention_tflops:.0f} "
          f"(attention) and its bytes at {bandwidth} TB/s, plus {launch_us} us "
          "from one action to the next")
    print(f"{'function / kind':34s} {'ms':>10s} {'TFLOP':>10s}  "
          "actions bound by FLOPs / bytes")
    per_function = {}
    for function, (_, _, _, actions) in functions.items():
        kinds = collections.defaultdict(lambda: [0.0, 0.0, 0, 0])
        for kind, _, flops, moved in actions:
            rate = {"gemm": gemm_tflops, "attention": attention_tflops}.get(kind)
            compute = flops / (rate * 1e12) if rate else 0.0
            memory = moved / (bandwidth * 1e12)
            k = kinds[kind]
            k[0] += max(compute, memory) + launch_us * 1e-6
            k[1] += flops
            k[2 if compute >= memory else 3] += 1
        total = sum(k[0] for k in kinds.values())
        per_function[function] = total
        print(f"{function:34s} {total * 1e3:10.2f} "
              f"{sum(k[1] for k in kinds.values()) / 1e12:10.2f}")
        for kind, (t, flops, by_compute, by_memory) in sorted(
                kinds.items(), key=lambda kv: -kv[1][0]):
            print(f"  {kind:32s} {t * 1e3:10.2f} {flops / 1e12:10.2f}  "
                  f"{by_compute} / {by_memory}")
    m = info.get("microbatches", 1)
    microbatch = sum(t for f, t in per_function.items()
                     if f.startswith(("forward", "backward")))
    step = m * microbatch + per_function.get("optimizer_step", 0.0)
    tokens = m * info.get("batch", 1) * info.get("seq", 1)
    # 6N + 6LCT per token, L attention layers of C = heads x head size over
    # T = the sequence (the benchmark's MFU).
    per_token = 6 * info["params"] + sum(6 * h * d * t
                                         for _, t, h, _, d in info["attention"])
    mfu = per_token * tokens / step / (peak_tflops * 1e12)
    print(f"\nstep of {m} microbatch(es), {tokens} tokens: {step * 1e3:.2f} ms, "
          f"{tokens / step:.0f} tokens/s, MFU {100 * mfu:.1f}% of "
          f"{peak_tflops:.0f} TFLOP/s (6N + 6LCT per token, N = "
          f"{info['params']})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "examples/gpt2.hot"))
    parser.add_argument("--target", default="cuda")
    parser.add_argument("--hotstage", default=os.path.join(ROOT, "build/bin/hotstage"))
    parser.add_argument("--compare", help="another hotstage binary, for a second column")
    parser.add_argument("--bandwidth", type=float, default=4.8,
                        help="TB/s for the time column (H200: 4.8, H100 SXM: 3.35)")
    parser.add_argument("--top", type=int, default=8, help="kinds of action shown per function")
    parser.add_argument("--roofline", action="store_true",
                        help="also a model of the step's time and MFU: each "
                        "action the longer of its FLOPs and its bytes")
    parser.add_argument("--gemm-tflops", type=float, default=700,
                        help="the GEMMs' rate for --roofline (TFLOP/s)")
    parser.add_argument("--attention-tflops", type=float, default=400,
                        help="fused attention's rate for --roofline")
    parser.add_argument("--peak-tflops", type=float, default=989,
                        help="the GPU's dense bf16 peak, for the MFU")
    parser.add_argument("--launch-us", type=float, default=1.5,
                        help="--roofline's gap between two actions of a CUDA "
                        "graph (microseconds)")
    parser.add_argument("flags", nargs="*", help="flags for hotstage build (after --)")
    args = parser.parse_args()

    plan = plan_of(args.hotstage, args.model, args.target, args.flags)
    now = traffic(plan)
    before = (traffic(plan_of(args.compare, args.model, args.target, args.flags))
              if args.compare else None)

    def row(name, actions, moved, old=None):
        ms = moved / (args.bandwidth * 1e12) * 1e3
        line = f"{name:34s} {actions:8d} {moved / 1e9:10.2f} {ms:10.2f}"
        if old is not None:
            line += f" {old[1] / 1e9:10.2f} {old[0]:8d}"
        print(line)

    header = f"{'function / action':34s} {'actions':>8s} {'GB':>10s} {'ms@' + str(args.bandwidth):>10s}"
    if before:
        header += f" {'GB before':>10s} {'before':>8s}"
    print(header)
    for function, (actions, moved, notes, _) in now.items():
        old = before.get(function) if before else None
        row(function, actions, moved, old if before else None)
        for note, b in notes.most_common(args.top):
            old_note = None
            if before and old:
                old_note = (0, old[2].get(note, 0))
            print(f"  {note:32s} {'':8s} {b / 1e9:10.2f} {b / (args.bandwidth * 1e9):10.2f}"
                  + (f" {old_note[1] / 1e9:10.2f}" if old_note else ""))
    if args.roofline:
        roofline(now, plan_header(plan), args.bandwidth, args.gemm_tflops,
                 args.attention_tflops, args.peak_tflops, args.launch_us)
    cmd = ["/usr/bin/python3", "bench/plan_traffic.py"]
    if args.compare:
        cmd += ["--compare", args.compare]
    if args.roofline:
        cmd += ["--roofline", "--bandwidth", str(args.bandwidth),
                "--gemm-tflops", str(args.gemm_tflops),
                "--attention-tflops", str(args.attention_tflops),
                "--launch-us", str(args.launch_us)]
    print("\nreproduce:", shlex.join(cmd + ["--", *args.flags]))


if __name__ == "__main__":
    main()
