"""Summaries of a TaskResult: each loop against the unlooped model, with paired 95 % intervals."""

from __future__ import annotations

import csv
import math
from typing import Any, Sequence

import numpy as np

from .runner import OFF, TaskResult
from .stats import Interval, mcnemar, mean_and_stderr, paired_bootstrap


def summarize(result: TaskResult, n_resamples: int = 10_000) -> dict:
    """{"task", "kind", "n_items", "rows": [one dict per configuration]}; deltas are loop minus off."""
    kind = result.spec.kind
    base = result.results[OFF]
    rows = []
    for name in result.configs:
        res = result.results[name]
        row: dict[str, Any] = {"config": name, "recipe": result.resolved.get(name, name)}
        if kind == "mc":
            row.update(_accuracy(base, res, "correct", "acc", n_resamples))
            row.update(_accuracy(base, res, "correct_norm", "acc_norm", n_resamples))
            groups = sorted({str(r["group"]) for r in res if r.get("group")})
            for g in groups:
                idx = [i for i, r in enumerate(res) if r.get("group") == g]
                row.update(_accuracy([base[i] for i in idx], [res[i] for i in idx], "correct", f"acc_{g}", n_resamples))
        elif kind == "gen":
            row.update(_accuracy(base, res, "correct", "em", n_resamples))
            row["f1"] = float(np.mean([r["f1"] for r in res]))
            if name != OFF:
                row["delta_f1"] = _interval(paired_bootstrap([r["f1"] for r in base], [r["f1"] for r in res],
                                                             n_resamples=n_resamples))
        else:
            row.update(_perplexity(base, res, name, n_resamples))
        rows.append(row)
    return {"task": result.spec.task, "kind": kind, "spec": result.spec.key(), "n_items": len(result.items),
            "rows": rows}


def _interval(iv: Interval, scale: float = 1.0) -> dict:
    return {"value": iv.value * scale, "lo": iv.lo * scale, "hi": iv.hi * scale}


def _accuracy(base: list[dict], res: list[dict], field: str, metric: str, n_resamples: int) -> dict:
    a = np.array([bool(r[field]) for r in base])
    b = np.array([bool(r[field]) for r in res])
    out: dict[str, Any] = {metric: float(b.mean()), f"{metric}_stderr": mean_and_stderr(b.astype(float))[1]}
    if res is not base:
        out[f"delta_{metric}_pp"] = _interval(paired_bootstrap(a, b, n_resamples=n_resamples), 100.0)
        out[f"mcnemar_{metric}"] = mcnemar(a, b)
    return out


def _ppl_of(nll_sums: np.ndarray, counts: np.ndarray) -> float:
    return math.exp(nll_sums.sum() / counts.sum())


def _perplexity(base: list[dict], res: list[dict], name: str, n_resamples: int) -> dict:
    nll = np.array([r["nll_sum"] for r in res])
    n = np.array([r["n"] for r in res], dtype=np.float64)
    ppl = _ppl_of(nll, n)
    # llama-perplexity's uncertainty: the standard error of the mean token NLL, through exp
    _, se = mean_and_stderr(nll / n)
    out: dict[str, Any] = {"ppl": ppl, "ppl_stderr": ppl * se, "n_tokens": int(n.sum())}
    if name == OFF:
        return out
    base_nll = np.array([r["nll_sum"] for r in base])
    out["delta_ppl"] = _interval(paired_bootstrap(
        base_nll, nll, statistic=lambda a, b: _ppl_of(b, n) - _ppl_of(a, n), n_resamples=min(n_resamples, 2000)))
    kl = np.concatenate([np.asarray(r["kl"]) for r in res])
    out.update({"kld_mean": float(kl.mean()), "kld_median": float(np.median(kl)),
                "kld_p99": float(np.percentile(kl, 99)),
                "top1_same": float(sum(r["top1_same"] for r in res) / n.sum())})
    return out


# --- text ----------------------------------------------------------------------------------------

def _fmt_delta(d: dict, digits: int = 2) -> str:
    return f"{d['value']:+.{digits}f} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]"


def format_table(summary: dict) -> str:
    """A short table people read: one line per configuration."""
    kind, rows = summary["kind"], summary["rows"]
    w = max(len(r["config"]) for r in rows)
    lines = [f"{summary['task']} ({summary['spec']}), {summary['n_items']} "
             f"{'windows' if kind == 'ppl' else 'items'}; deltas are loop - off with paired 95 % intervals"]
    if kind == "mc":
        lines.append(f"{'config':<{w}}  {'acc':>6} {'Δ acc (pp)':>22} {'p':>6}  {'acc_norm':>8} {'Δ acc_norm (pp)':>22}")
        for r in rows:
            if r["config"] == OFF:
                lines.append(f"{r['config']:<{w}}  {100 * r['acc']:6.2f} {'':>22} {'':>6}  {100 * r['acc_norm']:8.2f}")
            else:
                lines.append(f"{r['config']:<{w}}  {100 * r['acc']:6.2f} {_fmt_delta(r['delta_acc_pp']):>22} "
                             f"{r['mcnemar_acc']['p_value']:6.3f}  {100 * r['acc_norm']:8.2f} "
                             f"{_fmt_delta(r['delta_acc_norm_pp']):>22}")
        groups = [k[4:] for k in rows[0] if k.startswith("acc_") and not k.endswith("stderr") and k != "acc_norm"]
        for g in groups:
            cells = [f"{r['config']}: {100 * r[f'acc_{g}']:.2f}" for r in rows]
            lines.append(f"  {g}: " + ", ".join(cells))
    elif kind == "gen":
        lines.append(f"{'config':<{w}}  {'EM':>6} {'Δ EM (pp)':>22} {'p':>6}  {'F1':>6}")
        for r in rows:
            d = "" if r["config"] == OFF else _fmt_delta(r["delta_em_pp"])
            p = "" if r["config"] == OFF else f"{r['mcnemar_em']['p_value']:.3f}"
            lines.append(f"{r['config']:<{w}}  {100 * r['em']:6.2f} {d:>22} {p:>6}  {100 * r['f1']:6.2f}")
    else:
        lines.append(f"{'config':<{w}}  {'ppl':>16} {'Δ ppl':>24}  {'KLD mean':>9} {'median':>8} {'p99':>8} {'top-1 same':>10}")
        for r in rows:
            ppl = f"{r['ppl']:.4f} ± {r['ppl_stderr']:.4f}"
            if r["config"] == OFF:
                lines.append(f"{r['config']:<{w}}  {ppl:>16}")
            else:
                lines.append(f"{r['config']:<{w}}  {ppl:>16} {_fmt_delta(r['delta_ppl'], 4):>24}  {r['kld_mean']:9.5f} "
                             f"{r['kld_median']:8.5f} {r['kld_p99']:8.4f} {100 * r['top1_same']:9.2f}%")
    return "\n".join(lines)


def write_csv(summaries: Sequence[dict], path: str) -> None:
    """One row per (task, configuration, metric): value and, for deltas, the interval."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["task", "spec", "config", "metric", "value", "lo", "hi"])
        for s in summaries:
            for r in s["rows"]:
                for k, v in r.items():
                    if k in ("config", "recipe"):
                        continue
                    if isinstance(v, dict) and "value" in v:
                        out.writerow([s["task"], s["spec"], r["config"], k, v["value"], v["lo"], v["hi"]])
                    elif isinstance(v, dict):
                        out.writerow([s["task"], s["spec"], r["config"], k, v.get("p_value"), "", ""])
                    else:
                        out.writerow([s["task"], s["spec"], r["config"], k, v, "", ""])
