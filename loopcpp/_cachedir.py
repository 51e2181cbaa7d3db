"""loopcpp's cache directory (models, evaluation data, the llama.cpp sdist), decided here only.

The CMake build runs this file as a script (`python loopcpp/_cachedir.py` prints the directory),
so the build and the package always agree. Standard library only: it must run before anything
is built.

    LOOPCPP_CACHE_DIR if set, else the platform's user cache directory + "loopcpp":
    Linux and other Unix: $XDG_CACHE_HOME or ~/.cache; macOS: ~/Library/Caches;
    Windows: %LOCALAPPDATA%.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Optional


def cache_dir() -> Path:
    if os.environ.get("LOOPCPP_CACHE_DIR"):
        return Path(os.environ["LOOPCPP_CACHE_DIR"])
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "loopcpp"


def pip_command() -> Optional[list[str]]:
    """How to run pip: this interpreter's own, else any pip on PATH (a venv made by uv has none
    of its own; `pip download` does not depend on the environment it runs in). None if no pip."""
    import importlib.util

    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


NO_PIP = ("no pip found: this Python has no pip module and there is no pip on PATH; install one "
          "(`python -m ensurepip`, or `uv pip install pip` in a uv venv) or put pip on PATH")


if __name__ == "__main__":
    if sys.argv[1:] == ["pip"]:  # the build asks how to run pip: one argument per line
        cmd = pip_command()
        if cmd is None:
            sys.exit(NO_PIP)
        print("\n".join(cmd))
    else:
        print(cache_dir())
