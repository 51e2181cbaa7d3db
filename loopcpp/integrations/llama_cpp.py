"""llama-cpp-python 0.3.36 on loopcpp's libllama.

    import os, loopcpp
    os.environ["LLAMA_CPP_LIB_PATH"] = loopcpp.llama_cpp_lib_path()   # before importing llama_cpp
    import llama_cpp
    from loopcpp.integrations.llama_cpp import set_loop

    llm = llama_cpp.Llama("model.gguf")
    set_loop(llm, "auto")            # or "15:18x3,layer", "off"
    llm.create_chat_completion(messages=[{"role": "user", "content": "hi"}])

Install llama-cpp-python without building a second llama.cpp:
CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" pip install 'loopcpp[interop]'
(loopcpp's own build ignores those two switches).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from .._lib import ffi, lib, last_loop_error
from .._paths import library_path
from ..errors import LibraryError, LoopConfigError
from ..loop import LoopConfig, as_loop_config


def _their_library() -> Path:
    import llama_cpp.llama_cpp as bindings

    lib_handle = getattr(bindings, "_lib", None)
    name = getattr(lib_handle, "_name", None)
    if not name:
        raise LibraryError("cannot tell which libllama llama_cpp loaded (not llama-cpp-python 0.3.36?)")
    return Path(name)


def check_library() -> None:
    """Raises LibraryError unless llama_cpp runs on loopcpp's libllama (the loop API lives there)."""
    theirs, ours = _their_library(), library_path()
    if not (theirs.exists() and os.path.samefile(theirs, ours)):
        raise LibraryError(
            f"llama_cpp was imported with {theirs}, not loopcpp's {ours}: set "
            "LLAMA_CPP_LIB_PATH=loopcpp.llama_cpp_lib_path() before the first `import llama_cpp`")


def _ctx_pointer(llm):
    ctx = getattr(getattr(llm, "_ctx", None), "ctx", None)
    if ctx is None:
        raise ValueError("llm is not a loaded llama_cpp.Llama (no context)")
    address = ctypes.cast(ctx, ctypes.c_void_p).value
    return ffi.cast("struct llama_context *", address)


def set_loop(llm, spec) -> LoopConfig:
    """Sets the loop of a llama_cpp.Llama (a spec string, a LoopConfig, or "off"), and empties its
    cached prefix so the next call is evaluated under the new loop. Returns the active loop."""
    check_library()
    cfg = as_loop_config(spec) or LoopConfig.off()
    ctx = _ctx_pointer(llm)
    if lib.llama_loop_set(ctx, cfg.to_c()) != 0:
        raise LoopConfigError(last_loop_error())
    llm.reset()  # n_tokens = 0: the next eval starts from position 0 and overwrites the cache
    if getattr(llm, "cache", None) is not None:
        llm.set_cache(None)  # a prompt cache would restore states computed under the old loop
    return get_loop(llm)


def get_loop(llm) -> LoopConfig:
    """The loop active on a llama_cpp.Llama."""
    check_library()
    p = ffi.new("struct llama_loop_params *")
    lib.llama_loop_get(_ctx_pointer(llm), p)
    return LoopConfig.from_c(p[0])
