"""The numbers `loopcpp eval` reports, on cases worked out by hand."""

import math

import numpy as np
import pytest

from loopcpp.evals import metrics, report, runner, stats


def test_perplexity_of_a_uniform_distribution_is_the_vocabulary_size():
    logits = np.zeros((7, 50))
    nll = metrics.token_nll(logits, [3, 1, 4, 1, 5, 9, 2])
    assert np.allclose(nll, math.log(50))
    assert metrics.perplexity(nll) == pytest.approx(50.0, rel=1e-12)


def test_perplexity_of_a_known_two_token_distribution():
    # p(target) = 0.8 then 0.2 -> ppl = exp(-(ln .8 + ln .2) / 2) = 1 / sqrt(.16) = 2.5
    logits = np.log(np.array([[0.8, 0.2], [0.8, 0.2]]))
    assert metrics.perplexity(metrics.token_nll(logits, [0, 1])) == pytest.approx(2.5, rel=1e-12)


def test_kl_of_identical_logits_is_exactly_zero():
    logits = np.random.default_rng(0).standard_normal((5, 1000)) * 4
    assert (metrics.kl_divergence(logits, logits.copy()) == 0).all()


def test_kl_matches_the_closed_form():
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    want = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert metrics.kl_divergence(np.log(p)[None], np.log(q)[None])[0] == pytest.approx(want, rel=1e-12)


def test_bootstrap_of_a_constant_difference_has_no_width():
    iv = stats.paired_bootstrap(np.zeros(40), np.ones(40), n_resamples=500)
    assert (iv.value, iv.lo, iv.hi) == (1.0, 1.0, 1.0)


def test_bootstrap_interval_matches_the_normal_approximation():
    """60 items gained, 40 lost: mean difference 0.2, standard error sd / sqrt(n) = 0.098; the
    percentile interval sits within 0.02 of mean +- 1.96 se."""
    a = np.zeros(100)
    b = np.array([1.0] * 60 + [-1.0] * 40)
    iv = stats.paired_bootstrap(a, b, n_resamples=20_000, seed=1)
    se = b.std(ddof=1) / 10
    assert iv.value == pytest.approx(0.2)
    assert iv.lo == pytest.approx(0.2 - 1.96 * se, abs=0.02)
    assert iv.hi == pytest.approx(0.2 + 1.96 * se, abs=0.02)
    assert iv.lo < 0.2 < iv.hi


def test_bootstrap_pairs_the_units():
    """Large shared per-item variation cancels in a paired comparison: the interval of a constant
    +0.1 shift on noisy items has no width, which an unpaired bootstrap would not give."""
    noise = np.random.default_rng(0).standard_normal(200) * 10
    iv = stats.paired_bootstrap(noise, noise + 0.1, n_resamples=500)
    assert iv.hi - iv.lo < 1e-9


def test_mcnemar_exact_p_value():
    # 6 discordant pairs all one way: p = 2 * 0.5**6
    r = stats.mcnemar([False] * 6 + [True] * 10, [True] * 6 + [True] * 10)
    assert (r["a_only"], r["b_only"]) == (0, 6)
    assert r["p_value"] == pytest.approx(2 / 64)
    assert stats.mcnemar([True, False], [True, False])["p_value"] == 1.0


def test_accuracy_on_a_two_question_fixture():
    """Two questions: the unlooped model gets the first right, the loop gets both right."""
    spec = runner.TaskSpec("arc_easy")
    res = runner.TaskResult(spec, "m.gguf", ["off", "auto"], ["q1", "q2"], {
        "off": [{"ll": [-1.0, -2.0], "correct": True, "correct_norm": True},
                {"ll": [-1.0, -0.5], "correct": False, "correct_norm": True}],
        "auto": [{"ll": [-1.0, -2.0], "correct": True, "correct_norm": True},
                 {"ll": [-0.4, -0.5], "correct": True, "correct_norm": False}],
    })
    s = report.summarize(res, n_resamples=200)
    off, auto = s["rows"]
    assert (off["acc"], auto["acc"]) == (0.5, 1.0)
    assert (off["acc_norm"], auto["acc_norm"]) == (1.0, 0.5)
    assert auto["delta_acc_pp"]["value"] == pytest.approx(50.0)
    assert auto["mcnemar_acc"] == {"a_only": 0, "b_only": 1, "p_value": 1.0}
    assert "50.00" in report.format_table(s) and "100.00" in report.format_table(s)


def test_answers_are_normalised_as_lm_eval_does():
    assert metrics.normalize_answer("  The Eiffel-Tower! ") == "eiffeltower"
    assert metrics.exact_match("the Paris.", ["Paris"])
    assert not metrics.exact_match("Paris, France", ["Paris"])
    assert metrics.token_f1("Paris France", ["Paris"]) == pytest.approx(2 / 3)
