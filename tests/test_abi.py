"""The cffi declarations match the real headers field for field (sizes and offsets), so the
ABI-mode bindings read and write the structs exactly as the library does."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import loopcpp
from loopcpp._cdefs import CHECKED_STRUCTS
from loopcpp._lib import ffi

INCLUDE = loopcpp.include_dir()


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None or not (INCLUDE / "llama-loop.h").exists():
        pytest.skip("needs a C compiler and the installed headers")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "llama-loop.h"', "int main(void) {"]
    for name in CHECKED_STRUCTS:
        lines.append(f'printf("{name} size %zu\\n", sizeof(struct {name}));')
        for field, _ in ffi.typeof(f"struct {name}").fields:
            lines.append(f'printf("{name} {field} %zu\\n", offsetof(struct {name}, {field}));')
    lines += ["return 0; }"]
    d = tmp_path_factory.mktemp("abi")
    (d / "layout.c").write_text("\n".join(lines))
    subprocess.run([cc, "-I", str(INCLUDE), str(d / "layout.c"), "-o", str(d / "layout")], check=True)
    out = subprocess.run([str(d / "layout")], check=True, capture_output=True, text=True).stdout
    return {tuple(line.split()[:2]): int(line.split()[2]) for line in out.splitlines()}


@pytest.mark.parametrize("name", CHECKED_STRUCTS)
def test_struct_layout_matches_the_headers(name, c_layout):
    assert ffi.sizeof(f"struct {name}") == c_layout[(name, "size")]
    for field, _ in ffi.typeof(f"struct {name}").fields:
        assert ffi.offsetof(f"struct {name}", field) == c_layout[(name, field)], field


def test_library_reports_the_pinned_versions():
    from loopcpp._lib import LLAMA_COMMIT, lib

    assert ffi.string(lib.llama_loop_version()).decode() == loopcpp.__version__
    assert ffi.string(lib.llama_loop_llama_commit()).decode() == LLAMA_COMMIT


def test_mismatched_library_is_refused(monkeypatch):
    """A library from another loopcpp version raises LibraryError instead of running."""
    import loopcpp._lib as L

    monkeypatch.setattr(L, "__version__", "9.9.9")
    with pytest.raises(loopcpp.LibraryError, match="reinstall loopcpp"):
        L._open()


def run_python(code: str, *args: str):
    import sys

    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/self/maps")
def test_importing_loads_no_native_library():
    """Importing the package and its tools maps no libllama and sets no log callback; the first
    native call loads it."""
    r = run_python("import loopcpp, loopcpp.cli, loopcpp.evals, loopcpp.serve, loopcpp.bench, loopcpp.catalog\n"
                   "print('libllama' in open('/proc/self/maps').read())\n"
                   "loopcpp.Model.__init__  # nothing native yet\n"
                   "from loopcpp._lib import lib\n"
                   "lib.llama_loop_api_version()\n"
                   "print('libllama' in open('/proc/self/maps').read())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True"]


def test_init_can_leave_llama_cpps_log_on_stderr(tiny_paths):
    code = "import sys, loopcpp\nif sys.argv[2] == 'stderr': loopcpp.init(capture_log=False)\nloopcpp.Model(sys.argv[1])"
    routed = run_python(code, str(tiny_paths["llama"]), "logger")
    raw = run_python(code, str(tiny_paths["llama"]), "stderr")
    assert routed.returncode == raw.returncode == 0, routed.stderr + raw.stderr
    assert "llama_model_loader" not in routed.stderr  # into the `loopcpp` logger, which prints nothing
    assert "llama_model_loader" in raw.stderr
