#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the lit suite
# (front end, dialects, diagnostics, hostile inputs), the unit tests, and a
# short fuzzing run of the front end. Ends with a plain "N passed, N failed"
# line, after ctest's summary and a line naming the tests it skipped.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${HOTSTAGE_BUILD_DIR:-$root/build}

"$root/scripts/setup.sh"
ninja -C "$build"
# A short, reproducible fuzzing run of the front end under ASan and UBSan.
"$root/scripts/fuzz.sh" 20 1
# GPU tests (test/gpu, REQUIRES: cuda-gpu) are ctest tests of their own:
# without a GPU ctest lists each as skipped (and counts it as passed, so
# the last line does the arithmetic).
log="$build/ctest.log"
status=0
ctest --test-dir "$build" --output-on-failure 2>&1 | tee "$log" ||
  status=$?
total=$(sed -nE 's/.* tests failed out of ([0-9]+).*/\1/p' "$log" | tail -1)
failed=$(sed -nE 's/.*, ([0-9]+) tests failed out of.*/\1/p' "$log" | tail -1)
if [ -z "$total" ]; then # ctest itself failed: no summary
  total=1 failed=1
fi
skipped=$(sed -nE 's/^[[:space:]]+[0-9]+ - (.*) \(Skipped\)$/\1/p' "$log")
count=$(printf '%s' "$skipped" | grep -c . || true)
if [ "$count" -gt 0 ]; then
  echo "$count skipped (no GPU here): $(echo $skipped)"
fi
echo "$((total - failed - count)) passed, $failed failed"
exit "$status"
