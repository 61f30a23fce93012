#!/usr/bin/env bash
# Installs what is missing, builds Hotstage, and shows what it does: checks
# GPT-2 small and prints its parameter table and memory plan, turns the
# shipped Shakespeare into a byte-level token shard, compiles a tiny GPT
# from the same model file with -D overrides into one executable, and
# trains it on this machine's CPU for about a minute.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${HOTSTAGE_BUILD_DIR:-$root/build}
steps=${HOTSTAGE_DEMO_STEPS:-12000}

"$root/scripts/setup.sh"
ninja -C "$build"
hotstage=$build/bin/hotstage
work=$build/demo
mkdir -p "$work"

echo "== GPT-2 small (hotstage info examples/gpt2.hot)"
"$hotstage" info "$root/examples/gpt2.hot" | sed -n '1,6p;/^total/p;/^memory plan/,$p'
echo

echo "== a mistake in the model file is an error with a location"
bad=$work/bad.hot
sed 's/x @ transpose(wte)/x @ wte/' "$root/examples/gpt2.hot" >"$bad"
"$hotstage" build "$bad" --emit=nn -D layers=2 || echo "(exit code $?)"
echo

echo "== data: the bytes of data/tinyshakespeare.txt as an llm.c shard"
"$hotstage" data --bytes "$root/data/tinyshakespeare.txt" -o "$work/shakespeare.bin"
echo

tiny=(-D vocab=256 -D ctx=64 -D dim=64 -D heads=4 -D layers=2
      -D batch=8 -D seq=64 -D microbatches=1 -D stages=1
      -D lr=2e-3 -D warmup=100 -D min_lr=2e-4)
echo "== compile a tiny GPT: hotstage build examples/gpt2.hot -o $work/gpt ${tiny[*]}"
time "$hotstage" build "$root/examples/gpt2.hot" -o "$work/gpt" "${tiny[@]}"
"$hotstage" info "$root/examples/gpt2.hot" "${tiny[@]}" | sed -n '/^total/p;/arena/p'
echo

echo "== train it for $steps steps (the loss starts near ln 256 = 5.55)"
rm -rf "$work/ckpt"
"$work/gpt" train --data "$work/shakespeare.bin" --steps "$steps" \
  --log-every 500 --metrics "$work/metrics.jsonl" --ckpt "$work/ckpt"
echo
echo "metrics: $work/metrics.jsonl; checkpoint: $(ls "$work"/ckpt/*.safetensors)"
echo "more: $work/gpt --help, docs/training.md"
