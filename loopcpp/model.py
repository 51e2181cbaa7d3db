"""Model: a GGUF model loaded by llama.cpp, its metadata, tokenizer and chat template."""

from __future__ import annotations

import operator
import os
import threading
import weakref
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from . import chat_template as _chat_template
from ._internals import ModelHandle
from .errors import LoopConfigError
from .loop import LoopConfig, LoopLike
from .system import default_gpu_layers, default_repack

if TYPE_CHECKING:
    from .context import Context

# llama.cpp's pooling types (enum llama_pooling_type), by name
POOLING = {"none": 0, "mean": 1, "cls": 2, "last": 3}


class Model:
    """A GGUF model. `Model(path, n_gpu_layers=0)`; use as a context manager or call close().

    n_gpu_layers: layers offloaded to the GPU; default all of them on a build with a GPU backend
    (CUDA, Metal), none on a CPU build. `chat_template` replaces the GGUF's chat template: a
    llama.cpp built-in name ("chatml", "llama3", ...) or Jinja text. use_mmap=False reads the file
    into memory; use_mlock=True keeps the weights from being swapped out. `repack=False` keeps
    weights in their file layout instead of the CPU's repacked one (AMX, AVX-512 or NEON tiles),
    e.g. to compare the two matmul paths (default: LLAMA_ARG_REPACK if set, as llama.cpp's tools
    read it, else True). rpc=["host:port", ...]: place the offloaded layers on
    the devices of these ggml-rpc-servers (`loopcpp rpc-server`), split by their free memory, as
    llama.cpp's --rpc does; n_gpu_layers then defaults to all. tensor_split: each device's share of
    the offloaded layers, in device order (RPC servers first, as given), e.g. to keep a loop window
    on one host. progress: called as weights load with the fraction done, 0.0 to 1.0 (a progress
    bar); returning False stops loading and raises LoadCancelledError (a Cancel button).

    >>> with Model("SmolLM2-135M-Instruct.Q4_1.gguf") as model:
    ...     with model.context(n_ctx=2048, loop="auto") as ctx:
    ...         print(ctx.chat([{"role": "user", "content": "Hi"}]))
    """

    def __init__(self, path: str | os.PathLike, n_gpu_layers: Optional[int] = None, use_mmap: bool = True,
                 vocab_only: bool = False, repack: Optional[bool] = None, chat_template: Optional[str] = None,
                 use_mlock: bool = False, rpc: Sequence[str] = (), tensor_split: Sequence[float] = (),
                 progress: Optional[Callable[[float], Optional[bool]]] = None) -> None:
        if progress is not None and not callable(progress):
            raise TypeError(f"progress={progress!r} must be a callable taking the fraction loaded")
        if isinstance(rpc, str):
            rpc = [rpc]
        if tensor_split and (len(tensor_split) > 128 or any(not x >= 0 for x in tensor_split) or not sum(tensor_split) > 0):
            raise ValueError(f"tensor_split={list(tensor_split)!r}: give up to 128 non-negative shares, not all zero")
        if n_gpu_layers is None:
            n_gpu_layers = -1 if rpc else default_gpu_layers()
        if not isinstance(n_gpu_layers, int) or isinstance(n_gpu_layers, bool):
            raise TypeError(f"n_gpu_layers must be an int, got {n_gpu_layers!r}")
        if chat_template is not None:
            _chat_template.check_text(chat_template)
        if repack is None:
            repack = default_repack()
        self.path = os.fspath(path)
        self._h = ModelHandle(self.path, n_gpu_layers, use_mmap, vocab_only, repack, use_mlock, tuple(rpc),
                              tuple(tensor_split), progress)
        self._contexts: "weakref.WeakSet[Context]" = weakref.WeakSet()
        self._embedder: Optional["Context"] = None  # embed()'s context, kept for the next call
        self._embedder_key: Optional[tuple] = None
        self._embedder_lock = threading.Lock()
        self.metadata: dict[str, str] = self._h.metadata()
        self.arch: str = self.metadata.get("general.architecture", "unknown")
        # a vocabulary-only model has no layers: llama.cpp aborts if asked for their shapes
        shape = (lambda read: 0) if vocab_only else (lambda read: read())
        self.n_layer: int = shape(self._h.n_layer)
        self.n_embd: int = shape(self._h.n_embd)
        self.n_head: int = shape(self._h.n_head)
        self.n_head_kv: int = shape(self._h.n_head_kv)
        self.n_vocab: int = self._h.n_vocab()
        self.n_ctx_train: int = shape(self._h.n_ctx_train)
        self.n_swa: int = shape(self._h.n_swa)
        self.vocab_only = vocab_only
        self.n_expert: int = int(self.metadata.get(f"{self.arch}.expert_count", 0) or 0)
        self.n_expert_used: int = int(self.metadata.get(f"{self.arch}.expert_used_count", 0) or 0)
        self.size: int = self._h.size()
        self.n_params: int = self._h.n_params()
        self.description: str = self._h.desc()
        self.bos: int = self._h.bos()
        self.eos: int = self._h.eos()
        self.add_bos: bool = self._h.add_bos()  # whether tokenize(add_special=True) starts with BOS
        self._chat_override = chat_template
        self._chat: Optional[_chat_template.ChatTemplate] = None

    # --- loops -------------------------------------------------------------------------------
    @property
    def loop_supported(self) -> bool:
        """Whether this architecture has a loop-capable graph builder (False for a
        vocabulary-only model, which has no graph)."""
        return not self.vocab_only and self._h.loop_supported()

    @property
    def default_loop(self) -> LoopConfig:
        """The out-of-the-box recipe for this model, with its window resolved."""
        if self.vocab_only:
            raise LoopConfigError("a vocabulary-only model has no layers to loop: load it without vocab_only=True")
        return LoopConfig.from_c(self._h.default_loop())

    # --- text --------------------------------------------------------------------------------
    # Text in, bytes out, as llama-cpp-python has it: a token's piece may be part of a UTF-8
    # sequence, so pieces and detokenized spans are bytes; .decode() them where they are whole.
    def tokenize(self, text: str | bytes, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of text (str, or UTF-8 bytes). parse_special=True lets text spell control
        tokens such as "<|im_end|>"; keep it False for text from users."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return self._h.tokenize(data, add_special, parse_special)

    def detokenize(self, tokens: Sequence[int], remove_special: bool = False, unparse_special: bool = False) -> bytes:
        """The UTF-8 bytes of tokens (llama_detokenize)."""
        checked = self._check_tokens(tokens)
        return self._h.detokenize(checked, remove_special, unparse_special)

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        """The UTF-8 bytes of one token (possibly part of a character)."""
        self._check_tokens([token])
        return self._h.token_to_piece(token, special)

    def is_eog(self, token: int) -> bool:
        return self._h.is_eog(token)

    def _check_tokens(self, tokens: Sequence[int]) -> list[int]:
        """The tokens as Python ints; ValueError names the first one outside the vocabulary."""
        out = []
        for t in tokens:
            try:
                i = operator.index(t)
            except TypeError:
                raise ValueError(f"token {t!r} is not an integer") from None
            if not 0 <= i < self.n_vocab:
                raise ValueError(f"token {i} is outside the vocabulary [0, {self.n_vocab})")
            out.append(i)
        return out

    @property
    def chat_template(self) -> Optional[str]:
        """The GGUF's own chat template (Jinja text), or None."""
        return self._h.chat_template()

    @property
    def chat_format(self) -> "_chat_template.ChatTemplate":
        """The template chats use: the chat_template= override, the GGUF's, or a built-in
        fallback (with a warning), with its end-of-turn stop tokens."""
        if self._chat is None:
            self._chat = _chat_template.resolve(self, self._chat_override)
        return self._chat

    def _resolve_template(self, chat_template: str) -> "_chat_template.ChatTemplate":
        return _chat_template.resolve(self, chat_template)

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True,
                            chat_template: Optional[str] = None, **extra) -> str:
        """Formats messages ([{"role": ..., "content": ...}]) as a prompt. chat_template= overrides
        the model's for this call; `extra` reaches a Jinja template as variables."""
        tmpl = self.chat_format if chat_template is None else self._resolve_template(chat_template)
        return tmpl.render(messages, add_generation_prompt, **extra)

    def tokenize_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True,
                      chat_template: Optional[str] = None, **extra) -> list[int]:
        """The prompt tokens chat() evaluates for messages: the template's markup may become
        special tokens, message content never does (text a user types stays text)."""
        tmpl = self.chat_format if chat_template is None else self._resolve_template(chat_template)
        return tmpl.tokenize(self, messages, add_generation_prompt, **extra)

    # --- embeddings --------------------------------------------------------------------------
    @property
    def pooling(self) -> str:
        """How embeddings pool token vectors: the model's own (`<arch>.pooling_type`: cls, last or
        mean), else mean."""
        try:
            code = int(self.metadata.get(f"{self.arch}.pooling_type", POOLING["mean"]))
        except ValueError:
            return "mean"
        name = next((k for k, v in POOLING.items() if v == code), "none")
        return "mean" if name == "none" else name

    def embed(self, texts: "str | Sequence[str]", pooling: Optional[str] = None, normalize: bool = True,
              loop=None, **context_kw):
        """Pooled embeddings of texts, as Context.embed() on an embeddings context sized for them
        (loop= as for any context). The context is kept for the next call, and made again only
        when a call needs a larger one or other settings; close() frees it with the model."""
        from .context import Context

        items = [texts] if isinstance(texts, str) else list(texts)
        longest = max((len(self.tokenize(t)) for t in items if isinstance(t, str)), default=1)
        size = max(512, -(-longest // 64) * 64)  # a multiple of 64, so any n_seq_max <= 64 divides it
        n_seq = 1 << min(6, max(0, len(items) - 1).bit_length())
        key = (pooling, repr(loop), tuple(sorted((k, repr(v)) for k, v in context_kw.items())))
        with self._embedder_lock:
            ctx = self._embedder
            fits = (ctx is not None and not ctx.closed and self._embedder_key == key
                    and ctx.n_ctx >= context_kw.get("n_ctx", size) and ctx.n_seq_max >= context_kw.get("n_seq_max", n_seq))
            if not fits:
                if ctx is not None and self._embedder_key == key:  # grow, never shrink
                    size, n_seq = max(size, ctx.n_ctx), max(n_seq, ctx.n_seq_max)
                if ctx is not None:
                    ctx.close()
                kw = dict(context_kw)
                kw.setdefault("n_ctx", size)
                kw.setdefault("n_batch", kw["n_ctx"])
                kw.setdefault("n_ubatch", kw["n_batch"])
                kw.setdefault("n_seq_max", n_seq)
                self._embedder = ctx = Context(self, embeddings=True, pooling=pooling, loop=loop, **kw)
                self._embedder_key = key
        assert ctx is not None
        return ctx.embed(texts, normalize=normalize)

    # --- contexts ----------------------------------------------------------------------------
    def context(self, n_ctx: int = 2048, n_batch: int = 512, n_ubatch: int = 512,
                n_threads: Optional[int] = None, n_threads_batch: Optional[int] = None,
                type_k: Optional[str] = None, type_v: Optional[str] = None,
                flash_attn: Optional[bool] = None, loop: LoopLike = None,
                capture: Optional[Sequence[str]] = None, n_seq_max: int = 1, embeddings: bool = False,
                pooling: Optional[str] = None, count_nodes: bool = False) -> "Context":
        """A new inference context on this model; the parameters are Context's."""
        from .context import Context

        return Context(self, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, n_threads=n_threads,
                       n_threads_batch=n_threads_batch, type_k=type_k, type_v=type_v, flash_attn=flash_attn,
                       loop=loop, capture=capture, n_seq_max=n_seq_max, embeddings=embeddings, pooling=pooling,
                       count_nodes=count_nodes)  # Context refuses a vocabulary-only model

    def close(self) -> None:
        for ctx in list(self._contexts):
            ctx.close()
        self._h.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Model({self.path!r}, arch={self.arch}, n_layer={self.n_layer}, n_embd={self.n_embd})"


ARCH_KINDS = ("layered", "recurrent", "hybrid", "diffusion")  # enum llama_loop_arch_kind


def architectures() -> dict[str, str]:
    """Every architecture the pinned llama.cpp knows, by its GGUF name, with llama.cpp's word for
    it: "layered" (attention layers: it loops once its graph builder is converted, which
    Model.loop_supported tells for a loaded model), or "recurrent", "hybrid" or "diffusion",
    which cannot loop."""
    from ._lib import ffi, lib

    out = {}
    i = 0
    while (name := lib.llama_loop_arch_name(i)) != ffi.NULL:
        out[ffi.string(name).decode()] = ARCH_KINDS[lib.llama_loop_arch_kind(i)]
        i += 1
    return out
