"""docs/architectures.md, generated from the architecture lists the tests run, so the page cannot
drift from them: `python tests/archtable.py` rewrites it, and test_arch_oracle.py fails while it
is stale."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import archmodels  # noqa: E402
import tinymodels  # noqa: E402

PAGE = Path(__file__).resolve().parent.parent / "docs" / "architectures.md"

NOTES = {
    "llama": "also Llama 2/3, Mistral, SmolLM2 and other llama-layout models",
    "qwen2": "Q/K/V biases",
    "qwen3": "Q/K norms",
    "qwen3moe": "MoE: softmax routing; layer mode freezes routing in sub-steps",
    "gemma3": "interleaved sliding window, per-layer-type RoPE base",
    "phi3": "fused QKV and gate+up",
    "olmo2": "norms after attention and FFN, Q/K norms over whole rows",
    "qwen2moe": "MoE with a sigmoid-gated shared expert",
    "smollm3": "no RoPE on every fourth layer (follows the evaluated layer)",
    "gemma2": "attention and final-logit soft-capping, alternating sliding window",
    "gpt-oss": "attention sinks, biased experts (softmax over the chosen), alternating sliding window",
    "mistral3": "llama layout with YaRN / attention-temperature options",
    "starcoder2": "LayerNorm with biases, GELU MLP without a gate",
    "granite": "muP scales on embeddings, residuals, attention and logits",
    "exaone": "llama layout",
    "xverse": "llama layout",
    "internlm2": "fused QKV",
    "seed_oss": "the FFN's norm is named post_attention_norm",
    "arcee": "ReLU-squared MLP without a gate",
    "olmoe": "MoE with row-wide Q/K norms",
    "orion": "LayerNorm with biases",
    "cohere2": "attention and FFN in parallel, sliding window on 3 of 4 layers, logit scale",
    "glm4": "post-norms, fused gate+up",
    "gpt2": "learned positions, LayerNorm with biases, fused QKV",
    "starcoder": "learned positions, LayerNorm with biases, fused QKV",
    "bloom": "ALiBi, a norm on the embeddings, fused QKV",
    "phi2": "attention and MLP in parallel, biased output head",
    "codeshell": "LayerNorm with biases",
    "nemotron": "LayerNorm (1 + weight) with biases, ungated MLP",
    "stablelm": "LayerNorm with biases",
    "qwen": "fused QKV with bias, MLP of n_ff / 2",
    "deepseek2": "MLA (a K-only cache of the compressed KV), a dense first layer, MoE with a shared expert "
                 "(Moonlight, DeepSeek-V2/V3)",
    "gemma": "Gemma 1: embeddings scaled, tied output",
    "command-r": "attention and FFN in parallel off one LayerNorm, tied output",
    "olmo": "LayerNorm without parameters",
    "falcon": "fused QKV, attention and MLP in parallel",
    "mpt": "ALiBi, fused QKV",
    "jais": "ALiBi, LayerNorm and MLP with biases",
    "refact": "ALiBi",
    "deepseek": "a dense first layer, then MoE with a shared expert",
    "bailingmoe": "MoE with a shared expert on every layer",
    "dots1": "Q/K norms, sigmoid routing, a dense first layer, MoE with a shared expert",
    "dbrx": "fused QKV with clamping, a norm after attention, MoE",
    "grok": "norms after attention and FFN, MoE with logit soft-capping",
    "openelm": "heads, K/V heads and FFN width differ per layer (each follows its layer)",
    "exaone4": "norms after attention and FFN only, sliding window on 3 of 4 layers",
    "maincoder": "per-head Q/K norms",
    "plamo": "attention and MLP in parallel",
    "hunyuan-moe": "per-head Q/K norms, MoE with a shared expert",
    "bitnet": "sub-norms inside attention and the MLP",
    "smallthinker": "MoE",
    "chatglm": "fused gate+up",
    "llama4": "MoE every other layer with a shared expert, chunked attention, no RoPE on every fourth layer",
    "deci": "per-layer head counts and FFN widths: attention-free, linear-attention (no K/V heads) and FFN-free layers",
    "baichuan": "llama layout; llama.cpp picks RoPE (32 layers) or ALiBi (40) by layer count, none otherwise",
    "gptneox": "attention and MLP in parallel (use_parallel_residual), partial rotary, fused QKV, LayerNorm with biases",
    "ernie4_5": "llama layout",
    "ernie4_5-moe": "MoE (softmax, selection bias) with a shared expert after a dense first layer",
    "apertus": "xIELU MLP without a gate, parameters per layer (un-prefixed xielu.* keys), per-head Q/K norms",
    "nanbeige": "llama layout (num_loops > 1, its own weight-shared looping, is not covered by the oracle)",
    "jais2": "LayerNorm with biases, ReLU-squared MLP without a gate",
    "plm": "MLA-style low-rank K/V with a shared RoPE key, ReLU-squared MLP, tied output (its flash-attention "
           "path asserts in llama.cpp itself)",
    "phimoe": "RMS norms with biases, biased attention output and head, MoE (Phi-3.5-MoE)",
    "mistral4": "deepseek2's MLA and MoE with a shared expert, position-dependent attention temperature",
    "minicpm": "muP scales on embeddings, residuals and logits (written out: the default residual scale "
               "depends on the layer count)",
    "granitemoe": "muP scales, MoE with a shared expert",
    "graniteswitch": "fused QKV, LoRA adapters switched per token by an in-graph router attention layer",
    "granite_swa": "muP scales, attention sinks, per-layer sliding-window and RoPE flags",
    "minicpm3": "low-rank Q and KV decompressed into full heads; residual scale 1.4 / sqrt(n_layer) from the "
                "graph, so the self-merge is another model: the last-layer check compares with all positions",
    "deepseek2-ocr": "plain MHA with NeoX RoPE, a dense first layer, MoE with a shared expert",
    "glm4moe": "Q/K/V biases, per-head Q/K norms, partial RoPE, a dense first layer, sigmoid-routed MoE "
               "with a shared expert",
    "pangu-embedded": "biased attention output",
    "arctic": "a dense FFN n_embd wide plus a residual MoE off the attention input with its own norm",
    "mellum": "per-head Q/K norms, MoE, sliding window on 3 of 4 layers",
    "exaone-moe": "per-head Q/K norms, RoPE only on the sliding layers (3 of 4), a dense first layer, sigmoid MoE "
                  "with a shared expert",
    "bailingmoe2": "fused QKV, per-head Q/K norms, a dense first layer, sigmoid MoE with a shared expert",
    "hunyuan_vl": "per-head Q/K norms after RoPE, XD-RoPE sections (M-RoPE)",
    "hunyuan-dense": "per-head Q/K norms after RoPE",
    "cohere2moe": "attention and FFN in parallel off one LayerNorm, RoPE only on the sliding layers (3 of 4) "
                  "and the dense first layer, MoE with a halved shared expert, logit scale",
    "grovemoe": "per-head Q/K norms, MoE plus group-shared chunk experts on the same router logits",
    "afmoe": "norms before and after attention and FFN, a sigmoid attention-output gate, scaled embeddings, "
             "sliding window on 3 of 4 layers, no RoPE on every fourth layer, a dense first layer, sigmoid MoE",
    "laguna": "heads differ per layer, a per-head softplus attention-output gate, partial RoPE on full layers, "
              "sliding window on 3 of 4 layers, a dense first layer, sigmoid MoE with a shared expert",
    "qwen2vl": "Qwen2-VL text decoder: Q/K/V biases, M-RoPE sections (text positions)",
    "qwen3vl": "Qwen3-VL text decoder: per-head Q/K norms, interleaved M-RoPE, deepstack slots (zero for text)",
    "qwen3vlmoe": "Qwen3-VL MoE text decoder: per-head Q/K norms, M-RoPE, deepstack slots, MoE",
    "talkie": "parameter-free norms, per-head Q gain after RoPE, a scaled embedding skip into every layer",
    "spark2_5": "sigmoid gate per attention head, per-layer sliding-window pattern and RoPE base",
    "plamo3": "fused QKV and gate+up, per-head Q/K norms, post-norms, sliding window on 7 of 8 layers",
    "minimax-m2": "row-wide Q/K norms, partial RoPE, MoE with sigmoid routing and a selection bias",
    "hy_v3": "per-head Q/K norms, a dense first layer, sigmoid MoE with a selection bias (exp_probs_b, no .bias "
             "suffix) and a shared expert",
    "hy_v4": "deepseek2's MLA with attention sinks and a sigmoid output gate, 2 hyper-connection residual streams "
             "(a 3-D residual [n_embd, streams, n_tokens]) mixed around attention and FFN, a dense first layer, sigmoid "
             "MoE with a shared expert; with its DSA indexer on, refused (not a plain KV cache)",
    "step35": "heads differ per layer, a per-head sigmoid attention-output gate, per-layer sliding-window pattern, "
              "half-head RoPE on full layers, a dense first layer, sigmoid MoE with a shared expert",
    "muse-glimmer": "parameter-free norm on the embeddings, norms before and after attention and FFN, a sigmoid "
                    "attention-output gate, RoPE only on the sliding layers (3 of 4), logit scale and soft-cap",
    "maple": "per-head Q/K norms, per-layer sliding-window pattern with RoPE only on the sliding layers, MoE "
             "(softmax) with a per-layer SwiGLU clamp",
    "paddleocr": "PaddleOCR-VL text decoder: ernie4_5 layout, optional attention-output bias, M-RoPE sections "
                 "(text positions)",
    "cogvlm": "CogVLM text path: fused QKV (K/V heads = Q heads); the vision-expert twin weights serve embedding "
              "inputs only",
    "gemma3n": "AltUp: four residual streams carried as one 3-D tensor, LAuReL branch, per-layer embeddings "
               "(sliced by layer index, reordered by a self-merge), Q/K/V norms; top-k FFN sparsity on layers < 10 and "
               "KV shared from layer 20 on are fixed by index in llama.cpp (none in a tiny model)",
    "gemma4": "Q/K/V norms, post-norms, a scale per layer, per-layer sliding pattern with smaller heads, V = K and "
              "proportional RoPE on the full layers, per-layer embeddings (sliced by layer index), a dense FFN plus "
              "softmax MoE; KV sharing: the last layers read the cache of earlier ones, which keeps the cache policy's K/V "
              "when the window holds those (the oracle runs a window of the sharing layers; a self-merge counts "
              "copies of them; test_layers_that_share_kv_read_what_the_cache_keeps)",
    "deepseek32": "DeepSeek-V3.2: deepseek2's MLA and MoE (sigmoid routing with a selection bias) plus a lightning "
                  "indexer per layer with its own K cache (a DSA cache: its writes follow the cache policy too), "
                  "picking the top-k keys each query attends to",
    "dots3note": "DSA (MLA plus lightning indexer) on the full layers, a narrower MLA on the sliding ones (patterns "
                 "per layer, own RoPE base), a norm on the RoPE key, a sigmoid gate per head, MoE with a shared expert",
    "minimax-m3": "per-head Q/K norms, partial RoPE, a dense first layer, MoE with a shared expert and sigmoid "
                  "routing; sparse block attention (MSA) with its own indexer K cache, which runs with flash attention "
                  "only: the oracle (flash attention off) checks its dense path",
    "glm-dsa": "GLM-5: deepseek32's DSA (MLA, MoE, lightning indexer); GLM-5.2's shared indexer layers reuse the "
               "top-k of the full indexer layer before them, so a window may not hold a full layer that a shared one "
               "follows (refused, with the nearest clean window suggested; GLM-5's all-full layout loops any window)",
    "qwen3tts": "Qwen3-TTS talker: qwen3vl's graph with a 3072-logit codec head padded with -inf to the text "
                "vocabulary (the padding is left out of the comparisons)",
    "pockettts": "Pocket-TTS backbone: LayerNorm with biases, GELU MLP without a gate, no LM head (logits from the "
                 "tied embedding)",
    "chameleon": "LayerNorm over each Q/K head; llama.cpp masks the image tokens' logits (ids 4..8195 of the first "
                 "output row, left out of the comparisons); a chunk without outputs asserted in llama.cpp's graph "
                 "(fixed in the patch)",
    "mimo2": "interleaved sliding window (pattern per layer, own RoPE base), K/V heads per layer, V heads narrower "
             "than K, attention sinks, a scaled attention output, a dense first layer, sigmoid-routed MoE",
}
REFUSED = {
    "mamba": ("recurrent state, no attention K/V: `set_loop` raises naming the architecture; a "
              "LOOPCPP_LOOP recipe is ignored with a warning", "test_bad_inputs.py"),
    "lfm2": ("short-convolution layers with a recurrent state between attention layers: `set_loop` raises "
             "naming the architecture; a LOOPCPP_LOOP recipe is ignored with a warning", "test_bad_inputs.py"),
    "hrm_text": ("already a looped model: low and high stacks alternate in hierarchical cycles over aliased "
                 "layers, so there is no single residual stack to loop: `set_loop` raises naming the reason",
                 "test_bad_inputs.py"),
}
REFUSAL_TESTED_ON = {"recurrent": "mamba", "hybrid": "lfm2"}
# What llama.cpp's own classification (loopcpp.architectures()) means for a loop, and the test
# of that refusal path.
KIND_REASONS = {
    "recurrent": "recurrent state, not a K/V cache the loop can re-read",
    "hybrid": "attention mixed with recurrent layers, whose state the loop cannot re-read like a K/V cache",
    "diffusion": "a diffusion model: denoises whole sequences instead of decoding token by token",
}
# Layered architectures a loop cannot apply to (not causal text decoders, or no graph of their own);
# llama.cpp has no flag for these, so they are named here (an encoder is refused at run time by its causal_attn = false).
CANNOT_LOOP = {
    **dict.fromkeys(("bert", "modern-bert", "nomic-bert", "nomic-bert-moe", "neo-bert", "jina-bert-v2",
                     "jina-bert-v3", "eurobert", "t5", "t5encoder", "gemma-embedding"),
                    "an encoder (bidirectional attention): the contract's evaluations attend causally"),
    "llama-embed": "llama's builder for embedding models; refused when its GGUF says attention is bidirectional "
                   "(test_bad_inputs.py), not checked as a decoder",
    "clip": "a vision/audio projector (mmproj), not a language model",
    "wavtokenizer-dec": "an audio codec decoder, not a language model",
    "eagle3": "a speculative-decoding draft head that reads the target model's hidden states",
    "dflash": "a speculative-decoding draft model that reads the target model's hidden states",
    "gemma4-assistant": "a speculative-decoding draft head: it attends to its target model's K/V cache and runs only "
                        "inside the target's context",
    "gptj": "the pinned llama.cpp has no graph builder for it: it cannot run the model at all",
}
NOT_CONVERTED = "its builder's layer loop is not converted to `build_layer_stack` yet: refused with that reason"
NOT_YET_WHY: dict[str, str] = {}  # why a builder is not converted yet, where it is more than time


def _status(arch: str, kind: str) -> tuple[str, str, str]:
    """(status, what is particular, checked by) of an architecture the tests do not loop."""
    if arch in REFUSED:
        return ("refused",) + REFUSED[arch]
    if kind != "layered":
        tested = f"; the refusal path: test_bad_inputs.py ({REFUSAL_TESTED_ON[kind]})" if kind in REFUSAL_TESTED_ON else ""
        return "refused", KIND_REASONS[kind], "llama.cpp's classification" + tested
    if arch in CANNOT_LOOP:
        return "refused", CANNOT_LOOP[arch], "-"
    return "not yet", NOT_YET_WHY.get(arch, NOT_CONVERTED), "-"


def render() -> str:
    import loopcpp

    rows = []
    for a in tinymodels.ARCHS:
        rows.append(f"| `{a}` | loops | {NOTES[a]} | numpy reference (test_loop_matrix.py), self-merge oracle, "
                    "K = 1 bit-identical, all variants finite, cache size (test_arch_oracle.py) |")
    for a in archmodels.ARCHS:
        rows.append(f"| `{a}` | loops | {NOTES[a]} | self-merge oracle, K = 1 bit-identical, all variants finite, "
                    "cache size (test_arch_oracle.py) |")
    looped = set(tinymodels.ARCHS) | set(archmodels.ARCHS)
    rest = sorted(((_status(a, k), a) for a, k in loopcpp.architectures().items() if a not in looped),
                  key=lambda sa: (sa[0][0], sa[1]))  # by status, then name
    for (status, why, test), a in rest:
        rows.append(f"| `{a}` | {status} | {why} | {test} |")
    counts = {"loops": len(looped)} | {s: sum(st == s for (st, _, _), _ in rest) for s in ("refused", "not yet")}
    return "\n".join([
        "# Architectures",
        "",
        "<!-- generated by `python tests/archtable.py` from the lists the tests run; do not edit -->",
        "",
        f"Every architecture of the pinned llama.cpp ({len(rows)}): {counts['loops']} loop, {counts['refused']} are refused",
        "because a loop cannot apply" + (f", {counts['not yet']} are not converted yet." if counts["not yet"] else "."),
        "",
        "Which llama.cpp architectures loop, and the check that covers each. An architecture loops when",
        "its graph builder runs its layers through `build_layer_stack` (the patch turns its layer loop into",
        "a lambda, body untouched); `llama_loop_arch_supported` learns this from the builder itself.",
        "Every other architecture of the pinned llama.cpp is refused with that reason until its builder",
        "is converted: `Model.loop_supported` says which.",
        "",
        "The self-merge oracle: a prompt of 12 tokens evaluated in one ubatch from an empty cache,",
        "looped with the naive integrator, attends in every evaluation to that evaluation's own K/V",
        "only, so its logits at every position equal the unmodified llama.cpp on a GGUF whose window",
        "layers are physically repeated (block and layer order; MoE models in block order only, since",
        "layer mode reuses a layer's first routing). It checks the splicing: which layers run, in what",
        "order, with which weights, per-layer shapes, sliding windows (the tiny window is 5 tokens) and",
        "RoPE bases (local and global layers differ in the tiny models), and the output trimming. A",
        "setting llama.cpp picks by layer index alone, with no GGUF key to state it per layer (smollm3's,",
        "llama4's and afmoe's RoPE-free layers), is checked with a window as wide as its period, so that",
        "every copy keeps it; `test_the_oracle_sees_per_layer_attention_settings` shows the check failing",
        "where a copy takes another layer's settings.",
        "",
        "Porting another architecture is three lines in its `src/models/<arch>.cpp` and a tiny writer:",
        "",
        "1. `for (int il = 0; il < n_layer; ++il) {` becomes",
        "   `inpL = build_layer_stack(inpL, inp_out_ids, [&](int il, ggml_tensor * inpL, ggml_tensor * inp_out_ids) {`",
        "   and the loop's closing `}` becomes `return inpL; });` (the body is untouched: the lambda's",
        "   parameters shadow the outer `inpL` and `inp_out_ids`); regenerate the patch with `csrc/make-patch.sh`.",
        "2. Add the architecture to `tests/archmodels.py` (what its loader requires, in llama layout",
        "   terms) and a line here; `tests/test_arch_oracle.py` then checks it.",
        "",
        "A builder whose residual has several streams carries them as one tensor through the stack",
        "(gemma3n's AltUp [n_embd, n_tokens, 4], hy_v4's hyper-connections [n_embd, 2, n_tokens]: the",
        "integrators are elementwise; the per-row choice of a mixed ubatch is told where the tokens are by",
        "`build_layer_stack`'s `token_dim`). Per-layer embeddings are read by layer index and follow the",
        "evaluated layer. A builder that picks its output rows after the output norm (MTP heads that",
        "need every row) passes no rows to the stack.",
        "",
        "State that one layer leaves for later ones outside the residual follows one of two rules. Layers",
        "that read another layer's K/V (gemma4's and gemma3n's KV sharing) read the cache, which keeps one",
        "K/V per token for a window layer, the cache policy's (docs/looping.md); the contract's rule for",
        "later tokens then holds for the current ones too. State outside the cache (glm-dsa's top-k",
        "selection, which its shared indexer layers reuse) cannot be kept that way: a window holding the",
        "layer that leaves it, with a reader after it, is refused.",
        "",
        "| architecture | status | what is particular | checked by |",
        "|---|---|---|---|",
        *rows,
        "",
    ])


if __name__ == "__main__":
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
