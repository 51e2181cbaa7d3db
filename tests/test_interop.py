"""llama-cpp-python 0.3.36 (same llama.cpp, same ABI) runs on loopcpp's libllama unchanged and
loops through LOOPCPP_LOOP with no code change, giving exactly loopcpp's own logits.

llama-cpp-python's Python package is taken from the sdist the build cached (its pure-Python
ctypes bindings; no second native build), and runs in a subprocess pointed at our library with
LLAMA_CPP_LIB_PATH.
"""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

import loopcpp
from loopcpp import catalog

SDIST = "llama_cpp_python-0.3.36"
PROMPT = [5, 9, 17, 33, 65, 129, 7, 3]

SCRIPT = r"""
import json, sys, numpy as np, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=128, logits_all=True, flash_attn=False, verbose=False)
llm.eval(json.loads(sys.argv[2]))
print(json.dumps(np.asarray(llm.scores[: llm.n_tokens]).tolist()))
"""


@pytest.fixture(scope="module")
def llama_cpp_python(tmp_path_factory):
    sdist = catalog.cache_dir() / f"{SDIST}.tar.gz"
    if not sdist.exists():
        pytest.skip(f"{sdist} is not cached (an offline build used LOOPCPP_LLAMA_SOURCE)")
    pytest.importorskip("jinja2")
    pytest.importorskip("diskcache")
    d = tmp_path_factory.mktemp("llama_cpp_python")
    with tarfile.open(sdist) as tf:
        members = [m for m in tf.getmembers() if m.name.startswith(f"{SDIST}/llama_cpp/")]
        tf.extractall(d, members=members)
    return d / SDIST


def run_llama_cpp_python(pkg_dir, model_path, loop):
    env = {**os.environ, "PYTHONPATH": str(pkg_dir),
           "LLAMA_CPP_LIB_PATH": loopcpp.llama_cpp_lib_path()}
    env.pop("LOOPCPP_LOOP", None)
    if loop:
        env["LOOPCPP_LOOP"] = loop
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(model_path), json.dumps(PROMPT)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return np.array(json.loads(r.stdout), dtype=np.float32)


def test_llama_cpp_python_loops_through_the_environment(llama_cpp_python, tiny_paths, tiny_models):
    spec = "2:4x3,layer,euler"
    theirs = run_llama_cpp_python(llama_cpp_python, tiny_paths["qwen3"], spec)
    with tiny_models["qwen3"].context(n_ctx=128, flash_attn=False, loop=spec) as ctx:
        ours = ctx.eval(PROMPT, logits="all")
        ctx.set_loop("off")
        unlooped = ctx.eval(PROMPT, logits="all")
    assert np.array_equal(theirs, ours)
    assert np.abs(theirs - unlooped).max() > 1e-2


def test_llama_cpp_python_without_a_loop_is_the_stock_model(llama_cpp_python, tiny_paths, tiny_models):
    theirs = run_llama_cpp_python(llama_cpp_python, tiny_paths["llama"], None)
    with tiny_models["llama"].context(n_ctx=128, flash_attn=False) as ctx:
        assert np.array_equal(theirs, ctx.eval(PROMPT, logits="all"))
