#!/usr/bin/env python3
"""Memory traffic of a training step as its plan names it, without a GPU.

Builds a model's plan (`hotstage build FILE --emit=plan ...`) and sums, per
function and per kind of action, the bytes of the buffers each action
names: every buffer once (a GEMM's C twice when it accumulates). That is a
lower bound on what the action moves through memory (a kernel may read a
buffer more than once, a GEMM re-reads its operands from cache), and it
counts the GEMMs' operands too (a grouped optimizer update names only the
first buffer of each run it updates, so the optimizer step is undercounted).
Divided by a memory bandwidth it bounds the
time of the memory-bound part of a step: a yardstick for changes to the
compiler between GPU runs, not a measurement.

  /usr/bin/python3 bench/plan_traffic.py -- -D stages=1 -D precision=bf16

prints GPT-2 124M's table for --target cuda (everything after `--` goes to
`hotstage build`). `--compare OTHER_HOTSTAGE` adds a column for another
build of the compiler (say, the last commit's).
"""

import argparse
import collections
import os
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
    """{function: (actions, bytes, {note: bytes})}"""
    sizes, functions, current = {}, {}, None
    for line in plan.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "buffer":
            sizes[int(words[1])] = int(words[words.index("bytes") + 1])
        elif words[0] == "function":
            current = functions.setdefault(words[1], [0, 0, collections.Counter()])
        elif current is not None and words[0] in ("call", "gemm", "attention",
                                                  "attention_grad"):
            body, _, note = line.partition("#")
            body = body.split()
            if words[0] == "call":  # call KERNEL RANGE N BUFFERS...
                ids = body[4:]
            elif words[0] == "gemm":  # gemm B M N K TA TB ACC A B C SA SB SC ...
                ids = body[8:11]
                for key in ("bias", "addend", "aux"):
                    if key in body:
                        ids.append(body[body.index(key) + 1])
                if body[7] == "1":
                    ids.append(body[10])
            else:  # attention B T H KVH D CAUSAL SCALE BUFFERS... [qkv] [dqkv]
                ids = [i for i in body[8:] if i.isdigit()]
            if words[0] != "gemm":  # a buffer named twice moves once
                ids = list(dict.fromkeys(ids))
            moved = sum(sizes.get(int(i), 0) for i in ids)
            current[0] += 1
            current[1] += moved
            current[2][note.strip() or words[0]] += moved
        elif words[0] == "end":
            current = None
    return functions


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "examples/gpt2.hot"))
    parser.add_argument("--target", default="cuda")
    parser.add_argument("--hotstage", default=os.path.join(ROOT, "build/bin/hotstage"))
    parser.add_argument("--compare", help="another hotstage binary, for a second column")
    parser.add_argument("--bandwidth", type=float, default=4.8,
                        help="TB/s for the time column (H200: 4.8, H100 SXM: 3.35)")
    parser.add_argument("--top", type=int, default=8, help="kinds of action shown per function")
    parser.add_argument("flags", nargs="*", help="flags for hotstage build (after --)")
    args = parser.parse_args()

    now = traffic(plan_of(args.hotstage, args.model, args.target, args.flags))
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
    for function, (actions, moved, notes) in now.items():
        old = before.get(function) if before else None
        row(function, actions, moved, old if before else None)
        for note, b in notes.most_common(args.top):
            old_note = None
            if before and old:
                old_note = (0, old[2].get(note, 0))
            print(f"  {note:32s} {'':8s} {b / 1e9:10.2f} {b / (args.bandwidth * 1e9):10.2f}"
                  + (f" {old_note[1] / 1e9:10.2f}" if old_note else ""))
    cmd = ["/usr/bin/python3", "bench/plan_traffic.py"]
    if args.compare:
        cmd += ["--compare", args.compare]
    print("\nreproduce:", shlex.join(cmd + ["--", *args.flags]))


if __name__ == "__main__":
    main()
