"""Generation features: sampler options, grammars and JSON schemas, logprobs, stop strings and
tokens, results with usage and timings, cancellation from another thread, and saved states."""

from __future__ import annotations

import json

import numpy as np
import pytest

import loopcpp
from loopcpp import Sampling
from conftest import EXACT, cancel_in_ubatch

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


def penalised(logits, history, repeat=1.0, freq=0.0, presence=0.0):
    """llama.cpp's penalties sampler (llama_sampler_penalties_apply), in float32 as it computes."""
    out = np.array(logits, np.float32)
    counts = {}
    for t in history:
        counts[t] = counts.get(t, 0) + 1
    for t, n in counts.items():
        x = out[t]
        x = x * np.float32(repeat) if x <= 0 else x / np.float32(repeat)
        out[t] = x - (np.float32(n) * np.float32(freq) + np.float32(n > 0) * np.float32(presence))
    return out


def greedy_by_hand(model, prompt, n, ignore_eos=False, **penalties):
    """Greedy decoding with penalties done in numpy on the model's logits: the prompt in one
    ubatch, then one token at a time, as generate() evaluates them (so the logits are the same)."""
    history, out = list(prompt), []
    eog = [t for t in range(model.n_vocab) if model.is_eog(t)] if ignore_eos else []
    with model.context(n_ctx=256) as ctx:
        logits = ctx.eval(prompt)
        for _ in range(n):
            logits[eog] = -np.inf  # the logit bias comes before the penalties in the chain
            token = int(np.argmax(penalised(logits, history, **penalties)))
            if model.is_eog(token):
                break
            out.append(token)
            history.append(token)
            logits = ctx.eval([token])
    return out


@pytest.mark.parametrize("penalties", [dict(repeat=1.5), dict(freq=0.5, presence=1.0),
                                       dict(repeat=1.3, freq=0.25, presence=0.5), dict(presence=1000.0)])
def test_penalties_follow_llama_cpps_formula(penalties, smollm2):
    """Each penalised token is the argmax of the model's logits after llama.cpp's penalty
    formula, applied here in numpy over the prompt and the tokens generated so far. A presence
    penalty of 1000 outweighs any logit gap: no token of the prompt or the reply may come again,
    whatever the model would rather say."""
    prompt = smollm2.tokenize("one one one one one one one one")
    want = greedy_by_hand(smollm2, prompt, 10, ignore_eos=True, **penalties)
    with smollm2.context(n_ctx=256) as ctx:
        got = greedy(ctx, prompt, n=10, repeat_penalty=penalties.get("repeat", 1.0), penalty_last_n=-1,
                     frequency_penalty=penalties.get("freq", 0.0), presence_penalty=penalties.get("presence", 0.0),
                     ignore_eos=True)
    assert got.token_ids == want and len(want) == 10
    if penalties.get("presence") == 1000.0:
        assert len(set(prompt + want)) == len(set(prompt)) + 10  # ten tokens, each new


@pytest.mark.parametrize("kw", [dict(typical_p=0.5), dict(mirostat=1), dict(mirostat=2, mirostat_tau=3.0)])
def test_other_samplers_run_and_are_seeded(kw, smollm2):
    runs = []
    for _ in range(2):  # each in a context of its own: the same batch shapes, the same logits
        with smollm2.context(n_ctx=256) as ctx:
            runs.append(ctx.complete(PROMPT, max_tokens=10, seed=7, temperature=0.9, ignore_eos=True, **kw))
    assert runs[0].token_ids == runs[1].token_ids and len(runs[0].token_ids) == 10


def test_sampling_keywords_change_the_sampling_object(smollm2):
    hot = Sampling(temperature=1.5, seed=3)
    with smollm2.context(n_ctx=256) as ctx:
        overridden = ctx.complete(PROMPT, max_tokens=8, sampling=hot, temperature=0).token_ids
        with pytest.raises(TypeError, match="unknown sampling parameter.*tempreature"):
            ctx.complete(PROMPT, max_tokens=2, tempreature=0)
    with smollm2.context(n_ctx=256) as ctx:
        assert overridden == greedy(ctx, n=8).token_ids


def test_ignore_eos_bans_every_end_of_generation_token(smollm2):
    """ignore_eos: a reply that would end at once (the end-of-turn token forced by a bias) runs
    to max_tokens, and none of its tokens ends a generation."""
    eog = [t for t in range(smollm2.n_vocab) if smollm2.is_eog(t)]
    assert eog
    force_end = {eog[0]: 100.0}
    with smollm2.context(n_ctx=256) as ctx:
        ended = greedy(ctx, n=8, logit_bias=force_end)
        ran = greedy(ctx, n=8, logit_bias=force_end, ignore_eos=True)
    assert (ended.finish_reason, ended.finish_detail) == ("stop", "eog") and ended.token_ids == []
    assert (ran.finish_reason, ran.finish_detail) == ("length", "max_tokens") and len(ran.token_ids) == 8
    assert not any(smollm2.is_eog(t) for t in ran.token_ids)
    with pytest.raises(ValueError, match="ignore_eos"):
        Sampling(ignore_eos=1)


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
    assert done.text in (" yes.", " no.") and done.finish_detail == "eog"


def test_json_schema_output_parses_and_follows_the_schema(smollm2):
    """Bounded lengths make the schema's every output fit max_tokens, whatever the model picks."""
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                               "people": {"type": "integer", "minimum": 0, "maximum": 99999}},
              "required": ["city", "people"], "additionalProperties": False}
    with smollm2.context(n_ctx=512) as ctx:
        done = ctx.complete("The largest city in France, as JSON:", max_tokens=200, temperature=0, json_schema=schema)
    data = json.loads(done.text)
    assert done.finish_detail == "eog"  # the grammar ended the reply
    assert isinstance(data["city"], str) and len(data["city"]) <= 12 and 0 <= data["people"] <= 99999


def test_bad_grammars_raise_before_generating(smollm2):
    with smollm2.context(n_ctx=64) as ctx:
        with pytest.raises(ValueError, match="grammar does not parse"):
            ctx.generate("x", grammar="root ::= (")
        with pytest.raises(ValueError, match="json_schema"):
            ctx.generate("x", json_schema={"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}})
        assert len(greedy(ctx, n=2, ignore_eos=True).token_ids) == 2  # the context still works


@pytest.mark.parametrize("temperature", [0, 0.8])
def test_a_grammar_no_token_can_continue_raises_instead_of_aborting(temperature, smollm2):
    """llama.cpp's grammar sampler aborts the process when it must accept a token it does not
    allow; here a logit bias bans every token, so the chain picks one anyway."""
    ban = {t: float("-inf") for t in range(smollm2.n_vocab)}
    with smollm2.context(n_ctx=64) as ctx:
        with pytest.raises(loopcpp.DecodeError, match="sampling failed"):
            ctx.complete("Answer:", max_tokens=4, temperature=temperature, grammar='root ::= "yes"', logit_bias=ban)
        assert len(greedy(ctx, n=2, ignore_eos=True).token_ids) == 2  # the context still works


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
        full = greedy(ctx, n=24, ignore_eos=True).text
    stop = full[3:6]
    with smollm2.context(n_ctx=256) as ctx:  # a fresh context: the same batch shapes as the first run
        cut = greedy(ctx, n=24, stop=stop, ignore_eos=True)
    assert cut.text == full[:full.find(stop)] and (cut.finish_reason, cut.finish_detail) == ("stop", "stop")


def test_stop_tokens_end_the_generation(smollm2):
    with smollm2.context(n_ctx=256) as ctx:
        ids = greedy(ctx, n=12, ignore_eos=True).token_ids
    k = max(i for i in range(len(ids)) if ids[i] not in ids[:i])  # the last token seen for the first time
    with smollm2.context(n_ctx=256) as ctx:
        done = greedy(ctx, n=12, stop_tokens=[ids[k]], ignore_eos=True)
    assert done.token_ids == ids[:k] and (done.finish_reason, done.finish_detail) == ("stop", "stop_token")


def test_completion_reports_usage_and_timings(smollm2):
    with smollm2.context(n_ctx=256) as ctx:
        prompt = smollm2.tokenize(PROMPT)
        first = greedy(ctx, prompt, n=6, ignore_eos=True)
        again = greedy(ctx, prompt, n=6, ignore_eos=True)
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
        assert gen.completion.finish_detail == "cancelled"
        assert gen.completion.usage.completion_tokens == 1
        assert greedy(ctx, n=3, ignore_eos=True).finish_reason == "length"  # the context is free again


# --- cancellation -------------------------------------------------------------------------
def long_prompt(model, n=1500):
    words = ("the quick brown fox jumps over the lazy dog while the cat sleeps " * 400).split()
    return model.tokenize(" ".join(words))[:n]


def test_cancel_stops_a_long_prefill(smollm2):
    prompt = long_prompt(smollm2)
    with smollm2.context(n_ctx=2048, n_batch=2048, n_ubatch=64, capture=["l_out-0"]) as ctx:
        cancel_in_ubatch(ctx, 3)
        done = ctx.complete(prompt, max_tokens=4, temperature=0)
        assert (done.finish_reason, done.finish_detail) == ("length", "cancelled") and done.text == ""
        # the cache keeps the two ubatches that completed, and the bookkeeping agrees with it
        assert ctx.n_past == 128 and done.timings.prompt_evaluated == 128
        assert ctx._h.pos_max() + 1 == ctx.n_past
        # the context is consistent: finishing the prompt gives what a fresh context gives
        resumed = greedy(ctx, prompt[:200], n=5, ignore_eos=True)
    with smollm2.context(n_ctx=2048, n_batch=2048, n_ubatch=64, capture=["l_out-0"]) as fresh:  # the same graph splits
        fresh.eval(prompt[:128], logits="none")  # the same ubatches as the resumed context
        assert resumed.token_ids == greedy(fresh, prompt[:200], n=5, ignore_eos=True).token_ids


def test_a_cancel_before_the_first_token_is_not_lost(smollm2):
    with smollm2.context(n_ctx=256) as ctx:
        gen = ctx.generate(PROMPT, max_tokens=8, temperature=0)
        ctx.cancel()
        assert list(gen) == [] and gen.completion.finish_detail == "cancelled"
        assert greedy(ctx, n=2, ignore_eos=True).finish_reason == "length"  # the next generation runs


def test_closing_the_context_mid_generation_from_another_thread_is_safe(smollm2_path):
    """A window closed mid-reply: close() waits for the token step in flight, the generation's
    next step raises ClosedError; nothing reads freed memory (run in a subprocess: a crash
    would take pytest down). The reply cannot end by itself (ignore_eos, max_tokens beyond the
    context), so the close always lands inside it, however fast the machine."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import threading, loopcpp
        m = loopcpp.Model({str(smollm2_path)!r})
        ctx = m.context(n_ctx=4096)
        seen, errors, five = [], [], threading.Event()
        def work():
            try:
                for tok in ctx.generate("Once upon a time", max_tokens=10**6, temperature=0.8, seed=1, ignore_eos=True):
                    seen.append(tok)
                    if len(seen) == 5:
                        five.set()
            except loopcpp.ClosedError as e:
                errors.append(e)
            finally:
                five.set()
        t = threading.Thread(target=work); t.start()
        five.wait()
        m.close()
        t.join()
        print("OK", 5 <= len(seen) < 4000, len(errors))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["OK", "True", "1"]


def test_a_cancel_for_the_running_reply_survives_another_generate(tiny_models):
    """A second caller's generate() must not wipe a cancel() meant for the reply that is running;
    the second generation then runs as usual."""
    with tiny_models["llama"].context(n_ctx=128) as ctx:
        first = ctx.generate([5, 6, 7], max_tokens=40, ignore_eos=True)
        next(first)
        ctx.cancel()  # the stop button, for the reply on screen
        second = ctx.generate([8, 9], max_tokens=3, ignore_eos=True)  # another caller, queued
        rest = list(first)  # at most the flush of a UTF-8 sequence the first token began
        assert all(t.id == -1 for t in rest) and first.completion.finish_detail == "cancelled"
        assert first.completion.usage.completion_tokens == 1
        assert second.completion.finish_reason == "length" and second.completion.usage.completion_tokens == 3


def test_an_abandoned_generation_gives_the_context_back(tiny_models):
    """An app that drops a Generation unfinished does not leave the context busy until the
    garbage collector runs: the generation is closed as the last reference goes."""
    import gc

    with tiny_models["llama"].context(n_ctx=128) as ctx:
        gc.disable()
        try:
            gen = ctx.generate([5, 6, 7], max_tokens=40, ignore_eos=True)
            next(gen)
            del gen
            ctx.eval([1, 2])  # BusyError while the generation were alive
        finally:
            gc.enable()
        with ctx.generate([5, 6], max_tokens=20, ignore_eos=True) as gen:  # close() through `with`
            next(gen)
        assert gen.finish_detail == "cancelled"
        ctx.eval([3])


def test_cancel_makes_eval_raise_and_the_next_call_runs(smollm2):
    prompt = long_prompt(smollm2, 1000)
    with smollm2.context(n_ctx=2048, n_batch=1024, n_ubatch=64, capture=["l_out-0"]) as ctx:
        cancel_in_ubatch(ctx, 2)
        with pytest.raises(loopcpp.CancelledError):
            ctx.eval(prompt)
        assert ctx.n_past == 64
        ctx.reset()
        assert ctx.eval(prompt[:10]).shape == (smollm2.n_vocab,)


# --- state --------------------------------------------------------------------------------
def test_saved_state_continues_exactly(smollm2, tmp_path):
    """cache="continue" appends to what the cache holds: the reply after a restored state is the
    one the original context gives, from its cached tokens (none re-evaluated but the last)."""
    with smollm2.context(n_ctx=256, loop="auto") as ctx:
        greedy(ctx, n=4)
        n_cached = ctx.n_past
        saved = ctx.save_state()
        ctx.save_state_file(tmp_path / "s.bin")
        want = ctx.complete(" four,", max_tokens=8, temperature=0, cache="continue")
        assert want.usage.cached_tokens >= n_cached - 1
    for load in (lambda c: c.load_state(saved), lambda c: c.load_state_file(tmp_path / "s.bin")):
        with smollm2.context(n_ctx=256, loop="auto") as ctx:
            load(ctx)
            assert ctx.n_past == n_cached
            got = ctx.complete(" four,", max_tokens=8, temperature=0, cache="continue")
            assert got.text == want.text and got.usage.cached_tokens == want.usage.cached_tokens


def test_the_cache_modes(tiny_models):
    """"prefix" (the default) treats the prompt as the whole text and keeps the common prefix;
    "continue" appends (an empty prompt continues the cache); "reset" starts afresh."""
    with tiny_models["llama"].context(n_ctx=128) as ctx:
        ctx.complete([5, 6, 7, 8], max_tokens=2, temperature=0, ignore_eos=True)
        assert isinstance(ctx.tokens, tuple) and len(ctx.tokens) == 6  # the prompt and both reply tokens
        again = ctx.complete([5, 6, 9], max_tokens=1, temperature=0, ignore_eos=True)
        assert again.usage.cached_tokens == 2 and ctx.tokens[:3] == (5, 6, 9) and len(ctx.tokens) == 4
        more = ctx.complete([10], max_tokens=1, temperature=0, ignore_eos=True, cache="continue")
        assert (more.usage.prompt_tokens, more.usage.cached_tokens) == (5, 4) and ctx.tokens[4] == 10
        before = ctx.tokens
        cont = ctx.complete([], max_tokens=1, temperature=0, ignore_eos=True, cache="continue")
        assert ctx.tokens[:len(before)] == before and cont.usage.cached_tokens == len(before) - 1
        fresh = ctx.complete([5, 6, 7, 8], max_tokens=1, temperature=0, ignore_eos=True, cache="reset")
        assert fresh.usage.cached_tokens == 0
        with pytest.raises(ValueError, match="cache="):
            ctx.complete([5], cache="append")
        pending = ctx.generate([], max_tokens=1, cache="continue")
        ctx.reset()  # emptied before the continuation starts
        with pytest.raises(ValueError, match="so is the cache"):
            next(pending)
        ctx.complete([5], max_tokens=1)  # the context is free again
        with pytest.raises(AttributeError):
            ctx.tokens = ()


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
        want_a = ctx.complete(" and", max_tokens=5, temperature=0, cache="continue").text
        ctx.reset()
        greedy(ctx, "Conversation B: water is", n=3)
        ctx.load_state(a, seq=0)  # back to A
        back = ctx.complete(" and", max_tokens=5, temperature=0, cache="continue")
        assert back.text == want_a and back.usage.cached_tokens > 0
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


def test_a_full_context_ends_the_reply_with_length(tiny_models):
    with tiny_models["llama"].context(n_ctx=16) as ctx:  # llama.cpp may round n_ctx up
        prompt = [5 + i % 200 for i in range(ctx.n_ctx - 6)]
        done = ctx.complete(prompt, max_tokens=50, ignore_eos=True)
        assert (done.finish_reason, done.finish_detail) == ("length", "context")
        assert ctx.n_past == ctx.n_ctx and done.usage.completion_tokens == 7  # the last one sampled, not evaluated
