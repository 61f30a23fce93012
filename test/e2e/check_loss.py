"""Checks the losses of a metrics file (one JSON object per step)."""
import argparse
import json
import sys

p = argparse.ArgumentParser()
p.add_argument("metrics")
p.add_argument("--first-near", type=float, required=True)
p.add_argument("--first-tol", type=float, required=True)
p.add_argument("--last-below", type=float, required=True)
args = p.parse_args()
rows = [json.loads(line) for line in open(args.metrics)]
first, last = rows[0]["loss"], rows[-1]["loss"]
for key in ("step", "loss", "lr", "grad_norm", "tokens_per_s", "ms"):
    if key not in rows[0]:
        sys.exit(f"metrics lack '{key}'")
if abs(first - args.first_near) > args.first_tol:
    sys.exit(f"first loss {first} is not within {args.first_tol} of {args.first_near}")
if not last < args.last_below:
    sys.exit(f"last loss {last} is not below {args.last_below}")
print(f"loss {first} -> {last} over {len(rows)} steps")
