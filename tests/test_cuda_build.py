"""The CUDA build compiles from the same sources, checked on a machine without a GPU or a CUDA
toolkit: benchmarks/cuda_compile_check.sh takes nvcc, the runtime and cuBLAS from NVIDIA's PyPI
wheels and compiles the CUDA backend's host code, two kernels, and the patched llama.cpp and
loopcpp sources with CUDA on. Not run by default (a 530 MB download): `pytest -m cuda_build`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from loopcpp._cachedir import cache_dir

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.cuda_build


def test_the_cuda_backend_and_the_patched_sources_compile_for_sm90(tmp_path):
    if not shutil.which("ninja") or not shutil.which("cmake"):
        pytest.skip("needs cmake and ninja")
    toolkit = cache_dir() / "cuda-13.0.88"  # kept between runs
    build = tmp_path / "build"
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "cuda_compile_check.sh"), str(ROOT), str(toolkit), str(build)],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    objects = ["ggml-cuda.cu.o", "acc.cu.o", "norm.cu.o", "llama-graph.cpp.o", "llama-loop-graph.cpp.o"]
    for name in objects:
        found = list(build.rglob(name))
        assert found and found[0].stat().st_size > 0, name
    for name in objects[:3]:  # device code for sm_90 inside
        sections = subprocess.run(["objdump", "-h", str(next(build.rglob(name)))], capture_output=True, text=True).stdout
        assert ".nv_fatbin" in sections, name
    assert int(r.stdout.strip().rsplit(" ", 1)[-1]) > 100  # every kernel of the backend is a target
