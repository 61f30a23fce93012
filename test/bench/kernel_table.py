"""bench/gpu_step.py's kernel table from a plan and a HOTSTAGE_PROFILE
table, with the peer's kernels run on this CPU (their numbers mean
nothing: the test checks that the pieces fit together).

    kernel_table.py PLAN PROFILE WORKDIR
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import gpu_step  # noqa: E402

plan, profile, work = sys.argv[1:4]
os.makedirs(work, exist_ok=True)
with open(os.path.join(work, "kernels-x.json"), "w") as f:
    json.dump(gpu_step.kernel_shapes(open(plan).read()), f)
lines = open(profile).read().splitlines()
start = next(i for i, l in enumerate(lines) if l.startswith("profile"))
peers = gpu_step.peer_kernels(work, "x", 1, 2, device="cpu")
print("\n".join(gpu_step.kernel_table(lines[start:], peers)))
