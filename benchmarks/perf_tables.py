"""The tables of docs/performance.md, rendered from the JSON that benchmarks/performance.sh writes,
so that a re-run of the measurements updates the page without copying numbers by hand.

    python benchmarks/perf_tables.py [DIR]      # DIR: the JSON (default docs/perf); markdown to stdout

Each table is printed under a comment naming its source files; paste them over the page's tables.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODELS = {"smollm2-135m": "SmolLM2-135M Q4_1", "qwen2.5-coder-0.5b": "Qwen2.5-Coder-0.5B Q4_K_M",
          "gemma3-270m": "Gemma-3-270M Q4_K_M"}
MIB = 1 << 20


def _load(d: Path, name: str):
    p = d / name
    return json.loads(p.read_text()) if p.exists() else None


def _range(r: dict, k: str, fmt: str) -> str:
    return f"{r[k + '_tps']:{fmt}} ({r[k + '_min']:{fmt}}–{r[k + '_max']:{fmt}})"


def _first(label: str, i: int) -> str:
    """A table's first cell: the model on its first row only."""
    return f"| {label} |" if i == 0 else "| |"


def stock(d: Path) -> list[str]:
    out = ["| model | build | pp512 t/s | vs unmodified | tg128 t/s | vs unmodified |", "|---|---|---|---|---|---|"]
    for m, label in MODELS.items():
        j = _load(d, f"stock-{m}.json")
        if not j:
            continue
        base = next(r for r in j["rows"] if r["build"].startswith("unmodified"))
        for i, r in enumerate(sorted(j["rows"], key=lambda r: r["build"].startswith("unmodified"))):
            out.append(f"{_first(label, i)} {r['build'].split(' llama.cpp')[0]} | {_range(r, 'pp', '.1f')} | "
                       f"{r['pp_tps'] / base['pp_tps']:.3f} | {_range(r, 'tg', '.1f')} | {r['tg_tps'] / base['tg_tps']:.3f} |")
    return out


def _ppl_by_recipe(d: Path, m: str) -> dict[str, str]:
    j = _load(d, f"ppl-{m}.json")
    cells = {}
    for row in (j or {"summaries": [{"rows": []}]})["summaries"][0]["rows"]:
        delta = row.get("delta_ppl")
        cell = f"{row['ppl']:.2f}" + (f", {delta['value']:+.2f} [{delta['lo']:+.2f}, {delta['hi']:+.2f}]" if delta else "")
        cells[_short(row["recipe"])] = cell.replace("-", "−")  # the page's minus sign
    return cells


def _short(loop: str) -> str:
    """'13:16x3,block,rk,beta=0.5,kv=first,decode=full' -> '13:16x3,block,rk' (kv=last kept)."""
    keep = [p for p in loop.split(",") if not p.startswith(("beta=", "decode=")) and p != "kv=first"]
    return ",".join(keep)


def bench_full(d: Path, m: str) -> list[str]:
    j = _load(d, f"bench-{m}-full.json")
    if not j:
        return []
    ppl = _ppl_by_recipe(d, m)
    out = ["| loop | pp512 t/s | time × meas. / expected | tg128 t/s, decode=full | time × meas. / expected | KV MiB | "
           "compute MiB | nodes (pp) | perplexity, Δ [95 % CI] |", "|---|---|---|---|---|---|---|---|---|"]
    for r in j["rows"]:
        loop = _short(r["loop"])
        mem = r["memory"]
        out.append(f"| {loop} | {r['pp_tps']:.0f} ({r['pp_min']:.0f}–{r['pp_max']:.0f}) | {r['pp_time_ratio']:.2f} / "
                   f"{r['expected_pp']:.2f} | {_range(r, 'tg', '.1f')} | {r['tg_time_ratio']:.2f} / {r['expected_tg']:.2f} | "
                   f"{mem['kv'] / MIB:.2f} | {mem['compute'] / MIB:.2f} | {r['nodes_pp']} | {ppl.get(loop, '–')} |")
    return out


def bench_bypass(d: Path, m: str) -> list[str]:
    j = _load(d, f"bench-{m}-bypass.json")
    if not j:
        return []
    out = ["| loop, decode=bypass | tg128 t/s | time × meas. / expected | graphs reused | nodes (tg) |",
           "|---|---|---|---|---|"]
    for r in j["rows"]:
        out.append(f"| {_short(r['loop'])} | {_range(r, 'tg', '.1f')} | {r['tg_time_ratio']:.2f} / {r['expected_tg']:.2f} | "
                   f"{r['tg_graphs_reused']}/128 | {r['nodes_tg']} |")
    return out


def selfmerge(d: Path) -> list[str]:
    out = ["| model | configuration | pp512 t/s | speed | tg64 t/s | speed | KV MiB | weights MiB | file MiB | perplexity |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for m, label in MODELS.items():
        j = _load(d, f"selfmerge-{m}.json")
        if not j:
            continue
        base = j["rows"][0]
        for i, r in enumerate(j["rows"]):
            name = r["config"].replace("self-merge (", "self-merge, ").rstrip(")")
            out.append(f"{_first(label.rsplit(' ', 1)[0], i)} {name} | {r['pp_tps']:.1f} | "
                       f"{r['pp_tps'] / base['pp_tps']:.2f} | {r['tg_tps']:.1f} | {r['tg_tps'] / base['tg_tps']:.2f} | "
                       f"{r['kv_bytes'] / MIB:.2f} | {r['weight_bytes'] / MIB:.1f} | {r['file_bytes'] / MIB:.1f} | "
                       f"{r['ppl']:.3f} |")
    return out


def memory(d: Path) -> list[str]:
    j = _load(d, "memory-smollm2-135m.json")
    if not j:
        return []
    out = ["| K | kv | nodes used | node budget | graph metadata MiB | compute MiB | KV MiB |", "|---|---|---|---|---|---|---|"]
    by_k: dict[int, dict[str, dict]] = {}
    for r in j["rows"]:
        by_k.setdefault(r["K"], {})[r["policy"]] = r
    for k, rs in by_k.items():
        f, last = rs["first"], rs.get("last")
        if k == 1 or last is None:
            out.append(f"| {k} | first | {f['nodes']} | {f['graph_max_nodes']} | {f['graph_meta'] / MIB:.2f} | "
                       f"{f['compute'] / MIB:.2f} | {f['kv'] / MIB:.2f} |")
        else:
            out.append(f"| {k} | first / last | {f['nodes']} / {last['nodes']} | {f['graph_max_nodes']} | "
                       f"{f['graph_meta'] / MIB:.2f} | {f['compute'] / MIB:.2f} / {last['compute'] / MIB:.2f} | "
                       f"{f['kv'] / MIB:.2f} |")
    return out


def _width(spec: str) -> int:
    start, end = spec.split("x")[0].split(":")
    return int(end) - int(start) + 1


def sweep(d: Path) -> list[str]:
    j = _load(d, "sweep-smollm2-135m.json")
    if not j:
        return []
    cells = {r["spec"]: f"{r['pp_time_ratio']:.2f} / {r['expected_pp']:.2f}" for r in j["rows"]}
    ks = [s for s in cells if s.startswith("13:16x")]
    widths = sorted((s for s in cells if s.endswith("x3")), key=lambda s: _width(s))
    out = ["| K (window 13:16) | " + " | ".join(s.split("x")[1] for s in ks) + " |", "|---" * (len(ks) + 1) + "|",
           "| time × | " + " | ".join(cells[s] for s in ks) + " |", ""]
    out += ["| width (K = 3) | " + " | ".join(f"{_width(s)} ({s.split('x')[0]})" for s in widths) + " |",
            "|---" * (len(widths) + 1) + "|", "| time × | " + " | ".join(cells[s] for s in widths) + " |"]
    return out


def long_prompts(d: Path) -> list[str]:
    out = ["| prompt | n_ubatch | unlooped t/s | looped t/s | time × measured / expected | KV MiB | compute MiB |",
           "|---|---|---|---|---|---|---|"]
    j = _load(d, "bench-smollm2-135m-full.json")  # the 512-token row: the SmolLM2 table's off and autox3
    if j:
        off, loop = (next(r for r in j["rows"] if _short(r["loop"]) == s) for s in ("off", "13:16x3,block,rk"))
        out.append(f"| 512 | 512 | {off['pp_tps']:.0f} | {loop['pp_tps']:.0f} | {loop['pp_time_ratio']:.2f} / "
                   f"{loop['expected_pp']:.2f} | {loop['memory']['kv'] / MIB:.2f} | {loop['memory']['compute'] / MIB:.2f} |")
    for p, ub in ((2048, 512), (2048, 2048), (8000, 2048)):
        j = _load(d, f"long-smollm2-135m-p{p}-ub{ub}.json")
        if not j:
            continue
        off, loop = j["rows"]
        out.append(f"| {p} | {ub} | {_range(off, 'pp', '.1f')} | {_range(loop, 'pp', '.1f')} | "
                   f"{loop['pp_time_ratio']:.2f} / {loop['expected_pp']:.2f} | {loop['memory']['kv'] / MIB:.2f} | "
                   f"{loop['memory']['compute'] / MIB:.2f} |")
    return out


def main() -> None:
    d = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "docs" / "perf")
    sections = [("stock-*.json", stock(d))]
    for m in ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"):
        sections += [(f"bench-{m}-full.json, ppl-{m}.json", bench_full(d, m)), (f"bench-{m}-bypass.json", bench_bypass(d, m))]
    sections += [("selfmerge-*.json", selfmerge(d)), ("memory-smollm2-135m.json", memory(d)),
                 ("sweep-smollm2-135m.json", sweep(d)), ("long-smollm2-135m-*.json", long_prompts(d))]
    for source, lines in sections:
        if lines:
            print(f"<!-- {source} -->")
            print("\n".join(lines))
            print()


if __name__ == "__main__":
    main()
