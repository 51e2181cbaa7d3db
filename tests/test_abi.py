"""The cffi declarations match the real headers field for field (sizes and offsets), so the
ABI-mode bindings read and write the structs exactly as the library does."""

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
