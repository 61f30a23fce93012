"""Checks that runs have bitwise the same losses as a reference run.

    same_losses.py REFERENCE.jsonl RUN.jsonl [RUN.jsonl ...] [--union]
                   [--rtol R]

Each RUN's rows must equal the reference's rows of the same step in loss,
grad_norm and lr. The metrics print f32 values with 9 significant digits,
which round-trip, so equal text is equal bits. With --union the RUN files
are pieces of one run (a run and its resumption) that together cover every
step of the reference; otherwise each covers every step. With --rtol the
values need only agree within that relative error (data parallelism sums
the replicas' gradients in another order).
"""
import argparse
import json
import sys

p = argparse.ArgumentParser()
p.add_argument("reference")
p.add_argument("runs", nargs="+")
p.add_argument("--union", action="store_true")
p.add_argument("--rtol", type=float, default=0.0)
args = p.parse_args()


def rows(path):
    return {r["step"]: r for r in (json.loads(line) for line in open(path))}


ref = rows(args.reference)
pieces = [rows(path) for path in args.runs]
groups = [{k: v for piece in pieces for k, v in piece.items()}] if args.union else pieces
names = ["+".join(args.runs)] if args.union else args.runs
for name, run in zip(names, groups):
    if sorted(run) != sorted(ref):
        sys.exit(f"{name}: steps {sorted(run)} differ from the reference's {sorted(ref)}")
    for step in sorted(ref):
        for key in ("loss", "grad_norm", "lr"):
            a, b = run[step][key], ref[step][key]
            if a != b and abs(a - b) > args.rtol * abs(b):
                sys.exit(f"{name}: step {step} {key} {a!r} != reference {b!r}"
                         + (f" (rtol {args.rtol})" if args.rtol else ""))
    how = f"within {args.rtol} of" if args.rtol else "bitwise equal to"
    print(f"{name}: {len(ref)} steps {how} {args.reference}")
