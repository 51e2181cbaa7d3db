"""`loopcpp rpc-server`: ggml's RPC server, built from the same sources and shipped in the package.

It serves this machine's backend (the CPU, or a GPU on a GPU build) to a loopcpp or llama.cpp on
another machine, which places part of a model's layers on it: Model(path, rpc=["host:port"]) or
`--rpc host:port`. A looped graph is an ordinary ggml graph, so the loop window may sit on a
server like any other layers (docs/backends.md says what it costs and where to put it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional, Sequence

from .serve import binary_path

NAME = "ggml-rpc-server"


def server_command(host: str = "127.0.0.1", port: int = 50052, threads: Optional[int] = None,
                   device: Optional[str] = None, cache: bool = False) -> list[str]:
    cmd = [str(binary_path(NAME, "LOOPCPP_RPC")), "-H", host, "-p", str(port)]
    if threads:
        cmd += ["-t", str(threads)]
    if device:
        cmd += ["-d", device]
    if cache:
        cmd += ["-c"]
    return cmd


def start(host: str = "127.0.0.1", port: int = 50052, threads: Optional[int] = None, **popen) -> subprocess.Popen:
    """Starts a server in the background (tests, scripts); stop it with .terminate()."""
    return subprocess.Popen(server_command(host, port, threads), **popen)


def run(args) -> int:
    """Runs the server in place of this process (`loopcpp rpc-server`)."""
    cmd = server_command(args.host, args.port, args.threads, args.device, args.cache)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("loopcpp rpc-server: the RPC protocol has no authentication or encryption: expose it on "
              "trusted networks only", file=sys.stderr)
    print(f"loopcpp rpc-server: {args.host}:{args.port}; clients: --rpc {args.host}:{args.port}",
          file=sys.stderr, flush=True)
    if sys.platform == "win32":
        return subprocess.call(cmd)
    os.execv(cmd[0], cmd)
    return 0  # not reached


def parse_endpoints(values: Optional[Sequence[str]]) -> list[str]:
    """--rpc values, each "host:port" or a comma-separated list of them, as llama.cpp takes them."""
    out = []
    for v in values or []:
        for e in v.split(","):
            e = e.strip()
            host, sep, port = e.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"--rpc {e!r}: give host:port, e.g. 192.168.1.7:50052")
            out.append(e)
    return out
