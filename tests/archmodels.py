"""Tiny random-weight GGUFs of the architectures that loop without a numpy model of their own:
their looped graph is checked against llama.cpp itself (tests/test_arch_oracle.py). Each writer
lists only what the architecture's loader requires; shapes follow tinymodels.TinySpec."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import tinymodels
from tinymodels import TinySpec


SWIGLU = ("ffn_gate.weight", "ffn_up.weight", "ffn_down.weight")


class _Weights:
    """The llama-layout tiny weights, edited per architecture: drop, fuse and add tensors."""

    def __init__(self, spec: TinySpec) -> None:
        self.spec = spec
        self.t = tinymodels.tensors(TinySpec("llama", **{k: getattr(spec, k) for k in (
            "n_layer", "n_embd", "n_head", "n_head_kv", "head_dim", "n_ff", "n_vocab", "seed")}))
        self.rng = np.random.default_rng(spec.seed + 1)

    def mat(self, out_dim, in_dim, gain=1.0):
        return (self.rng.standard_normal((out_dim, in_dim)) * gain / np.sqrt(in_dim)).astype(np.float32)

    def norm(self, n):
        return (1.0 + 0.2 * self.rng.standard_normal(n)).astype(np.float32)

    def bias(self, n):
        return (0.3 * self.rng.standard_normal(n)).astype(np.float32)

    def drop(self, p, *names):
        for n in names:
            del self.t[p + n]

    def biases(self, p, **sizes):  # biases(p, attn_norm=E) adds blk.N.attn_norm.bias
        for n, size in sizes.items():
            self.t[p + n + ".bias"] = self.bias(size)

    def norms(self, p, **sizes):
        for n, size in sizes.items():
            self.t[p + n + ".weight"] = self.norm(size)

    def fuse_qkv(self, p, bias=False):
        qkv = [self.t.pop(p + f"attn_{x}.weight") for x in "qkv"]
        self.t[p + "attn_qkv.weight"] = np.concatenate(qkv)
        if bias:
            self.t[p + "attn_qkv.bias"] = self.bias(sum(len(m) for m in qkv))

    def fuse_gate_up(self, p):
        self.t[p + "ffn_up.weight"] = np.concatenate([self.t.pop(p + "ffn_gate.weight"), self.t[p + "ffn_up.weight"]])

    def experts(self, p, shared=False, biased=False):
        """Routed experts (and a shared one) in place of the dense SwiGLU FFN."""
        s = self.spec
        E, F, X = s.n_embd, s.n_ff, s.n_expert
        self.drop(p, *SWIGLU)
        self.t[p + "ffn_gate_inp.weight"] = self.mat(X, E, 3.0)
        if biased:
            self.t[p + "ffn_gate_inp.bias"] = self.bias(X)
        for n, (o, i) in (("gate", (F, E)), ("up", (F, E)), ("down", (E, F))):
            self.t[p + f"ffn_{n}_exps.weight"] = np.stack([self.mat(o, i) for _ in range(X)])
            if biased:
                self.t[p + f"ffn_{n}_exps.bias"] = np.stack([self.bias(o) for _ in range(X)])
            if shared:
                self.t[p + f"ffn_{n}_shexp.weight"] = self.mat(o, i)


def tensors(arch: str, spec: TinySpec) -> dict[str, np.ndarray]:
    w = _Weights(spec)
    E, H, KV, D, F = spec.n_embd, spec.n_head, spec.n_head_kv, spec.head_dim, spec.n_ff
    for il in range(spec.n_layer):
        p = f"blk.{il}."
        if arch == "phi3":  # fused QKV and fused gate+up
            w.fuse_qkv(p)
            w.fuse_gate_up(p)
        elif arch == "olmo2":  # norms after attention and FFN only, Q/K norms over whole rows
            w.drop(p, "attn_norm.weight", "ffn_norm.weight")
            w.norms(p, attn_q_norm=H * D, attn_k_norm=KV * D, post_attention_norm=E, post_ffw_norm=E)
        elif arch == "gemma2":
            w.norms(p, post_attention_norm=E, post_ffw_norm=E)
        elif arch == "qwen2moe":  # Q/K/V biases; routed experts plus a sigmoid-gated shared expert
            w.biases(p, attn_q=H * D, attn_k=KV * D, attn_v=KV * D)
            w.experts(p, shared=True)
            w.t[p + "ffn_gate_inp_shexp.weight"] = w.mat(1, E, 2.0)[0]
        elif arch == "gpt-oss":  # attention sinks, biased routed experts, no dense FFN
            w.experts(p, biased=True)
            w.drop(p, "ffn_norm.weight")
            w.norms(p, post_attention_norm=E)
            w.biases(p, attn_output=E)
            w.t[p + "attn_sinks.weight"] = w.bias(H)
        elif arch in ("starcoder2", "gpt2", "starcoder", "bloom", "phi2", "codeshell", "nemotron", "jais2", "pockettts"):
            w.drop(p, "ffn_gate.weight")  # LayerNorm with biases, an MLP without a gate
            if arch in ("gpt2", "starcoder", "bloom"):
                w.fuse_qkv(p, bias=True)
            if arch == "phi2":  # attention and MLP in parallel off one norm
                w.drop(p, "ffn_norm.weight")
            else:
                w.biases(p, ffn_norm=E)
            if arch != "pockettts":  # its projections have no biases
                w.biases(p, attn_norm=E, attn_output=E, ffn_up=F, ffn_down=E)
            else:
                w.biases(p, attn_norm=E)
        elif arch == "internlm2":
            w.fuse_qkv(p)
        elif arch == "seed_oss":  # the norm before the FFN is called post_attention_norm
            w.t[p + "post_attention_norm.weight"] = w.t.pop(p + "ffn_norm.weight")
        elif arch == "arcee":  # ReLU-squared MLP without a gate
            w.drop(p, "ffn_gate.weight")
        elif arch == "olmoe":  # row-wide Q/K norms, routed experts only
            w.norms(p, attn_q_norm=H * D, attn_k_norm=KV * D)
            w.experts(p)
        elif arch in ("orion", "stablelm"):  # LayerNorm with biases
            w.biases(p, attn_norm=E, ffn_norm=E)
        elif arch in ("cohere2", "command-r"):  # attention and FFN in parallel off one LayerNorm
            w.drop(p, "ffn_norm.weight")
        elif arch == "glm4":  # post-norms, fused gate+up
            w.norms(p, post_attention_norm=E, post_ffw_norm=E)
            w.fuse_gate_up(p)
        elif arch == "qwen":  # fused QKV with bias, an MLP of n_ff / 2
            w.fuse_qkv(p, bias=True)
            w.t[p + "ffn_gate.weight"], w.t[p + "ffn_up.weight"] = w.mat(F // 2, E), w.mat(F // 2, E)
            w.t[p + "ffn_down.weight"] = w.mat(E, F // 2)
        elif arch == "llama4" and (il + 1) % 2 == 0:  # every other layer MoE with a shared expert
            w.experts(p, shared=True)
        elif arch == "olmo":  # LayerNorm without parameters
            w.drop(p, "attn_norm.weight", "ffn_norm.weight")
        elif arch in ("falcon", "mpt"):  # fused QKV, an MLP without a gate
            w.fuse_qkv(p)
            w.drop(p, "ffn_gate.weight")
            if arch == "falcon":  # attention and MLP in parallel off one LayerNorm
                w.drop(p, "ffn_norm.weight")
                w.biases(p, attn_norm=E)
        elif arch == "jais":  # fused QKV, biases everywhere
            w.fuse_qkv(p, bias=True)
            w.biases(p, attn_norm=E, attn_output=E, ffn_norm=E, ffn_gate=F, ffn_up=F, ffn_down=E)
        elif arch == "bailingmoe" or (arch in ("deepseek", "dots1") and il > 0):  # deepseek, dots1: dense layer 0
            w.experts(p, shared=True)
        elif arch in ("dbrx", "grok"):  # a norm after attention, routed experts
            w.experts(p)
            w.norms(p, attn_output_norm=E)
            if arch == "dbrx":
                w.drop(p, "ffn_norm.weight")
                w.fuse_qkv(p)
            else:
                w.norms(p, post_ffw_norm=E)
        elif arch == "exaone4":  # norms after attention and FFN only
            w.drop(p, "attn_norm.weight", "ffn_norm.weight")
            w.norms(p, post_attention_norm=E, post_ffw_norm=E)
        elif arch == "plamo":  # attention and MLP in parallel off one norm
            w.drop(p, "ffn_norm.weight")
        elif arch == "hunyuan-moe":
            w.experts(p, shared=True)
        elif arch == "smallthinker":
            w.experts(p)
        elif arch == "bitnet":  # sub-norms inside attention and the MLP
            w.norms(p, attn_sub_norm=E, ffn_sub_norm=F)
        elif arch == "chatglm":
            w.fuse_gate_up(p)
        elif arch == "gptneox":  # fused QKV, LayerNorm and biases everywhere, an MLP without a gate
            w.fuse_qkv(p, bias=True)
            w.drop(p, "ffn_gate.weight")
            w.biases(p, attn_norm=E, attn_output=E, ffn_norm=E, ffn_up=F, ffn_down=E)
        elif arch == "ernie4_5-moe" and il > 0:  # dense layer 0; experts chosen with a bias, a shared expert
            w.experts(p, shared=True)
            w.t[p + "exp_probs_b.bias"] = w.bias(spec.n_expert)
        elif arch in ("apertus", "plm"):  # an MLP without a gate (xIELU, ReLU-squared)
            w.drop(p, "ffn_gate.weight")
            if arch == "plm":  # MLA-style: full-rank Q, low-rank K/V with one shared RoPE key
                NOPE, ROPE, KVL = PLM["nope"], PLM["rope"], PLM["kv_lora"]
                w.drop(p, "attn_k.weight", "attn_v.weight")
                w.t[p + "attn_q.weight"] = w.mat(H * (NOPE + ROPE), E, 2.0)
                w.t[p + "attn_kv_a_mqa.weight"] = w.mat(KVL + ROPE, E, 2.0)
                w.norms(p, attn_kv_a_norm=KVL)
                w.t[p + "attn_kv_b.weight"] = w.mat(H * (NOPE + D), KVL)
        elif arch == "deci":  # per-layer heads and FFN width: 0 heads, 0 K/V heads (one linear map), 0 FFN
            h, kv, f = DECI["heads"][il], DECI["heads_kv"][il], DECI["ff"][il]
            w.drop(p, "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight")
            if h == 0:
                w.drop(p, "attn_norm.weight")
            elif kv == 0:
                w.t[p + "attn_output.weight"] = w.mat(E, E)
            else:
                w.t[p + "attn_q.weight"], w.t[p + "attn_k.weight"] = w.mat(h * D, E, 2.0), w.mat(kv * D, E, 2.0)
                w.t[p + "attn_v.weight"], w.t[p + "attn_output.weight"] = w.mat(kv * D, E), w.mat(E, h * D)
            w.drop(p, "ffn_norm.weight", *SWIGLU)
            if f:
                w.norms(p, ffn_norm=E)
                w.t[p + "ffn_gate.weight"], w.t[p + "ffn_up.weight"] = w.mat(f, E), w.mat(f, E)
                w.t[p + "ffn_down.weight"] = w.mat(E, f)
        elif arch == "phimoe":  # RMS norms with biases, routed experts, biased attention output
            w.experts(p)
            w.biases(p, attn_norm=E, attn_output=E, ffn_norm=E)
        elif arch == "granitemoe":  # routed experts plus a shared one
            w.experts(p, shared=True)
        elif arch == "granite_swa":  # attention sinks
            w.t[p + "attn_sinks.weight"] = w.bias(H)
        elif arch == "graniteswitch":  # fused QKV; per-token switched LoRA deltas on every projection
            w.fuse_qkv(p)
            R, S = GRANITE_SWITCH["rank"], len(GRANITE_SWITCH["activate"]) + 1
            for n, (o, i) in (("attn_q", (H * D, E)), ("attn_k", (KV * D, E)), ("attn_v", (KV * D, E)),
                              ("attn_output", (E, H * D)), ("ffn_gate", (F, E)), ("ffn_up", (F, E)),
                              ("ffn_down", (E, F))):
                a, b = np.stack([w.mat(R, i) for _ in range(S)]), np.stack([w.mat(o, R) for _ in range(S)])
                a[0], b[0] = 0.0, 0.0  # slot 0: no adapter, no delta
                w.t[p + n + ".lora_a"], w.t[p + n + ".lora_b"] = a, b
        elif arch == "minicpm3":  # low-rank Q and KV decompressed into full K/V heads (no MLA cache)
            QL, KVL, ROPE, NOPE, VH = DS2["q_lora"], DS2["kv_lora"], DS2["rope"], DS2["nope"], DS2["v_head"]
            w.drop(p, "attn_q.weight", "attn_k.weight", "attn_v.weight")
            w.norms(p, attn_q_a_norm=QL, attn_kv_a_norm=KVL)
            w.t[p + "attn_q_a.weight"] = w.mat(QL, E)
            w.t[p + "attn_q_b.weight"] = w.mat(H * (NOPE + ROPE), QL, 2.0)
            w.t[p + "attn_kv_a_mqa.weight"] = w.mat(KVL + ROPE, E, 2.0)
            w.t[p + "attn_kv_b.weight"] = w.mat(H * (NOPE + VH), KVL)
            w.t[p + "attn_output.weight"] = w.mat(E, H * VH)
        elif arch == "deepseek2-ocr" and il > 0:  # plain MHA, a dense first layer, MoE with a shared expert
            w.experts(p, shared=True)
        elif arch == "glm4moe":  # Q/K/V biases, the FFN's norm is post_attention_norm, dense layer 0
            w.biases(p, attn_q=H * D, attn_k=KV * D, attn_v=KV * D)
            w.t[p + "post_attention_norm.weight"] = w.t.pop(p + "ffn_norm.weight")
            if il > 0:  # MoE with a shared expert and a routing bias
                w.experts(p, shared=True)
                w.t[p + "exp_probs_b.bias"] = w.bias(spec.n_expert)
        elif arch == "pangu-embedded":
            w.biases(p, attn_output=E)
        elif arch == "arctic":  # a dense FFN n_embd wide plus a residual MoE off the attention input, own norm
            w.experts(p)
            for n in SWIGLU:
                w.t[p + n] = w.mat(E, E)
            w.norms(p, ffn_norm_exps=E)
        elif arch in ("mellum", "grovemoe"):
            w.experts(p)
            if arch == "grovemoe":  # plus one "chunk" expert per group of experts, sharing the router's logits
                C, X = GROVE["ff_chunk"], spec.n_expert // GROVE["group"]
                for n, (o, i) in (("gate", (C, E)), ("up", (C, E)), ("down", (E, C))):
                    w.t[p + f"ffn_{n}_chexps.weight"] = np.stack([w.mat(o, i) for _ in range(X)])
        elif arch == "bailingmoe2":
            w.fuse_qkv(p)
        elif arch == "cohere2moe":  # attention and FFN in parallel off one norm
            w.drop(p, "ffn_norm.weight")
        elif arch == "afmoe":  # norms after attention and FFN too, a sigmoid gate on the attention output
            w.norms(p, post_attention_norm=E, post_ffw_norm=E)
            w.t[p + "attn_gate.weight"] = w.mat(H * D, E, 2.0)
        elif arch == "laguna":  # heads per layer, a per-head softplus gate on the attention output
            h = LAGUNA["heads"][il]
            w.t[p + "attn_q.weight"], w.t[p + "attn_output.weight"] = w.mat(h * D, E, 2.0), w.mat(E, h * D)
            w.t[p + "attn_gate.weight"] = w.mat(h, E, 2.0)
        elif arch == "qwen2vl":  # qwen2's Q/K/V biases
            w.biases(p, attn_q=H * D, attn_k=KV * D, attn_v=KV * D)
        elif arch == "paddleocr":  # ernie4_5 layout, an optional attention-output bias
            w.biases(p, attn_output=E)
        elif arch == "cogvlm":  # fused QKV (K/V heads = Q heads); vision-expert twins unused by text tokens
            w.fuse_qkv(p)
            w.t[p + "vis_attn_qkv.weight"], w.t[p + "vis_attn_output.weight"] = w.mat(3 * H * D, E), w.mat(E, H * D)
            w.t[p + "vis_gate.weight"], w.t[p + "vis_up.weight"] = w.mat(F, E), w.mat(F, E)
            w.t[p + "vis_down.weight"] = w.mat(E, F)
        elif arch in ("qwen3vlmoe", "minimax-m2"):  # routed experts only
            w.experts(p)
            if arch == "minimax-m2":  # row-wide Q/K norms, a per-expert selection bias
                w.norms(p, attn_q_norm=H * D, attn_k_norm=KV * D)
                w.t[p + "exp_probs_b.bias"] = w.bias(spec.n_expert)
        elif arch == "talkie":  # parameter-free norms, a gain per Q head, a scaled embedding skip per layer
            w.drop(p, "attn_norm.weight", "ffn_norm.weight")
            w.t[p + "attn_q_norm.weight"] = w.norm((H, 1))
            w.t[p + "layer_output_scale.weight"] = w.norm(1)
        elif arch == "spark2_5":  # a sigmoid gate per attention head
            w.t[p + "attn_gate.weight"] = w.mat(H, E, 2.0)
        elif arch == "plamo3":  # fused QKV and gate+up, norms after attention and FFN
            w.fuse_qkv(p)
            w.fuse_gate_up(p)
            for n in ("post_attention_norm", "post_ffw_norm"):  # the loader names them without ".weight"
                w.t[p + n] = w.norm(E)
        elif arch == "hy_v3" and il > 0:  # dense layer 0; a selection bias named without ".bias"
            w.experts(p, shared=True)
            w.t[p + "exp_probs_b"] = w.bias(spec.n_expert)
        elif arch == "step35":  # heads per layer, a sigmoid gate per attention head
            h = STEP35["heads"][il]
            w.t[p + "attn_q.weight"], w.t[p + "attn_output.weight"] = w.mat(h * D, E, 2.0), w.mat(E, h * D)
            w.t[p + "attn_gate.weight"] = w.mat(h, E, 2.0)
            if il > 0:  # dense layer 0, then MoE with a shared expert and a routing bias
                w.experts(p, shared=True)
                w.t[p + "exp_probs_b.bias"] = w.bias(spec.n_expert)
        elif arch == "maple":  # routed experts only
            w.experts(p)
        elif arch == "muse-glimmer":  # norms after attention and FFN too, a sigmoid gate on the attention output
            w.norms(p, post_attention_norm=E, post_ffw_norm=E)
            w.t[p + "attn_gate.weight"] = w.mat(H * D, E, 2.0)
        elif arch == "mimo2":  # K/V heads per layer, V heads narrower than K, attention sinks
            kv, VD = MIMO2["heads_kv"][il], MIMO2["v_head"]
            w.t[p + "attn_k.weight"], w.t[p + "attn_v.weight"] = w.mat(kv * D, E, 2.0), w.mat(kv * VD, E)
            w.t[p + "attn_output.weight"] = w.mat(E, H * VD)
            w.t[p + "attn_sinks.weight"] = w.bias(H)
            if il > 0:  # dense layer 0 (no router); sigmoid routing with a selection bias
                w.experts(p)
                w.t[p + "exp_probs_b.bias"] = w.bias(spec.n_expert)
        elif arch == "chameleon":  # LayerNorm over each Q/K head (weights and biases per head)
            w.t[p + "attn_q_norm.weight"], w.t[p + "attn_q_norm.bias"] = w.norm((H, D)), w.bias(H * D).reshape(H, D)
            w.t[p + "attn_k_norm.weight"], w.t[p + "attn_k_norm.bias"] = w.norm((KV, D)), w.bias(KV * D).reshape(KV, D)
        elif arch == "minimax-m3" and il > 0:  # dense layer 0; MoE with a shared expert and a sparse-attention indexer
            w.experts(p, shared=True)
            w.t[p + "exp_probs_b.bias"] = w.bias(spec.n_expert)
            IH, ID = MSA["heads"], MSA["key_length"]
            w.t[p + "indexer.q_proj.weight"] = w.mat(IH * ID, E, 2.0)
            w.t[p + "indexer.k_proj.weight"] = w.mat(ID, E, 2.0)
            w.norms(p, **{"indexer.q_norm": ID, "indexer.k_norm": ID})
        if arch in ("exaone-moe", "bailingmoe2", "cohere2moe", "afmoe", "laguna") and il > 0:  # dense layer 0
            w.experts(p, shared=True)
            if arch != "cohere2moe":  # sigmoid routing with a score-correction bias
                w.t[p + "exp_probs_b.bias"] = w.bias(spec.n_expert)
        if arch in ("dots1", "exaone4", "maincoder", "hunyuan-moe", "apertus", "glm4moe", "mellum", "exaone-moe",
                    "bailingmoe2", "minimax-m3", "hunyuan_vl", "hunyuan-dense", "grovemoe", "afmoe", "laguna", "qwen3vl", "qwen3tts", "qwen3vlmoe",
                    "plamo3", "hy_v3", "step35", "maple", "muse-glimmer"):  # per-head Q/K norms
            w.norms(p, attn_q_norm=D, attn_k_norm=D)
    t = w.t
    if arch in ("gpt2", "starcoder"):
        t["position_embd.weight"] = (0.5 * w.rng.standard_normal((spec.n_ctx, E))).astype(np.float32)
    if arch == "bloom":
        t["token_embd_norm.weight"], t["token_embd_norm.bias"] = w.norm(E), w.bias(E)
    if arch in ("phi2", "phimoe"):
        t["output.bias"] = w.bias(spec.n_vocab)
    if arch == "qwen3tts":
        t["output.weight"] = w.mat(QWEN3TTS_CODEC, E)
    if arch == "talkie":
        del t["output_norm.weight"]  # parameter-free
    if arch in ("gemma2", "cohere2", "gemma", "command-r", "bitnet", "plm", "pockettts"):
        del t["output.weight"]  # tied to the embeddings
    if arch == "olmo":
        del t["output_norm.weight"]
    if arch in LAYERNORM + ("phimoe",) and arch not in ("cohere2", "command-r", "olmo", "mpt", "dbrx", "cohere2moe"):
        t["output_norm.bias"] = w.bias(E)  # phimoe: an RMS norm with a bias
    return t


# OpenELM: heads and FFN width change from layer to layer
OPENELM = {"heads": [4, 4, 2, 4, 2, 4], "heads_kv": [2, 2, 1, 2, 1, 1], "ff": [96, 64, 96, 64, 96, 64]}


def openelm_tensors(spec: TinySpec) -> dict[str, np.ndarray]:
    w = _Weights(spec)
    E, D = spec.n_embd, spec.head_dim
    t = {k: v for k, v in w.t.items() if not k.startswith("blk.")}
    for il in range(spec.n_layer):
        p = f"blk.{il}."
        H, KV, F = OPENELM["heads"][il], OPENELM["heads_kv"][il], OPENELM["ff"][il]
        t[p + "attn_norm.weight"], t[p + "ffn_norm.weight"] = w.norm(E), w.norm(E)
        t[p + "attn_qkv.weight"] = w.mat((H + 2 * KV) * D, E, 2.0)
        t[p + "attn_q_norm.weight"], t[p + "attn_k_norm.weight"] = w.norm(D), w.norm(D)
        t[p + "attn_output.weight"] = w.mat(E, H * D)
        t[p + "ffn_gate.weight"], t[p + "ffn_up.weight"], t[p + "ffn_down.weight"] = w.mat(F, E), w.mat(F, E), w.mat(E, F)
    del t["output.weight"]  # tied
    return t


def deepseek2_tensors(spec: TinySpec) -> dict[str, np.ndarray]:
    """MLA attention (low-rank Q and KV, a K-only cache of the compressed KV plus RoPE part),
    one leading dense layer, then MoE layers with a shared expert."""
    rng = np.random.default_rng(spec.seed + 2)
    E, H, F, X, V = spec.n_embd, spec.n_head, spec.n_ff, spec.n_expert, spec.n_vocab
    QL, KVL, ROPE, NOPE, VH = DS2["q_lora"], DS2["kv_lora"], DS2["rope"], DS2["nope"], DS2["v_head"]

    def mat(*shape, gain=1.0):
        return (rng.standard_normal(shape) * gain / np.sqrt(shape[-1])).astype(np.float32)

    def norm(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    t = {"token_embd.weight": rng.standard_normal((V, E)).astype(np.float32),
         "output_norm.weight": norm(E), "output.weight": mat(V, E)}
    for il in range(spec.n_layer):
        p = f"blk.{il}."
        t[p + "attn_norm.weight"] = norm(E)
        t[p + "attn_q_a_norm.weight"] = norm(QL)
        t[p + "attn_kv_a_norm.weight"] = norm(KVL)
        t[p + "attn_q_a.weight"] = mat(QL, E)
        t[p + "attn_q_b.weight"] = mat(H * (NOPE + ROPE), QL, gain=2.0)
        t[p + "attn_kv_a_mqa.weight"] = mat(KVL + ROPE, E, gain=2.0)
        t[p + "attn_k_b.weight"] = mat(H, KVL, NOPE)
        t[p + "attn_v_b.weight"] = mat(H, VH, KVL)
        t[p + "attn_output.weight"] = mat(E, H * VH)
        t[p + "ffn_norm.weight"] = norm(E)
        if il < DS2["dense_lead"]:
            t[p + "ffn_gate.weight"], t[p + "ffn_up.weight"], t[p + "ffn_down.weight"] = mat(F, E), mat(F, E), mat(E, F)
        else:
            t[p + "ffn_gate_inp.weight"] = mat(X, E, gain=3.0)
            t[p + "ffn_gate_exps.weight"] = mat(X, F, E)
            t[p + "ffn_up_exps.weight"] = mat(X, F, E)
            t[p + "ffn_down_exps.weight"] = mat(X, E, F)
            t[p + "ffn_gate_shexp.weight"], t[p + "ffn_up_shexp.weight"] = mat(F, E), mat(F, E)
            t[p + "ffn_down_shexp.weight"] = mat(E, F)
    return t


def hy_v4_tensors(spec: TinySpec) -> dict[str, np.ndarray]:
    """deepseek2's MLA with attention sinks and a sigmoid gate on the decompressed output, hc residual
    streams (independent hyper-connections) mixed in and out of every attention and FFN, collapsed by
    a head before the output norm; one leading dense layer, then MoE with a shared expert."""
    w = _Weights(spec)
    E, H, F, X, HC = spec.n_embd, spec.n_head, spec.n_ff, spec.n_expert, HY_V4["hc"]
    QL, KVL, ROPE, NOPE, VH = DS2["q_lora"], DS2["kv_lora"], DS2["rope"], DS2["nope"], DS2["v_head"]
    t = {k: v for k, v in w.t.items() if not k.startswith("blk.")}
    t["output_hc_fn.weight"], t["output_hc_base.weight"] = w.mat(HC, HC * E, 2.0), w.bias(HC)
    t["output_hc_scale.weight"] = w.norm(1)
    for il in range(spec.n_layer):
        p = f"blk.{il}."
        t[p + "attn_norm.weight"], t[p + "ffn_norm.weight"] = w.norm(E), w.norm(E)
        t[p + "attn_sinks.weight"] = w.bias(H)
        t[p + "attn_q_a.weight"], t[p + "attn_q_a_norm.weight"] = w.mat(QL, E), w.norm(QL)
        t[p + "attn_q_b.weight"] = w.mat(H * (NOPE + ROPE), QL, 2.0)
        t[p + "attn_kv_a_mqa.weight"], t[p + "attn_kv_a_norm.weight"] = w.mat(KVL + ROPE, E, 2.0), w.norm(KVL)
        t[p + "attn_k_b.weight"] = np.stack([w.mat(KVL, NOPE) for _ in range(H)])
        t[p + "attn_v_b.weight"] = np.stack([w.mat(VH, KVL) for _ in range(H)])
        t[p + "attn_output.weight"], t[p + "attn_gate.weight"] = w.mat(E, H * VH), w.mat(H * VH, E, 2.0)
        for n in ("attn", "ffn"):  # pre (HC) and post (HC) mixing coefficients, a scale for each
            t[p + f"hc_{n}_fn.weight"], t[p + f"hc_{n}_base.weight"] = w.mat(2 * HC, HC * E, 2.0), w.bias(2 * HC)
            t[p + f"hc_{n}_scale.weight"] = w.norm(2)
        if il < DS2["dense_lead"]:
            t[p + "ffn_gate.weight"], t[p + "ffn_up.weight"], t[p + "ffn_down.weight"] = w.mat(F, E), w.mat(F, E), w.mat(E, F)
        else:
            t[p + "ffn_gate_inp.weight"], t[p + "exp_probs_b.bias"] = w.mat(X, E, 3.0), w.bias(X)
            for n, (o, i) in (("gate", (F, E)), ("up", (F, E)), ("down", (E, F))):
                t[p + f"ffn_{n}_exps.weight"] = np.stack([w.mat(o, i) for _ in range(X)])
                t[p + f"ffn_{n}_shexp.weight"] = w.mat(o, i)
    return t


def gemma3n_tensors(spec: TinySpec) -> dict[str, np.ndarray]:
    """AltUp (4 streams carried as one 3-D residual, a router predicting and correcting them),
    LAuReL low-rank branch, per-layer embeddings (a slice of two global tensors per layer),
    Q/K/V norms, post-norms. AltUp width, LAuReL rank and per-layer width are fixed in llama.cpp."""
    w = _Weights(spec)
    E, D, L, V = spec.n_embd, spec.head_dim, spec.n_layer, spec.n_vocab
    X, R, P = GEMMA3N["altup"], GEMMA3N["laurel_rank"], GEMMA3N["per_layer"]
    for il in range(L):
        p = f"blk.{il}."
        w.norms(p, attn_q_norm=D, attn_k_norm=D, post_attention_norm=E, post_ffw_norm=E, post_norm=E,
                altup_correct_scale=E, altup_router_norm=E, laurel_post_norm=E)
        w.t[p + "inp_gate.weight"], w.t[p + "proj.weight"] = w.mat(P, E, 2.0), w.mat(E, P)
        w.t[p + "laurel_l.weight"], w.t[p + "laurel_r.weight"] = w.mat(R, E), w.mat(E, R)
        w.t[p + "altup_router.weight"] = w.mat(X, E, E)  # its input is scaled by 1 / n_embd
        w.t[p + "altup_predict_coef.weight"], w.t[p + "altup_correct_coef.weight"] = w.mat(X * X, X), w.mat(X, X)
    t = w.t
    del t["output.weight"]  # tied
    t["altup_proj.weight"] = np.stack([w.mat(E, E) for _ in range(X - 1)])
    t["altup_unembd_proj.weight"] = np.stack([w.mat(E, E) for _ in range(X - 1)])
    # layer il's slice: columns (rows of the projection) il * P .. (il + 1) * P
    t["per_layer_token_embd.weight"] = (w.rng.standard_normal((V, L * P)) / np.sqrt(P)).astype(np.float32)
    t["per_layer_model_proj.weight"] = w.mat(L * P, E, 2.0)
    t["per_layer_proj_norm.weight"] = w.norm(P)
    return t


def gemma4_tensors(spec: TinySpec) -> dict[str, np.ndarray]:
    """Wider heads with proportional RoPE (frequency factors) and V = K on the full layers,
    Q/K/V norms, post-norms, a scale per layer, per-layer embeddings (a slice of two global tensors
    per layer), and on odd layers a dense FFN plus an MoE routed from the attention output."""
    w = _Weights(spec)
    E, H, KV, F, L, V = spec.n_embd, spec.n_head, spec.n_head_kv, spec.n_ff, spec.n_layer, spec.n_vocab
    P = GEMMA4["per_layer"]
    for il in range(L):
        p = f"blk.{il}."
        full = not GEMMA4["swa"][il]
        D = GEMMA4["head_full"] if full else spec.head_dim
        w.t[p + "attn_q.weight"], w.t[p + "attn_k.weight"] = w.mat(H * D, E, 2.0), w.mat(KV * D, E, 2.0)
        w.t[p + "attn_v.weight"], w.t[p + "attn_output.weight"] = w.mat(KV * D, E), w.mat(E, H * D)
        if full:  # V is K
            w.drop(p, "attn_v.weight")
        if il >= L - GEMMA4["shared_kv"]:  # KV sharing: these read the cache of the last such layer before them
            w.drop(p, "attn_k.weight", *(() if full else ("attn_v.weight",)))
        w.norms(p, attn_q_norm=D, post_attention_norm=E, post_ffw_norm=E, post_norm=E)
        if il < L - GEMMA4["shared_kv"]:
            w.norms(p, attn_k_norm=D)
        w.t[p + "inp_gate.weight"], w.t[p + "proj.weight"] = w.mat(P, E, 2.0), w.mat(E, P)
        w.t[p + "layer_output_scale.weight"] = w.norm(1)
        if il % 2:  # the dense FFN, then routed experts on the attention output, each with its norms
            w.experts(p)
            w.t[p + "ffn_gate.weight"], w.t[p + "ffn_up.weight"] = w.mat(F, E), w.mat(F, E)
            w.t[p + "ffn_down.weight"] = w.mat(E, F)
            w.t[p + "ffn_gate_inp.weight"] = w.mat(spec.n_expert, E, 3.0 * np.sqrt(E))  # its input: / sqrt(n_embd)
            w.t[p + "ffn_gate_inp.scale"] = w.norm(E)
            w.norms(p, pre_ffw_norm_2=E, post_ffw_norm_1=E, post_ffw_norm_2=E)
    t = w.t
    del t["output.weight"]  # tied
    t["rope_freqs.weight"] = (1.0 + 3.0 * w.rng.random(GEMMA4["head_full"] // 2)).astype(np.float32)
    t["per_layer_token_embd.weight"] = (w.rng.standard_normal((V, L * P)) / np.sqrt(P)).astype(np.float32)
    t["per_layer_model_proj.weight"] = w.mat(L * P, E, 2.0)
    t["per_layer_proj_norm.weight"] = w.norm(P)
    return t


def dsa_tensors(spec: TinySpec, full: list[int] | None = None) -> dict[str, np.ndarray]:
    """deepseek2's MLA and MoE plus a lightning indexer (its own one-head K cache) on the layers
    `full` marks (default all): its scores pick the top-k keys each query attends to."""
    t = deepseek2_tensors(spec)
    rng = np.random.default_rng(spec.seed + 3)
    E, QL, IH, ID = spec.n_embd, DS2["q_lora"], DSA["heads"], DSA["key_length"]
    for il in range(spec.n_layer):
        p = f"blk.{il}."
        if il >= DS2["dense_lead"]:  # sigmoid routing with a score-correction bias
            t[p + "exp_probs_b.bias"] = (0.3 * rng.standard_normal(spec.n_expert)).astype(np.float32)
        if full is not None and not full[il]:
            continue
        t[p + "indexer.k_norm.weight"] = (1.0 + 0.2 * rng.standard_normal(ID)).astype(np.float32)
        t[p + "indexer.k_norm.bias"] = (0.3 * rng.standard_normal(ID)).astype(np.float32)
        t[p + "indexer.proj.weight"] = (rng.standard_normal((IH, E)) * 3.0 / np.sqrt(E)).astype(np.float32)
        t[p + "indexer.attn_k.weight"] = (rng.standard_normal((ID, E)) * 2.0 / np.sqrt(E)).astype(np.float32)
        t[p + "indexer.attn_q_b.weight"] = (rng.standard_normal((IH * ID, QL)) * 2.0 / np.sqrt(QL)).astype(np.float32)
    return t


def dots3note_tensors(spec: TinySpec) -> dict[str, np.ndarray]:
    """DSA MLA on the full layers, a narrower MLA without indexer on the sliding ones; an RMS norm on
    the shared RoPE key, a sigmoid gate per head on the attention output."""
    t = dsa_tensors(spec, [not s for s in DOTS3["swa"]])
    rng = np.random.default_rng(spec.seed + 4)
    E, H, ROPE, NOPE, KVL, VH = spec.n_embd, spec.n_head, DS2["rope"], DS2["nope"], DOTS3["kv_lora"], DOTS3["v_head"]

    def mat(*shape, gain=1.0):
        return (rng.standard_normal(shape) * gain / np.sqrt(shape[-1])).astype(np.float32)

    for il in range(spec.n_layer):
        p = f"blk.{il}."
        t[p + "attn_k_norm.weight"] = (1.0 + 0.2 * rng.standard_normal(ROPE)).astype(np.float32)
        t[p + "attn_gate.weight"] = mat(H, E, gain=2.0)
        if DOTS3["swa"][il]:
            t[p + "attn_kv_a_norm.weight"] = (1.0 + 0.2 * rng.standard_normal(KVL)).astype(np.float32)
            t[p + "attn_kv_a_mqa.weight"] = mat(KVL + ROPE, E, gain=2.0)
            t[p + "attn_k_b.weight"] = mat(H, KVL, NOPE)
            t[p + "attn_v_b.weight"] = mat(H, VH, KVL)
            t[p + "attn_output.weight"] = mat(E, H * VH)
    return t


DS2 = {"q_lora": 32, "kv_lora": 32, "rope": 8, "nope": 16, "v_head": 16, "dense_lead": 1}
# DSA lightning indexer: heads, head size (llama.cpp's Hadamard rotation wants a multiple of 64), keys kept
# per query (fewer than the oracle prompt)
DSA = {"heads": 2, "key_length": 64, "top_k": 4}
# glm-dsa: which layers run their own indexer (1) or reuse the top-k of the full one before them (0)
GLM_DSA = {"full": [1, 1, 0, 0, 1, 1]}
# dots3note: sliding layers (MLA of a smaller compressed KV and V heads), full ones (DSA)
DOTS3 = {"swa": [True, True, False, True, True, False], "kv_lora": 16, "v_head": 8}
# MiniMax-M3 sparse attention (with flash attention only): an indexer head per K/V head, blocks of keys, blocks kept
# per query besides the local ones
MSA = {"heads": 2, "key_length": 16, "block": 4, "top_k": 1, "local": 1}
# PLM: K heads of a non-RoPE part from the compressed KV and a RoPE part shared by all heads; V heads of head_dim
PLM = {"kv_lora": 32, "rope": 8, "nope": 16}
# Deci (Nemotron NAS): layer 1 has no attention, layer 2 one linear map (no K/V heads), layer 3 no FFN
# (llama.cpp then drops the layer's attention output too: the layer returns its input)
DECI = {"heads": [4, 0, 4, 2, 4, 4], "heads_kv": [2, 0, 0, 1, 2, 2], "ff": [96, 64, 80, 0, 96, 96]}
# Apertus: xIELU parameters per layer
XIELU = {"alpha_n": [0.8, 0.6, 1.2, 0.9, 0.7, 1.1], "alpha_p": [0.8, 1.0, 0.5, 0.9, 1.3, 0.6],
         "beta": [0.5] * 6, "eps": [-1e-6] * 6}
# graniteswitch: one adapter, switched on by token 200 (in the oracle prompt), which is embedded as token 3
GRANITE_SWITCH = {"rank": 4, "activate": [200], "substitute": [3]}
# granite_swa: per-layer sliding-window and RoPE flags (explicit arrays, so reordered models keep them)
GRANITE_SWA = {"swa": [True, True, False, True, False, True], "rope": [True, True, True, False, True, True]}
# GroveMoE: experts per group (one chunk expert each), the chunk experts' width
GROVE = {"group": 2, "ff_chunk": 32}
# hy_v4: residual streams (hyper-connections), their post-gate magnitude
HY_V4 = {"hc": 2, "magnitude": 2.0}
# Step35: fewer heads on the full-attention layers (every third), which rotate half the head
STEP35 = {"heads": [4, 4, 2, 4, 4, 2], "swa": [il % 3 < 2 for il in range(6)]}
# Maple: RoPE on the sliding layers only; a SwiGLU clamp per layer (small enough to bite)
MAPLE = {"swa": [True, False, True, True, False, True], "clamp": [1.0, 0.5, 2.0, 0.7, 1.5, 0.8]}
# Gemma 3n: AltUp streams, LAuReL rank, per-layer embedding width (llama.cpp's fixed values)
GEMMA3N = {"altup": 4, "laurel_rank": 64, "per_layer": 256}
# Gemma 4: sliding layers, the full layers' head size, per-layer embedding width
GEMMA4 = {"swa": [True, True, True, False, True, False], "head_full": 32, "per_layer": 8, "shared_kv": 2}
# MiMo-V2: sliding layers, K/V heads per layer, a V head narrower than K
MIMO2 = {"swa": [False, True, True, False, True, True], "heads_kv": [2, 4, 4, 2, 4, 4], "v_head": 8}
# Laguna: fewer heads on the full-attention layers (every fourth from layer 0); RoPE over part of the head there
LAGUNA = {"heads": [2, 4, 4, 4, 2, 4], "rope": 8}


ARCHS = ("phi3", "olmo2", "qwen2moe", "smollm3", "gemma2", "gpt-oss", "mistral3", "starcoder2", "granite",
         "exaone", "xverse", "internlm2", "seed_oss", "arcee", "olmoe", "orion", "cohere2", "glm4",
         "gpt2", "starcoder", "bloom", "phi2", "codeshell", "nemotron", "stablelm", "qwen", "llama4",
         "deepseek2", "gemma", "command-r", "olmo", "falcon", "mpt", "jais", "refact", "deepseek", "bailingmoe",
         "dots1", "dbrx", "grok", "openelm", "exaone4", "maincoder", "plamo", "hunyuan-moe", "bitnet",
         "smallthinker", "chatglm", "deci", "baichuan", "gptneox", "ernie4_5", "ernie4_5-moe", "apertus",
         "nanbeige", "jais2", "plm", "phimoe", "mistral4", "minicpm", "granitemoe", "graniteswitch", "granite_swa",
         "minicpm3", "deepseek2-ocr", "glm4moe", "pangu-embedded", "arctic", "mellum", "exaone-moe", "bailingmoe2",
         "hunyuan_vl", "hunyuan-dense", "cohere2moe", "grovemoe", "afmoe", "laguna", "qwen2vl", "qwen3vl",
         "qwen3tts", "qwen3vlmoe", "talkie", "spark2_5", "plamo3", "minimax-m2", "hy_v3", "hy_v4", "step35", "muse-glimmer",
         "maple", "paddleocr", "cogvlm", "gemma3n", "gemma4", "mimo2", "deepseek32", "glm-dsa", "dots3note", "minimax-m3",
         "pockettts", "chameleon")
MOE = ("qwen2moe", "gpt-oss", "olmoe", "llama4", "deepseek2", "deepseek", "bailingmoe", "dots1", "dbrx", "grok",
       "hunyuan-moe", "smallthinker", "ernie4_5-moe", "phimoe", "mistral4", "granitemoe", "deepseek2-ocr", "glm4moe",
       "arctic", "mellum", "exaone-moe", "bailingmoe2", "cohere2moe", "grovemoe", "afmoe", "laguna", "qwen3vlmoe",
       "minimax-m2", "hy_v3", "hy_v4", "step35", "maple", "gemma4", "mimo2", "deepseek32", "glm-dsa", "dots3note", "minimax-m3")
LAYERNORM = ("starcoder2", "orion", "cohere2", "gpt2", "starcoder", "bloom", "phi2", "codeshell", "nemotron",
             "stablelm", "command-r", "olmo", "falcon", "mpt", "jais", "dbrx", "gptneox", "jais2", "cohere2moe",
             "pockettts")
# Shapes some loaders insist on: olmoe's K norm spans n_embd, so K/V heads = Q heads.
# plm, minicpm3: a K head per Q head; deepseek2-ocr, cogvlm: K/V span n_embd.
SPECS = {a: TinySpec("llama", n_head_kv=4) for a in ("olmoe", "qwen", "dots1", "plm", "minicpm3", "deepseek2-ocr",
                                                     "cogvlm")}
# chameleon masks its image tokens' logits (ids 4..8195) in llama.cpp's graph: the vocabulary must hold them
SPECS["chameleon"] = TinySpec("llama", n_vocab=8200)
# qwen3tts: a codec head of 3072 logits, padded in front with -inf to the text vocabulary's size
QWEN3TTS_CODEC = 3072
SPECS["qwen3tts"] = TinySpec("llama", n_vocab=3200)


def comparable(arch: str, logits: np.ndarray) -> np.ndarray:
    """Logits with the entries llama.cpp's graph masks by construction set to 0, so that errors are
    relative to the computed ones: chameleon's image tokens (ids 4..8195 of the first output row:
    it sets them in the flat buffer) and qwen3tts's padding in front of its codec head."""
    out = np.array(logits, np.float32)
    if arch == "chameleon":
        masked, sentinel = out.reshape(-1)[4:8196], np.finfo(np.float32).min
    elif arch == "qwen3tts":
        masked, sentinel = out[..., : out.shape[-1] - QWEN3TTS_CODEC], -np.inf
    else:
        return out
    assert (masked == sentinel).all(), f"{arch}: the masked logits are not {sentinel}"
    masked[...] = 0.0  # a view into out
    return out


def write(arch: str, path: Path, spec: TinySpec | None = None) -> Path:
    import gguf

    spec = spec or SPECS.get(arch, TinySpec("llama"))
    mla = {}
    # MLA: one K/V head: the compressed KV plus the RoPE part (K), the compressed KV (V)
    if arch in ("deepseek2", "mistral4", "hy_v4", "deepseek32", "glm-dsa", "dots3note"):
        spec = TinySpec("llama", n_head_kv=1)
        mla = dict(key_length=DS2["kv_lora"] + DS2["rope"], value_length=DS2["kv_lora"], rope_dims=DS2["rope"])
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny")  # not the architecture: llama.cpp keys vocabulary quirks on "phi3" in the name
    if arch == "openelm":
        mla = dict(heads=OPENELM["heads"], heads_kv=OPENELM["heads_kv"])
    if arch == "deci":
        mla = dict(heads=DECI["heads"], heads_kv=DECI["heads_kv"])
    if arch == "plm":
        mla = dict(key_length=PLM["nope"] + PLM["rope"], rope_dims=PLM["rope"])
    if arch == "minicpm3":  # K heads: the decompressed part plus the RoPE part
        mla = dict(key_length=DS2["nope"] + DS2["rope"], value_length=DS2["v_head"], rope_dims=DS2["rope"])
    if arch in ("gptneox", "glm4moe"):  # partial rotary (Pythia, GLM-4.5)
        mla = dict(rope_dims=spec.head_dim // 2)
    if arch == "laguna":
        mla = dict(heads=LAGUNA["heads"], rope_dims=LAGUNA["rope"])
    if arch == "step35":
        mla = dict(heads=STEP35["heads"])
    if arch == "mimo2":  # partial RoPE
        mla = dict(heads_kv=MIMO2["heads_kv"], value_length=MIMO2["v_head"], rope_dims=spec.head_dim // 2)
    if arch in ("minimax-m2", "minimax-m3"):  # RoPE on half of each head
        mla = dict(rope_dims=spec.head_dim // 2)
    if arch == "gemma4":  # the full layers' heads; the sliding ones' below
        mla = dict(key_length=GEMMA4["head_full"], value_length=GEMMA4["head_full"], rope_dims=GEMMA4["head_full"])
    tinymodels.add_shape(w, spec, **mla)
    w.add_feed_forward_length({"openelm": OPENELM["ff"], "deci": DECI["ff"]}.get(arch, spec.n_ff))
    if arch in MOE:
        w.add_expert_count(spec.n_expert)
        w.add_expert_used_count(1 if arch == "llama4" else spec.n_expert_used)
        w.add_expert_feed_forward_length(spec.n_ff)
    if arch in ("deepseek", "bailingmoe", "dots1", "deepseek2", "mistral4", "deepseek2-ocr", "glm4moe", "exaone-moe",
                "bailingmoe2", "cohere2moe", "afmoe", "laguna", "hy_v4", "deepseek32", "glm-dsa", "dots3note", "minimax-m3"):
        w.add_uint32(f"{arch}.expert_shared_count", 1)
        w.add_float32(f"{arch}.expert_weights_scale", 1.0)
    if arch in ("deepseek", "dots1", "deepseek2", "ernie4_5-moe", "mistral4", "deepseek2-ocr", "glm4moe", "exaone-moe",
                "bailingmoe2", "cohere2moe", "afmoe", "laguna", "hy_v4", "deepseek32", "glm-dsa", "dots3note", "minimax-m3"):
        w.add_uint32(f"{arch}.leading_dense_block_count", 1)
    if arch in LAYERNORM:
        w.add_float32(f"{arch}.attention.layer_norm_epsilon", 1e-5)
    if arch in ("gemma2", "gpt-oss", "cohere2", "exaone4", "mellum", "exaone-moe", "cohere2moe", "afmoe", "laguna",
                "step35", "maple", "muse-glimmer"):
        w.add_sliding_window(spec.n_swa)
        w.add_float32(f"{arch}.rope.freq_base_swa", 1000.0)  # unlike the global layers' base
    if arch in ("qwen2moe", "hunyuan-moe", "ernie4_5-moe", "granitemoe", "step35"):
        w.add_uint32(f"{arch}.expert_shared_feed_forward_length", spec.n_ff)
    if arch == "gemma2":
        w.add_float32(f"{arch}.attn_logit_softcapping", 50.0)
        w.add_float32(f"{arch}.final_logit_softcapping", 30.0)
    if arch == "dbrx":
        w.add_float32(f"{arch}.attention.clamp_kqv", 8.0)
    if arch in ("dots1", "smallthinker", "exaone-moe", "bailingmoe2", "deepseek32", "glm-dsa", "dots3note", "minimax-m3"):
        w.add_uint32(f"{arch}.expert_gating_func", 1 if arch == "smallthinker" else 2)  # softmax, sigmoid
    if arch in ("exaone-moe", "bailingmoe2", "cohere2moe", "afmoe", "laguna", "hy_v3", "hy_v4", "step35",
                "deepseek32", "glm-dsa", "dots3note", "minimax-m3"):  # sigmoid weights renormalized
        w.add_bool(f"{arch}.expert_weights_norm", True)
    if arch in ("deepseek2", "mistral4", "minicpm3", "hy_v4", "deepseek32", "glm-dsa", "dots3note"):
        w.add_uint32(f"{arch}.attention.q_lora_rank", DS2["q_lora"])
        w.add_uint32(f"{arch}.attention.kv_lora_rank", DS2["kv_lora"])
    if arch in ("deepseek2", "mistral4", "hy_v4", "deepseek32", "glm-dsa", "dots3note"):
        w.add_uint32(f"{arch}.attention.key_length_mla", DS2["nope"] + DS2["rope"])
        w.add_uint32(f"{arch}.attention.value_length_mla", DS2["v_head"])
    if arch == "mistral4":  # position-dependent attention temperature
        w.add_float32(f"{arch}.attention.temperature_scale", 0.5)
        w.add_uint32(f"{arch}.attention.temperature_length", 4)
    if arch == "llama4":
        w.add_uint32(f"{arch}.interleave_moe_layer_step", 2)
    if arch in ("cohere2", "cohere2moe"):
        w.add_float32(f"{arch}.logit_scale", 0.5)
    if arch == "cohere2moe":  # LayerNorm: the RMS epsilon would pick RMSNorm
        del w.kv_data[0][f"{arch}.attention.layer_norm_rms_epsilon"]
    if arch == "grovemoe":
        w.add_uint32(f"{arch}.experts_per_group", GROVE["group"])
        w.add_uint32(f"{arch}.expert_chunk_feed_forward_length", GROVE["ff_chunk"])
        w.add_float32(f"{arch}.expert_group_scale", 0.5)
    if arch == "hunyuan_vl":  # XD-RoPE sections: M-RoPE, every section at the text position
        w.add_array(f"{arch}.rope.dimension_sections", [2, 2, 2, 2])
    if arch == "laguna":  # the sliding layers rotate the whole head
        w.add_uint32(f"{arch}.rope.dimension_count_swa", spec.head_dim)
    if arch in ("granite", "granitemoe", "graniteswitch", "granite_swa", "minicpm"):  # muP-style scales
        w.add_float32(f"{arch}.logit_scale", 2.0)
        w.add_float32(f"{arch}.residual_scale", 0.5)  # minicpm: else 1.4 / sqrt(n_layer), changed by a self-merge
        w.add_float32(f"{arch}.embedding_scale", 3.0)
        if arch != "minicpm":
            w.add_float32(f"{arch}.attention.scale", 0.3)
    if arch == "ernie4_5-moe":
        w.add_uint32(f"{arch}.interleave_moe_layer_step", 1)
    if arch == "gptneox":
        w.add_bool(f"{arch}.use_parallel_residual", True)
    if arch == "plm":
        w.add_uint32(f"{arch}.attention.kv_lora_rank", PLM["kv_lora"])
    if arch == "apertus":  # per-layer arrays under keys without the architecture prefix
        for k, v in XIELU.items():
            w.add_array(f"xielu.{k}", v)
    if arch == "graniteswitch":  # adapters switched on by a token in the prompt
        w.add_uint32(f"{arch}.adapters.count", len(GRANITE_SWITCH["activate"]))
        w.add_uint32(f"{arch}.adapters.lora_rank", GRANITE_SWITCH["rank"])
        w.add_array(f"{arch}.adapters.token_ids_activate", GRANITE_SWITCH["activate"])
        w.add_array(f"{arch}.adapters.token_ids_substitute", GRANITE_SWITCH["substitute"])
    if arch == "granite_swa":
        w.add_sliding_window(spec.n_swa)
        w.add_array(f"{arch}.attention.sliding_window_pattern", GRANITE_SWA["swa"])
        w.add_array(f"{arch}.attention.rope_pattern", GRANITE_SWA["rope"])
    if arch in ("qwen2vl", "qwen3vl", "qwen3tts", "qwen3vlmoe", "paddleocr"):  # M-RoPE sections (text positions: all alike)
        w.add_array(f"{arch}.rope.dimension_sections", [3, 3, 2, 0])
    if arch in ("qwen3vl", "qwen3tts", "qwen3vlmoe"):  # deepstack slots in the input embedding: zero for text tokens
        w.add_uint32(f"{arch}.n_deepstack_layers", 3)
    if arch == "minimax-m2":
        w.add_uint32(f"{arch}.expert_gating_func", 2)  # sigmoid
    if arch == "talkie":
        w.add_float32(f"{arch}.logit_scale", 0.5)
    if arch in ("spark2_5", "plamo3"):
        w.add_sliding_window(spec.n_swa)
        w.add_float32(f"{arch}.rope.freq_base_swa", 1000.0)  # unlike the global layers' base
    if arch == "spark2_5":  # the pattern per layer
        w.add_array(f"{arch}.attention.sliding_window_pattern", [il % 3 < 2 for il in range(spec.n_layer)])
    if arch == "plamo3":  # by period (default 8: every layer of a tiny model would slide)
        w.add_uint32(f"{arch}.attention.sliding_window_pattern", spec.swa_pattern)
    if arch == "hy_v4":  # sigmoid routing with a selection bias; no DSA indexer (indexer.top_k 0)
        w.add_uint32(f"{arch}.expert_gating_func", 2)
        w.add_uint32(f"{arch}.hyper_connection.count", HY_V4["hc"])
        w.add_float32(f"{arch}.hyper_connection.epsilon", 1e-6)
        w.add_float32(f"{arch}.hyper_connection.magnitude", HY_V4["magnitude"])
    if arch in ("step35", "maple"):  # the pattern per layer
        w.add_array(f"{arch}.attention.sliding_window_pattern", {"step35": STEP35, "maple": MAPLE}[arch]["swa"])
    if arch == "maple":
        w.add_array(f"{arch}.swiglu_clamp_exp", MAPLE["clamp"])
    if arch == "muse-glimmer":  # the pattern by period (default 4); logits scaled, then soft-capped
        w.add_float32(f"{arch}.logit_scale", 0.5)
        w.add_float32(f"{arch}.final_logit_softcapping", 30.0)
    if arch == "gemma3n":  # the pattern per layer (llama.cpp's default period: 5); KV sharing from layer 20 on
        w.add_sliding_window(spec.n_swa)
        w.add_float32(f"{arch}.rope.freq_base_swa", 1000.0)
        w.add_array(f"{arch}.attention.sliding_window_pattern", [il % 5 < 4 for il in range(spec.n_layer)])
    if arch == "gemma4":
        w.add_sliding_window(spec.n_swa)
        w.add_float32(f"{arch}.rope.freq_base_swa", 1000.0)
        w.add_array(f"{arch}.attention.sliding_window_pattern", GEMMA4["swa"])
        w.add_uint32(f"{arch}.attention.key_length_swa", spec.head_dim)
        w.add_uint32(f"{arch}.attention.value_length_swa", spec.head_dim)
        w.add_uint32(f"{arch}.rope.dimension_count_swa", spec.head_dim)
        w.add_uint32(f"{arch}.embedding_length_per_layer_input", GEMMA4["per_layer"])
        w.add_uint32(f"{arch}.attention.shared_kv_layers", GEMMA4["shared_kv"])  # 4 reads 2's cache, 5 reads 3's
        w.add_float32(f"{arch}.final_logit_softcapping", 30.0)
    if arch == "mimo2":  # the pattern per layer, a scale on the attention output
        w.add_sliding_window(spec.n_swa)
        w.add_float32(f"{arch}.rope.freq_base_swa", 1000.0)  # unlike the global layers' base
        w.add_array(f"{arch}.attention.sliding_window_pattern", MIMO2["swa"])
        w.add_float32(f"{arch}.attention.value_scale", 0.7)
    if arch == "minimax-m3":
        w.add_uint32(f"{arch}.attention.indexer.head_count", MSA["heads"])
        w.add_uint32(f"{arch}.attention.indexer.key_length", MSA["key_length"])
        w.add_uint32(f"{arch}.attention.indexer.top_k", MSA["top_k"])
        w.add_uint32(f"{arch}.attention.indexer.block_size", MSA["block"])
        w.add_uint32(f"{arch}.attention.indexer.local_blocks", MSA["local"])
    if arch == "dots3note":  # the sliding layers' MLA sizes (cache: compressed KV plus RoPE part); patterns per layer
        w.add_uint32(f"{arch}.attention.kv_lora_rank_swa", DOTS3["kv_lora"])
        w.add_uint32(f"{arch}.attention.key_length_swa", DOTS3["kv_lora"] + DS2["rope"])
        w.add_uint32(f"{arch}.attention.value_length_swa", DOTS3["kv_lora"])
        w.add_uint32(f"{arch}.attention.key_length_mla_swa", DS2["nope"] + DS2["rope"])
        w.add_uint32(f"{arch}.attention.value_length_mla_swa", DOTS3["v_head"])
        w.add_sliding_window(spec.n_swa)
        w.add_float32(f"{arch}.rope.freq_base_swa", 1000.0)  # unlike the global layers' base
        w.add_array(f"{arch}.attention.sliding_window_pattern", DOTS3["swa"])
        w.add_array(f"{arch}.attention.indexer.types", [int(not s) for s in DOTS3["swa"]])
    if arch == "glm-dsa":  # GLM-5.2: full indexer layers and shared ones, which reuse the last full one's top-k
        w.add_array(f"{arch}.attention.indexer.types", GLM_DSA["full"])
    if arch in ("deepseek32", "glm-dsa", "dots3note"):
        w.add_uint32(f"{arch}.attention.indexer.head_count", DSA["heads"])
        w.add_uint32(f"{arch}.attention.indexer.key_length", DSA["key_length"])
        w.add_uint32(f"{arch}.attention.indexer.top_k", DSA["top_k"])
    tinymodels._add_vocab(w, spec.n_vocab)
    writers = {"deepseek2": deepseek2_tensors, "mistral4": deepseek2_tensors, "openelm": openelm_tensors,
               "hy_v4": hy_v4_tensors, "gemma3n": gemma3n_tensors, "gemma4": gemma4_tensors,
               "deepseek32": dsa_tensors, "glm-dsa": lambda sp: dsa_tensors(sp, GLM_DSA["full"]), "dots3note": dots3note_tensors}
    return tinymodels.finish(w, writers.get(arch, lambda sp: tensors(arch, sp))(spec), path)
