"""Context: evaluation, streaming generation and chat on one llama.cpp context."""

from __future__ import annotations

import codecs
import functools
import os
import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Union

import numpy as np

from ._internals import ContextHandle, SamplerHandle, TensorTap
from .errors import BusyError, ContextFullError, LoopConfigError
from .loop import LoopConfig, LoopLike, as_loop_config

if TYPE_CHECKING:
    from .model import Model

GGML_TYPES = {"f32": 0, "f16": 1, "q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "bf16": 30}


@dataclass(frozen=True)
class Token:
    """One generated token: its id and the text it completes (may be "" inside a UTF-8 sequence).
    Text held back because it could begin a stop string is flushed at the end with id -1."""

    id: int
    text: str


@dataclass(frozen=True)
class Sampling:
    """llama.cpp's sampler chain parameters; temperature <= 0 is greedy."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature={self.temperature!r} must be >= 0")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k={self.top_k!r} must be an int >= 0 (0 = off)")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1]")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p={self.min_p!r} must be in [0, 1]")


def _cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


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
    """

    def __init__(self, model: "Model", n_ctx: int = 2048, n_batch: int = 512, n_ubatch: int = 512,
                 n_threads: Optional[int] = None, n_threads_batch: Optional[int] = None,
                 type_k: Optional[str] = None, type_v: Optional[str] = None,
                 flash_attn: Optional[bool] = None, loop: LoopLike = None,
                 capture: Optional[Sequence[str]] = None, n_seq_max: int = 1) -> None:
        for name, v in (("n_ctx", n_ctx), ("n_batch", n_batch), ("n_ubatch", n_ubatch), ("n_seq_max", n_seq_max)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive int")
        for name, v in (("type_k", type_k), ("type_v", type_v)):
            if v is not None and v not in GGML_TYPES:
                raise ValueError(f"{name}={v!r} is not one of {', '.join(GGML_TYPES)}")
        loop_cfg = as_loop_config(loop)  # validate before any native work
        self._lock = threading.RLock()
        self._streaming = False
        threads = n_threads or _cpu_threads()
        self.model = model
        self._tap = TensorTap(capture) if capture else None
        self._h = ContextHandle(
            model._h, n_ctx, n_batch, min(n_ubatch, n_batch), threads, n_threads_batch or threads,
            GGML_TYPES.get(type_k) if type_k else None, GGML_TYPES.get(type_v) if type_v else None,
            flash_attn, self._tap, n_seq_max,
        )
        model._contexts.add(self)  # closing the model closes this context first
        self.n_ctx: int = self._h.n_ctx
        self.n_batch: int = self._h.n_batch
        self.n_ubatch: int = self._h.n_ubatch
        self.n_seq_max: int = n_seq_max
        self.tokens: list[int] = []  # what the KV cache holds for sequence 0, in order
        self._several_sequences = False  # eval_batch filled the cache; eval() needs reset() first
        self._ubatch_starts: list[int] = []  # positions where a ubatch began (see _prefill)
        self.finish_reason: Optional[str] = None
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
            raise LoopConfigError(
                f"architecture '{self.model.arch}' cannot loop yet (supported: llama, qwen2, qwen3, qwen3moe, gemma3)"
            )
        self._h.loop_set(cfg.to_c())
        if clear:
            self._reset()

    @_exclusive
    def set_sequence_loop(self, seq: int, loop: bool = True, decode: Optional[str] = None) -> None:
        """Within the context's loop, for sequence `seq` of eval_batch (a server's per-request
        choice): loop=False runs it unlooped; decode ("bypass", "full", "first:N") replaces the
        decode mode for it. The window, K and integrator stay the context's, since sequences that
        share a ubatch share one graph. set_loop() and reset_sequence_loops() undo it."""
        from .loop import _decode_code

        code = _decode_code(decode if decode is not None else self.loop.decode)
        self._h.loop_seq_set(seq, bool(loop), code)

    @_exclusive
    def reset_sequence_loops(self) -> None:
        """Every sequence follows the context's loop again."""
        self._h.loop_seq_reset(-1)

    # --- evaluation --------------------------------------------------------------------------
    @property
    def n_past(self) -> int:
        return len(self.tokens)

    @_exclusive
    def reset(self) -> None:
        """Empties the KV cache."""
        self._reset()

    def _reset(self) -> None:
        self._h.memory_clear()
        self.tokens = []
        self._ubatch_starts = []
        self._several_sequences = False

    @_exclusive
    def eval(self, tokens: Sequence[int], logits: str = "last") -> Optional[np.ndarray]:
        """Appends tokens to the cache; returns logits for "last" (n_vocab,), "all" (n, n_vocab) or "none"."""
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
            self._tap.captured.clear()
        try:
            out = self._h.decode(tokens, self.n_past, logits)
            self._ubatch_starts += self._ubatch_split(self.n_past, len(tokens))
            self.tokens += tokens
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
        return self._h.decode_rows(tokens, list(positions), seqs, want)

    @property
    def captured(self) -> dict[str, list[np.ndarray]]:
        """The tensors named in `capture` from the last eval, as (n_tokens, width) float32 arrays."""
        if self._tap is None:
            return {}
        width = self.model.n_embd
        return {k: [v.reshape(-1, width) if v.size % width == 0 else v for v in vs]
                for k, vs in self._tap.captured.items()}

    def _ubatch_split(self, pos0: int, n: int) -> list[int]:
        """Where llama.cpp starts ubatches for n tokens at pos0: every n_ubatch tokens within
        each n_batch chunk (one sequence)."""
        return [pos0 + c + u for c in range(0, n, self.n_batch) for u in range(0, min(self.n_batch, n - c), self.n_ubatch)]

    def _sync(self) -> None:
        """Makes self.tokens agree with the cache after an error or interruption."""
        n_cache = self._h.pos_max() + 1
        if n_cache < len(self.tokens):
            self._truncate(n_cache)
        elif n_cache > len(self.tokens) and not self._h.seq_rm(len(self.tokens)):
            self.reset()

    def _truncate(self, n: int) -> None:
        self.tokens = self.tokens[:n]
        self._ubatch_starts = [b for b in self._ubatch_starts if b < n]

    def _prefill(self, prompt: list[int]) -> None:
        """Evaluates prompt for sampling, reusing the cached common prefix.

        A looped ubatch's result depends on where it starts (docs/looping.md), so with a loop the
        reuse stops at the start of a ubatch of the earlier evaluation: the same prompt twice then
        gives the same answer, and a chat turn continues exactly where the cache left off."""
        n = 0
        for a, b in zip(self.tokens, prompt):
            if a != b:
                break
            n += 1
        n = min(n, len(prompt) - 1)  # re-evaluate at least one token to get its logits
        if self.loop.enabled:
            n = max((b for b in self._ubatch_starts if b <= n), default=0)
        if n < len(self.tokens):
            if not self._h.seq_rm(n):
                self._reset()
                n = 0
            self._truncate(n)
        self._eval(prompt[n:], logits="sample")

    @_exclusive
    def perplexity(self, tokens: Sequence[int]) -> float:
        """Perplexity of tokens[1:] given their prefixes, evaluated from an empty cache."""
        tokens = list(tokens)
        if len(tokens) < 2:
            raise ValueError("perplexity needs at least two tokens")
        self._reset()
        logits = self._eval(tokens, logits="all").astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        nll = -logp[np.arange(len(tokens) - 1), tokens[1:]]
        return float(np.exp(nll.mean()))

    # --- generation --------------------------------------------------------------------------
    def generate(self, prompt: Union[str, Sequence[int]], max_tokens: int = 256,
                 stop: Sequence[str] = (), add_special: bool = True, parse_special: bool = True,
                 sampling: Optional[Sampling] = None, **sampling_kw) -> Iterator[Token]:
        """Streams tokens after prompt until an end-of-generation token, a stop string, max_tokens
        or the end of the context; finish_reason says which ("eog", "stop", "length", "context")."""
        sampling = sampling or Sampling(**sampling_kw)
        if not isinstance(max_tokens, int) or max_tokens < 0:
            raise ValueError(f"max_tokens={max_tokens!r} must be an int >= 0")
        prompt_tokens = (self.model.tokenize(prompt, add_special, parse_special)
                         if isinstance(prompt, str) else list(prompt))
        if not prompt_tokens:
            raise ValueError("the prompt is empty")
        if len(prompt_tokens) > self.n_ctx:
            raise ContextFullError(f"the prompt has {len(prompt_tokens)} tokens but the context holds {self.n_ctx}")
        return self._stream(prompt_tokens, max_tokens, list(stop), sampling)

    def _stream(self, prompt: list[int], max_tokens: int, stop: list[str], sampling: Sampling) -> Iterator[Token]:
        seed = sampling.seed if sampling.seed is not None else random.getrandbits(32)
        sampler = SamplerHandle(sampling.temperature, sampling.top_k, sampling.top_p, sampling.min_p, seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.finish_reason = None
        held = ""  # text held back because it may begin a stop string
        with self._lock:
            if self._streaming:
                sampler.close()
                raise BusyError("another generation is in progress on this context: finish or close() "
                                "that generator first, or use a second context")
            self._streaming = True
        try:
            with self._lock:
                self._prefill(prompt)
            for _ in range(max_tokens):
                token = self._h.sample(sampler)
                if self.model.is_eog(token):
                    self.finish_reason = "eog"
                    break
                text = held + decoder.decode(self.model.token_to_piece(token))
                cut = _find_stop(text, stop)
                if cut is not None:
                    self.finish_reason = "stop"
                    if cut:
                        yield Token(token, text[:cut])
                    break
                keep = _stop_prefix_len(text, stop)
                held = text[len(text) - keep:] if keep else ""
                yield Token(token, text[:len(text) - keep])
                if self.n_past + 1 > self.n_ctx:
                    self.finish_reason = "context"
                    break
                with self._lock:
                    self._eval([token], logits="sample")
            else:
                self.finish_reason = "length"
            if held and self.finish_reason != "stop":
                yield Token(-1, held)
        finally:
            self._streaming = False
            sampler.close()

    def complete(self, prompt: Union[str, Sequence[int]], **kw) -> str:
        """The whole completion of prompt as one string (see generate for the parameters)."""
        return "".join(t.text for t in self.generate(prompt, **kw))

    def chat(self, messages: Sequence[dict], stream: bool = False, **kw) -> Union[str, Iterator[str]]:
        """Replies to messages ([{"role": "user", "content": ...}]) using the model's chat template.
        The cached prefix of the previous turn is reused."""
        text = self.model.apply_chat_template(messages, add_assistant=True)
        tokens = self.model.tokenize(text, add_special=self._needs_bos(text), parse_special=True)
        pieces = (t.text for t in self.generate(tokens, **kw))
        return pieces if stream else "".join(pieces)

    def _needs_bos(self, text: str) -> bool:
        if not self.model._h.add_bos():
            return False
        bos_text = self.model.token_to_piece(self.model.bos, special=True).decode(errors="replace")
        return not (bos_text and text.startswith(bos_text))

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
        return self._h.state()


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
