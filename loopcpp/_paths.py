"""Where the built parts of loopcpp live: the native library, its headers, the model catalog.

A regular install puts them inside the package directory. An editable install (`pip install -e .`)
keeps the Python files in the source tree and puts the built parts in site-packages; both
directories are on the package's __path__, so each part is looked up along it. Python started in
a source checkout with a regular install imports the source tree's package, which has no built
parts: they are then taken from the installed distribution.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

from .errors import LibraryError

# the llama.cpp commit loopcpp is built on (CMakeLists.txt's LOOPCPP_LLAMA_COMMIT; the library
# reports its own, and _lib refuses one that differs)
LLAMA_COMMIT = "0c1e57098"


def shared_library_name(stem: str) -> str:
    """A shared library's file name on this platform: llama -> libllama.so / libllama.dylib / llama.dll."""
    return {"darwin": f"lib{stem}.dylib", "win32": f"{stem}.dll"}.get(sys.platform, f"lib{stem}.so")


def package_file(name: str) -> Path:
    """The first `name` found along the package's __path__ (an installed build part)."""
    package = sys.modules[__package__]
    for directory in package.__path__:
        path = Path(directory) / name
        if path.exists():
            return path
    try:
        path = Path(str(importlib.metadata.distribution(__package__).locate_file(f"{__package__}/{name}")))
        if path.exists():
            return path
    except importlib.metadata.PackageNotFoundError:
        pass
    raise LibraryError(
        f"loopcpp's built '{name}' is missing: install loopcpp with `pip install .` or "
        "`pip install -e .` (that builds llama.cpp)"
    )


def lib_dir() -> Path:
    """The directory holding libllama and ggml: LOOPCPP_LIB_PATH, else the installed build."""
    if os.environ.get("LOOPCPP_LIB_PATH"):
        return Path(os.environ["LOOPCPP_LIB_PATH"])
    return package_file("lib")


def library_path() -> Path:
    path = lib_dir() / shared_library_name("llama")
    if not path.exists():
        raise LibraryError(
            f"native library {path} not found: reinstall loopcpp with `pip install .` "
            "(it builds llama.cpp), or point LOOPCPP_LIB_PATH at the directory that holds it"
        )
    return path


def include_dir() -> Path:
    """The headers for C/C++ programs that embed this libllama (llama.h, llama-loop.h, ggml)."""
    return package_file("include")


def catalog_file() -> Path:
    return package_file("catalog.json")
