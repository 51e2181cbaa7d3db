"""Loop off against an unmodified llama.cpp: `loopcpp bench --stock`.

The unmodified library is built once from the same pinned sources (the llama-cpp-python sdist the
build uses) and cached. It carries ggml-fixes.patch only: the ggml fixes without which the pinned
ggml crashes on some CPUs (AMX), and its CPU buffers' 64-byte alignment (a speed fix, so that
both builds align alike); none of them touches llama.cpp's graphs. Both libraries are
measured by the same code, in child processes that take turns round after round, through the
plain llama.h API (the stock library has no loop API, so the loopcpp package cannot load it).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Optional

from tqdm import tqdm

from . import _cachedir
from ._paths import LLAMA_COMMIT, lib_dir, package_file, shared_library_name
from .bench import run_stats
from .errors import LibraryError

# the pin, as in CMakeLists.txt (tests/test_bench.py checks that they agree)
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
LIBRARY = shared_library_name("llama")


def sdist_path() -> Path:
    """The pinned sdist, verified; downloaded with pip into the cache when missing."""
    path = _cachedir.cache_dir() / SDIST
    if not path.exists():
        pip = _cachedir.pip_command()
        if pip is None:
            raise LibraryError(_cachedir.NO_PIP)
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run(pip + ["download", "--no-deps", "--no-binary", "llama-cpp-python",
                                      f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", tmp],
                               capture_output=True, text=True)
            if r.returncode != 0 or not (Path(tmp) / SDIST).exists():
                raise LibraryError(f"could not download the llama-cpp-python sdist with pip: {r.stderr[-800:]}")
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(Path(tmp) / SDIST), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise LibraryError(f"{path} has sha256 {digest}, expected {SDIST_SHA256}: delete it and run again")
    return path


def build_flags() -> list[str]:
    """CMake arguments of the stock build: what the package build gets from CMAKE_ARGS, without
    loopcpp's own parts (llama-server, tools)."""
    return ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
            "-DLLAMA_BUILD_COMMON=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_OPENSSL=OFF",
            # one flat directory of unversioned libraries that find each other beside themselves
            "-DCMAKE_PLATFORM_NO_VERSIONED_SONAME=ON", "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
            "-DCMAKE_INSTALL_RPATH=" + ("@loader_path" if sys.platform == "darwin" else "$ORIGIN"),
            *shlex.split(os.environ.get("CMAKE_ARGS", ""))]


def stock_dir() -> Path:
    """Where the stock build of these sources, this patch and these flags is cached."""
    patch = package_file("ggml-fixes.patch").read_bytes()
    key = hashlib.sha256(b"\0".join([SDIST_SHA256.encode(), patch, " ".join(build_flags()).encode(),
                                     platform.machine().encode()])).hexdigest()[:12]
    return _cachedir.cache_dir() / f"stock-llama.cpp-{LLAMA_COMMIT}-{key}"


def build_stock(progress: bool = True) -> Path:
    """The directory holding the stock libllama, built on first use (minutes) and cached."""
    root = stock_dir()
    lib = root / "lib"
    if (lib / LIBRARY).exists():
        return lib
    for tool in ("cmake",):
        if shutil.which(tool) is None:
            raise LibraryError(f"building the unmodified llama.cpp needs {tool} on PATH (and a C++ compiler)")
    src, build = root / "src", root / "build"
    shutil.rmtree(root, ignore_errors=True)
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    with tarfile.open(sdist_path()) as tar:
        # (not the submodule's .git file: it points into a repository the sdist does not have)
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isreg()
                   and m.name[len(prefix):].split("/")[0] != ".git"]
        for m in members:
            m.name = m.name[len(prefix):]
        tar.extractall(src, members=members, filter="data")
    _apply_patch(src, package_file("ggml-fixes.patch"))
    steps = [["cmake", "-S", str(src), "-B", str(build), "-G", "Ninja" if shutil.which("ninja") else "Unix Makefiles",
              *build_flags()],
             ["cmake", "--build", str(build), "--target", "llama", "--parallel", str(os.cpu_count() or 2)]]
    log = root / "build.log"
    with open(log, "w") as f:
        for cmd in tqdm(steps, desc="building the unmodified llama.cpp (once)", disable=not progress,
                        file=sys.stderr):
            f.write("$ " + shlex.join(cmd) + "\n")
            f.flush()
            if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode != 0:
                raise LibraryError(f"the unmodified llama.cpp did not build; see {log}")
    lib.mkdir()
    for path in build.rglob("*"):
        if path.is_file() and path.name.startswith(("libllama", "libggml", "llama.", "ggml")) and \
                path.suffix in (".so", ".dylib", ".dll"):
            shutil.copy2(path, lib / path.name)
    if not (lib / LIBRARY).exists():
        raise LibraryError(f"the unmodified build left no {LIBRARY} in {build}")
    shutil.rmtree(src)
    shutil.rmtree(build)
    return lib


def _apply_patch(tree: Path, patch: Path) -> None:
    if shutil.which("git"):
        cmd = ["git", "apply", "--whitespace=nowarn", str(patch)]
    elif shutil.which("patch"):
        cmd = ["patch", "-p1", "--forward", "--batch", "-i", str(patch)]
    else:
        raise LibraryError("applying ggml-fixes.patch needs git or patch on PATH")
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tree.parent)}
    r = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise LibraryError(f"{patch.name} does not apply to the stock tree: {r.stderr[-800:]}")


def measure_child(lib_path: Path, model: Path, n_prompt: int, n_gen: int, threads: Optional[int]) -> dict:
    """One pp + tg measurement of `lib_path`'s libllama, in a child process."""
    cmd = [sys.executable, str(Path(__file__).with_name("_stock_child.py")), str(lib_path / LIBRARY), str(model),
           str(n_prompt), str(n_gen), str(threads or 0)]
    env = {k: v for k, v in os.environ.items() if k != "LOOPCPP_LOOP"}
    env["LOOPCPP_LOOP"] = ""  # loopcpp's build: no loop, whatever the model's metadata says
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise LibraryError(f"measuring {lib_path} failed (exit {r.returncode}): {r.stderr[-1500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def compare_with_stock(model: Path, n_prompt: int = 512, n_gen: int = 128, repetitions: int = 5,
                       threads: Optional[int] = None, progress: bool = True) -> dict:
    """loopcpp's library with no loop against the stock build, interleaved round after round."""
    from .system import default_threads

    threads = threads or default_threads()
    builds = {"loopcpp, loop off": lib_dir(), "unmodified llama.cpp": build_stock(progress)}
    runs: dict[str, list[dict]] = {name: [] for name in builds}
    for _, name in tqdm([(r, n) for r in range(repetitions) for n in builds], desc="bench --stock", unit="run",
                        disable=not progress, file=sys.stderr):
        runs[name].append(measure_child(builds[name], model, n_prompt, n_gen, threads))
    rows = []
    for name, rs in runs.items():
        row: dict[str, Any] = {"build": name, "lib": str(builds[name])}
        for kind in ("pp", "tg"):
            row.update(run_stats(kind, [r[f"{kind}_tps"] for r in rs if r.get(f"{kind}_tps")]))
        rows.append(row)
    for row in rows:
        for kind in ("pp", "tg"):
            if f"{kind}_tps" in row:
                row[f"{kind}_speed_ratio"] = row[f"{kind}_tps"] / rows[1][f"{kind}_tps"]  # against stock
    return {"config": {"model": str(model), "n_prompt": n_prompt, "n_gen": n_gen, "repetitions": repetitions,
                       "n_threads": threads}, "rows": rows}


def format_table(result: dict) -> str:
    c = result["config"]
    lines = [f"model: {c['model']}, threads {c['n_threads']}, pp{c['n_prompt']} tg{c['n_gen']}, "
             f"median (min-max) of {c['repetitions']} interleaved rounds, each in a fresh process"]
    w = max(len(r["build"]) for r in result["rows"])
    lines.append(f"{'build':<{w}}  {'pp t/s':>22} {'vs stock':>8}  {'tg t/s':>22} {'vs stock':>8}")
    for r in result["rows"]:
        cells = []
        for kind in ("pp", "tg"):
            if f"{kind}_tps" in r:
                cells += [f"{r[f'{kind}_tps']:.1f} ({r[f'{kind}_min']:.1f}-{r[f'{kind}_max']:.1f})",
                          f"{r[f'{kind}_speed_ratio']:.3f}"]
            else:
                cells += ["-", "-"]
        lines.append(f"{r['build']:<{w}}  {cells[0]:>22} {cells[1]:>8}  {cells[2]:>22} {cells[3]:>8}")
    return "\n".join(lines)
