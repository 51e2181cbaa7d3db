"""`loopcpp bench` and `--stock`: the expected-cost model on hand-computed cases and against the
evaluations the graph really runs, the measurement on a tiny model, and the unmodified build."""

import json
import re
from pathlib import Path

import gguf
import numpy as np
import pytest

import loopcpp
from loopcpp import bench, stock
from loopcpp.loop import LoopConfig
from test_cli import loopcpp as run_cli

FLAT = bench.LayerCosts(layer=(1.0,) * 4, kv=(0.25,) * 4, head=0.0)


@pytest.mark.parametrize("spec,want", [
    ("1:2x3,block,kv=first", (1 + 3 + 3 + 1) / 4),
    ("1:2x3,block,kv=last", (1 + 4 + 3.25 + 1) / 4),          # stash: layer 1 again, layer 2's K/V only
    ("1:3x2,layer,kv=first", (1 + 2 + 3 + 2.25) / 4),        # shadow: layer 2 again, layer 3's K/V only
    ("1:3x2,layer,kv=last", (1 + 3 + 3 + 2.25) / 4),
    ("1:1x5,layer,kv=first", (1 + 5 + 1 + 1) / 4),           # one layer: no shadow
    ("1:2x1", 1.0),
])
def test_expected_ratio_counts_layer_evaluations(spec, want):
    assert bench.expected_time_ratio(LoopConfig.parse(spec), FLAT, n_tokens=8, n_outputs=1) == pytest.approx(want)


def test_expected_ratio_weighs_the_head_and_attention():
    costs = bench.LayerCosts(layer=(1.0,) * 4, kv=(0.0,) * 4, head=4.0, q_width=1)
    cfg = LoopConfig.parse("0:0x3,kv=first")
    # one row with logits: layers 4 -> 6, plus a head of 4: (6 + 4) / (4 + 4)
    assert bench.expected_time_ratio(cfg, costs, 1, 1) == pytest.approx(10 / 8)
    # attention over 2 cached positions costs 2 x q_width x 2 = 4 per layer evaluation
    assert bench.expected_time_ratio(cfg, costs, 1, 0, n_kv=2) == pytest.approx((6 * 5) / (4 * 5))
    assert bench.decode_loops(LoopConfig.parse("0:0x3,decode=first:5"), 128) == 5
    assert bench.decode_loops(LoopConfig.parse("0:0x3"), 128) == 0
    assert bench.decode_loops(LoopConfig.parse("0:0x3,decode=full"), 7) == 7


@pytest.mark.parametrize("spec", ["1:3x3,block,kv=first", "1:3x3,block,kv=last", "1:4x2,layer,kv=first",
                                  "1:4x2,layer,kv=last", "2:2x4,layer,kv=last"])
def test_the_counted_evaluations_are_the_ones_the_graph_runs(tiny_models, spec):
    model = tiny_models["llama"]
    names = [f"ffn_out-{il}" for il in range(model.n_layer)]
    with model.context(n_ctx=64, flash_attn=False, capture=names, loop=spec) as ctx:
        ctx.eval(list(range(5, 21)))
        ran = [len(ctx.captured.get(n, [])) for n in names]
        runs, kv_only = bench.window_evaluations(ctx.loop, model.n_layer)
    assert ran == runs  # kv-only evaluations run no FFN
    assert sum(kv_only) == (0 if spec.endswith("block,kv=first") or spec.startswith("2:2x4,layer,kv=first") else 1)


def test_layer_costs_read_the_tensor_shapes(tiny_paths):
    path = tiny_paths["llama"]
    costs = bench.layer_costs(path)
    r = gguf.GGUFReader(str(path))
    sizes = {t.name: int(t.n_elements) for t in r.tensors}
    n_layer = len(costs.layer)
    assert costs.layer[0] == sum(v for k, v in sizes.items() if k.startswith("blk.0."))
    assert costs.kv[0] == sizes["blk.0.attn_k.weight"] + sizes["blk.0.attn_v.weight"]
    assert costs.head == sizes.get("output.weight", sizes["token_embd.weight"])
    assert n_layer == int(r.get_field("llama.block_count").contents()) and costs.q_width > 0


def test_bench_measures_each_loop_against_the_unlooped_model(tiny_models):
    model = tiny_models["llama"]
    out = bench.run(model, ["1:3x3", "1:3x3,kv=last,decode=full"], n_prompt=24, n_gen=4, repetitions=2,
                    n_threads=1, progress=False)
    rows = out["rows"]
    assert [r["spec"] for r in rows] == ["off", "1:3x3", "1:3x3,kv=last,decode=full"]
    off, looped, full = rows
    assert off["pp_time_ratio"] == 1.0 and off["expected_pp"] == 1.0
    assert len(looped["pp_runs"]) == 2 and all(v > 0 for v in looped["pp_runs"] + looped["tg_runs"])
    assert looped["expected_pp"] > 1.0 and looped["expected_tg"] == 1.0  # bypass: decode steps unlooped
    assert full["expected_tg"] > 1.0 and full["expected_pp"] > looped["expected_pp"]  # kv=last stashes
    # the cache never grows with a loop; the graph does, for the looped steps only
    assert len({r["memory"]["kv"] for r in rows}) == 1
    assert off["nodes_pp"] < looped["nodes_pp"] < full["nodes_pp"]
    assert looped["nodes_tg"] == off["nodes_tg"] < full["nodes_tg"]
    # decode steps reuse their graph, looped (decode=full) or bypassed, as unlooped ones do
    assert off["tg_graphs_reused"] == looped["tg_graphs_reused"] == full["tg_graphs_reused"] >= 4 - 2
    assert all(r["rss"] > 0 for r in rows) and out["config"]["peak_rss"] >= max(r["rss"] for r in rows)
    text = bench.format_table(out)
    assert "1:3x3,kv=last,decode=full" in text and "time x" in text


def test_bench_refuses_bad_arguments(tiny_models):
    with pytest.raises(ValueError, match="repetitions"):
        bench.run(tiny_models["llama"], ["1:3x2"], n_prompt=8, n_gen=0, repetitions=0, progress=False)
    with pytest.raises(ValueError, match="nothing to measure"):
        bench.run(tiny_models["llama"], ["1:3x2"], n_prompt=0, n_gen=0, progress=False)
    with pytest.raises(loopcpp.LoopConfigError):
        bench.run(tiny_models["llama"], ["1:30x2"], n_prompt=8, n_gen=0, repetitions=1, progress=False)


def test_cli_bench_writes_json_and_a_plot(tiny_paths, tmp_path):
    r = run_cli("bench", tiny_paths["llama"], "--loop", "1:3x2", "--loop", "2:4x3,layer", "--decode", "full",
                "-p", "16", "-n", "4", "-r", "1", "-t", "1", "--json", tmp_path / "b.json", "--plot", tmp_path / "b.png")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads((tmp_path / "b.json").read_text())
    assert [row["spec"] for row in out["rows"]] == ["off", "1:3x2,decode=full", "2:4x3,layer,decode=full"]
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.search(r"^off\s", r.stdout, re.M)
    bad = run_cli("bench", tiny_paths["llama"], "--loop", "1:3x0")
    assert bad.returncode == 2 and "loopcpp: error:" in bad.stderr


def test_stock_pin_is_the_build_pin():
    cmake = (Path(__file__).parents[1] / "CMakeLists.txt").read_text()
    assert f'LOOPCPP_LLAMA_CPP_PYTHON_VERSION "{stock.LLAMA_CPP_PYTHON_VERSION}"' in cmake
    assert f'LOOPCPP_LLAMA_SDIST_SHA256 "{stock.SDIST_SHA256}"' in cmake
    assert f'LOOPCPP_LLAMA_COMMIT "{stock.LLAMA_COMMIT}"' in cmake


def test_the_plain_api_measurement_runs_on_loopcpps_library(tiny_paths):
    """The child that measures both builds, here on loopcpp's own library (the stock one takes
    minutes to build: test_stock_build_compares below, marked slow)."""
    out = stock.measure_child(loopcpp.lib_dir(), tiny_paths["llama"], 16, 4, 1)
    assert out["pp_tps"] > 0 and out["tg_tps"] > 0


@pytest.mark.slow
def test_stock_build_compares(tiny_paths):
    out = stock.compare_with_stock(tiny_paths["llama"], 16, 4, repetitions=1, threads=1, progress=False)
    ours, theirs = out["rows"]
    assert theirs["pp_speed_ratio"] == 1.0 and ours["pp_tps"] > 0 and theirs["tg_tps"] > 0
    assert (stock.build_stock(progress=False) / stock.LIBRARY).exists()


def test_perf_counts_decode_steps_and_graph_reuse(tiny_models):
    with tiny_models["llama"].context(n_ctx=64, loop="1:3x2,decode=full") as ctx:
        ctx.perf(reset=True)
        ctx.eval(list(range(5, 15)))
        for t in range(5):
            ctx.eval([t + 20])
        p = ctx.perf(reset=True)
        assert p["n_prompt"] == 10 and p["n_eval"] == 5 and p["graphs_reused"] == 4
