"""Throughput of `loopcpp serve`, unlooped and looped, in one run: N chat requests, C at a time.

Starts llama-server (through `loopcpp serve`) once per configuration, sends the same requests to
each, and reports requests/s, generated tokens/s, errors and the server's RSS before and after.
Configurations alternate for --rounds rounds (the machine is shared; compare within a round).

    python benchmarks/bench_serve.py smollm2-135m --loop auto --requests 200 --concurrency 8
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from loopcpp import catalog, system

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_serve import free_port  # noqa: E402

QUESTIONS = ["Name three colours.", "What is 2 + 2?", "Write a haiku about rain.", "Who wrote Hamlet?",
             "Why is the sky blue?", "Give me a synonym for happy.", "What is the capital of Italy?",
             "Count from one to five."]


def rss_mib(pid: int) -> float:
    return system.rss_bytes(pid) / 2**20


def start(model: str, loop: str, threads: int, parallel: int):
    port = free_port()
    cmd = [sys.executable, "-m", "loopcpp", "serve", model, "--loop", loop, "--port", str(port),
           "-np", str(parallel), "-c", str(1024 * parallel), "-t", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"server did not start: {' '.join(cmd)}")


def one(base: str, i: int, max_tokens: int) -> tuple[bool, int]:
    body = {"messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], "max_tokens": max_tokens,
            "temperature": 0}
    try:
        r = httpx.post(base + "/v1/chat/completions", json=body, timeout=600)
        return r.status_code == 200, r.json().get("usage", {}).get("completion_tokens", 0)
    except httpx.HTTPError:
        return False, 0


def measure(model, loop, args) -> dict:
    proc, base = start(model, loop, args.threads, args.concurrency)
    try:
        one(base, 0, 4)  # warm up
        rss0 = rss_mib(proc.pid)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(lambda i: one(base, i, args.max_tokens), range(args.requests)))
        dt = time.perf_counter() - t0
        rss1 = rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    tokens = sum(n for _, n in results)
    return {"req/s": args.requests / dt, "tok/s": tokens / dt, "errors": sum(not ok for ok, _ in results),
            "rss0": rss0, "rss1": rss1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=catalog.DEFAULT_MODEL)
    ap.add_argument("--loop", default="auto")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    model = str(catalog.resolve_model(args.model))
    runs = {"off": [], args.loop: []}
    for _ in range(args.rounds):
        for loop in runs:
            runs[loop].append(measure(model, loop, args))
            r = runs[loop][-1]
            print(f"  {loop:>8}: {r['req/s']:.2f} req/s, {r['tok/s']:.1f} tok/s, {r['errors']} errors, "
                  f"server RSS {r['rss0']:.0f} -> {r['rss1']:.0f} MiB", flush=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("req/s", "tok/s")} for k, v in runs.items()}
    print(f"{Path(model).name}, {args.requests} requests x {args.max_tokens} tokens, {args.concurrency} at a time, "
          f"median of {args.rounds}:")
    for k, v in med.items():
        print(f"  {k:>8}: {v['req/s']:.2f} req/s, {v['tok/s']:.1f} tok/s "
              f"({v['tok/s'] / med['off']['tok/s']:.2f}x unlooped)")


if __name__ == "__main__":
    main()
