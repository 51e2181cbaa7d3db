"""llama-cpp-python 0.3.36 (same llama.cpp, same ABI) runs on loopcpp's libllama unchanged and
loops through LOOPCPP_LOOP with no code change, giving exactly loopcpp's own logits.

llama-cpp-python is installed from the sdist the build cached, with its native build turned off
(its pure-Python ctypes bindings only), and runs in a subprocess pointed at our library with
LLAMA_CPP_LIB_PATH.
"""

import json
import os
import shutil
import subprocess
import sys
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
    """llama-cpp-python 0.3.36 installed as README.md says, without a second native llama.cpp
    (CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF"), from the sdist the build cached."""
    sdist = catalog.cache_dir() / f"{SDIST}.tar.gz"
    if not sdist.exists():
        pytest.skip(f"{sdist} is not cached (an offline build used LOOPCPP_LLAMA_SOURCE)")
    pytest.importorskip("jinja2")
    pytest.importorskip("diskcache")
    d = tmp_path_factory.mktemp("llama_cpp_python")
    env = {**os.environ, "CMAKE_ARGS": "-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF"}
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(d), str(sdist)],
                       capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"pip could not build llama-cpp-python's package (offline?): {r.stderr[-500:]}")
    assert not list(d.glob("llama_cpp/lib/*llama*")), "a second libllama was built"
    return d


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


INTEGRATION = r"""
import json, sys, numpy as np, loopcpp
import llama_cpp
from loopcpp.integrations.llama_cpp import get_loop, set_loop
llm = llama_cpp.Llama(sys.argv[1], n_ctx=256, logits_all=True, flash_attn=False, verbose=False)
llm.eval(json.loads(sys.argv[2]))          # a cached prefix that set_loop must drop
print(json.dumps({"set": str(set_loop(llm, sys.argv[3])), "get": str(get_loop(llm))}))
llm.eval(json.loads(sys.argv[2]))
print(json.dumps(np.asarray(llm.scores[: llm.n_tokens]).tolist()))
reply = llm.create_chat_completion(messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0)
print(json.dumps(reply["choices"][0]["message"]["content"]))
"""


def test_set_loop_on_a_llama_cpp_llama(llama_cpp_python, tiny_paths, tiny_models):
    """loopcpp.integrations.llama_cpp.set_loop on a llama_cpp.Llama: its logits are loopcpp's for
    the same model, prompt and spec, and create_chat_completion runs looped."""
    spec = "2:4x3,block,rk,beta=0.3,kv=last"
    env = {**os.environ, "PYTHONPATH": f"{llama_cpp_python}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "LLAMA_CPP_LIB_PATH": loopcpp.llama_cpp_lib_path()}
    env.pop("LOOPCPP_LOOP", None)
    r = subprocess.run([sys.executable, "-c", INTEGRATION, str(tiny_paths["llama"]), json.dumps(PROMPT), spec],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    loops, scores, reply = r.stdout.strip().splitlines()
    assert json.loads(loops) == {"set": spec + ",decode=bypass", "get": spec + ",decode=bypass"}
    with tiny_models["llama"].context(n_ctx=256, flash_attn=False, loop=spec) as ctx:
        ours = ctx.eval(PROMPT, logits="all")
    assert np.array_equal(np.array(json.loads(scores), dtype=np.float32), ours)
    assert isinstance(json.loads(reply), str)


def test_set_loop_refuses_a_llama_cpp_on_another_library(llama_cpp_python, tiny_paths, tmp_path):
    other = tmp_path / "lib"
    shutil.copytree(loopcpp.llama_cpp_lib_path(), other)  # the same build, but another file
    env = {**os.environ, "PYTHONPATH": str(llama_cpp_python), "LLAMA_CPP_LIB_PATH": str(other)}
    code = ("import sys, llama_cpp, loopcpp\n"
            "from loopcpp.integrations.llama_cpp import set_loop\n"
            "llm = llama_cpp.Llama(sys.argv[1], n_ctx=64, verbose=False)\n"
            "try:\n    set_loop(llm, 'auto')\nexcept loopcpp.LibraryError as e:\n    print('ERROR', e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_paths["llama"])], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ERROR llama_cpp was imported with" in r.stdout and "LLAMA_CPP_LIB_PATH" in r.stdout
