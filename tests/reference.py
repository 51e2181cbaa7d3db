"""An independent numpy (float64) implementation of the five architectures and of looping.

Written from docs/looping.md and the architectures' definitions, not from loopcpp's C++: one short
function per concept, so each line can be checked against the contract. Weights and
hyperparameters are read from the GGUF with `gguf`.

The only concession to llama.cpp is gelu(): ggml's CPU backend evaluates GELU through a float16
lookup table, and the reference rounds the same way so gemma3 can be compared tightly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

# ---------------------------------------------------------------------------------------------
# primitives


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def gelu(x):
    """tanh-approximated GELU as ggml's CPU backend computes it: float16 in, float16 table out."""
    x16 = x.astype(np.float16).astype(np.float32)
    y = 0.5 * x16 * (1.0 + np.tanh(np.float32(0.7978845608028654) * x16 * (1.0 + np.float32(0.044715) * x16 * x16)))
    y = y.astype(np.float16).astype(np.float64)
    return np.where(x <= -10.0, 0.0, np.where(x >= 10.0, x, y))


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def rope(x, pos, base, neox):
    """Rotary embedding of x [n_tok, n_head, d] at positions pos [n_tok]."""
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2) / d)  # [d/2]
    ang = pos[:, None, None] * inv[None, None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    if neox:  # rotate halves: (x[i], x[i + d/2])
        a, b = x[..., : d // 2], x[..., d // 2:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    a, b = x[..., 0::2], x[..., 1::2]  # rotate adjacent pairs: (x[2i], x[2i + 1])
    out = np.empty_like(x)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out


def attention(q, k, v, q_pos, k_pos, scale, window):
    """Causal grouped-query attention. q [n, H, d]; k, v [m, KV, d]; window: None or n_swa."""
    n_head, n_kv = q.shape[1], k.shape[1]
    k = np.repeat(k, n_head // n_kv, axis=1)
    v = np.repeat(v, n_head // n_kv, axis=1)
    scores = np.einsum("nhd,mhd->hnm", q, k) * scale
    allowed = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        allowed &= (q_pos[:, None] - k_pos[None, :]) < window
    scores = np.where(allowed[None], scores, -np.inf)
    return np.einsum("hnm,mhd->nhd", softmax(scores), v)


# ---------------------------------------------------------------------------------------------
# the model


@dataclass
class Hparams:
    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    eps: float
    rope_base: float
    rope_base_swa: float
    n_swa: int
    swa: list
    n_expert_used: int


def load(path):
    """Reads hyperparameters and float64 weights (numpy layout: rows are output features)."""
    import gguf

    r = gguf.GGUFReader(str(path))

    def get(key, default=None):
        f = r.get_field(key)
        return default if f is None else f.contents()

    arch = get("general.architecture")
    n_layer = get(f"{arch}.block_count")
    n_swa = get(f"{arch}.attention.sliding_window", 0) or 0
    pattern = get(f"{arch}.attention.sliding_window_pattern", 6)
    swa = [bool(n_swa) and il % pattern < pattern - 1 for il in range(n_layer)] if arch == "gemma3" else [False] * n_layer
    hp = Hparams(
        arch=arch, n_layer=n_layer, n_embd=get(f"{arch}.embedding_length"),
        n_head=get(f"{arch}.attention.head_count"), n_head_kv=get(f"{arch}.attention.head_count_kv"),
        head_dim=get(f"{arch}.attention.key_length"), eps=get(f"{arch}.attention.layer_norm_rms_epsilon"),
        rope_base=get(f"{arch}.rope.freq_base", 10000.0), rope_base_swa=get(f"{arch}.rope.freq_base_swa", 10000.0),
        n_swa=n_swa, swa=swa, n_expert_used=get(f"{arch}.expert_used_count", 0),
    )
    weights = {t.name: np.asarray(t.data, dtype=np.float64) for t in r.tensors}
    return hp, weights


class Model:
    """Layer functions of one architecture. A layer sees earlier tokens only through `past`
    (their canonical cache entries) and attends over them plus its own current K/V."""

    def __init__(self, path):
        self.hp, self.w = load(path)

    def embed(self, tokens):
        x = self.w["token_embd.weight"][tokens]
        return x * np.sqrt(self.hp.n_embd) if self.hp.arch == "gemma3" else x

    def normed(self, x):
        """The final norm's output: what llama.cpp pools into embeddings."""
        return rms_norm(x, self.w["output_norm.weight"], self.hp.eps)

    def logits(self, x):
        return self.normed(x) @ self.w["output.weight"].T

    def qkv(self, il, h, pos):
        """This layer's query and current K/V for the normalised input h."""
        hp, w, p = self.hp, self.w, f"blk.{il}."
        n = h.shape[0]
        q, k, v = h @ w[p + "attn_q.weight"].T, h @ w[p + "attn_k.weight"].T, h @ w[p + "attn_v.weight"].T
        if hp.arch == "qwen2":
            q, k, v = q + w[p + "attn_q.bias"], k + w[p + "attn_k.bias"], v + w[p + "attn_v.bias"]
        q = q.reshape(n, hp.n_head, hp.head_dim)
        k = k.reshape(n, hp.n_head_kv, hp.head_dim)
        v = v.reshape(n, hp.n_head_kv, hp.head_dim)
        if hp.arch in ("qwen3", "qwen3moe", "gemma3"):
            q = rms_norm(q, w[p + "attn_q_norm.weight"], hp.eps)
            k = rms_norm(k, w[p + "attn_k_norm.weight"], hp.eps)
        base = hp.rope_base_swa if hp.swa[il] else hp.rope_base
        neox = hp.arch != "llama"
        return rope(q, pos, base, neox), rope(k, pos, base, neox), v

    def ffn(self, il, h, routing):
        w, p = self.w, f"blk.{il}."
        if self.hp.arch == "qwen3moe":
            return self.moe(il, h, routing)
        act = gelu if self.hp.arch == "gemma3" else silu
        return (act(h @ w[p + "ffn_gate.weight"].T) * (h @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T

    def route(self, il, h):
        """Top-k experts by softmax probability, weights renormalised to sum to 1."""
        probs = softmax(h @ self.w[f"blk.{il}.ffn_gate_inp.weight"].T)
        experts = np.argsort(-probs, axis=-1, kind="stable")[:, : self.hp.n_expert_used]
        weights = np.take_along_axis(probs, experts, axis=-1)
        return experts, weights / weights.sum(axis=-1, keepdims=True)

    def moe(self, il, h, routing):
        w, p = self.w, f"blk.{il}."
        experts, weights = routing.get(il) if routing.get(il) is not None else self.route(il, h)
        routing.record(il, (experts, weights))
        out = np.zeros_like(h)
        for t in range(h.shape[0]):
            for e, g in zip(experts[t], weights[t]):
                y = silu(w[p + "ffn_gate_exps.weight"][e] @ h[t]) * (w[p + "ffn_up_exps.weight"][e] @ h[t])
                out[t] += g * (w[p + "ffn_down_exps.weight"][e] @ y)
        return out

    def layer(self, il, x, pos, past, routing):
        """L_il(x): the whole layer. Returns (output, (k_cur, v_cur))."""
        hp, w, p = self.hp, self.w, f"blk.{il}."
        q, k, v = self.qkv(il, rms_norm(x, w[p + "attn_norm.weight"], hp.eps), pos)
        k_all = np.concatenate([past.k[il], k]) if past.k[il] is not None else k
        v_all = np.concatenate([past.v[il], v]) if past.v[il] is not None else v
        k_pos = np.concatenate([past.pos, pos])
        a = attention(q, k_all, v_all, pos, k_pos, 1.0 / np.sqrt(hp.head_dim), hp.n_swa if hp.swa[il] else None)
        a = a.reshape(x.shape[0], -1) @ w[p + "attn_output.weight"].T
        if hp.arch == "gemma3":
            h = x + rms_norm(a, w[p + "post_attention_norm.weight"], hp.eps)
            f = self.ffn(il, rms_norm(h, w[p + "ffn_norm.weight"], hp.eps), routing)
            return h + rms_norm(f, w[p + "post_ffw_norm.weight"], hp.eps), (k, v)
        h = x + a
        return h + self.ffn(il, rms_norm(h, w[p + "ffn_norm.weight"], hp.eps), routing), (k, v)


# ---------------------------------------------------------------------------------------------
# the cache and routing


@dataclass
class Cache:
    """Canonical K/V entries of earlier tokens: one per token and layer."""

    n_layer: int
    pos: np.ndarray = field(default_factory=lambda: np.zeros(0))
    k: list = None
    v: list = None

    def __post_init__(self):
        self.k = [None] * self.n_layer
        self.v = [None] * self.n_layer

    def commit(self, pos, kv):
        for il, (k, v) in enumerate(kv):
            self.k[il] = k if self.k[il] is None else np.concatenate([self.k[il], k])
            self.v[il] = v if self.v[il] is None else np.concatenate([self.v[il], v])
        self.pos = np.concatenate([self.pos, pos])


class Routing:
    """Natural routing (empty), or routes recorded on a first evaluation and replayed later."""

    def __init__(self, replay=None, record=False):
        self.routes = dict(replay or {})
        self.recording = record

    def get(self, il):
        return None if self.recording else self.routes.get(il)

    def record(self, il, route):
        if self.recording:
            self.routes[il] = route


NATURAL = Routing()

# ---------------------------------------------------------------------------------------------
# looping (docs/looping.md)


@dataclass(frozen=True)
class Loop:
    start: int
    end: int
    steps: int = 3
    mode: str = "block"
    integrator: str = "rk"
    beta: float = 0.5
    kv: str = "first"
    decode: str = "bypass"
    freeze_routing: bool = False


def integrate(G, x0, K, integrator, beta):
    """I_K(G, x0). G(x, k) evaluates the operator; k is the evaluation's index (0 = first)."""
    if integrator == "naive":
        x = x0
        for k in range(K):
            x = G(x, k)
        return x
    n = G(x0, 0)
    x = x0 + (n - x0) / K
    for k in range(1, K):
        x = x + (G(x, k) - x) / K
    return x if integrator == "euler" else beta * n + (1 - beta) * x


def run_window(model, loop, x0, pos, past):
    """The loop window on x0. Returns (y, kv) where kv[i - start] is what window layer i keeps."""
    s, e = loop.start, loop.end
    moe_layers = model.hp.arch == "qwen3moe"

    def chain(x, layers, routing=NATURAL):
        kv = []
        for il in layers:
            x, kv_il = model.layer(il, x, pos, past, routing)
            kv.append(kv_il)
        return x, kv

    if loop.mode == "block":
        frozen = {}

        def G(x, k):
            freeze = moe_layers and loop.freeze_routing
            routing = Routing(record=True) if (freeze and k == 0) else Routing(replay=frozen) if freeze else NATURAL
            y, _ = chain(x, range(s, e + 1), routing)
            if freeze and k == 0:
                frozen.update(routing.routes)
            return y

        y = integrate(G, x0, loop.steps, loop.integrator, loop.beta)
    else:  # layer mode: each layer integrated on its own, routing fixed at its first evaluation
        y = x0
        for il in range(s, e + 1):
            fixed = {}

            def G(x, k, il=il, fixed=fixed):
                routing = Routing(record=True) if k == 0 else Routing(replay=fixed)
                out, _ = model.layer(il, x, pos, past, routing)
                if k == 0:
                    fixed.update(routing.routes)
                return out

            y = integrate(G, y, loop.steps, loop.integrator, loop.beta)

    seed = x0 if loop.kv == "first" else y  # first: the natural chain; last: the stash chain
    _, kv = chain(seed, range(s, e + 1))
    return y, kv


class Session:
    """Evaluates tokens of one sequence ubatch by ubatch, like a llama.cpp context."""

    def __init__(self, model, loop: Optional[Loop] = None, n_ubatch: int = 512):
        self.model, self.loop, self.n_ubatch = model, loop, n_ubatch
        self.cache = Cache(model.hp.n_layer)
        self.n_decode = 0  # decode ubatches since the most recent prompt ubatch

    def loops_now(self, n_tokens):
        loop = self.loop
        if loop is None or loop.steps == 1:
            return False
        if n_tokens >= 2:  # a prompt ubatch
            self.n_decode = 0
            return True
        looped = loop.decode == "full" or (
            loop.decode.startswith("first:") and self.n_decode < int(loop.decode.split(":")[1]))
        self.n_decode += 1
        return looped

    def eval(self, tokens):
        """Logits for every token."""
        out = []
        for i in range(0, len(tokens), self.n_ubatch):
            out.append(self.ubatch(np.asarray(tokens[i:i + self.n_ubatch])))
        return np.concatenate(out)

    def ubatch(self, tokens):
        m, past = self.model, self.cache
        pos = np.arange(len(past.pos), len(past.pos) + len(tokens), dtype=np.float64)
        x = m.embed(tokens)
        looped = self.loops_now(len(tokens))
        kv = []
        il = 0
        while il < m.hp.n_layer:
            if looped and il == self.loop.start:
                x, kv_window = run_window(m, self.loop, x, pos, past)
                kv += kv_window
                il = self.loop.end + 1
                continue
            x, kv_il = m.layer(il, x, pos, past, NATURAL)
            kv.append(kv_il)
            il += 1
        past.commit(pos, kv)
        self.last_hidden = x  # the residual stream after the last layer, for embeddings
        return m.logits(x)


def run_sequences(model, loop, ubatches, per_seq=None):
    """Logits of every row of ubatches that mix several sequences; each ubatch is a list of
    (token, seq_ids) rows. The contract decides per sequence, and rows of different sequences
    never attend to each other, so a sequence's rows are what its own Session gives for its rows
    of each ubatch. A row shared by several sequences is computed in each; those sequences must
    all be in their prompt phase (the rule "a row loops if any of its sequences loops" is then moot).
    per_seq: {seq: None (runs unlooped) or the decode mode it uses instead of loop's}.
    Returns one (rows, n_vocab) array per ubatch."""
    import dataclasses

    def loop_of(s):
        if not per_seq or s not in per_seq:
            return loop
        return None if per_seq[s] is None else dataclasses.replace(loop, decode=per_seq[s])

    sessions = {}
    out = []
    for ub in ubatches:
        rows_of = {}
        for i, (_, seqs) in enumerate(ub):
            for s in seqs:
                rows_of.setdefault(s, []).append(i)
        logits = [None] * len(ub)
        for s, rows in rows_of.items():
            for i in rows:
                assert len(ub[i][1]) == 1 or len(rows) >= 2, "a shared row outside a prompt phase"
            session = sessions.setdefault(s, Session(model, loop_of(s), n_ubatch=10**6))
            got = session.ubatch(np.asarray([ub[i][0] for i in rows]))
            for r, i in enumerate(rows):
                if logits[i] is None:
                    logits[i] = got[r]
        out.append(np.stack(logits))
    return out
