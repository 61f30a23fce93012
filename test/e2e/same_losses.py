"""Checks that runs have bitwise the same losses as a reference run.

    same_losses.py REFERENCE.jsonl RUN.jsonl [RUN.jsonl ...] [--union]

Each RUN's rows must equal the reference's rows of the same step in loss,
grad_norm and lr. The metrics print f32 values with 9 significant digits,
which round-trip, so equal text is equal bits. With --union the RUN files
are pieces of one run (a run and its resumption) that together cover every
step of the reference; otherwise each covers every step.
"""
import argparse
import json
import sys

p = argparse.ArgumentParser()
p.add_argument("reference")
p.add_argument("runs", nargs="+")
p.add_argument("--union", action="store_true")
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
            if run[step][key] != ref[step][key]:
                sys.exit(f"{name}: step {step} {key} {run[step][key]!r} != "
                         f"reference {ref[step][key]!r}")
    print(f"{name}: {len(ref)} steps bitwise equal to {args.reference}")
