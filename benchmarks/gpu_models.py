#!/usr/bin/env python3
"""The Python half of benchmarks/gpu_check.sh: models, GPU-vs-CPU logits, speed, the table.

Run by gpu_check.sh with LOOPCPP_LIB_PATH at the library it built and PYTHONPATH at the unpacked
tarball. Steps:

1. Models, written with `gguf` (random weights, deterministic): the tiny f32 llama of the tests
   (tests/tinymodels.py: 6 layers, width 64, each layer moving the residual stream strongly), and a
   llama of realistic shape in f16 and Q8_0 (cuda: 28 layers, width 2048, 16 heads / 8 KV heads of
   128, FFN 6144, vocabulary 151,936 with a tied head, about 1.7 B parameters, like Qwen3-1.7B;
   cpu: 4 layers of width 512, vocabulary 32,000). A layer's weights are drawn once per shape and
   written for every layer: speed does not depend on the values, and the files are written at disk
   speed.
2. Logits check, tiny model: every mode (block, layer) x integrator (naive, euler, rk) x cache
   policy (kv=first, kv=last) x decode mode (bypass, full, first:1), window 2:4 x3, and the
   unlooped model; an 11-token prompt split over two ubatches (n_ubatch 8), then 5 decode steps,
   logits of every row; f32 KV cache, no flash attention (as tests/test_loop_matrix.py). The
   device model (all layers offloaded) against the CPU model (n_gpu_layers=0).
   Error = max |logit_dev - logit_cpu| / max(1, max |logit_cpu|) over all rows.
   Tolerance: TOL_TINY = 1e-3 (f32 weights and cache: only summation order differs; the tests'
   CPU-vs-numpy tolerance is 1e-4). Beside each error stands the distance, on the CPU, from the
   variant to its nearest other variant: a tolerance far below it tells a wrong variant apart.
   On the realistic Q8_0 model (unlooped and the benchmark's loop, 64-token prompt, f16 cache,
   default flash attention) the same error is reported against TOL_Q8 = 5e-2: CUDA quantizes the
   activations differently (q8_1 tiles) from the CPU.
3. Speed: loopcpp.bench.run (pp512 from an empty cache, tg128 token by token; interleaved rounds,
   medians) for the unlooped model and the loop at mid-depth (cuda: 12:15x3, block, rk) with
   decode=full and decode=bypass, all layers offloaded and half of them (the last half: llama.cpp
   offloads from the top), f16 and Q8_0. "time x" is looped time over unlooped time, measured /
   expected from counting layer evaluations (loopcpp.bench.expected_time_ratio).
4. The table, last. JSON beside it: WORKDIR/gpu_check.json. Exit status 1 if a check failed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))
sys.path.append(str(ROOT / "pydeps"))  # pure-Python fallbacks carried in the tarball

import numpy as np  # noqa: E402

TOL_TINY = 1e-3
TOL_Q8 = 5e-2
MODES = ("block", "layer")
INTEGRATORS = ("naive", "euler", "rk")
KVS = ("first", "last")
DECODES = ("bypass", "full", "first:1")
TINY_WINDOW = "2:4x3"
PROMPT = np.random.default_rng(11).integers(3, 288, 11).tolist()
STEPS = np.random.default_rng(12).integers(3, 288, 5).tolist()


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int

    def loop(self) -> str:
        """A window of about a seventh of the layers at mid-depth, K = 3, anchored RK."""
        w = max(2, self.n_layer // 7)
        s = (self.n_layer - w) // 2
        return f"{s}:{s + w - 1}x3,block,rk"


SHAPES = {"cuda": Shape(28, 2048, 16, 8, 128, 6144, 151936), "cpu": Shape(4, 512, 8, 4, 64, 1536, 32000)}


def log(t0: float, msg: str) -> None:
    print(f"[gpu_check {time.time() - t0:.0f} s] {msg}", flush=True)


# --- 1. models --------------------------------------------------------------------------------


def write_tiny(path: Path) -> Path:
    import tinymodels

    if not path.exists():
        tinymodels.write(tinymodels.TinySpec("llama"), path)
    return path


def write_real(shape: Shape, qtype: str, path: Path) -> Path:
    """A llama of the given shape, f16 or q8_0, random weights (one draw per tensor shape)."""
    import gguf
    import tinymodels

    if path.exists():
        return path
    rng = np.random.default_rng(0)
    E, H, KV, D, F, V = shape.n_embd, shape.n_head, shape.n_head_kv, shape.head_dim, shape.n_ff, shape.n_vocab
    qt = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[qtype]
    ftype = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[qtype]
    cache: dict[tuple, np.ndarray] = {}

    def mat(rows: int, cols: int) -> np.ndarray:
        if (rows, cols) not in cache:
            a = rng.standard_normal((rows, cols), dtype=np.float32) / np.float32(np.sqrt(cols))
            cache[(rows, cols)] = a.astype(np.float16) if qtype == "f16" else gguf.quants.quantize(a, qt)
        return cache[(rows, cols)]

    tmp = path.with_suffix(".tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(f"random-llama-{shape.n_layer}x{E}-{qtype}")
    w.add_context_length(4096)
    w.add_embedding_length(E)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_key_length(D)
    w.add_value_length(D)
    w.add_rope_dimension_count(D)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(ftype)
    tinymodels._add_vocab(w, V)
    ones = np.ones(E, np.float32)

    def add(name: str, arr: np.ndarray) -> None:
        w.add_tensor(name, arr, raw_dtype=None if arr.dtype != np.uint8 else qt)

    add("token_embd.weight", mat(V, E))  # tied output head: llama.cpp reuses the embeddings
    w.add_tensor("output_norm.weight", ones)
    for il in range(shape.n_layer):
        p = f"blk.{il}."
        w.add_tensor(p + "attn_norm.weight", ones)
        w.add_tensor(p + "ffn_norm.weight", ones)
        add(p + "attn_q.weight", mat(H * D, E))
        add(p + "attn_k.weight", mat(KV * D, E))
        add(p + "attn_v.weight", mat(KV * D, E))
        add(p + "attn_output.weight", mat(E, H * D))
        add(p + "ffn_gate.weight", mat(F, E))
        add(p + "ffn_up.weight", mat(F, E))
        add(p + "ffn_down.weight", mat(E, F))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.rename(path)
    return path


# --- 2. logits ----------------------------------------------------------------------------------


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / max(1.0, float(np.abs(want).max())))


def run_variant(ctx, spec: str, prompt, steps) -> np.ndarray:
    ctx.set_loop(spec)  # also empties the cache
    out = [ctx.eval(prompt, logits="all")] + [ctx.eval([t], logits="all") for t in steps]
    return np.concatenate(out)


def tiny_check(path: Path, dev_layers: int, threads: int | None = None) -> dict:
    from loopcpp import Model

    specs = ["off"] + [f"{TINY_WINDOW},{m},{i},kv={kv},decode={d}"
                       for m, i, kv, d in itertools.product(MODES, INTEGRATORS, KVS, DECODES)]
    kw = dict(n_ctx=256, n_batch=64, n_ubatch=8, type_k="f32", type_v="f32", flash_attn=False, n_threads=threads)
    got = {}
    for name, ngl in (("cpu", 0), ("dev", dev_layers)):
        with Model(path, n_gpu_layers=ngl) as m, m.context(**kw) as ctx:
            got[name] = {s: run_variant(ctx, s, PROMPT, STEPS) for s in specs}
    rows = []
    for s in specs:
        cpu = got["cpu"][s]
        sep = min(rel_err(got["cpu"][o], cpu) for o in specs if o != s)
        err = rel_err(got["dev"][s], cpu)
        argmax = float((got["dev"][s].argmax(-1) == cpu.argmax(-1)).mean())
        rows.append({"spec": s, "err": err, "nearest_other": sep, "argmax_agree": argmax, "ok": err <= TOL_TINY})
    return {"tol": TOL_TINY, "rows": rows, "ok": all(r["ok"] for r in rows)}


def real_check(path: Path, dev_layers: int, loop: str, threads: int | None = None) -> dict:
    from loopcpp import Model

    prompt = [(i * 7919) % 30000 + 300 for i in range(64)]
    got = {}
    for name, ngl in (("cpu", 0), ("dev", dev_layers)):
        with Model(path, n_gpu_layers=ngl) as m, m.context(n_ctx=128, n_batch=64, n_ubatch=64, n_threads=threads) as ctx:
            got[name] = {s: run_variant(ctx, s, prompt, prompt[:4]) for s in ("off", loop + ",decode=full")}
    rows = []
    for s, cpu in got["cpu"].items():
        err = rel_err(got["dev"][s], cpu)
        rows.append({"spec": s, "err": err, "argmax_agree": float((got["dev"][s].argmax(-1) == cpu.argmax(-1)).mean()),
                     "ok": err <= TOL_Q8})
    return {"tol": TOL_Q8, "rows": rows, "ok": all(r["ok"] for r in rows)}


# --- 3. speed -----------------------------------------------------------------------------------


def bench(path: Path, ngl: int, loop: str, reps: int, threads: int | None) -> dict:
    from loopcpp import Model, bench as lbench

    with Model(path, n_gpu_layers=ngl) as m:
        return lbench.run(m, [loop + ",decode=full", loop + ",decode=bypass"], n_prompt=512, n_gen=128,
                          repetitions=reps, n_threads=threads, progress=False)


# --- 4. table -----------------------------------------------------------------------------------


def device_name(device: str) -> str:
    if device == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            model = "?"
        return f"CPU ({model}, {os.cpu_count()} CPUs; the 'device' is the CPU)"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
        return "CUDA (" + "; ".join(out) + ")"
    except (OSError, subprocess.SubprocessError):
        return "CUDA"


def table(res: dict) -> str:
    L = [f"loopcpp GPU check on {res['device']}: build {res['build_s']} s, total {res['total_s']:.0f} s"]
    t = res["tiny"]
    worst = max(t["rows"], key=lambda r: r["err"])
    near = min(r["nearest_other"] for r in t["rows"])
    L.append(f"logits, tiny f32 model, {len(t['rows'])} variants ({len(t['rows']) - 1} loops + off), "
             f"{len(PROMPT)}+{len(STEPS)} rows: max rel err {worst['err']:.2e} ({worst['spec']}), tol {t['tol']:.0e}, "
             f"nearest other variant >= {near:.2e}: {'PASS' if t['ok'] else 'FAIL'}")
    if "real" in res:
        r = res["real"]
        L.append(f"logits, {res['real_model']}: " + ", ".join(f"{x['spec']} {x['err']:.2e}" for x in r["rows"])
                 + f", tol {r['tol']:.0e}: {'PASS' if r['ok'] else 'FAIL'}")
    L.append("speed: t/s median of rounds; time x = looped / unlooped time, measured / expected from layer evaluations")
    hdr = f"{'model':<6} {'offload':<12} {'loop':<32} {'pp512 t/s':>10} {'time x':>11} {'tg128 t/s':>10} {'time x':>11}"
    L.append(hdr)
    L.append("-" * len(hdr))
    for b in res["bench"]:
        for row in b["result"]["rows"]:
            L.append(f"{b['model']:<6} {b['offload']:<12} {row['spec']:<32} {row.get('pp_tps', 0):>10.1f} "
                     f"{row.get('pp_time_ratio', 0):>5.2f}/{row['expected_pp']:<5.2f} {row.get('tg_tps', 0):>10.1f} "
                     f"{row.get('tg_time_ratio', 0):>5.2f}/{row['expected_tg']:<5.2f}")
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), required=True)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--build-seconds", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--t0", type=float, default=time.time())
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: the physical cores)")
    ap.add_argument("--skip-real-check", action="store_true")
    a = ap.parse_args()
    t0 = a.t0

    # the loopcpp of the tarball, not an editable install's (its import hook would come first)
    sys.meta_path[:] = [f for f in sys.meta_path if "loopcpp" not in getattr(type(f), "__module__", "")]
    import loopcpp
    from loopcpp import system

    if Path(loopcpp.__file__).resolve().parent != ROOT / "loopcpp":
        print(f"imported {loopcpp.__file__}, not the tarball's {ROOT / 'loopcpp'}", file=sys.stderr)
        return 1

    log(t0, f"loopcpp {loopcpp.__file__}, library {loopcpp.lib_dir()}")
    if a.device == "cuda" and not system.gpu_offload_supported():
        print("the library sees no GPU device (ggml_backend_dev_count has no GPU)", file=sys.stderr)
        return 1
    shape = SHAPES[a.device]
    dev_layers = -1 if a.device == "cuda" else 0
    loop = shape.loop()
    models = a.workdir / "models"
    models.mkdir(parents=True, exist_ok=True)
    res: dict = {"device": device_name(a.device), "build_s": a.build_seconds, "shape": shape.__dict__, "loop": loop}

    log(t0, "writing models")
    tiny = write_tiny(models / "tiny-llama-f32.gguf")
    real = {}
    for q in ("f16", "q8_0"):
        p = write_real(shape, q, models / f"llama-{shape.n_layer}x{shape.n_embd}-{q}.gguf")
        real[q] = p
        log(t0, f"  {p.name}: {p.stat().st_size / 2**20:.0f} MiB")

    log(t0, "logits check, tiny model: device against CPU")
    res["tiny"] = tiny_check(tiny, dev_layers, a.threads)
    for r in res["tiny"]["rows"]:
        print(f"  {r['spec']:<42} err {r['err']:.2e}  nearest other {r['nearest_other']:.2e}  "
              f"argmax {r['argmax_agree']:.2f}  {'ok' if r['ok'] else 'FAIL'}")
    if not a.skip_real_check:
        log(t0, f"logits check, {real['q8_0'].name}: device against CPU")
        res["real_model"] = f"{shape.n_layer}x{shape.n_embd} Q8_0"
        res["real"] = real_check(real["q8_0"], dev_layers, loop, a.threads)
        for r in res["real"]["rows"]:
            print(f"  {r['spec']:<42} err {r['err']:.2e}  argmax {r['argmax_agree']:.2f}  {'ok' if r['ok'] else 'FAIL'}")

    res["bench"] = []
    offloads = (("all", -1), (f"{shape.n_layer // 2} of {shape.n_layer}", shape.n_layer // 2))
    if a.device == "cpu":
        offloads = (("cpu", 0),)
    for q, (label, ngl) in itertools.product(("f16", "q8_0"), offloads):
        log(t0, f"benchmark {q}, layers offloaded: {label}")
        r = bench(real[q], ngl, loop, a.reps, a.threads)
        res["bench"].append({"model": q, "offload": label, "n_gpu_layers": ngl,
                             "result": r})
        from loopcpp.bench import format_table
        print(format_table(r), flush=True)
    res["total_s"] = time.time() - t0
    (a.workdir / "gpu_check.json").write_text(json.dumps(res, indent=1, default=str))
    ok = res["tiny"]["ok"] and res.get("real", {"ok": True})["ok"]
    print()
    print(table(res))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
