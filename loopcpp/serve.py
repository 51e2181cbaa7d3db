"""`loopcpp serve`: llama.cpp's own llama-server, built from the same patched tree and shipped in
the package (loopcpp/bin), started with the loop recipe and the settings under which a request's
answer does not depend on the other requests (docs/design.md, "The server").

llama-server brings the OpenAI-compatible API (/v1/models, /v1/completions with logprobs,
/v1/chat/completions with SSE streaming and the model's chat template, /health, /metrics), parallel slots, continuous batching and prompt caching. It loops through
LOOPCPP_LOOP; loopcpp's patch adds the per-request "loop" field, splits every looped prompt at
boundaries of its own, and answers "echo" on /v1/completions with the prompt's log-probabilities
(with --echo).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from ._paths import package_file
from .errors import LibraryError


def binary_path(name: str, option: str = "LOOPCPP_BUILD_SERVER") -> Path:
    """An executable shipped in this installation's bin/ (llama-server, ggml-rpc-server)."""
    try:
        path = package_file("bin") / (f"{name}.exe" if sys.platform == "win32" else name)
    except LibraryError:
        path = None
    if path is None or not path.exists():
        raise LibraryError(f"{name} is not part of this loopcpp build; reinstall without CMAKE_ARGS=-D{option}=OFF")
    return path


def server_path() -> Path:
    """The llama-server executable of this installation."""
    return binary_path("llama-server")


def check_loop(model_path: str, loop: Optional[str]) -> Optional[str]:
    """The recipe resolved for model_path ("off" for none), or None to leave it to the model's
    metadata. Raises LoopConfigError naming the problem: llama-server would otherwise ignore a
    recipe that does not fit the model, with only a warning in its log."""
    if loop is None:
        return None
    from .model import Model

    # weights are mapped, not read: validation needs the architecture and the depth
    with Model(model_path, repack=False) as model, model.context(n_ctx=32, n_batch=32, loop=loop) as ctx:
        return str(ctx.loop) if ctx.loop.enabled else "off"


def server_command(model_path: str, host: str = "127.0.0.1", port: int = 8080, parallel: int = 4,
                   ctx_size: int = 4096, ubatch: int = 512, threads: Optional[int] = None,
                   cache_prompt: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """llama-server's argument list. One unified KV cache and n_batch = n_ubatch: each batch is one
    ubatch, split in the order the server builds it, so the patched server controls every
    request's prompt boundaries. Prompt caching is off unless asked for: a looped prompt whose
    prefix comes from the cache is split elsewhere than a fresh one, and can answer differently."""
    cmd = [str(server_path()), "-m", str(model_path), "--host", host, "--port", str(port),
           "-np", str(parallel), "-c", str(ctx_size), "-b", str(ubatch), "-ub", str(ubatch),
           "--kv-unified", "--no-webui", "--metrics"]
    if threads:
        cmd += ["-t", str(threads), "-tb", str(threads)]
    if not cache_prompt:
        cmd += ["--no-cache-prompt"]
    return cmd + list(extra)


def serve(args) -> int:
    """Runs llama-server in place of this process (`loopcpp serve`)."""
    from . import catalog

    model_path = str(catalog.resolve_model(args.model))
    recipe = check_loop(model_path, args.loop)
    env = dict(os.environ)
    if recipe is not None:
        env["LOOPCPP_LOOP"] = recipe  # llama-server loops through the environment, with no change
    if args.echo:
        env["LOOPCPP_SERVER_ECHO"] = "1"  # the patched server keeps logits for every row of a batch
    cmd = server_command(model_path, args.host, args.port, args.parallel, args.ctx_size, args.ubatch,
                         args.threads, args.cache_prompt, args.extra)
    print(f"loopcpp serve: loop {recipe or 'from the model (loopcpp.loop) or none'}; "
          f"http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    if sys.platform == "win32":  # no exec: run it and pass its status on
        import subprocess

        return subprocess.call(cmd, env=env)
    os.execve(cmd[0], cmd, env)
    return 0  # not reached
