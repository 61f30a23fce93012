#!/usr/bin/python3
"""Compare a Hotstage run (`./model train ... --trace TRACE`) with the
PyTorch reference (gpt2_reference.py) on the same weights and batches.

    compare_trace.py --config CFG.json --weights W.safetensors \
        --trace TRACE.safetensors --work DIR [--threads N]
        [--loss-tol 1e-4] [--grad-tol 1e-4] [--steps-tol 1e-3]

Takes the batches the run trained on from the trace, runs the reference on
them from the same initial weights, and prints one line per quantity with
its relative error:
    loss0        |a - b| / |b|
    token_losses0  ||a - b|| / ||b|| over batch 0's positions (each a row
                 of logits' log-sum-exp less its target's: the logits'
                 check), where the trace has them
    grad.<p>     ||a - b|| / ||b||   (per parameter tensor)
    losses[s]    the largest |a - b| / |b| over the steps
    grad_norm[s], lr[s], final.<p>   reported, checked with --steps-tol
Exits 1 if any error exceeds its tolerance.
"""

import argparse
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402


def rel(a, b):
    a, b = a.double(), b.double()
    denom = b.norm().item()
    diff = (a - b).norm().item()
    return diff / denom if denom > 0 else diff


def max_rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs() / b.abs().clamp_min(1e-30)).max().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--trace", required=True)
    ap.add_argument("--work", required=True, help="folder for the batches and the reference's output")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--loss-tol", type=float, default=1e-4)
    ap.add_argument("--grad-tol", type=float, default=1e-4)
    ap.add_argument("--steps-tol", type=float, default=1e-3)
    ap.add_argument("--final-tol", type=float, default=None,
                    help="for the final weights (default: --steps-tol)")
    args = ap.parse_args()

    trace, meta = safetensors_io.load(args.trace)
    if meta.get("format") != "hotstage-trace/1":
        sys.exit(f"{args.trace}: not a Hotstage trace (format {meta.get('format')!r})")
    os.makedirs(args.work, exist_ok=True)
    batches = os.path.join(args.work, "batches.safetensors")
    out = os.path.join(args.work, "reference.safetensors")
    safetensors_io.save(batches, {"tokens": trace["tokens"], "targets": trace["targets"]})
    subprocess.run([sys.executable, os.path.join(HERE, "gpt2_reference.py"),
                    "--config", args.config, "--weights", args.weights,
                    "--batches", batches, "--out", out,
                    "--threads", str(args.threads)], check=True)
    ref, _ = safetensors_io.load(out)

    failed = []

    def report(name, err, tol):
        ok = err <= tol
        if not ok:
            failed.append(name)
        print(f"{'ok  ' if ok else 'FAIL'} {name:<40} rel {err:.2e} (tol {tol:g})")

    report("loss0", max_rel(trace["loss0"].reshape(1), ref["loss0"].reshape(1)), args.loss_tol)
    if "token_losses0" in trace:
        report("token_losses0", rel(trace["token_losses0"], ref["token_losses0"]), args.loss_tol)
    grads = sorted(k for k in ref if k.startswith("grad."))
    missing = [k for k in grads if k not in trace]
    if missing:
        sys.exit(f"{args.trace}: no {', '.join(missing)}")
    worst = max(grads, key=lambda k: rel(trace[k], ref[k]))
    for k in grads:
        report(k, rel(trace[k], ref[k]), args.grad_tol)
    report(f"losses[0:{len(ref['losses'])}]", max_rel(trace["losses"], ref["losses"]), args.steps_tol)
    report("grad_norm", max_rel(trace["grad_norm"], ref["grad_norm"]), args.steps_tol)
    report("lr", max_rel(trace["lr"], ref["lr"]), args.steps_tol)
    finals = sorted(k for k in ref if k.startswith("final."))
    worst_final = max(finals, key=lambda k: rel(trace[k], ref[k]))
    report(f"final weights (worst: {worst_final[6:]})", rel(trace[worst_final], ref[worst_final]),
           args.steps_tol if args.final_tol is None else args.final_tol)
    print(f"worst gradient: {worst[5:]} rel {rel(trace[worst], ref[worst]):.2e}")
    print(f"losses: hotstage {trace['losses'][-1].item():.7f} reference {ref['losses'][-1].item():.7f} "
          f"after {len(ref['losses'])} steps")
    if failed:
        print(f"FAIL: {len(failed)} of the comparisons exceed their tolerance")
        return 1
    print("ok: hotstage matches the PyTorch reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
