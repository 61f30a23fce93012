#!/usr/bin/env bash
# The GPU checks of one lent GPU session, as one command on the GPU machine
# (which has CUDA, PyTorch and JAX but no compiler). Build here first:
#
#   python3 test/gpu/bundle.py build build/gpu-bundle
#   python3 bench/gpu_step.py --build-only build/gpu-bench
#
# then run, carrying build/gpu-bundle and build/gpu-bench (about 53 MB):
#
#   scripts/gpu-check.sh [PHASE...]      # default: ceilings tests bench-bf16
#
# Phases, in the order of their value, each under its own time limit:
#   ceilings    the card's measured limits through PyTorch: a 1 GiB
#               device-to-device copy (GB/s) and an 8192^3 bf16 product
#               (TFLOP/s), to set the benchmark's numbers against
#   tests       test/gpu/*.test (bundle.py run): item 7 of issue 5
#   bench-bf16  bench/gpu_step.py in bf16 with Hotstage's profile
#   bench-fp32  the same in fp32
# Each phase writes its whole output under $OUT (what a timed-out call
# leaves there still comes back) and the end prints a short summary.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
cd "$root"
phases=("$@")
[ ${#phases[@]} -eq 0 ] && phases=(ceilings tests bench-bf16)

run() { # NAME SECONDS COMMAND...
  local name=$1 seconds=$2
  shift 2
  local start=$SECONDS
  timeout "$seconds" "$@" >"$out/$name.txt" 2>&1
  local status=$?
  echo "$name: exit $status after $((SECONDS - start)) s" >>"$out/summary.txt"
}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
    --format=csv
  python3 -c 'import torch; print("torch", torch.__version__)'
  python3 -c 'import jax; print("jax", jax.__version__)'
} >"$out/machine.txt" 2>&1
: >"$out/summary.txt"

for phase in "${phases[@]}"; do
  case $phase in
  ceilings)
    run ceilings 45 python3 - <<'EOF'
import torch
dev = torch.device("cuda")
def timed(fn, reps=20):
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start.record(); fn(); stop.record(); torch.cuda.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return sorted(times)[len(times) // 2]
n = 1 << 28  # 1 GiB of floats
x = torch.randn(n, device=dev)
y = torch.empty_like(x)
t = timed(lambda: y.copy_(x))
print(f"copy: {2 * 4 * n / t / 1e9:.0f} GB/s (read + write, median of 20)")
a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
t = timed(lambda: a @ b)
print(f"bf16 matmul 8192^3: {2 * 8192 ** 3 / t / 1e12:.0f} TFLOP/s")
EOF
    ;;
  tests)
    run tests 180 python3 test/gpu/bundle.py run build/gpu-bundle
    ;;
  bench-bf16 | bench-fp32)
    run "$phase" 330 python3 bench/gpu_step.py --prebuilt build/gpu-bench \
      --precisions "${phase#bench-}" --profile --warmup 3 --iters 10
    ;;
  *)
    echo "unknown phase '$phase' (ceilings, tests, bench-bf16, bench-fp32)" >&2
    exit 2
    ;;
  esac
done

# The short summary last: what the device tool's reply shows.
cat "$out/machine.txt"
cat "$out/summary.txt"
[ -f "$out/ceilings.txt" ] && cat "$out/ceilings.txt"
[ -f "$out/tests.txt" ] && grep -E '^(PASS|FAIL|UNSUPPORTED)|passed' "$out/tests.txt"
for b in bench-bf16 bench-fp32; do
  [ -f "$out/$b.txt" ] && sed -n '/^GPT-2 124M/,/^reproduce/p' "$out/$b.txt"
done
exit 0
