#!/usr/bin/env bash
# Installs what is missing, builds Hotstage, and shows what it does today:
# checks GPT-2 small and prints its parameter table, shrinks it with -D
# overrides, and prints the forward graph of a tiny GPT in the nn dialect.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${HOTSTAGE_BUILD_DIR:-$root/build}

"$root/scripts/setup.sh"
ninja -C "$build" hotstage hotstage-opt
hotstage=$build/bin/hotstage
tiny=(-D vocab=256 -D ctx=64 -D dim=64 -D heads=4 -D layers=2 -D batch=8 -D seq=64 -D microbatches=1 -D stages=1)

echo "== GPT-2 small: parameter table (hotstage info examples/gpt2.hot)"
"$hotstage" info "$root/examples/gpt2.hot" | sed -n '1,8p;/^total/,$p'
echo
echo "== a tiny GPT from the same file: ${tiny[*]}"
"$hotstage" info "$root/examples/gpt2.hot" "${tiny[@]}" | grep '^total'
echo
echo "== its forward graph in the nn dialect (--emit=nn), read back by hotstage-opt"
"$hotstage" build "$root/examples/gpt2.hot" --emit=nn "${tiny[@]}" |
  "$build/bin/hotstage-opt" | sed -n '/func.func/,$p' | cut -c1-150 | awk 'NR <= 24; NR == 25 { print "    ..." }'
echo
echo "== a model with a mistake: the error names both shapes"
bad=$(mktemp --suffix=.hot)
trap 'rm -f "$bad"' EXIT
sed 's/x @ transpose(wte)/x @ wte/' "$root/examples/gpt2.hot" >"$bad"
"$hotstage" build "$bad" --emit=nn "${tiny[@]}" || echo "(exit code $?)"
echo
echo "Training (host and CUDA) arrives with the next issues; see docs/architecture.md."
