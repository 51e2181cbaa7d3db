"""Shared fixtures: tiny random-weight models of every architecture, and the real SmolLM2 model."""

from __future__ import annotations

import re

import numpy as np
import pytest

import loopcpp
from loopcpp import _lib

import reference
import tinymodels

def pytest_report_header(config):
    """What this run covered: the CPU's instruction sets and the ggml CPU paths compiled in."""
    wanted = ("amx_tile", "amx_int8", "amx_bf16", "avx512f", "avx512_vnni", "avx512_bf16", "avx2", "avx_vnni")
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l.split(":", 1)[1].split() for l in f if l.startswith("flags")), [])
        cpu = " ".join(w for w in wanted if w in flags) or "none of " + " ".join(wanted)
    except OSError:
        cpu = "unknown (no /proc/cpuinfo)"
    ggml = _lib.ffi.string(_lib.lib.llama_print_system_info()).decode().strip()
    return [f"cpu flags: {cpu}", f"ggml: {ggml}"]


# Exact comparisons run with an F32 KV cache and flash attention off (see docs/looping.md).
EXACT = dict(type_k="f32", type_v="f32", flash_attn=False)


@pytest.fixture(scope="session")
def tiny_paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return {a: tinymodels.write(tinymodels.TinySpec(a), d / f"tiny-{a}.gguf") for a in tinymodels.ARCHS}


@pytest.fixture(scope="session")
def tiny_models(tiny_paths):
    models = {a: loopcpp.Model(p) for a, p in tiny_paths.items()}
    yield models
    for m in models.values():
        m.close()


@pytest.fixture(scope="session")
def references(tiny_paths):
    return {a: reference.Model(p) for a, p in tiny_paths.items()}


@pytest.fixture(scope="session")
def smollm2_path():
    from loopcpp import catalog

    return catalog.fetch("smollm2-135m", progress=False)


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    with loopcpp.Model(smollm2_path) as m:
        yield m


def rel_err(got, want) -> float:
    """Max abs difference relative to the logits' scale (at least 1)."""
    return float(np.abs(np.asarray(got, np.float64) - want).max() / max(1.0, np.abs(want).max()))


def cancel_in_ubatch(ctx, n):
    """Makes ctx cancel itself while it computes its n-th ubatch (counted from 1) of the next
    evaluation: an event in the graph, not a timer, so the verdict does not depend on speed. The
    context must capture "l_out-0" (layer 0's output, computed once per ubatch); its store
    calls cancel() as the n-th copy arrives, from the thread running the graph. Once."""
    class Store(dict):
        armed = True

        def setdefault(self, name, default=None):
            got = super().setdefault(name, default)
            if self.armed and name == "l_out-0" and len(got) == n - 1:
                self.armed = False
                ctx.cancel()
            return got

    ctx._tap.captured = Store()


def graph_nodes_logged() -> int:
    """The prompt graph node count llama.cpp logged at its last scheduler reserve
    ("graph: nodes = N, ..." or "graph (pp bs=.., tg bs=..): nodes = PP / TG, ...")."""
    for line in reversed(list(_lib.log.lines)):
        m = re.search(r"graph[^:]*: nodes\s*=\s*(\d+)", line)
        if m:
            return int(m.group(1))
    raise AssertionError("llama.cpp logged no graph node count")


@pytest.fixture(autouse=True)
def _no_loop_from_environment(monkeypatch):
    """Tests choose their loops explicitly; a LOOPCPP_LOOP in the caller's shell must not leak in."""
    monkeypatch.delenv("LOOPCPP_LOOP", raising=False)
