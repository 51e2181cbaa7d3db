#!/usr/bin/env bash
# The measurements behind docs/results.md, in the order they were run (2 threads, one at a time).
# Each step caches its per-item results (~/.cache/loopcpp/eval), so a rerun only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
T="--threads 2"
step() { echo; echo "### $*"; "$@"; }
best() { python -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['chosen'] or d['best'])" "$1"; }
MC="--task arc_easy --task arc_challenge --task openbookqa --task csqa --task piqa"

# SmolLM2-135M: the recipe `loopcpp tune` finds on dev data (the first half of the BoolQ passages)
[ -f docs/results/tune-smollm2.json ] || step loopcpp tune smollm2-135m --json docs/results/tune-smollm2.json $T
TUNED=$(best docs/results/tune-smollm2.json)
# accuracy on held-out test items: the default recipe and the tuned one against the unlooped model
step loopcpp eval smollm2-135m --loop auto --loop "$TUNED" $MC --limit 200 --json docs/results/acc-smollm2.json $T
# the paper's figures 1-4
step python benchmarks/figures.py ksweep smollm2-135m --windows 6 $T
for f in drift depth strategies; do
    step python benchmarks/figures.py $f smollm2-135m --windows 4 $T
done
# a model of 1B or more: Qwen2.5-Coder-1.5B, the default recipe
step loopcpp eval qwen2.5-coder-1.5b --loop auto --task ppl --limit 8 --json docs/results/ppl-qwen15.json $T
step loopcpp eval qwen2.5-coder-1.5b --loop auto --task arc_easy --limit 60 --json docs/results/arc60-qwen15.json $T
# figure 5: where the cache policy and the decode mode act
step python benchmarks/figures.py policies smollm2-135m --windows 4 --gen-limit 20 $T
# Qwen2.5-Coder-0.5B: five tasks, MMLU 0-shot lettered (choices batched from here on)
step loopcpp eval qwen2.5-coder-0.5b --loop auto $MC --limit 200 --json docs/results/acc-qwen05.json $T
step loopcpp eval qwen2.5-coder-0.5b --loop auto --task mmlu --format mc --limit 300 --json docs/results/mmlu-qwen05.json $T
# Gemma-3-270M: figures 1 and 3
for f in ksweep depth; do
    step python benchmarks/figures.py $f gemma3-270m --windows 4 $T
done
# SmolLM2: MMLU (cloze), default and tuned recipe
step loopcpp eval smollm2-135m --loop auto --loop "$TUNED" --task mmlu --limit 300 --json docs/results/mmlu-smollm2.json $T
# figure 5 on a generative task with short prompts: Jeopardy (5-shot), Qwen2.5-Coder-0.5B
step python benchmarks/figures.py policies qwen2.5-coder-0.5b --windows 4 --gen-task jeopardy --gen-limit 100 $T
# Qwen2.5-Coder-1.5B: the recipe tune finds (timed), then the six tasks, default and tuned recipe
[ -f docs/results/tune-qwen15.json ] || step time loopcpp tune qwen2.5-coder-1.5b --json docs/results/tune-qwen15.json $T
TUNED15=$(best docs/results/tune-qwen15.json)
step loopcpp eval qwen2.5-coder-1.5b --loop auto --loop "$TUNED15" $MC --task mmlu --limit 100 \
    --json docs/results/acc-qwen15.json $T
