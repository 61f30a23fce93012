"""Stops (or kills) one rank of a running pipeline; checks the job ends.

    stall.py EXE DATA --ranks N --stop R --timeout S [--kill]

Launches `mpirun -np N EXE train` with `--comm-timeout S`, waits until a
few steps are done, sends SIGSTOP (SIGKILL with --kill) to rank R, and
waits (at most a minute) for the whole job to end. Prints the job's exit status, how long it took
after the stop, and its stderr, for FileCheck. Any rank left over is
killed, so a failing run cannot hang the test suite.
"""
import argparse
import os
import signal
import subprocess
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("exe")
p.add_argument("data")
p.add_argument("--ranks", type=int, default=2)
p.add_argument("--stop", type=int, default=1)
p.add_argument("--timeout", type=int, default=3)
p.add_argument("--kill", action="store_true")
args = p.parse_args()

metrics = args.exe + ".stall.jsonl"
if os.path.exists(metrics):
    os.remove(metrics)
job = subprocess.Popen(
    ["mpirun", "--oversubscribe", "-np", str(args.ranks), args.exe, "train",
     "--data", args.data, "--steps", "1000000", "--threads", "1",
     "--comm-timeout", str(args.timeout), "--metrics", metrics],
    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def ranks():
    """The job's rank processes: pid by OMPI_COMM_WORLD_RANK."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        # This job's executable only, by its full path: other tests may run
        # executables of the same name at the same time.
        if not cmd:
            continue
        exe = cmd[0].decode(errors="replace")
        if os.path.realpath(exe) != os.path.realpath(args.exe):
            continue
        for item in env:
            if item.startswith(b"OMPI_COMM_WORLD_RANK="):
                found[int(item.split(b"=")[1])] = int(pid)
    return found


def kill_all():
    for pid in ranks().values():
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except OSError:
                pass


try:
    deadline = time.time() + 60
    while time.time() < deadline and job.poll() is None:
        if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 2:
            break
        time.sleep(0.1)
    else:
        status = job.poll()
        err = job.stderr.read() if status is not None else ""
        sys.exit(f"the job did not start training (status {status}): {err}")
    victim = ranks().get(args.stop)
    if victim is None:
        sys.exit(f"no rank {args.stop} found")
    os.kill(victim, signal.SIGKILL if args.kill else signal.SIGSTOP)
    stopped = time.time()
    try:
        _, err = job.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        job.kill()
        sys.exit("the job still runs a minute after rank "
                 f"{args.stop} stopped: a hang")
    print(f"exit status {job.returncode} after {time.time() - stopped:.0f} s")
    print(err)
finally:
    kill_all()
