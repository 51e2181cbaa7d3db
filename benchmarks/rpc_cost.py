"""What looping costs over RPC: bytes and messages between the client and its ggml-rpc-servers.

    python benchmarks/rpc_cost.py [MODEL] [--loop 13:16x3] [--split 17,13] [--pp 64] [--tg 8] [--json F]

Two servers on loopback hold the model; for the unlooped model and the loop, once with the
default layer split and once with --split (shares per server, chosen to keep the window on one
host), it evaluates a prompt of --pp tokens and --tg decode steps (decode=full, so that every
step loops) and reads the loopback interface's counters meanwhile (/proc/net/dev, Linux): bytes
and packets both ways, so anything else on loopback at the time counts too. Packets are an upper
bound on messages (TCP acknowledgements count as packets).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import loopcpp
from loopcpp import catalog, rpc


def loopback() -> tuple[int, int]:
    """(bytes, packets) the loopback interface has carried."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                fields = rest.split()
                return int(fields[0]), int(fields[1])
    raise OSError("no loopback interface in /proc/net/dev")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(path, endpoints, spec: str, split, n_pp: int, n_tg: int) -> dict:
    with loopcpp.Model(path, rpc=endpoints, tensor_split=split or ()) as model:
        with model.context(n_ctx=n_pp + n_tg + 8, loop=spec) as ctx:
            ctx.eval(list(range(10, 26)))  # warm-up: graphs reserved, buffers allocated
            ctx.reset()
            out = {"spec": spec, "split": split or "default"}
            for phase, run in (("pp", lambda: ctx.eval(list(range(10, 10 + n_pp)))),
                               ("tg", lambda: [ctx.eval([7]) for _ in range(n_tg)])):
                before = loopback()
                run()
                after = loopback()
                n = 1 if phase == "pp" else n_tg
                out[f"{phase}_bytes"] = (after[0] - before[0]) / n
                out[f"{phase}_packets"] = (after[1] - before[1]) / n
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--loop", default="13:16x3")
    ap.add_argument("--split", default="17,13", help="layer shares of the two servers for the second run")
    ap.add_argument("--pp", type=int, default=64)
    ap.add_argument("--tg", type=int, default=8)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    path = str(catalog.resolve_model(args.model))
    ports = [free_port(), free_port()]
    procs = [rpc.start("127.0.0.1", p, 1, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    try:
        time.sleep(1.0)
        endpoints = [f"127.0.0.1:{p}" for p in ports]
        split = [float(x) for x in args.split.split(",")]
        loop = f"{args.loop},decode=full"
        rows = [measure(path, endpoints, s, sp, args.pp, args.tg)
                for sp in (None, split) for s in ("off", loop)]
    finally:
        for p in procs:
            p.kill()
    print(f"{os.path.basename(path)} on two ggml-rpc-servers (loopback); per prompt of {args.pp} tokens and "
          f"per decode step; loopback bytes and packets")
    print(f"{'loop':<28} {'split':>9} {'pp KiB':>9} {'pp pkts':>8} {'tg KiB':>8} {'tg pkts':>8}")
    for r in rows:
        split_s = r["split"] if isinstance(r["split"], str) else ",".join(f"{x:g}" for x in r["split"])
        print(f"{r['spec']:<28} {split_s:>9} {r['pp_bytes'] / 1024:9.1f} {r['pp_packets']:8.0f} "
              f"{r['tg_bytes'] / 1024:8.1f} {r['tg_packets']:8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": path, "loop": args.loop, "pp": args.pp, "tg": args.tg, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
