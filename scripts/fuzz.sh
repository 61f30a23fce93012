#!/usr/bin/env bash
# Fuzzes the front end with libFuzzer (ASan + UBSan) for a fixed time.
#   scripts/fuzz.sh [SECONDS [SEED]]   (default 60 s, a random seed)
# Seeds come from examples/, stdlib/ and the lit tests; new inputs go to
# build-fuzz/corpus, crashes to build-fuzz/crashes. Prints the executions
# and the number of crashes; exits non-zero if any was found.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-60}
seed=${2:-0}
build=$root/build-fuzz

"$root/scripts/setup.sh"
if [[ ! -f $build/build.ninja ]]; then
  cmake -G Ninja -S "$root" -B "$build" -DHOTSTAGE_ENABLE_FUZZER=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir >/dev/null
fi
ninja -C "$build" hotstage-fuzz-frontend

mkdir -p "$build/corpus" "$build/seeds" "$build/crashes"
cp "$root"/examples/*.hot "$root"/stdlib/*.hot "$build/seeds/"
find "$root/test/lang" -name '*.hot' -exec cp {} "$build/seeds/" \;

log=$build/fuzz.log
set +e
ASAN_OPTIONS=detect_leaks=0 "$build/bin/hotstage-fuzz-frontend" \
  "$build/corpus" "$build/seeds" \
  -max_total_time="$seconds" -seed="$seed" -timeout=10 -rss_limit_mb=2048 \
  -max_len=65536 -artifact_prefix="$build/crashes/" -print_final_stats=1 \
  >"$log" 2>&1
status=$?
set -e
runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
crashes=$(find "$build/crashes" -type f | wc -l)
echo "fuzz: $runs executions in ${seconds}s, $crashes crashes (log: $log)"
if ((status != 0 || crashes != 0)); then
  tail -40 "$log"
  exit 1
fi
