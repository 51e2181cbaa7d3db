#!/usr/bin/env bash
# The measurements behind docs/results.md, in the order they were run (2 threads, one at a time).
# Each step caches its per-item results (~/.cache/loopcpp/eval), so a rerun only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
T="--threads 2"
step() { echo; echo "### $*"; "$@"; }

# recipes found by `loopcpp tune` on dev data (the first half of the BoolQ passages)
step loopcpp tune smollm2-135m --json docs/results/tune-smollm2.json $T
step loopcpp tune qwen2.5-coder-0.5b --json docs/results/tune-qwen05.json $T

# accuracy on held-out test items: the default recipe and the tuned one against the unlooped model
for m in smollm2-135m qwen2.5-coder-0.5b; do
    tuned=$(python -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['chosen'] or d['best'])" \
            docs/results/tune-$( [ $m = smollm2-135m ] && echo smollm2 || echo qwen05).json)
    step loopcpp eval $m --loop auto --loop "$tuned" --task arc_easy --task arc_challenge --task openbookqa \
        --task csqa --task piqa --limit 300 --json docs/results/acc-$m.json $T
    step loopcpp eval $m --loop auto --loop "$tuned" --task mmlu --format mc --limit 600 \
        --json docs/results/mmlu-$m.json $T
done

# the paper's figures
for m in smollm2-135m gemma3-270m qwen2.5-coder-0.5b; do
    step python benchmarks/figures.py ksweep $m --windows 6 $T
    step python benchmarks/figures.py strategies $m --windows 6 $T
    step python benchmarks/figures.py depth $m --windows 6 $T
    step python benchmarks/figures.py drift $m --windows 4 $T
done
step python benchmarks/figures.py policies smollm2-135m --windows 6 $T
