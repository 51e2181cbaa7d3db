"""One model across processes with ggml's RPC backend: two `ggml-rpc-server`s on loopback hold the
layers, the loop window included; looped logits equal the single-process run bit for bit (the
same CPU kernels: the local run with repack=False, since RPC buffers are never repacked);
generation works; a server that dies mid-run gives an error, not a hang, an abort or a leak."""

import logging
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import loopcpp
from loopcpp import rpc
from loopcpp.errors import ModelLoadError
from test_cli import loopcpp as run_cli

PROMPT = list(range(5, 29))

pytestmark = pytest.mark.skipif(not (loopcpp.lib_dir().parent / "bin" / rpc.NAME).exists(),
                                reason="a build without LOOPCPP_RPC")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"no rpc server on port {port}")


@pytest.fixture(scope="module")
def servers():
    ports = [free_port(), free_port()]
    procs = [rpc.start("127.0.0.1", p, 1, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    try:
        for p in ports:
            wait_listening(p)
        yield [f"127.0.0.1:{p}" for p in ports]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("loop", ["off", "1:4x3", "1:4x2,layer,euler,kv=last", "2:3x3,decode=full"])
def test_split_across_two_servers_equals_one_process(tiny_paths, servers, loop, caplog):
    with loopcpp.Model(tiny_paths["llama"], repack=False) as m, m.context(n_ctx=64, loop=loop) as ctx:
        local = ctx.eval(PROMPT, logits="all")
        local_steps = [ctx.eval([t], logits="last") for t in (3, 4, 5)]
    caplog.set_level(logging.INFO, logger="loopcpp")
    with loopcpp.Model(tiny_paths["llama"], rpc=servers) as m, m.context(n_ctx=64, loop=loop) as ctx:
        remote = ctx.eval(PROMPT, logits="all")
        remote_steps = [ctx.eval([t], logits="last") for t in (3, 4, 5)]
    assert np.array_equal(remote, local) and np.array_equal(np.array(remote_steps), np.array(local_steps))
    # the weights really sit on both servers: llama.cpp logs a model buffer per device
    buffers = [r.getMessage() for r in caplog.records if "model buffer size" in r.getMessage()]
    assert sum("RPC" in b for b in buffers) == 2, buffers


def test_generation_over_rpc(tiny_paths, servers):
    with loopcpp.Model(tiny_paths["llama"], repack=False) as m, m.context(n_ctx=64, loop="1:4x3") as ctx:
        want = ctx.complete(PROMPT, max_tokens=6, temperature=0).tokens
    with loopcpp.Model(tiny_paths["llama"], rpc=servers) as m, m.context(n_ctx=64, loop="1:4x3") as ctx:
        assert ctx.complete(PROMPT, max_tokens=6, temperature=0).tokens == want


def test_tensor_split_keeps_the_model_on_one_server(tiny_paths, servers, caplog):
    caplog.set_level(logging.INFO, logger="loopcpp")
    with loopcpp.Model(tiny_paths["llama"], rpc=servers, tensor_split=[1, 0]) as m, m.context(n_ctx=64) as ctx:
        ctx.eval(PROMPT)
    buffers = [r.getMessage() for r in caplog.records if "model buffer size" in r.getMessage()]
    assert sum("RPC" in b for b in buffers) == 1, buffers
    with pytest.raises(ValueError, match="tensor_split"):
        loopcpp.Model(tiny_paths["llama"], tensor_split=[-1, 2])


def test_unreachable_server_and_bad_endpoints_are_errors(tiny_paths):
    with pytest.raises(ModelLoadError, match="RPC server 127.0.0.1:"):
        loopcpp.Model(tiny_paths["llama"], rpc=[f"127.0.0.1:{free_port()}"])
    with pytest.raises(ValueError, match="host:port"):
        loopcpp.Model(tiny_paths["llama"], rpc=["localhost"])
    assert rpc.parse_endpoints(["a:1,b:2", "c:3"]) == ["a:1", "b:2", "c:3"]
    with pytest.raises(ValueError, match="host:port"):
        rpc.parse_endpoints(["a:99999"])


DIES = r"""
import os, subprocess, sys, loopcpp
from loopcpp import rpc
from test_resources import rss_mib
from test_rpc import free_port, wait_listening

prompt = list(range(5, 29))
for i in range(int(sys.argv[2])):
    port = free_port()
    server = rpc.start("127.0.0.1", port, 1, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port)
    model = loopcpp.Model(sys.argv[1], rpc=[f"127.0.0.1:{port}"])
    ctx = model.context(n_ctx=64, loop="1:4x3")
    ctx.eval(prompt)
    server.kill(); server.wait()
    errors = []
    for tokens in ([3, 4, 5], [6]):
        try:
            ctx.eval(tokens)
        except loopcpp.DecodeError as e:
            errors.append(str(e))
    # llama.cpp rolled the failed ubatch back: the context still holds the prompt, and closes
    print("errors", len(errors), ctx.n_past == len(prompt), repr(errors[0][:80]) if errors else "")
    ctx.close(); model.close()
    print("fds", len(os.listdir("/proc/self/fd")), "rss", round(rss_mib(), 1), flush=True)
"""


def run_dies(tiny_paths, tmp_path, rounds):
    r = subprocess.run([sys.executable, "-c", DIES, str(tiny_paths["llama"]), str(rounds)], capture_output=True,
                       text=True, timeout=300, cwd=str(tmp_path), env={**_env(), "PYTHONPATH": str(_tests_dir())})
    assert r.returncode == 0, r.stderr[-2000:]  # no abort
    lines = r.stdout.splitlines()
    assert len(lines) == 2 * rounds, r.stdout
    return [l.split() for l in lines[0::2]], [(int(l.split()[1]), float(l.split()[3])) for l in lines[1::2]]


def test_a_server_dying_mid_run_is_an_error_not_an_abort(tiny_paths, tmp_path):
    """The backend reports the failure (GGML_STATUS_FAILED), so llama.cpp's own rollback runs: the
    caller gets an error, the context keeps what completed and can be freed."""
    errors, _ = run_dies(tiny_paths, tmp_path, 1)
    assert errors[0][:3] == ["errors", "2", "True"] and "compute failed" in " ".join(errors[0][3:])


def test_servers_dying_twenty_times_leak_nothing(tiny_paths, tmp_path):
    """Twenty rounds in one process of: a server, a model and a context on it, the server killed,
    the errors, everything freed. File descriptors stay level and resident memory flat (the
    first rounds warm allocator pools up); before, each round leaked a context and a model."""
    errors, usage = run_dies(tiny_paths, tmp_path, 20)
    assert all(e[:3] == ["errors", "2", "True"] for e in errors)
    fds, rss = zip(*usage)
    assert max(fds[2:]) <= fds[2], fds
    assert rss[-1] - rss[4] < 8, rss


def test_cli_rpc_server_and_run(tiny_paths, servers):
    assert run_cli("rpc-server", "--help").returncode == 0
    r = run_cli("run", tiny_paths["llama"], "--rpc", ",".join(servers), "-p", "hello", "-n", "4", "--loop", "1:4x2",
                "--temp", "0", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"loop": "1:4x2' in r.stdout


def _env():
    import os

    return dict(os.environ)


def _tests_dir():
    from pathlib import Path

    return Path(__file__).parent
