"""Context: evaluation, streaming generation and chat on one llama.cpp context."""

from __future__ import annotations

import codecs
import functools
import random
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Generator, Literal, Optional, Sequence, Union, overload

import numpy as np

from . import state as _state
from ._numeric import log_softmax
from ._internals import ContextHandle, SamplerHandle, TensorTap
from .errors import BusyError, CancelledError, ContextError, ContextFullError, DecodeError, LoopConfigError
from .kvtypes import GGML_TYPES
from .generation import FINISH_REASONS, Completion, Generation, Timings, Token, TopLogprob, Usage
from .loop import LoopConfig, LoopLike, _decode_code, as_loop_config
from .model import POOLING
from .sampling import Sampling, sampling_from
from .system import default_flash_attn, default_threads

if TYPE_CHECKING:
    from .model import Model



# llama.cpp sizes per-position bookkeeping before it allocates the cache, so a huge n_ctx can use
# all memory before failing (10**9 positions touched 19 GB): refuse it before asking.
MAX_CTX = 1 << 24


def _exclusive(method):
    """Gives a method the context to itself: another thread waits for the current call; while a
    generation is in progress (between its tokens) the call is refused, as it would change the
    cache under that generation."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        with self._lock:
            if self._streaming:
                raise BusyError(f"{method.__name__}() while a generation is in progress on this context: "
                                "finish or close() that generator first")
            return method(self, *args, **kwargs)

    return guarded


class Context:
    """A llama.cpp context (KV cache + compute) on a Model, with an optional loop.

    loop: None leaves the loop to LOOPCPP_LOOP / the model's loopcpp.loop metadata; a LoopConfig,
    a spec string ("15:18x3", "auto", "off") or a dict sets it (and wins over both).
    type_k / type_v: KV cache types ("f16" default, "f32" for exact comparisons).
    capture: names of graph tensors to copy out at each eval (e.g. "l_out-16", layer 16's
    output), then in `captured`: name -> list of (n_tokens, width) arrays in compute order.
    count_nodes=True counts the graph nodes each eval runs (graph_nodes), for benchmarks.
    embeddings=True makes an embeddings context (see embed()); pooling: "mean", "cls", "last"
    or "none" (default: the model's own, else mean).
    n_threads: default the physical cores, as llama.cpp's tools choose.
    flash_attn: None leaves it to LLAMA_ARG_FLASH_ATTN (on / off / auto, as llama.cpp's tools
    read it), else to llama.cpp (auto).
    """

    def __init__(self, model: "Model", n_ctx: int = 2048, n_batch: int = 512, n_ubatch: int = 512,
                 n_threads: Optional[int] = None, n_threads_batch: Optional[int] = None,
                 type_k: Optional[str] = None, type_v: Optional[str] = None,
                 flash_attn: Optional[bool] = None, loop: LoopLike = None,
                 capture: Optional[Sequence[str]] = None, n_seq_max: int = 1, embeddings: bool = False,
                 pooling: Optional[str] = None, count_nodes: bool = False) -> None:
        for name, v in (("n_ctx", n_ctx), ("n_batch", n_batch), ("n_ubatch", n_ubatch), ("n_seq_max", n_seq_max)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive int")
        if getattr(model, "vocab_only", False):
            raise ContextError("a vocabulary-only model (vocab_only=True) has no weights to evaluate: load it without")
        if n_ctx > MAX_CTX:
            raise ContextError(f"n_ctx={n_ctx} is more than the {MAX_CTX} positions a context may have")
        for name, kv_type in (("type_k", type_k), ("type_v", type_v)):
            if kv_type is not None and kv_type not in GGML_TYPES:
                raise ValueError(f"{name}={kv_type!r} is not one of {', '.join(GGML_TYPES)}")
        if pooling is not None and (not embeddings or pooling not in POOLING):
            raise ValueError(f"pooling={pooling!r} needs embeddings=True and one of {', '.join(POOLING)}")
        if embeddings and min(n_ubatch, n_batch) % n_seq_max:
            # llama.cpp's worst-case reserve rounds n_ubatch up to a multiple of n_seq_max and
            # then fails to build the pooling graph
            raise ValueError(f"an embeddings context needs n_ubatch ({min(n_ubatch, n_batch)}) to be a multiple "
                             f"of n_seq_max ({n_seq_max})")
        loop_cfg = as_loop_config(loop)  # validate before any native work
        self._lock = threading.RLock()
        self._streaming = False
        self._idle_cancels = 0  # cancel() calls that found nothing running (they stop the next generation)
        threads = n_threads or default_threads()
        if flash_attn is None:
            flash_attn = default_flash_attn()
        pooling = (pooling or model.pooling) if embeddings else None
        self.model = model
        self._tap = TensorTap(capture or ()) if capture or count_nodes else None
        self._h = ContextHandle(
            model._h, n_ctx, n_batch, min(n_ubatch, n_batch), threads, n_threads_batch or threads,
            GGML_TYPES.get(type_k) if type_k else None, GGML_TYPES.get(type_v) if type_v else None,
            flash_attn, self._tap, n_seq_max, POOLING[pooling] if pooling else None,
        )
        model._contexts.add(self)  # closing the model closes this context first
        self.n_ctx: int = self._h.n_ctx
        self.n_batch: int = self._h.n_batch
        self.n_ubatch: int = self._h.n_ubatch
        self.n_seq_max: int = n_seq_max
        self.embeddings: bool = embeddings
        self.pooling: Optional[str] = pooling
        self._tokens: list[int] = []  # what the KV cache holds for sequence 0, in order
        self._several_sequences = False  # eval_batch filled the cache; eval() needs reset() first
        self._ubatch_starts: list[int] = []  # positions where a ubatch began (see _prefill)
        self._reused = 0  # prompt tokens the last _prefill kept from the cache
        if loop_cfg is not None:
            self.set_loop(loop_cfg)

    # --- loop --------------------------------------------------------------------------------
    @property
    def loop(self) -> LoopConfig:
        """The active loop, resolved for this model (LoopConfig.off() when looping is off)."""
        return LoopConfig.from_c(self._h.loop_get())

    @_exclusive
    def set_loop(self, loop: LoopLike, clear: bool = True) -> None:
        """Sets the loop ("off" or None turns it off).

        clear=True (default) empties the KV cache so later results do not depend on what was
        evaluated under the previous loop; clear=False keeps the cached tokens with the K/V they
        were stored with (with kv=first those equal the unlooped model's).
        """
        cfg = as_loop_config(loop) or LoopConfig.off()
        if cfg.enabled and not self.model.loop_supported:
            raise LoopConfigError(self.model._h.loop_refusal())
        self._h.loop_set(cfg.to_c())
        if clear:
            self._reset()

    @_exclusive
    def set_sequence_loop(self, seq: int, loop: bool = True, decode: Optional[str] = None) -> None:
        """Within the context's loop, for sequence `seq` of eval_batch (a server's per-request
        choice): loop=False runs it unlooped; decode ("bypass", "full", "first:N") replaces the
        decode mode for it. The window, K and integrator stay the context's, since sequences that
        share a ubatch share one graph. set_loop() and reset_sequence_loops() undo it."""
        code = _decode_code(decode if decode is not None else self.loop.decode)
        self._h.loop_seq_set(seq, bool(loop), code)

    @_exclusive
    def set_sequence_verify(self, seq: int, verify: bool = True) -> None:
        """verify=True: the rows sequence `seq` contributes to the next eval_batch calls verify a
        speculative draft (the sampled token, then the drafted ones). They are decode steps, not a
        prompt: under decode "bypass" they run unlooped, so speculation leaves the answer as plain
        decoding gives it (docs/looping.md, "Speculative decoding"). Lasts until verify=False,
        set_loop() or reset_sequence_loops()."""
        self._h.loop_seq_verify(seq, bool(verify))

    @_exclusive
    def reset_sequence_loops(self) -> None:
        """Every sequence follows the context's loop again."""
        self._h.loop_seq_reset(-1)

    # --- evaluation --------------------------------------------------------------------------
    @property
    def tokens(self) -> tuple[int, ...]:
        """What the KV cache holds for sequence 0, in order (read-only: reset(), eval() and the
        generation methods change it)."""
        return tuple(self._tokens)

    @property
    def n_past(self) -> int:
        return len(self._tokens)

    @_exclusive
    def reset(self) -> None:
        """Empties the KV cache."""
        self._reset()

    def _reset(self) -> None:
        self._h.memory_clear()
        self._tokens = []
        self._ubatch_starts = []
        self._several_sequences = False

    @_exclusive
    def eval(self, tokens: Sequence[int], logits: str = "last") -> Optional[np.ndarray]:
        """Appends tokens to the cache; returns logits for "last" (n_vocab,), "all" (n, n_vocab) or "none"."""
        self._h.set_cancelled(False)
        return self._eval(tokens, logits)

    def _eval(self, tokens: Sequence[int], logits: str) -> Optional[np.ndarray]:
        if logits not in ("last", "all", "none", "sample"):
            raise ValueError(f"logits={logits!r} must be 'last', 'all' or 'none'")
        if self._several_sequences:
            raise ValueError("the cache holds the sequences of eval_batch(); call reset() before eval()")
        tokens = self.model._check_tokens(tokens)
        if not tokens:
            raise ValueError("eval() needs at least one token")
        if self.n_past + len(tokens) > self.n_ctx:
            raise ContextFullError(
                f"{len(tokens)} tokens do not fit: {self.n_past} of {self.n_ctx} context positions are used "
                "(create the context with a larger n_ctx, or reset())"
            )
        if self._tap is not None:
            self._tap.reset()
        starts = self._ubatch_split(self.n_past, len(tokens))
        try:
            out = self._h.decode(tokens, self.n_past, logits)
        except DecodeError:
            # llama.cpp keeps the ubatches that completed (a cancel, a failed later ubatch, a
            # backend that failed: its ubatch is rolled back): so do we
            kept = self._h.pos_max() + 1 - self.n_past
            if kept > 0:
                self._ubatch_starts += [b for b in starts if b < self.n_past + kept]
                self._tokens += tokens[:kept]
            raise
        else:
            self._ubatch_starts += starts
            self._tokens += tokens
        finally:
            self._sync()
        return out

    @_exclusive
    def eval_batch(self, tokens: Sequence[int], positions: Sequence[int], seq_ids: Sequence[Union[int, Sequence[int]]],
                   logits: Optional[Sequence[bool]] = None) -> np.ndarray:
        """One llama_decode of rows from several sequences (a context made with n_seq_max > 1):
        row i is tokens[i] at positions[i] in sequence seq_ids[i] (an id, or a list of ids for a
        row that several sequences share). Returns the logits of the rows flagged in `logits`
        (default: every row), shape (rows, n_vocab). The loop decides per sequence
        (docs/looping.md): a sequence contributing two or more rows is in its prompt phase.
        Afterwards eval() and generate() need reset(): they keep sequence 0's bookkeeping."""
        tokens = self.model._check_tokens(tokens)
        n = len(tokens)
        if n == 0:
            raise ValueError("eval_batch() needs at least one row")
        seqs = [[s] if isinstance(s, int) else list(s) for s in seq_ids]
        want = [True] * n if logits is None else [bool(x) for x in logits]
        if len(positions) != n or len(seqs) != n or len(want) != n:
            raise ValueError(f"tokens, positions, seq_ids and logits must have the same length ({n})")
        if n > self.n_batch:
            raise ValueError(f"{n} rows do not fit in one batch of n_batch={self.n_batch}")
        for s in seqs:
            if not s or any(not isinstance(x, int) or not 0 <= x < self.n_seq_max for x in s):
                raise ValueError(f"seq_ids {s!r} must be ids in [0, n_seq_max={self.n_seq_max})")
        if any(not isinstance(p, int) or not 0 <= p < self.n_ctx for p in positions):
            raise ValueError(f"positions must be ints in [0, n_ctx={self.n_ctx})")
        self._several_sequences = True
        self._h.set_cancelled(False)
        if self._tap is not None:
            self._tap.reset()
        return self._h.decode_rows(tokens, list(positions), seqs, want)

    @property
    def captured(self) -> dict[str, list[np.ndarray]]:
        """The tensors named in `capture` from the last eval, as (n_tokens, width) float32 arrays."""
        if self._tap is None:
            return {}
        width = self.model.n_embd
        return {k: [v.reshape(-1, width) if v.size % width == 0 else v for v in vs]
                for k, vs in self._tap.captured.items()}

    @property
    def graph_nodes(self) -> int:
        """Graph nodes the backends ran in the last eval(), summed over its ubatches (a context
        made with count_nodes=True; the count costs a Python call per node, so time nothing with it)."""
        if self._tap is None:
            raise ContextError("graph_nodes needs a context made with count_nodes=True")
        return self._tap.asked

    @_exclusive
    def perf(self, reset: bool = False) -> dict:
        """llama.cpp's counters since the context was made or last reset: "n_prompt" (tokens in
        ubatches of more than one), "n_eval" (one-token decode steps) and "graphs_reused" (decodes
        that reused the previous graph instead of building one). reset=True zeroes them after
        reading. (Its timings are off in contexts made with llama.cpp's default parameters.)"""
        out = self._h.perf()
        if reset:
            self._h.perf_reset()
        return out

    @_exclusive
    def memory(self) -> dict:
        """Bytes the context holds, summed over host and devices: "model" (weights), "kv" (the
        cache), "compute" (compute buffers, reserved for the current loop's largest graph),
        "graph_meta" (graph metadata on the host), and "graph_max_nodes" (the node budget)."""
        return self._h.memory()

    def _ubatch_split(self, pos0: int, n: int) -> list[int]:
        """Where llama.cpp starts ubatches for n tokens at pos0: every n_ubatch tokens within
        each n_batch chunk (one sequence)."""
        return [pos0 + c + u for c in range(0, n, self.n_batch) for u in range(0, min(self.n_batch, n - c), self.n_ubatch)]

    def _sync(self) -> None:
        """Makes self._tokens agree with the cache after an error or interruption."""
        n_cache = self._h.pos_max() + 1
        if n_cache < len(self._tokens):
            self._truncate(n_cache)
        elif n_cache > len(self._tokens) and not self._h.seq_rm(len(self._tokens)):
            self._reset()

    def _truncate(self, n: int) -> None:
        self._tokens = self._tokens[:n]
        self._ubatch_starts = [b for b in self._ubatch_starts if b < n]

    def _prefill(self, prompt: list[int]) -> None:
        """Evaluates prompt for sampling, reusing the cached common prefix (how many tokens it
        reused is left in self._reused, also when the evaluation is cancelled).

        A looped ubatch's result depends on where it starts (docs/looping.md), so with a loop the
        reuse stops at the start of a ubatch of the earlier evaluation: the same prompt twice then
        gives the same answer, and a chat turn continues exactly where the cache left off."""
        n = 0
        for a, b in zip(self._tokens, prompt):
            if a != b:
                break
            n += 1
        n = min(n, len(prompt) - 1)  # re-evaluate at least one token to get its logits
        if self.loop.enabled:
            n = max((b for b in self._ubatch_starts if b <= n), default=0)
        if n < len(self._tokens):
            if not self._h.seq_rm(n):
                self._reset()
                n = 0
            self._truncate(n)
        self._reused = n
        self._eval(prompt[n:], logits="sample")

    @_exclusive
    def perplexity(self, tokens: Sequence[int]) -> float:
        """Perplexity of tokens[1:] given their prefixes, evaluated from an empty cache."""
        tokens = list(tokens)
        if len(tokens) < 2:
            raise ValueError("perplexity needs at least two tokens")
        self._reset()
        self._h.set_cancelled(False)
        all_logits = self._eval(tokens, logits="all")
        assert all_logits is not None  # logits="all" returns them
        logp = log_softmax(all_logits)
        nll = -logp[np.arange(len(tokens) - 1), tokens[1:]]
        return float(np.exp(nll.mean()))

    # --- generation --------------------------------------------------------------------------
    def generate(self, prompt: Union[str, Sequence[int]], max_tokens: int = 256,
                 stop: Union[str, Sequence[str]] = (), stop_tokens: Sequence[int] = (),
                 add_special: bool = True, parse_special: bool = True, sampling: Optional[Sampling] = None,
                 logprobs: Optional[int] = None, cache: str = "prefix", **sampling_kw) -> Generation:
        """Streams Tokens after prompt until an end-of-generation token, a stop string or stop
        token, max_tokens, the end of the context or cancel(); the Generation's `completion`
        then says which (finish_reason "stop" or "length", as OpenAI's API has it, and
        finish_detail "eog", "stop", "stop_token", "max_tokens", "context" or "cancelled") with
        token usage and timings. Sampling keywords (temperature=, top_k=, grammar=, ...) change
        `sampling` (or the defaults). logprobs=N gives each token's log-probability and its N
        most likely alternatives (0: the token's only).

        cache says what the prompt is to what the KV cache holds (`tokens`):
        "prefix" (default): the prompt is the whole text, and the cache's longest common prefix
        with it is reused (the rest of the cache is dropped);
        "continue": the prompt follows what the cache holds, e.g. after load_state() or a
        previous reply (it may be empty then: the reply continues the cache);
        "reset": the cache is emptied first."""
        if cache not in ("prefix", "continue", "reset"):
            raise ValueError(f"cache={cache!r} must be 'prefix', 'continue' or 'reset'")
        sampling = sampling_from(sampling, **sampling_kw)
        if not isinstance(max_tokens, int) or max_tokens < 0:
            raise ValueError(f"max_tokens={max_tokens!r} must be an int >= 0")
        stops = [stop] if isinstance(stop, str) else list(stop)
        if any(not isinstance(x, str) for x in stops):
            raise ValueError(f"stop={stop!r} must be a string or a list of strings")
        stop_ids = set(self.model._check_tokens(stop_tokens))
        if logprobs is not None and (not isinstance(logprobs, int) or not 0 <= logprobs <= self.model.n_vocab):
            raise ValueError(f"logprobs={logprobs!r} must be None or an int in [0, n_vocab]")
        if isinstance(prompt, str):  # a continuation starts no new text: no BOS
            bos = add_special and cache != "continue"
            prompt_tokens = self.model.tokenize(prompt, bos, parse_special) if prompt else []
        else:
            prompt_tokens = self.model._check_tokens(prompt)
        if not prompt_tokens and (cache != "continue" or not self._tokens):
            raise ValueError("the prompt is empty" + (" and so is the cache" if cache == "continue" else ""))
        if len(prompt_tokens) > self.n_ctx:
            raise ContextFullError(f"the prompt has {len(prompt_tokens)} tokens but the context holds {self.n_ctx}")
        if self.embeddings:
            raise ValueError("an embeddings context does not generate: use embed(), or a context without embeddings=True")
        # built now, so a grammar that does not parse raises here rather than at the first token
        seed = sampling.seed if sampling.seed is not None else random.getrandbits(32)
        history = self._tokens + prompt_tokens if cache == "continue" else prompt_tokens
        sampler = SamplerHandle(self.model._h, sampling, seed, history=history, grammar=sampling.grammar_text())
        gen = Generation()
        # a cancel() from now on stops it, even before it starts; one meant for a generation
        # already running does not (the stream holds only a weak reference: a Generation dropped
        # unfinished is closed at once, giving the context back)
        gen._steps = self._stream(weakref.ref(gen), gen._tokens, self._idle_cancels, prompt_tokens, cache,
                                  max_tokens, [x for x in stops if x], stop_ids, sampler, logprobs)
        return gen

    def _stream(self, gen: "weakref.ref[Generation]", out: list[Token], idle_cancels: int, prompt: list[int],
                cache: str, max_tokens: int, stop: list[str], stop_ids: set[int], sampler: SamplerHandle,
                logprobs: Optional[int]) -> Generator[Token, None, None]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        held = ""  # text held back because it may begin a stop string
        finish, cached, n_generated, n_prompt_evaluated = "cancelled", 0, 0, 0
        t_prompt = t_gen = 0.0
        with self._lock:
            if self._streaming:
                sampler.close()
                raise BusyError("another generation is in progress on this context: finish or close() "
                                "that generator first, or use a second context")
            self._streaming = True
            self._h.set_cancelled(self._idle_cancels != idle_cancels)  # cancelled since it was made?
            if cache == "reset":
                self._reset()
            elif cache == "continue":  # what the cache holds when the generation starts
                prompt = self._tokens + prompt
        t0 = t1 = time.perf_counter()
        try:
            if not prompt:  # "continue" on a cache that was emptied after generate() was called
                raise ValueError("the prompt is empty and so is the cache")
            if self._h.cancelled:
                return
            try:
                with self._lock:
                    self._prefill(prompt)
            except CancelledError:
                return
            finally:  # after a cancel, n_past counts the ubatches that completed
                t_prompt = time.perf_counter() - t0
                cached = self._reused
                n_prompt_evaluated = max(0, self.n_past - cached)
            t1 = time.perf_counter()
            for _ in range(max_tokens):
                # one step under the lock: close() on another thread waits for it, then the next
                # step's first native call raises ClosedError instead of reading freed memory
                with self._lock:
                    if self._h.cancelled:
                        break
                    token = self._h.sample(sampler)
                    lp, top = self._logprobs(token, logprobs) if logprobs is not None else (None, None)
                    if self.model.is_eog(token) or token in stop_ids:
                        finish = "eog" if self.model.is_eog(token) else "stop_token"
                        break
                    piece = self.model.token_to_piece(token)
                n_generated += 1
                text = held + decoder.decode(piece)
                cut = _find_stop(text, stop)
                if cut is not None:
                    finish, held = "stop", ""
                    if cut:
                        out.append(Token(token, text[:cut], lp, top))
                        yield out[-1]
                    break
                keep = _stop_prefix_len(text, stop)
                held = text[len(text) - keep:] if keep else ""
                out.append(Token(token, text[:len(text) - keep], lp, top))
                yield out[-1]
                if self.n_past + 1 > self.n_ctx:
                    finish = "context"
                    break
                try:
                    with self._lock:
                        self._eval([token], logits="sample")
                except CancelledError:
                    break
            else:
                finish = "max_tokens"
            held += decoder.decode(b"", final=True)  # an incomplete UTF-8 sequence at the end
            if held:
                out.append(Token(-1, held))
                yield out[-1]
        finally:
            t_gen = time.perf_counter() - t1 if n_generated else 0.0
            self._streaming = False
            sampler.close()
            if (g := gen()) is not None:
                g._finish(Completion(
                    "".join(t.text for t in out), FINISH_REASONS[finish],
                    Usage(len(prompt), n_generated, cached),
                    Timings(t_prompt * 1000, n_prompt_evaluated, t_gen * 1000, n_generated), tuple(out), finish))

    def _logprobs(self, token: int, n: int) -> tuple[float, Optional[tuple[TopLogprob, ...]]]:
        """The model's log-probability of token (before sampling's transforms) and the n most
        likely tokens, from the logits the sampler saw."""
        logp = log_softmax(self._h.last_logits())
        if n == 0:
            return float(logp[token]), None
        best = np.argpartition(-logp, n - 1)[:n] if n < len(logp) else np.arange(len(logp))
        best = best[np.argsort(-logp[best], kind="stable")]
        piece = lambda t: self.model.token_to_piece(int(t)).decode("utf-8", errors="replace")
        return float(logp[token]), tuple(TopLogprob(int(t), piece(t), float(logp[t])) for t in best)

    def complete(self, prompt: Union[str, Sequence[int]], **kw) -> Completion:
        """The whole completion of prompt (see generate for the parameters); str() of it is the text."""
        return self.generate(prompt, **kw).completion

    @overload
    def chat(self, messages: Sequence[dict], stream: Literal[False] = False, chat_template: Optional[str] = None,
             **kw: Any) -> Completion: ...

    @overload
    def chat(self, messages: Sequence[dict], stream: Literal[True], chat_template: Optional[str] = None,
             **kw: Any) -> Generation: ...

    def chat(self, messages: Sequence[dict], stream: bool = False, chat_template: Optional[str] = None,
             **kw: Any) -> Union[Completion, Generation]:
        """Replies to messages ([{"role": "user", "content": ...}]) using the model's chat template
        (or chat_template=, a built-in name or Jinja text); the reply stops at the template's
        end-of-turn tokens. The cached prefix of the previous turn is reused. stream=True returns
        the Generation to iterate; otherwise its Completion."""
        tmpl = self.model.chat_format if chat_template is None else self.model._resolve_template(chat_template)
        tokens = tmpl.tokenize(self.model, messages, add_generation_prompt=True)
        kw["stop_tokens"] = list(kw.get("stop_tokens", ())) + tmpl.stop_tokens
        gen = self.generate(tokens, **kw)
        return gen if stream else gen.completion

    def cancel(self) -> None:
        """Stops the evaluation or generation in progress, from any thread (a UI's stop button,
        a Ctrl-C handler): compute stops within a graph node, a generation ends with finish_detail
        "cancelled", eval() raises CancelledError. The cache keeps what was complete. With nothing
        running, it stops the next generation already made (by generate() or chat(stream=True))."""
        if self._h.closed:
            return
        if not self._streaming and self._lock.acquire(blocking=False):  # nothing is running
            self._idle_cancels += 1
            self._lock.release()
        self._h.set_cancelled(True)

    # --- embeddings --------------------------------------------------------------------------
    @_exclusive
    def embed(self, texts: Union[str, Sequence[str]], normalize: bool = True) -> np.ndarray:
        """Pooled embeddings of texts, (len(texts), n_embd) float32 (a 1-D vector for one str),
        on a context made with embeddings=True. Several texts share each batch as separate
        sequences (up to n_seq_max at a time). The loop applies as to any prompt, and every text
        loops, a one-token text included (its sequence is run with decode=full)."""
        if not self.embeddings:
            raise ValueError("embed() needs a context made with embeddings=True (or use Model.embed())")
        if self.pooling == "none":
            raise ValueError("pooling='none' gives one vector per token: use pooling='mean', 'cls' or 'last'")
        single = isinstance(texts, str)
        items: list[str] = [texts] if isinstance(texts, str) else list(texts)
        if any(not isinstance(t, str) for t in items):
            raise ValueError("embed() takes a string or a list of strings")
        toks = [self.model.tokenize(t, add_special=True, parse_special=False) or [self.model.bos] for t in items]
        cap = min(self.n_batch, self.n_ctx)  # tokens of one batch
        for i, t in enumerate(toks):
            if len(t) > cap:
                raise ContextFullError(f"text {i} has {len(t)} tokens; this context embeds at most {cap} "
                                       "(raise n_ctx and n_batch)")
        out = np.empty((len(items), self.model.n_embd), np.float32)
        looped = self.loop.enabled
        self._h.set_cancelled(False)
        i = 0
        while i < len(toks):
            group, size = [i], len(toks[i])  # texts of one batch, each its own sequence
            while (i + len(group) < len(toks) and len(group) < self.n_seq_max
                   and size + len(toks[i + len(group)]) <= cap):
                size += len(toks[i + len(group)])
                group.append(i + len(group))
            self._reset()
            rows, pos, seqs = [], [], []
            for s, j in enumerate(group):
                rows += toks[j]
                pos += list(range(len(toks[j])))
                seqs += [[s]] * len(toks[j])
                if looped:  # decode=full: a one-token text loops too
                    self._h.loop_seq_set(s, True, _decode_code("full"))
            try:
                self._several_sequences = True
                self._h.decode_rows(rows, pos, seqs, [True] * len(rows), read_logits=False)
                for s, j in enumerate(group):
                    out[j] = self._h.embeddings_seq(s, self.model.n_embd)
            finally:
                if looped:
                    self._h.loop_seq_reset(-1)
                self._reset()
            i += len(group)
        if normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.where(norms > 0, norms, 1)
        return out[0] if single else out

    # --- state -------------------------------------------------------------------------------
    @_exclusive
    def save_state(self, seq: Optional[int] = None) -> bytes:
        """The context's state as bytes: its cache (and last logits), with the loop it was built
        under and the tokens it holds. seq: one sequence's cache only (a chat app switching
        conversations saves each conversation's sequence)."""
        self._check_seq(seq)
        data = self._h.state_get(seq)
        tokens = self._tokens if seq in (None, 0) and not self._several_sequences else []
        return _state.pack(self, data, seq, tokens, self._ubatch_starts if tokens else [],
                           several_sequences=self._several_sequences and seq is None)

    @_exclusive
    def load_state(self, data: bytes, seq: Optional[int] = None, adopt_loop: bool = False) -> None:
        """Restores what save_state() returned: the whole context (seq=None), or one sequence's
        cache into sequence `seq`, the other sequences untouched. A state saved under another loop
        is refused (its cache entries were written by that loop) unless adopt_loop=True, which
        first switches this context to the saved loop (whole-context states only: the other
        sequences' entries were written by this context's loop)."""
        self._check_seq(seq)
        header, blob = _state.unpack(data, self.model)
        if (header["seq"] is None) != (seq is None):
            raise _state.StateError("a whole-context state loads with seq=None, a sequence's state with seq=N")
        saved = header["loop"]
        if saved != str(self.loop):
            if not adopt_loop:
                raise _state.StateError(
                    f"the state was saved under loop '{saved}' but this context loops '{self.loop}': "
                    f"pass adopt_loop=True to switch to '{saved}', or set_loop('{saved}') first")
            if seq is not None:
                raise _state.StateError("adopt_loop=True restores whole-context states only: set_loop() first")
            self._h.loop_set((as_loop_config(saved) or LoopConfig.off()).to_c())
        try:
            self._h.state_set(blob, seq)  # a sequence's restore replaces that sequence only
        except Exception:
            self._reset() if seq is None else self._h.seq_rm_of(seq, 0)
            raise
        if seq is None:
            self._several_sequences = header.get("several_sequences", False)
        if seq in (None, 0):
            self._tokens = list(header["tokens"])
            self._ubatch_starts = list(header["ubatch_starts"])
            if not self._several_sequences:
                self._sync()

    def save_state_file(self, path, seq: Optional[int] = None) -> None:
        with open(path, "wb") as f:
            f.write(self.save_state(seq))

    def load_state_file(self, path, seq: Optional[int] = None, adopt_loop: bool = False) -> None:
        with open(path, "rb") as f:
            self.load_state(f.read(), seq, adopt_loop)

    def _check_seq(self, seq: Optional[int]) -> None:
        if seq is not None and (not isinstance(seq, int) or not 0 <= seq < self.n_seq_max):
            raise ValueError(f"seq={seq!r} must be None or a sequence id in [0, n_seq_max={self.n_seq_max})")

    # --- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Frees the context. A generation in progress stops at its next token (ClosedError)."""
        with self._lock:  # never under a decode running on another thread
            self._h.close()

    @property
    def closed(self) -> bool:
        return self._h.closed

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @_exclusive
    def kv_state(self) -> bytes:
        """The serialized cache of sequence 0 (llama_state_seq_get_data), for comparisons."""
        return self._h.state_get(0)


def _find_stop(text: str, stop: list[str]) -> Optional[int]:
    hits = [text.find(s) for s in stop if s and s in text]
    return min(hits) if hits else None


def _stop_prefix_len(text: str, stop: list[str]) -> int:
    """Length of the longest suffix of text that is a proper prefix of a stop string."""
    best = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
