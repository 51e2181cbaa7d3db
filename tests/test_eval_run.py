"""`loopcpp eval` and `loopcpp bake` end to end on a tiny model and the fixture data."""

import csv
import json

import gguf
import numpy as np
import pytest

import evalfixtures
import loopcpp
from loopcpp.evals import TaskSpec, data, evaluate, runner, scoring, summarize
from test_cli import loopcpp as run_cli

LOOP = "1:3x3"  # decode=bypass: a lone continuation token would run unlooped


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return data.Source(evalfixtures.write(tmp_path_factory.mktemp("olmo_eval")))


@pytest.fixture()
def eval_env(source, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPCPP_EVAL_DATA", str(source.path))
    monkeypatch.setenv("LOOPCPP_CACHE_DIR", str(tmp_path / "cache"))
    data.default_source.cache_clear()
    yield tmp_path
    data.default_source.cache_clear()


def test_a_looped_choice_is_scored_in_one_ubatch(tiny_models, source):
    """The runner's log-likelihoods equal one evaluation of context + continuation in a single
    ubatch, and differ from evaluating the continuation as separate decode steps (which bypass
    runs unlooped): the scoring never lets a continuation escape the loop."""
    model = tiny_models["llama"]
    result = evaluate(model, [LOOP], TaskSpec("arc_easy", split="dev", limit=2), cache=False, progress=False,
                      source=source)
    item = data.mc_items("arc_easy", split="dev", limit=2, source=source)[0]
    c_tok, k_tok = scoring.encode_pair(model, item.contexts[0], item.continuations[0])
    assert len(k_tok) >= 2
    with model.context(n_ctx=128, n_batch=128, n_ubatch=128, loop=LOOP) as ctx:
        logits = ctx.eval(c_tok + k_tok, logits="all")[len(c_tok) - 1:-1]
        one_ubatch = float(sum(scoring.log_softmax(logits)[i, t] for i, t in enumerate(k_tok)))
        ctx.reset()
        split = [ctx.eval(c_tok, logits="last")] + [ctx.eval([t], logits="last") for t in k_tok[:-1]]
        split_ll = float(sum(scoring.log_softmax(np.array(split))[i, t] for i, t in enumerate(k_tok)))
    assert result.results[LOOP][0]["ll"][0] == pytest.approx(one_ubatch, abs=1e-4)
    assert abs(split_ll - one_ubatch) > 1e-2
    assert result.results["off"][0]["ll"][0] != pytest.approx(one_ubatch, abs=1e-4)


def test_every_configuration_scores_the_same_items(tiny_models, source):
    result = evaluate(tiny_models["qwen3"], [LOOP, "1:3x2,naive"], TaskSpec("csqa", limit=4), cache=False,
                      progress=False, source=source)
    assert result.configs == ["off", LOOP, "1:3x2,naive"]
    assert result.resolved[LOOP].startswith("1:3x3,block,rk")
    assert all(len(r) == 4 for r in result.results.values())
    s = summarize(result, n_resamples=200)
    assert [r["config"] for r in s["rows"]] == result.configs
    assert all(0.0 <= r["acc"] <= 1.0 for r in s["rows"])


def test_an_interrupted_run_resumes_from_the_cache(tiny_models, source, eval_env, monkeypatch):
    spec = TaskSpec("csqa", limit=3)
    first = evaluate(tiny_models["llama"], [LOOP], spec, progress=False, source=source)

    def no_rescoring(*a, **k):
        raise AssertionError("a cached item was scored again")

    monkeypatch.setattr(scoring, "score_mc", no_rescoring)
    second = evaluate(tiny_models["llama"], [LOOP], spec, progress=False, source=source)
    assert second.results == first.results
    assert any((eval_env / "cache" / "eval").rglob("*.jsonl"))


def test_perplexity_and_kl_of_a_loop_against_the_unlooped_model(tiny_models, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(" ".join(f"word{i % 17}" for i in range(400)))
    result = evaluate(tiny_models["llama"], [LOOP], TaskSpec("ppl", corpus=str(text), window=32, split="test"),
                      cache=False, progress=False)
    off, loop = summarize(result, n_resamples=200)["rows"]
    assert off["n_tokens"] == loop["n_tokens"] == len(result.items) * 15  # positions 16..30 of each window
    assert off["ppl"] > 1 and loop["kld_mean"] > 0 and 0 <= loop["top1_same"] <= 1
    assert loop["delta_ppl"]["value"] == pytest.approx(loop["ppl"] - off["ppl"])
    assert loop["kld_median"] <= loop["kld_p99"]


def test_cli_eval_end_to_end(tiny_paths, eval_env):
    text = eval_env / "t.txt"
    text.write_text(" ".join(f"word{i % 13}" for i in range(300)))
    out_json, out_csv = eval_env / "r.json", eval_env / "r.csv"
    r = run_cli("eval", tiny_paths["llama"], "--loop", LOOP, "--loop", "1:3x2,naive", "--task", "arc_easy",
                "--task", f"ppl:{text}", "--task", "squad", "--ctx", "32", "--limit", "3", "--max-tokens", "4",
                "--json", out_json, "--csv", out_csv)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "arc_easy (arc_easy-rc-0shot-test-batched), 3 items" in r.stdout
    assert "Δ acc (pp)" in r.stdout and "KLD mean" in r.stdout and "Δ EM (pp)" in r.stdout
    out = json.loads(out_json.read_text())
    assert [s["task"] for s in out["summaries"]] == ["arc_easy", "ppl", "squad"]
    assert all(res["configs"] == ["off", LOOP, "1:3x2,naive"] for res in out["results"])
    rows = list(csv.DictReader(open(out_csv)))
    assert {"task", "config", "metric", "value", "lo", "hi"} <= set(rows[0])
    assert any(r["metric"] == "delta_acc_pp" and r["config"] == LOOP for r in rows)


def test_cli_eval_rejects_a_bad_loop_before_loading_anything():
    r = run_cli("eval", "/no/such/model.gguf", "--loop", "5:2x3", "--task", "ppl")
    assert r.returncode == 2
    assert "5:2" in r.stderr and "no/such" not in r.stderr


def test_bake_copies_tensors_byte_for_byte_and_stores_the_recipe(tiny_paths, tmp_path):
    src, dst = tiny_paths["qwen2"], tmp_path / "baked.gguf"
    r = run_cli("bake", src, "--loop", "1:4x2,euler", "-o", dst)
    assert r.returncode == 0, r.stderr
    a, b = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(dst))
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    assert all(np.array_equal(x.data.view(np.uint8), y.data.view(np.uint8)) for x, y in zip(a.tensors, b.tensors))
    assert b.get_field("loopcpp.loop").contents() == "1:4x2,euler"
    other = {f.name for f in a.fields.values()} ^ {f.name for f in b.fields.values()}
    assert other == {"loopcpp.loop"}
    with loopcpp.Model(dst) as m, m.context(n_ctx=64) as ctx:
        assert str(ctx.loop).startswith("1:4x2,block,euler")
    assert "1:4x2,euler" in run_cli("info", dst).stdout
    # and `off` takes it out again
    assert run_cli("bake", dst, "--loop", "off", "-o", tmp_path / "plain.gguf").returncode == 0
    assert gguf.GGUFReader(str(tmp_path / "plain.gguf")).get_field("loopcpp.loop") is None


def test_bake_refuses_a_bad_recipe_before_writing(tiny_paths, tmp_path):
    r = run_cli("bake", tiny_paths["qwen2"], "--loop", "1:4x0", "-o", tmp_path / "x.gguf")
    assert r.returncode == 2 and not (tmp_path / "x.gguf").exists()


def test_tune_prunes_confirms_on_dev_and_reports_on_test(tiny_models, tmp_path):
    from loopcpp.evals.tune import candidates, tune

    grid = candidates(6, moe=False)
    assert len(grid) == len(set(grid)) and all(loopcpp.LoopConfig.parse(s).enabled for s in grid)
    text = tmp_path / "t.txt"
    text.write_text("\n".join(" ".join(f"w{(i * j) % 23}" for j in range(40)) for i in range(60)))
    out = tune(tiny_models["llama"], "ppl", str(text), keep=2, window=32, confirm_window=64, limit=100, max_kld=10.0,
               grid=["1:2x2,block,euler", "1:2x3,block,naive", "2:3x2,layer,rk,beta=0.5"], progress=False)
    ppls = [c["ppl"] for c in out["pruned"]]
    assert ppls == sorted(ppls) and len(out["shortlist"]) == 2
    assert out["best"] in out["shortlist"] and out["chosen"] in (None, out["best"])
    # a recommendation is flagged significant only when its dev interval excludes zero
    if out["chosen"] is None:
        assert out["significant"] is False
    else:
        row = next(r for r in out["dev"]["rows"] if r["config"] == out["chosen"])
        assert out["significant"] == (row["delta_ppl"]["hi"] < 0)
    assert [r["config"] for r in out["test"]["rows"]] == ["off", out["best"]]
    assert out["dev"]["spec"].endswith("-dev") and out["test"]["spec"].endswith("-test")


def test_cli_tune_bakes_what_it_recommends(tiny_paths, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(" ".join(f"w{(i * j) % 23}" for j in range(40)) for i in range(80)))
    r = run_cli("tune", tiny_paths["llama"], "--corpus", text, "--keep", "2", "--limit", "100", "--ctx", "32",
                "--confirm-ctx", "64", "--bake", tmp_path / "tuned.gguf", "--json", tmp_path / "t.json")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads((tmp_path / "t.json").read_text())
    assert out["search"] == "staged" and out["grid"] == len(out["pruned"]) >= 10
    assert {c["stage"] for c in out["pruned"]} == {"window", "integrator", "steps", "mode"}
    assert "took " in r.stdout and set(out["seconds"]) == {"prune", "confirm", "test"}
    if out["chosen"]:
        assert f"recommended: --loop {out['chosen']}" in r.stdout
        assert gguf.GGUFReader(str(tmp_path / "tuned.gguf")).get_field("loopcpp.loop").contents() == out["chosen"]
    else:
        assert "nothing to recommend" in r.stdout and not (tmp_path / "tuned.gguf").exists()


def _fake_score(best_spec_parts):
    """A scorer whose perplexity falls with each coordinate that matches best_spec_parts."""
    from loopcpp.evals.tune import Candidate

    def score(r, stage):
        miss = sum(getattr(r, k) != v for k, v in best_spec_parts.items())
        return Candidate(r.spec, 10.0 + miss + r.start / 100, 0.01, stage)
    return score


def test_staged_search_walks_one_coordinate_at_a_time_to_the_optimum():
    from loopcpp.evals.tune import STAGED_CENTRES, WIDTHS, staged_search

    target = dict(start=14, width=4, steps=2, integrator="euler", mode="layer")
    out = staged_search(_fake_score(target), n_layer=30, moe=False, beam=2, progress=False)
    specs = [c.spec for c in out]
    assert len(specs) == len(set(specs)) and out[0].spec == "14:17x2,layer,euler"
    stages = [c.stage for c in out]
    assert stages.count("window") == len(STAGED_CENTRES) * len(WIDTHS)
    # each later stage varies the 2 best recipes over its coordinate: 2 x (values - 1) new ones at most
    assert stages.count("integrator") <= 4 and stages.count("steps") <= 4 and stages.count("mode") <= 2
    assert len(out) <= 20


def test_staged_search_keeps_moe_in_layer_mode_and_skips_collapsed_seeds():
    from loopcpp.evals.tune import Candidate, staged_search

    def score(r, stage):  # the lowest perplexity comes with a huge KL: a collapse, never a seed
        return Candidate(r.spec, 1.0 if r.start == 0 else 5.0 + r.start / 100, 9.0 if r.start == 0 else 0.1, stage)
    out = staged_search(score, n_layer=6, moe=True, beam=1, max_kld=0.5, progress=False)
    assert all(",layer," in c.spec for c in out) and "mode" not in {c.stage for c in out}
    later = [c for c in out if c.stage != "window"]
    assert later and all(not c.spec.startswith("0:") for c in later)


def test_pruner_scores_k1_as_the_unlooped_model(tiny_models, tmp_path):
    from loopcpp.evals.tune import Pruner

    model = tiny_models["llama"]
    tokens = model.tokenize(" ".join(f"w{(i * 7) % 23}" for i in range(200)), add_special=False)
    with Pruner(model, tokens, 48, 2) as p:
        assert p.n == 2 * (48 - 48 // 8 - 1)
        same = p.score("1:3x1,block,euler")
        assert same.kld == 0.0 and same.ppl == p.ppl_off
        looped = p.score("1:3x3,block,naive")
        assert looped.kld > 0 and looped.ppl != p.ppl_off and p.score("1:3x3,block,naive") is looped


@pytest.mark.parametrize("loop", ["off", LOOP, "1:3x3,layer,euler,kv=last"])
def test_choices_as_parallel_sequences_equal_one_ubatch_each(tiny_models, source, loop):
    """An item's choices scored as sequences of one batch (shared context once) give what each
    choice gives evaluated alone in one ubatch; the test data's choices share their context."""
    model = tiny_models["qwen2"]
    item = data.mc_items("arc_easy", split="dev", limit=2, source=source)[0]
    pairs = scoring.item_pairs(model, item)
    assert scoring.shared_prefix([c + k for c, k in pairs]) >= 2
    rows = scoring.item_rows(model, item)
    with model.context(n_ctx=rows, n_batch=rows, n_ubatch=rows, n_seq_max=len(pairs), loop=loop) as ctx:
        batched = scoring.choice_loglikelihoods(ctx, pairs)
        alone = [scoring.loglikelihood(ctx, c, k)[0] for c, k in pairs]
    assert batched == pytest.approx(alone, abs=1e-4)
    assert len(set(np.round(alone, 3))) > 1  # the choices differ, so a mix-up would show
