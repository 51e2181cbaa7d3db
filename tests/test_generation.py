"""Generation features: sampler options, grammars and JSON schemas, logprobs, stop strings and
tokens, results with usage and timings, cancellation from another thread, and saved states."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

import loopcpp
from loopcpp import Sampling
from conftest import EXACT

PROMPT = "Counting: one, two, three,"


def greedy(ctx, prompt=PROMPT, n=16, **kw):
    return ctx.complete(prompt, max_tokens=n, temperature=0, **kw)


def log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


# --- sampler options ----------------------------------------------------------------------
def test_logit_bias_bans_the_greedy_token_and_the_next_best_wins(tiny_models):
    m = tiny_models["llama"]
    prompt = [5, 17, 42, 9]
    with m.context(n_ctx=64, **EXACT) as ctx:
        order = np.argsort(-ctx.eval(prompt))
        ctx.reset()
        first = greedy(ctx, prompt, n=1).token_ids
        ctx.reset()
        banned = greedy(ctx, prompt, n=1, logit_bias={int(order[0]): float("-inf")}).token_ids
        ctx.reset()
        boosted = greedy(ctx, prompt, n=1, logit_bias={int(order[5]): 1000.0}).token_ids
    assert first == [order[0]] and banned == [order[1]] and boosted == [order[5]]


def test_repeat_penalty_discourages_repeats(smollm2):
    prompt = "one one one one one one one one"
    with smollm2.context(n_ctx=256) as ctx:
        plain = greedy(ctx, prompt, n=12)
        penalised = greedy(ctx, prompt, n=12, repeat_penalty=1.5, penalty_last_n=-1)
        freq = greedy(ctx, prompt, n=12, frequency_penalty=1.0, presence_penalty=1.0)
    one = smollm2.tokenize(" one", add_special=False)[0]
    assert plain.token_ids.count(one) > penalised.token_ids.count(one)
    assert plain.token_ids.count(one) > freq.token_ids.count(one)


@pytest.mark.parametrize("kw", [dict(typical_p=0.5), dict(mirostat=1), dict(mirostat=2, mirostat_tau=3.0)])
def test_other_samplers_run_and_are_seeded(kw, smollm2):
    with smollm2.context(n_ctx=256) as ctx:
        a = ctx.complete(PROMPT, max_tokens=10, seed=7, temperature=0.9, **kw)
        b = ctx.complete(PROMPT, max_tokens=10, seed=7, temperature=0.9, **kw)
    assert a.token_ids == b.token_ids and len(a.token_ids) > 0


def test_sampling_keywords_change_the_sampling_object(smollm2):
    with smollm2.context(n_ctx=256) as ctx:
        hot = Sampling(temperature=1.5, seed=3)
        assert ctx.complete(PROMPT, max_tokens=8, sampling=hot, temperature=0).text == greedy(ctx, n=8).text
        with pytest.raises(TypeError, match="unknown sampling parameter.*tempreature"):
            ctx.complete(PROMPT, max_tokens=2, tempreature=0)


@pytest.mark.parametrize("kw,needle", [
    (dict(repeat_penalty=0), "repeat_penalty"), (dict(typical_p=0), "typical_p"), (dict(mirostat=3), "mirostat"),
    (dict(penalty_last_n=-2), "penalty_last_n"), (dict(logit_bias={"a": 1}), "logit_bias"),
    (dict(frequency_penalty=float("nan")), "frequency_penalty"), (dict(grammar="x", json_schema={}), "not both"),
    (dict(json_schema="{not json"), "not valid JSON"),
])
def test_bad_sampling_values_are_refused_by_name(kw, needle):
    with pytest.raises(ValueError, match=needle):
        Sampling(**kw)


def test_logit_bias_outside_the_vocabulary_is_refused(tiny_models):
    with tiny_models["llama"].context(n_ctx=32) as ctx:
        with pytest.raises(ValueError, match="outside the vocabulary"):
            ctx.generate([5, 6], logit_bias={10**6: 1.0})


# --- grammars -----------------------------------------------------------------------------
def test_gbnf_grammar_constrains_the_output(smollm2):
    with smollm2.context(n_ctx=256) as ctx:
        done = ctx.complete("Is Paris in France? Answer:", max_tokens=8, temperature=0.8, seed=1,
                            grammar='root ::= " " ("yes" | "no") "."')
    assert done.text in (" yes.", " no.") and done.finish_reason == "eog"


def test_json_schema_output_parses_and_follows_the_schema(smollm2):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "people": {"type": "integer"}},
              "required": ["city", "people"]}
    with smollm2.context(n_ctx=512) as ctx:
        done = ctx.complete("The largest city in France, as JSON:", max_tokens=64, temperature=0, json_schema=schema)
    data = json.loads(done.text)
    assert isinstance(data["city"], str) and isinstance(data["people"], int)


def test_bad_grammars_raise_before_generating(smollm2):
    with smollm2.context(n_ctx=64) as ctx:
        with pytest.raises(ValueError, match="grammar does not parse"):
            ctx.generate("x", grammar="root ::= (")
        with pytest.raises(ValueError, match="json_schema"):
            ctx.generate("x", json_schema={"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}})
        assert greedy(ctx, n=2).token_ids  # the context still works


@pytest.mark.parametrize("temperature", [0, 0.8])
def test_a_grammar_no_token_can_continue_raises_instead_of_aborting(temperature, smollm2):
    """llama.cpp's grammar sampler aborts the process when it must accept a token it does not
    allow; here a logit bias bans every token, so the chain picks one anyway."""
    ban = {t: float("-inf") for t in range(smollm2.n_vocab)}
    with smollm2.context(n_ctx=64) as ctx:
        with pytest.raises(loopcpp.DecodeError, match="sampling failed"):
            ctx.complete("Answer:", max_tokens=4, temperature=temperature, grammar='root ::= "yes"', logit_bias=ban)
        assert greedy(ctx, n=2).token_ids  # the context still works


# --- logprobs, stops, results -------------------------------------------------------------
def test_logprobs_are_the_models_log_softmax(tiny_models):
    m = tiny_models["qwen2"]
    prompt = [7, 3, 99, 41]
    with m.context(n_ctx=64, **EXACT) as ctx:
        want = log_softmax(ctx.eval(prompt))
        ctx.reset()
        tok = ctx.complete(prompt, max_tokens=1, temperature=0, logprobs=3).tokens[0]
    assert tok.id == int(np.argmax(want))
    assert tok.logprob == pytest.approx(want[tok.id], abs=1e-6)
    top = tok.top_logprobs
    assert [t.id for t in top] == list(np.argsort(-want)[:3])
    assert [t.logprob for t in top] == pytest.approx(np.sort(want)[::-1][:3], abs=1e-6)


def test_stop_is_a_string_not_its_characters(smollm2):
    with smollm2.context(n_ctx=256) as ctx:
        full = greedy(ctx, n=24).text
        stop = full[3:6]
        cut = greedy(ctx, n=24, stop=stop)
    assert cut.text == full[:full.find(stop)] and cut.finish_reason == "stop"


def test_stop_tokens_end_the_generation(smollm2):
    with smollm2.context(n_ctx=256) as ctx:
        ids = greedy(ctx, n=12).token_ids
        k = next(i for i in range(2, len(ids)) if ids[i] not in ids[:i])
        done = greedy(ctx, n=12, stop_tokens=[ids[k]])
    assert done.token_ids == ids[:k] and done.finish_reason == "stop"


def test_completion_reports_usage_and_timings(smollm2):
    with smollm2.context(n_ctx=256) as ctx:
        prompt = smollm2.tokenize(PROMPT)
        first = greedy(ctx, prompt, n=6)
        again = greedy(ctx, prompt, n=6)
    assert first.usage.prompt_tokens == len(prompt) and first.usage.cached_tokens == 0
    assert first.usage.completion_tokens == len(first.token_ids) == 6 and first.finish_reason == "length"
    assert again.usage.cached_tokens == len(prompt) - 1  # the last prompt token is evaluated again
    assert again.timings.prompt_evaluated == 1
    t = first.timings
    assert t.prompt_evaluated == len(prompt) and t.generated == 6
    assert t.prompt_ms > 0 and t.generation_ms > 0 and t.generation_per_second > 0
    assert str(first) == first.text


def test_a_generation_closed_early_reports_cancelled(smollm2):
    with smollm2.context(n_ctx=256) as ctx:
        gen = ctx.generate(PROMPT, max_tokens=20, temperature=0)
        next(gen)
        gen.close()
        assert gen.completion.finish_reason == "cancelled"
        assert gen.completion.usage.completion_tokens == 1
        assert greedy(ctx, n=3).finish_reason == "length"  # the context is free again


# --- cancellation -------------------------------------------------------------------------
def long_prompt(model, n=1500):
    words = ("the quick brown fox jumps over the lazy dog while the cat sleeps " * 400).split()
    return model.tokenize(" ".join(words))[:n]


def test_cancel_stops_a_long_prefill_from_another_thread(smollm2):
    prompt = long_prompt(smollm2)
    with smollm2.context(n_ctx=2048, n_batch=2048, n_ubatch=64) as ctx:
        threading.Timer(1.0, ctx.cancel).start()
        started = time.perf_counter()
        done = ctx.complete(prompt, max_tokens=4, temperature=0)
        elapsed = time.perf_counter() - started
        assert done.finish_reason == "cancelled" and done.text == ""
        # the cache keeps the ubatches that completed, and the bookkeeping agrees with it
        assert 0 < ctx.n_past < len(prompt) and ctx.n_past % 64 == 0
        assert done.timings.prompt_evaluated == ctx.n_past
        assert ctx._h.pos_max() + 1 == ctx.n_past
        # the context is consistent: finishing the prompt gives what a fresh context gives
        resumed = greedy(ctx, prompt[:200], n=5)
    with smollm2.context(n_ctx=2048, n_batch=2048, n_ubatch=64) as fresh:
        assert resumed.token_ids == greedy(fresh, prompt[:200], n=5).token_ids
    assert elapsed < 30  # the whole prefill would run on; a hang fails here, not speed


def test_a_cancel_before_the_first_token_is_not_lost(smollm2):
    with smollm2.context(n_ctx=256) as ctx:
        gen = ctx.generate(PROMPT, max_tokens=8, temperature=0)
        ctx.cancel()
        assert list(gen) == [] and gen.completion.finish_reason == "cancelled"
        assert greedy(ctx, n=2).finish_reason == "length"  # the next generation runs


def test_closing_the_context_mid_generation_from_another_thread_is_safe(smollm2_path):
    """A window closed mid-reply: close() waits for the token step in flight, the generation's
    next step raises ClosedError; nothing reads freed memory (run in a subprocess: a crash
    would take pytest down)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import threading, loopcpp
        m = loopcpp.Model({str(smollm2_path)!r})
        ctx = m.context(n_ctx=512)
        seen, errors = [], []
        def work():
            try:
                for tok in ctx.generate("Once upon a time", max_tokens=400, temperature=0.8, seed=1):
                    seen.append(tok)
            except loopcpp.ClosedError as e:
                errors.append(e)
        t = threading.Thread(target=work); t.start()
        while len(seen) < 5: pass
        m.close()
        t.join()
        print("OK", len(seen) < 400, len(errors))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["OK", "True", "1"]


def test_cancel_makes_eval_raise_and_the_next_call_runs(smollm2):
    prompt = long_prompt(smollm2, 1000)
    with smollm2.context(n_ctx=2048, n_batch=1024, n_ubatch=64) as ctx:
        threading.Timer(0.3, ctx.cancel).start()
        with pytest.raises(loopcpp.CancelledError):
            ctx.eval(prompt)
        assert ctx.n_past < len(prompt)
        ctx.reset()
        assert ctx.eval(prompt[:10]).shape == (smollm2.n_vocab,)


# --- state --------------------------------------------------------------------------------
def test_saved_state_continues_exactly(smollm2, tmp_path):
    with smollm2.context(n_ctx=256, loop="auto") as ctx:
        greedy(ctx, n=4)
        saved = ctx.save_state()
        ctx.save_state_file(tmp_path / "s.bin")
        want = ctx.complete(" four,", max_tokens=8, temperature=0).text
    for load in (lambda c: c.load_state(saved), lambda c: c.load_state_file(tmp_path / "s.bin")):
        with smollm2.context(n_ctx=256, loop="auto") as ctx:
            load(ctx)
            assert ctx.n_past > 0
            assert ctx.complete(" four,", max_tokens=8, temperature=0).text == want


def test_a_state_from_another_loop_is_refused_or_adopted(smollm2):
    with smollm2.context(n_ctx=256, loop="auto") as ctx:
        greedy(ctx, n=2)
        saved = ctx.save_state()
        spec = str(ctx.loop)
    with smollm2.context(n_ctx=256) as ctx:
        with pytest.raises(loopcpp.StateError, match="saved under loop .*adopt_loop=True"):
            ctx.load_state(saved)
        ctx.load_state(saved, adopt_loop=True)
        assert str(ctx.loop) == spec


def test_per_sequence_states_switch_conversations(smollm2):
    with smollm2.context(n_ctx=256) as ctx:
        greedy(ctx, "Conversation A: the sky is", n=3)
        a = ctx.save_state(seq=0)
        want_a = ctx.complete(" and", max_tokens=5, temperature=0).text
        ctx.reset()
        greedy(ctx, "Conversation B: water is", n=3)
        ctx.load_state(a, seq=0)  # back to A
        assert ctx.complete(" and", max_tokens=5, temperature=0).text == want_a
        with pytest.raises(loopcpp.StateError, match="seq=None"):
            ctx.load_state(a)


def test_restoring_one_sequence_leaves_the_others(tiny_models):
    m = tiny_models["llama"]
    with m.context(n_ctx=128, n_seq_max=2, **EXACT) as ctx:
        a, b = [5, 6, 7, 8], [9, 10, 11]
        ctx.eval_batch(a + b, list(range(4)) + list(range(3)), [0] * 4 + [1] * 3)
        saved = ctx.save_state(seq=0)
        before = ctx.eval_batch([12], [3], [1])  # sequence 1 goes on
        ctx.load_state(saved, seq=0)
        mem = loopcpp._lib.lib.llama_get_memory(ctx._h.ptr)
        assert loopcpp._lib.lib.llama_memory_seq_pos_max(mem, 0) == 3
        assert loopcpp._lib.lib.llama_memory_seq_pos_max(mem, 1) == 3  # not cleared by the restore
        with pytest.raises(loopcpp.StateError, match="whole-context states only"):
            ctx.set_loop("2:4x2", clear=False)
            ctx.load_state(saved, seq=0, adopt_loop=True)


def test_foreign_or_damaged_states_are_refused(smollm2, tiny_models):
    with smollm2.context(n_ctx=64) as ctx:
        greedy(ctx, n=1)
        saved = ctx.save_state()
        with pytest.raises(loopcpp.StateError, match="not a loopcpp state"):
            ctx.load_state(b"garbage")
        with pytest.raises(loopcpp.StateError, match="damaged"):
            ctx.load_state(saved[:20] + b"}" + saved[21:])
        header = b"[1, 2]"  # valid JSON, not an object
        with pytest.raises(loopcpp.StateError, match="damaged"):
            ctx.load_state(saved[:14] + len(header).to_bytes(4, "little") + header)
    with tiny_models["llama"].context(n_ctx=64) as other:
        with pytest.raises(loopcpp.StateError, match="saved with model"):
            other.load_state(saved)
