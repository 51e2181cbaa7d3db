"""The loop C API from C, as a desktop application embedding libllama uses it (tests/c/loop_api.c
compiled against the installed headers and libraries)."""

import shutil
import subprocess
from pathlib import Path

import pytest

import loopcpp


@pytest.fixture(scope="module")
def loop_api_exe(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("needs a C compiler")
    exe = tmp_path_factory.mktemp("capi") / "loop_api"
    src = Path(__file__).parent / "c" / "loop_api.c"
    lib = loopcpp.lib_dir()
    subprocess.run([cc, str(src), "-I", str(loopcpp.include_dir()), "-L", str(lib), "-lllama", "-lggml-base",
                    f"-Wl,-rpath,{lib}", "-o", str(exe)], check=True)
    return exe


def test_c_api_validates_sets_and_loops(loop_api_exe, tiny_paths):
    r = subprocess.run([str(loop_api_exe), str(tiny_paths["llama"])], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "0 failed" in r.stdout
