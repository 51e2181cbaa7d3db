"""The loop decides per sequence (docs/looping.md, "When the loop runs"): ubatches that mix several
sequences, prompt and decode phases, and a prompt shared by several sequences agree with the
numpy reference, where each sequence is evaluated on its own. So a request's result does not
depend on what else shares its ubatch."""

import itertools

import numpy as np
import pytest

import loopcpp
import reference
import tinymodels
from conftest import EXACT, rel_err

TOL = 1e-4  # as test_loop_matrix
WINDOW = (2, 4)
BETA = 0.3
rng = np.random.default_rng(21)


def tokens(n):
    return rng.integers(3, 288, n).tolist()


# Each ubatch: rows of (token, seq_ids). Sequence 1 starts a second prompt phase in ubatch 4.
MIXED = [
    [(t, [0]) for t in tokens(6)] + [(t, [1]) for t in tokens(4)],
    [(t, [0]) for t in tokens(1)] + [(t, [1]) for t in tokens(1)] + [(t, [2]) for t in tokens(5)],
    [(t, [s]) for s, t in zip((0, 1, 2), tokens(3))],
    [(t, [0]) for t in tokens(1)] + [(t, [1]) for t in tokens(3)] + [(t, [2]) for t in tokens(1)],
    [(t, [s]) for s, t in zip((2, 0, 1), tokens(3))],
    [(t, [s]) for s, t in zip((0, 1, 2), tokens(3))],
]
# A 5-token prompt shared by four sequences, then each goes its own way; sequence 3 adds a
# two-token turn while the others decode.
SHARED = [
    [(t, [0, 1, 2, 3]) for t in tokens(5)],
    [(t, [s]) for s, t in zip((0, 1, 2, 3), tokens(4))],
    [(t, [s]) for s, t in zip((0, 1, 2), tokens(3))] + [(t, [3]) for t in tokens(2)],
    [(t, [s]) for s, t in zip((3, 2, 1, 0), tokens(4))],
]


def run_cpp(ctx, spec, ubatches):
    if spec is None:
        ctx.reset()  # keep the loop and its per-sequence choices
    else:
        ctx.set_loop(spec)  # also empties the cache
    n_seen = {}
    out = []
    for ub in ubatches:
        positions = []
        for _, seqs in ub:
            positions.append(n_seen.get(seqs[0], 0))
            for s in seqs:
                n_seen[s] = n_seen.get(s, 0) + 1
        out.append(ctx.eval_batch([t for t, _ in ub], positions, [s for _, s in ub]))
    return out


@pytest.fixture(scope="module")
def contexts(tiny_models):
    ctxs = {a: m.context(n_ctx=256, n_batch=64, n_ubatch=64, n_seq_max=4, **EXACT) for a, m in tiny_models.items()}
    yield ctxs
    for c in ctxs.values():
        c.close()


CASES = list(itertools.product(("block", "layer"), ("euler", "rk"), ("first", "last"), ("bypass", "full", "first:2")))


@pytest.mark.parametrize("scenario", ["mixed", "shared"])
@pytest.mark.parametrize("mode,integrator,kv,decode", CASES)
@pytest.mark.parametrize("arch", tinymodels.ARCHS)
def test_sequences_match_reference(arch, mode, integrator, kv, decode, scenario, contexts, references):
    ubatches = MIXED if scenario == "mixed" else SHARED
    spec = f"{WINDOW[0]}:{WINDOW[1]}x3,{mode},{integrator},kv={kv},decode={decode}"
    spec += f",beta={BETA}" if integrator == "rk" else ""
    got = run_cpp(contexts[arch], spec, ubatches)
    want = reference.run_sequences(references[arch], reference.Loop(*WINDOW, 3, mode, integrator, BETA, kv, decode),
                                   ubatches)
    for b, (g, w) in enumerate(zip(got, want)):
        assert rel_err(g, w) < TOL, f"ubatch {b}"


def test_a_sequence_alone_or_alongside_others(tiny_models):
    """Sequence 0 of MIXED, run alone in its own ubatches, gives what it gave alongside others
    (the per-ubatch rule looped its decode steps whenever another sequence was prompting)."""
    spec = "2:4x3,block,rk,beta=0.3,decode=bypass"
    m = tiny_models["llama"]
    with m.context(n_ctx=256, n_batch=64, n_ubatch=64, n_seq_max=4, **EXACT) as ctx:
        together = run_cpp(ctx, spec, MIXED)
        alone = run_cpp(ctx, spec, [[r for r in ub if r[1] == [0]] for ub in MIXED])
    rows0 = [np.stack([g[i] for i, r in enumerate(ub) if r[1] == [0]]) for g, ub in zip(together, MIXED)]
    for a, t in zip(alone, rows0):
        assert rel_err(t, a) < TOL  # rounding only: the wrong rule differs by > 10 TOL (below)


def test_wrong_per_sequence_rule_fails(contexts, references):
    """The tolerance separates the contract from the old per-ubatch rule: a reference that loops
    sequence 1's decode step because sequence 2 is prompting in the same ubatch differs."""
    spec = "2:4x3,block,rk,beta=0.3,decode=bypass"
    got = run_cpp(contexts["llama"], spec, MIXED)
    loop = reference.Loop(*WINDOW, 3, "block", "rk", BETA, "first", "full")  # loops every decode step
    want = reference.run_sequences(references["llama"], loop, MIXED)
    assert rel_err(got[1], want[1]) > 10 * TOL


@pytest.mark.parametrize("mode,kv", [("block", "first"), ("block", "last"), ("layer", "first"), ("layer", "last")])
@pytest.mark.parametrize("arch", ["llama", "qwen3moe", "gemma3"])
def test_per_sequence_choices(arch, mode, kv, contexts, references):
    """Within the context's loop (bypass), sequence 1 runs unlooped and sequence 2 loops every
    decode step: a server's per-request "loop": "off" and decode mode."""
    ctx = contexts[arch]
    spec = f"{WINDOW[0]}:{WINDOW[1]}x3,{mode},rk,beta={BETA},kv={kv},decode=bypass"
    ctx.set_loop(spec)
    ctx.set_sequence_loop(1, loop=False)
    ctx.set_sequence_loop(2, decode="full")
    got = run_cpp(ctx, None, MIXED)
    ctx.reset_sequence_loops()
    loop = reference.Loop(*WINDOW, 3, mode, "rk", BETA, kv, "bypass")
    want = reference.run_sequences(references[arch], loop, MIXED, per_seq={1: None, 2: "full"})
    for b, (g, w) in enumerate(zip(got, want)):
        assert rel_err(g, w) < TOL, f"ubatch {b}"
    plain = reference.run_sequences(references[arch], loop, MIXED)
    assert rel_err(got[2], plain[2]) > 10 * TOL  # the choices changed something


def test_per_sequence_choices_are_validated(tiny_models):
    with tiny_models["llama"].context(n_ctx=64, n_seq_max=2) as ctx:
        with pytest.raises(loopcpp.LoopConfigError, match="does not loop"):
            ctx.set_sequence_loop(0)
        ctx.set_sequence_loop(1, loop=False)  # turning off where nothing loops is fine
        ctx.set_loop("2:4x3")
        with pytest.raises(loopcpp.LoopConfigError, match="outside"):
            ctx.set_sequence_loop(2)
        with pytest.raises(loopcpp.LoopConfigError, match="decode"):
            ctx.set_sequence_loop(0, decode="sometimes")


@pytest.mark.parametrize("spec,ok", [
    ("", True), ("on", True), ("off", True), ("2:4x1", True),
    ("2:4x3,decode=full", True), ("2:4x3,rk,beta=0.5,decode=first:4", True),
    ("2:4x4", False), ("1:3x3", False), ("2:4x3,kv=last", False), ("2:4x3,layer", False), ("2:4x3,bogus", False),
])
def test_a_request_spec_may_change_only_on_off_and_decode(spec, ok, tiny_models):
    """llama_loop_seq_set_spec: a server's per-request "loop" field (llama-server's patch uses it)."""
    from loopcpp._lib import ffi, lib

    with tiny_models["llama"].context(n_ctx=64, n_seq_max=2, loop="2:4x3") as ctx:
        rc = lib.llama_loop_seq_set_spec(ctx._h.ptr, 1, spec.encode())
        message = ffi.string(lib.llama_loop_last_error()).decode()
    assert (rc == 0) == ok, message
    if not ok:
        assert message  # a reason for the 400 response


DECODE_FIRST_2 = "2:4x3,beta=0.3,decode=first:2"  # a sequence's first two decode steps loop


def decode_steps(ctx, tokens):
    return [ctx.eval([t], logits="last") for t in tokens]


def test_a_removed_sequence_counts_its_decode_steps_afresh(tiny_models):
    """After its cache is cleared, a sequence that goes on one token at a time is a new sequence
    in its decode phase: its first two steps loop again, as in a context that never saw the old
    one (the count once carried over, so they did not)."""
    m = tiny_models["llama"]
    with m.context(n_ctx=64, loop=DECODE_FIRST_2, **EXACT) as ctx:
        ctx.eval(tokens(5))
        decode_steps(ctx, tokens(3))  # the old sequence: three decode steps
        ctx.reset()
        again = decode_steps(ctx, [40, 41, 42])
    with m.context(n_ctx=64, loop=DECODE_FIRST_2, **EXACT) as fresh:
        want = decode_steps(fresh, [40, 41, 42])
    with m.context(n_ctx=64, **EXACT) as unlooped:
        plain = decode_steps(unlooped, [40, 41, 42])
    assert all(np.array_equal(a, w) for a, w in zip(again, want))
    assert not np.array_equal(want[0], plain[0]) and not np.array_equal(want[1], plain[1])  # they looped


def test_a_cancelled_decode_step_is_not_counted(tiny_models):
    """A decode step that is cancelled mid-graph leaves no trace: the sequence's next steps loop
    as if it had never been tried (the count once advanced anyway, so one looped step less)."""
    from conftest import cancel_in_ubatch

    m = tiny_models["llama"]
    prompt, steps = tokens(5), tokens(3)
    with m.context(n_ctx=64, loop=DECODE_FIRST_2, capture=["l_out-0"], **EXACT) as ctx:
        ctx.eval(prompt)
        cancel_in_ubatch(ctx, 1)
        with pytest.raises(loopcpp.CancelledError):
            ctx.eval(steps[:1])
        assert ctx.n_past == len(prompt)
        got = decode_steps(ctx, steps)
    with m.context(n_ctx=64, loop=DECODE_FIRST_2, capture=["l_out-0"], **EXACT) as fresh:  # the same graph splits
        fresh.eval(prompt)
        want = decode_steps(fresh, steps)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


def rows_of(ctx, toks, pos0, verify):
    ctx.set_sequence_verify(0, verify)
    return ctx.eval_batch(toks, list(range(pos0, pos0 + len(toks))), [0] * len(toks))


def looped_or_not(ctx, toks, pos0, verify=False):
    """Evaluates sequence 0's rows as the context decides, and again forced looped and forced
    unlooped, each on the same cache (the rows are removed in between; so are their counts), then
    once more as the context decides, to go on from. Returns True if the context's own evaluation
    is the looped one, False if it is the unlooped one (bit for bit: the same graphs)."""
    outs = []
    for force in (None, "full", "off"):
        if force is not None:
            ctx.set_sequence_loop(0, loop=force != "off", decode="full")
        outs.append(rows_of(ctx, toks, pos0, verify))
        ctx._h.seq_rm_of(0, pos0)
        ctx.reset_sequence_loops()
    rows_of(ctx, toks, pos0, verify)
    mine, looped, unlooped = outs
    assert rel_err(looped, unlooped) > 1e-3  # the two can be told apart
    assert np.array_equal(mine, looped) or np.array_equal(mine, unlooped)
    return np.array_equal(mine, looped)


@pytest.mark.parametrize("mode", ["block", "layer"])
def test_a_verified_draft_is_decode_steps(mode, contexts):
    """Speculative verification (docs/looping.md): the sampled token and its draft are decode steps,
    so under bypass they run unlooped, as plain decoding would; the same rows unflagged are a
    prompt phase and loop."""
    ctx = contexts["llama"]
    ctx.set_loop(f"2:4x3,{mode},rk,decode=bypass")
    rows_of(ctx, tokens(6), 0, verify=False)
    draft = tokens(4)
    assert not looped_or_not(ctx, draft, 6, verify=True)
    ctx._h.seq_rm_of(0, 6)
    assert looped_or_not(ctx, draft, 6, verify=False)
    ctx.set_loop(f"2:4x3,{mode},rk,decode=full")
    rows_of(ctx, tokens(6), 0, verify=False)
    assert looped_or_not(ctx, draft, 6, verify=True)


def test_first_n_counts_the_draft_rows_that_stay(contexts):
    """decode=first:2: a verified draft of 3 rows counts 3 decode steps; when 2 of them are
    rejected (removed from the cache) they no longer count, so the next step is the second."""
    ctx = contexts["llama"]
    ctx.set_loop("2:4x3,block,rk,decode=first:2")
    rows_of(ctx, tokens(6), 0, verify=False)      # prompt phase
    assert looped_or_not(ctx, tokens(3), 6, verify=True)  # steps 1-3: the first two loop, so the chunk does
    ctx._h.seq_rm_of(0, 7)                        # two of the draft rejected: one step kept
    assert looped_or_not(ctx, tokens(1), 7)       # step 2
    assert not looped_or_not(ctx, tokens(1), 8)   # step 3


def test_verify_is_validated(tiny_models):
    with tiny_models["llama"].context(n_ctx=64, n_seq_max=2) as ctx:
        with pytest.raises(loopcpp.LoopConfigError, match="outside"):
            ctx.set_sequence_verify(2)
        ctx.set_sequence_verify(1)  # a choice that changes nothing where nothing loops
