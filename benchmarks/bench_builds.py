"""Speed of the same model on different builds of the library (llama-bench style tokens/s).

    python benchmarks/bench_builds.py [MODEL] --lib NAME=LIBDIR --lib NAME=LIBDIR ...
        [--pp 512] [--tg 128] [--rounds 5] [--threads 2] [--json out.json]

Each build is a directory holding a loopcpp libllama (LOOPCPP_LIB_PATH), e.g. the default native
build against one with AMX compiled out. A build can only be loaded once per process, so every
measurement runs in a child process, and the builds take turns round after round: drift in the
machine's load hits all of them alike. Reported: the median over rounds, its spread (min-max) and
the ratio to the first build.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from tqdm import tqdm



def measure(model_path: str, n_pp: int, n_tg: int, threads: int | None) -> dict:
    """One pp + tg measurement in this process (the child's job)."""
    import loopcpp
    from loopcpp import bench  # the same pp + tg measurement as `loopcpp bench`

    with loopcpp.Model(model_path) as model, model.context(
        n_ctx=n_pp + n_tg + 16, n_batch=n_pp, n_ubatch=n_pp, n_threads=threads
    ) as ctx:
        prompt = bench._tokens(model, n_pp)
        bench._time_pp(ctx, prompt[:32])  # warm-up: weights paged in, graphs reserved
        pp = bench._time_pp(ctx, prompt)
        tg = bench._time_tg(ctx, prompt[:n_tg])[0]
        info = loopcpp._lib.ffi.string(loopcpp._lib.lib.llama_print_system_info()).decode().strip()
    return {"pp_tps": pp, "tg_tps": tg, "system_info": info}


def run_child(lib_dir: str, args) -> dict:
    env = {**os.environ, "LOOPCPP_LIB_PATH": lib_dir}
    env.pop("LOOPCPP_LOOP", None)
    cmd = [sys.executable, __file__, "--child", args.model_path, "--pp", str(args.pp), "--tg", str(args.tg)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"build at {lib_dir} failed (exit {r.returncode}): {r.stderr[-1500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--lib", action="append", default=[], metavar="NAME=LIBDIR")
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(json.dumps(measure(args.model, args.pp, args.tg, args.threads)))
        return 0
    builds = dict(spec.split("=", 1) for spec in args.lib)
    if len(builds) < 2:
        ap.error("give at least two builds: --lib NAME=LIBDIR --lib NAME=LIBDIR")
    from loopcpp import catalog

    args.model_path = str(catalog.resolve_model(args.model))
    runs: dict[str, list[dict]] = {name: [] for name in builds}
    for _, name in tqdm([(r, n) for r in range(args.rounds) for n in builds], desc="runs", file=sys.stderr):
        runs[name].append(run_child(builds[name], args))

    rows = []
    for name, rs in runs.items():
        pp = [r["pp_tps"] for r in rs]
        tg = [r["tg_tps"] for r in rs]
        rows.append({"build": name, "lib": builds[name], "system_info": rs[0]["system_info"],
                     "pp_tps": statistics.median(pp), "pp_min": min(pp), "pp_max": max(pp),
                     "tg_tps": statistics.median(tg), "tg_min": min(tg), "tg_max": max(tg)})
    base = rows[0]
    print(f"model: {os.path.basename(args.model_path)}, pp{args.pp}, tg{args.tg}, "
          f"threads {args.threads or 'default'}, median (min-max) of {args.rounds} interleaved rounds")
    w = max(len(r["build"]) for r in rows)
    print(f"{'build':<{w}}  {'pp t/s':>22} {'ratio':>6}  {'tg t/s':>22} {'ratio':>6}")
    for r in rows:
        r["pp_ratio"] = r["pp_tps"] / base["pp_tps"]
        r["tg_ratio"] = r["tg_tps"] / base["tg_tps"]
        pp = f"{r['pp_tps']:.1f} ({r['pp_min']:.1f}-{r['pp_max']:.1f})"
        tg = f"{r['tg_tps']:.1f} ({r['tg_min']:.1f}-{r['tg_max']:.1f})"
        print(f"{r['build']:<{w}}  {pp:>22} {r['pp_ratio']:6.2f}  {tg:>22} {r['tg_ratio']:6.2f}")
    for r in rows:
        print(f"{r['build']}: {r['system_info']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model_path, "pp": args.pp, "tg": args.tg, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
