#!/usr/bin/python3
"""Each pipeline rank's idle share: predicted by `hotstage plan`, measured
by a real run under mpirun, side by side.

For each schedule, compiles examples/gpt2.hot for S stages, reads the
plan's predicted idle per rank, trains a few steps with `--trace
FILE.json` (which prints the measured idle share of every rank over the
F, B and W of the steps), and prints both with the command that
reproduces the table.

    bench/pipeline_idle.py [--hotstage build/bin/hotstage] [--stages 2]
                           [--schedules 1f1b,zb_h1] [--steps 6]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The mid-size GPT of host_step.py with 8 microbatches of one sequence.
MODEL = dict(vocab=256, ctx=128, dim=256, heads=4, layers=4, batch=8,
             seq=128, microbatches=8)
# Open MPI as root, more ranks than cores, shared memory without
# cross-process copies (as test/lit.cfg.py has it).
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl": "self,vader",
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
}


def percentages(line):
    return [float(x) for x in re.findall(r"\d+: ([0-9.]+)%", line)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hotstage", default=os.path.join(ROOT, "build", "bin", "hotstage"))
    p.add_argument("--stages", type=int, default=2)
    p.add_argument("--schedules", default="1f1b,zb_h1")
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()

    defines = [f"-D{k}={v}" for k, v in MODEL.items()] + [f"-Dstages={args.stages}"]
    env = dict(os.environ, **MPI_ENV)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "train.bin")
        subprocess.run([args.hotstage, "data", "--bytes",
                        os.path.join(ROOT, "data", "tinyshakespeare.txt"), "-o", data],
                       check=True, stdout=subprocess.DEVNULL)
        for schedule in args.schedules.split(","):
            d = defines + [f"-Dschedule={schedule}"]
            plan = subprocess.run([args.hotstage, "plan", os.path.join(ROOT, "examples", "gpt2.hot")] + d,
                                  check=True, capture_output=True, text=True).stdout
            predicted = percentages(next(l for l in plan.splitlines() if l.startswith("idle per rank")))
            bubble = re.search(r"bubble ([0-9.]+)%", plan).group(1)
            exe = os.path.join(work, f"gpt_{schedule}")
            subprocess.run([args.hotstage, "build", os.path.join(ROOT, "examples", "gpt2.hot"), "-o", exe] + d,
                           check=True)
            run = subprocess.run(["mpirun", "--oversubscribe", "-np", str(args.stages), exe, "train",
                                  "--data", data, "--steps", str(args.steps), "--threads", "1",
                                  "--trace", os.path.join(work, f"{schedule}.json")],
                                 check=True, capture_output=True, text=True, env=env)
            measured = percentages(next(l for l in run.stderr.splitlines() if l.startswith("measured idle")))
            rows.append((schedule, bubble, predicted, measured))

    print(f"Idle share per rank: {args.stages} stages, GPT-2 dim {MODEL['dim']}, "
          f"{MODEL['layers']} layers, {MODEL['microbatches']} microbatches of 1x{MODEL['seq']}, "
          f"1 thread per rank, {args.steps} steps (measured: all but the first)")
    print(f"{'schedule':18} {'predicted bubble':>16}  {'predicted idle per rank':>26}  {'measured idle per rank':>26}")
    for schedule, bubble, predicted, measured in rows:
        fmt = lambda xs: " / ".join(f"{x:.1f}%" for x in xs)
        print(f"{schedule:18} {bubble + '%':>16}  {fmt(predicted):>26}  {fmt(measured):>26}")
    print("\nreproduce: bench/pipeline_idle.py " + " ".join(
        f"--{k} {v}" for k, v in (("stages", args.stages), ("schedules", args.schedules), ("steps", args.steps))))


if __name__ == "__main__":
    sys.exit(main())
