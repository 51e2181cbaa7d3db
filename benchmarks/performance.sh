#!/usr/bin/env bash
# Every measurement behind docs/performance.md, in the order it was run: 2 threads, CPU build.
# About 45 minutes on a 2-core machine. JSON goes to docs/perf/, plots to docs/img/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/perf docs/img
T="-t 2"
# loop off against an unmodified build of the same llama.cpp (built once, cached)
loopcpp bench smollm2-135m --stock -r 10 $T --json docs/perf/stock-smollm2-135m.json
loopcpp bench qwen2.5-coder-0.5b --stock -r 6 $T --json docs/perf/stock-qwen2.5-coder-0.5b.json
# each model's default window: K, integrators, layer mode, kv=last; tg with every ubatch looped,
# then tg with decode=bypass
for m in smollm2-135m gemma3-270m qwen2.5-coder-0.5b; do
    loopcpp bench $m --loop autox2 --loop autox3 --loop autox4 --loop autox8 --loop autox3,naive \
        --loop autox3,euler --loop autox3,layer --loop autox3,kv=last --decode full -r 5 $T \
        --json docs/perf/bench-$m-full.json --plot docs/img/perf-$m.png
    loopcpp bench $m --loop autox3 --loop autox8 --loop autox3,layer,kv=last -p 0 -r 5 $T \
        --json docs/perf/bench-$m-bypass.json
    loopcpp eval $m --loop autox2 --loop autox3 --loop autox4 --loop autox8 --loop autox3,naive \
        --loop autox3,euler --loop autox3,layer --task ppl --limit 4 -t 2 --json docs/perf/ppl-$m.json
done
# the peer: the same window physically repeated (self-merge GGUF)
python benchmarks/perf.py selfmerge smollm2-135m --loop 13:16x3 $T --json docs/perf/selfmerge-smollm2-135m.json
python benchmarks/perf.py selfmerge gemma3-270m --loop 7:10x3 $T --json docs/perf/selfmerge-gemma3-270m.json
# memory and graph size over K; cost over K and window width
python benchmarks/perf.py memory smollm2-135m --json docs/perf/memory-smollm2-135m.json --plot docs/img/perf-memory-smollm2.png
python benchmarks/perf.py sweep smollm2-135m $T --json docs/perf/sweep-smollm2-135m.json --plot docs/img/perf-sweep-smollm2.png
# long prompts: the loop's share of the cost as attention grows, and with smaller ubatches
for ub in 512 2048; do
    loopcpp bench smollm2-135m --loop autox3 -p 2048 -n 0 -ub $ub -r 3 $T --json docs/perf/long-smollm2-135m-p2048-ub$ub.json
done
loopcpp bench smollm2-135m --loop autox3 -p 8000 -n 0 -ub 2048 -r 2 $T --json docs/perf/long-smollm2-135m-p8000-ub2048.json
