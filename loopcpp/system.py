"""Defaults that fit the machine: threads and GPU offload, chosen as llama.cpp's tools choose,
and the llama.cpp environment variables that change a default for every host at once."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Optional

import psutil


@lru_cache(maxsize=None)
def physical_cores() -> int:
    """Physical CPU cores (hyper-threads share a core's arithmetic units, so llama.cpp's tools
    run one thread per core), scaled to the CPUs this process may use (psutil)."""
    usable = _usable_cpus()
    logical = psutil.cpu_count(logical=True) or usable
    cores = psutil.cpu_count(logical=False) or logical
    return max(1, min(usable, round(usable * cores / logical)))


def default_threads() -> int:
    return physical_cores()


# llama.cpp's tools read these (llama-server, llama-cli: common/arg.cpp); loopcpp's Model and
# Context read them too where the caller leaves the choice open, so that one setting reaches the
# library, the CLI and `loopcpp serve` alike (e.g. the tests' second numerics path: .ci/run).
_TRUE, _FALSE = ("on", "enabled", "true", "1"), ("off", "disabled", "false", "0")


def _env_switch(name: str, allow_auto: bool) -> Optional[bool]:
    value = os.environ.get(name, "").strip().lower()
    if not value or (allow_auto and value == "auto"):
        return None
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    choices = "on, off" + (" or auto" if allow_auto else "")
    raise ValueError(f"{name}={os.environ[name]!r} must be {choices} (as for llama.cpp's tools)")


def default_flash_attn() -> Optional[bool]:
    """LLAMA_ARG_FLASH_ATTN (on / off / auto), else None: llama.cpp decides (auto)."""
    return _env_switch("LLAMA_ARG_FLASH_ATTN", allow_auto=True)


def default_repack() -> bool:
    """LLAMA_ARG_REPACK (on / off), else on: weights in the CPU's repacked layout."""
    choice = _env_switch("LLAMA_ARG_REPACK", allow_auto=False)
    return True if choice is None else choice


def _usable_cpus() -> int:
    try:
        return max(1, len(psutil.Process().cpu_affinity() or ()))
    except (AttributeError, psutil.Error):  # macOS has no CPU affinity
        return max(1, psutil.cpu_count(logical=True) or 1)


def rss_bytes(pid: Optional[int] = None) -> int:
    """Resident memory of a process (default: this one)."""
    return int(psutil.Process(pid).memory_info().rss)


def gpu_offload_supported() -> bool:
    """Whether a local GPU backend has a device (llama_supports_gpu_offload also says yes for a
    build that merely has the RPC backend, with no server anywhere)."""
    from ._internals import _DEV_GPU, _DEV_IGPU, _is_rpc
    from ._lib import lib

    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if lib.ggml_backend_dev_type(dev) in (_DEV_GPU, _DEV_IGPU) and not _is_rpc(dev):
            return True
    return False


def default_gpu_layers() -> int:
    """All layers (-1) on a build whose backend can offload (CUDA, Metal, ...), else 0."""
    return -1 if gpu_offload_supported() else 0
