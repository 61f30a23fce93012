#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the lit suite
# (front end, dialects, diagnostics, hostile inputs), the unit tests, and a
# short fuzzing run of the front end. Ends with ctest's summary line.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${HOTSTAGE_BUILD_DIR:-$root/build}

"$root/scripts/setup.sh"
ninja -C "$build"
# A short, reproducible fuzzing run of the front end under ASan and UBSan.
"$root/scripts/fuzz.sh" 20 1
# GPU tests (test/gpu, REQUIRES: cuda-gpu) are ctest tests of their own:
# without a GPU the summary lists each as skipped.
ctest --test-dir "$build" --output-on-failure
