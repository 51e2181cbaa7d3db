"""The `loopcpp` command: chat, run, info and models. It only parses arguments and calls the API."""

from __future__ import annotations

import argparse
import logging
import json
import sys
from typing import Optional, Sequence

from . import catalog
from .errors import ContextFullError, LoopcppError

EXAMPLES = {
    "chat": "loopcpp chat                                  # default model, fetched on first use\n"
            "  loopcpp chat model.gguf --loop 15:18x3          # loop layers 15..18 three times\n"
            "  echo 'What is the capital of France?' | loopcpp chat --loop auto",
    "run": "loopcpp run model.gguf -p 'The capital of France is' -n 16 --loop auto",
    "info": "loopcpp info model.gguf",
    "models": "loopcpp models                 # list the catalog\n  loopcpp models fetch gemma3-270m",
    "eval": "loopcpp eval --loop auto --loop autox4,euler --task ppl --task arc_easy --limit 200\n"
            "  loopcpp eval model.gguf --loop 12:15x3 --task mmlu --format mc --shots 5 --json out.json\n"
            "  loopcpp eval --loop auto --task ppl:notes.txt --ctx 1024",
    "bake": "loopcpp bake model.gguf --loop 12:15x3,rk -o model-looped.gguf",
    "serve": "loopcpp serve model.gguf --loop 15:18x3 --port 8080\n"
             "  loopcpp serve --loop auto -np 8 -- --api-key secret     # after --: llama-server's own flags\n"
             "  curl localhost:8080/v1/chat/completions -d '{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
             "\"loop\": \"off\"}'",
    "tune": "loopcpp tune                                  # perplexity on BoolQ passages\n"
            "  loopcpp tune model.gguf --objective arc_easy --limit 300 --bake model-looped.gguf",
}


def _add_model_args(p: argparse.ArgumentParser, optional: bool) -> None:
    if optional:
        p.add_argument("model", nargs="?", help=f"a .gguf file or a catalog name (default: {catalog.DEFAULT_MODEL})")
    else:
        p.add_argument("model", help="a .gguf file or a catalog name")
    p.add_argument("--loop", metavar="SPEC", help="loop recipe, e.g. 15:18x3, 15:18x3,layer,euler, auto, off")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("-ngl", "--n-gpu-layers", type=int, default=0, help="layers to offload to the GPU (-1: all)")
    p.add_argument("-c", "--ctx-size", type=int, default=4096, help="context size in tokens (default: 4096)")
    p.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log")


def _add_sampling_args(p: argparse.ArgumentParser, max_tokens: int) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("-n", "--max-tokens", type=int, default=max_tokens, help=f"tokens per reply (default: {max_tokens})")
    g.add_argument("--temperature", "--temp", type=float, default=0.8, help="0 = greedy (default: 0.8)")
    g.add_argument("--top-k", type=int, default=40)
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--min-p", type=float, default=0.05)
    g.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopcpp", description="Training-free looped transformers for llama.cpp.",
        epilog="example: loopcpp chat model.gguf --loop 15:18x3")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name, help_text):
        return sub.add_parser(name, help=help_text, description=help_text, epilog="examples:\n  " + EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = cmd("chat", "interactive chat (one prompt per line when stdin is not a terminal)")
    _add_model_args(p, optional=True)
    _add_sampling_args(p, 512)
    p.add_argument("-s", "--system", help="system prompt")

    p = cmd("run", "one completion of a prompt, to stdout")
    _add_model_args(p, optional=False)
    _add_sampling_args(p, 128)
    p.add_argument("-p", "--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="format the prompt with the model's chat template")

    p = cmd("info", "architecture, size and loop window of a model")
    p.add_argument("model", help="a .gguf file or a catalog name")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = cmd("eval", "score the unlooped model and each loop on the same items, with paired 95 % intervals")
    p.add_argument("model", nargs="?", help=f"a .gguf file or a catalog name (default: {catalog.DEFAULT_MODEL})")
    p.add_argument("--loop", metavar="SPEC", action="append", default=[], help="a loop to compare (repeatable)")
    p.add_argument("--task", action="append", default=[],
                   help="ppl[:CORPUS] (perplexity and KL; CORPUS boolq, lambada or a text file), an MC task "
                        "(arc_easy, arc_challenge, openbookqa, csqa, piqa, hellaswag, sciq, boolq, winogrande, "
                        "mmlu, all-mc) or a generative one (squad, naturalqs_open, jeopardy, coqa, drop, lambada)")
    p.add_argument("--format", choices=["rc", "mc"], default="rc", help="MC: cloze (rc) or lettered (mc)")
    p.add_argument("--shots", type=int, choices=[0, 5], default=0, help="MC: few-shot examples")
    p.add_argument("--split", choices=["test", "dev"], default="test", help="dev chooses recipes, test reports them")
    p.add_argument("--limit", type=int, help="items (or perplexity windows) picked at random with --seed")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--ctx", type=int, default=512, help="perplexity window in tokens, one ubatch (default: 512)")
    p.add_argument("-ub", "--ubatch", type=int, help="ppl: evaluate each window in ubatches of this size, so that "
                                                     "the cache policy and decode mode act (default: one ubatch)")
    p.add_argument("--max-tokens", type=int, default=32, help="generative tasks: token cap (default: 32)")
    p.add_argument("--json", help="write summaries and per-item results as JSON")
    p.add_argument("--csv", help="write the summaries as CSV")
    p.add_argument("--no-cache", action="store_true", help="do not reuse or store per-item results")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("-ngl", "--n-gpu-layers", type=int, default=0, help="layers to offload to the GPU (-1: all)")
    p.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log")

    p = cmd("tune", "search a loop recipe on dev data, then report it on held-out test data")
    p.add_argument("model", nargs="?", help=f"a .gguf file or a catalog name (default: {catalog.DEFAULT_MODEL})")
    p.add_argument("--objective", default="ppl", help="ppl (perplexity on --corpus) or a multiple-choice task")
    p.add_argument("--corpus", default="boolq", help="text for pruning and the ppl objective: boolq, lambada or a file")
    p.add_argument("--keep", type=int, default=4, help="recipes confirmed on the objective after pruning (default: 4)")
    p.add_argument("--ctx", type=int, default=256, help="pruning window in tokens; ppl confirms on twice that (default: 256)")
    p.add_argument("--limit", type=int, default=200, help="items per objective run (default: 200)")
    p.add_argument("--bake", metavar="OUT.gguf", help="write the chosen recipe into a copy of the model")
    p.add_argument("--json", help="write every measurement as JSON")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: all)")

    p = cmd("bake", "write a copy of a GGUF whose metadata carries a loop recipe (loopcpp.loop)")
    p.add_argument("model", help="a .gguf file or a catalog name")
    p.add_argument("--loop", metavar="SPEC", required=True, help="the recipe, e.g. 12:15x3 ('off' removes it)")
    p.add_argument("-o", "--output", required=True, help="the GGUF to write")

    p = cmd("serve", "OpenAI-compatible HTTP server (llama.cpp's llama-server, API only) with a loop; "
                     "arguments after -- go to llama-server")
    p.add_argument("model", nargs="?", help=f"a .gguf file or a catalog name (default: {catalog.DEFAULT_MODEL})")
    p.add_argument("--loop", metavar="SPEC", help="the server's loop (default: the model's loopcpp.loop, else none); "
                                                  "a request's \"loop\" field may turn it off or change its decode mode")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("-np", "--parallel", type=int, default=4, help="slots: requests served at once (default: 4)")
    p.add_argument("-c", "--ctx-size", type=int, default=4096, help="context tokens shared by all slots (default: 4096)")
    p.add_argument("-ub", "--ubatch", type=int, default=512, help="tokens per ubatch (and batch) (default: 512)")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: llama-server's)")
    p.add_argument("--echo", action="store_true",
                   help="allow \"echo\" on /v1/completions (prompt log-probabilities, for lm-eval's local-completions); "
                        "keeps logits for a whole batch: n_vocab x ubatch floats")
    p.add_argument("--cache-prompt", action="store_true",
                   help="reuse cached prompt prefixes (faster; a looped answer may then depend on earlier requests)")

    p = cmd("models", "list the catalog of offline models, or fetch one")
    p.add_argument("action", nargs="?", choices=["list", "fetch"], default="list")
    p.add_argument("name", nargs="?", help="catalog name (with fetch)")
    return parser


def _open(args):
    from .model import Model

    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(message)s")
    path = catalog.resolve_model(args.model)
    model = Model(path, n_gpu_layers=args.n_gpu_layers)
    ctx = model.context(n_ctx=args.ctx_size, n_threads=args.threads, loop=args.loop)
    return model, ctx


def _sampling(args):
    from .sampling import Sampling

    return Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p, seed=args.seed)


def cmd_chat(args) -> int:
    model, ctx = _open(args)
    interactive = sys.stdin.isatty()
    sampling = _sampling(args)
    history = [{"role": "system", "content": args.system}] if args.system else []
    if interactive:
        print(f"loopcpp chat: {model.description}, loop {ctx.loop if ctx.loop.enabled else 'off'}. "
              "/exit to quit, /reset to clear the history, /loop SPEC to change the loop; "
              "Ctrl-C stops a reply.", file=sys.stderr)
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            break
        if not interactive and line == "":
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            history = history[:1] if args.system else []
            ctx.reset()
            continue
        if line.startswith("/loop"):
            try:
                ctx.set_loop(line[len("/loop"):].strip() or "off")
                print(f"loop: {ctx.loop if ctx.loop.enabled else 'off'}", file=sys.stderr)
            except (LoopcppError, ValueError) as e:
                print(f"loopcpp: {e}", file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        reply = []
        try:
            for tok in ctx.chat(history, stream=True, max_tokens=args.max_tokens, sampling=sampling):
                piece = tok.text
                reply.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.stdout.write(" [stopped]")
        except ContextFullError as e:
            history.pop()
            print(f"loopcpp: {e}; /reset clears the history, or restart with a larger --ctx-size", file=sys.stderr)
            continue
        sys.stdout.write("\n")
        sys.stdout.flush()
        history.append({"role": "assistant", "content": "".join(reply)})
    ctx.close()
    model.close()
    return 0


def cmd_run(args) -> int:
    model, ctx = _open(args)
    kw = dict(max_tokens=args.max_tokens, sampling=_sampling(args))
    try:
        if args.chat:
            pieces = (t.text for t in ctx.chat([{"role": "user", "content": args.prompt}], stream=True, **kw))
        else:
            pieces = (t.text for t in ctx.generate(args.prompt, **kw))
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    sys.stdout.write("\n")
    return 0


def model_info(path) -> dict:
    from .model import Model

    with Model(path, vocab_only=False) as m:
        info = {
            "path": str(path), "description": m.description, "arch": m.arch, "n_layer": m.n_layer,
            "n_embd": m.n_embd, "n_head": m.n_head, "n_head_kv": m.n_head_kv, "n_expert": m.n_expert,
            "n_expert_used": m.n_expert_used, "n_vocab": m.n_vocab, "n_ctx_train": m.n_ctx_train,
            "n_swa": m.n_swa, "size_bytes": m.size, "n_params": m.n_params,
            "chat_template": m.chat_template is not None, "loop_supported": m.loop_supported,
            "default_loop": str(m.default_loop) if m.loop_supported else None,
            "loop_metadata": m.metadata.get("loopcpp.loop"),
        }
    info["tensor_types"] = _tensor_types(path)
    return info


def _tensor_types(path) -> dict[str, int]:
    try:
        import gguf
    except ImportError:  # optional: the counts need the gguf package
        return {}
    counts: dict[str, int] = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def cmd_info(args) -> int:
    info = model_info(catalog.resolve_model(args.model))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    experts = f"{info['n_expert']} ({info['n_expert_used']} used)" if info["n_expert"] else "none (dense)"
    rows = [
        ("model", info["description"]), ("file", info["path"]), ("architecture", info["arch"]),
        ("layers", info["n_layer"]), ("width", info["n_embd"]),
        ("heads", f"{info['n_head']} (kv {info['n_head_kv']})"), ("experts", experts),
        ("vocabulary", info["n_vocab"]), ("trained context", info["n_ctx_train"]),
        ("sliding window", info["n_swa"] or "none"),
        ("size", f"{info['size_bytes'] / 2**20:.1f} MiB, {info['n_params'] / 1e6:.1f} M parameters"),
        ("tensor types", ", ".join(f"{k} x{v}" for k, v in info["tensor_types"].items()) or "?"),
        ("loop", f"default window {info['default_loop']}" if info["loop_supported"] else "not supported for this architecture"),
    ]
    if info["loop_metadata"]:
        rows.append(("loop recipe (GGUF)", info["loop_metadata"]))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def cmd_models(args) -> int:
    cat = catalog.catalog()
    if args.action == "fetch":
        name = args.name or catalog.DEFAULT_MODEL
        print(catalog.fetch(name))
        return 0
    width = max(len(n) for n in cat)
    print(f"{'name':<{width}}  {'size':>9}  {'arch':<7} {'cached':<6}  description")
    for name, e in cat.items():
        cached = "yes" if catalog.is_cached(name) else "no"
        print(f"{name:<{width}}  {e['size'] / 2**20:7.1f}MB  {e['arch']:<7} {cached:<6}  {e['description']} [{e['license']}]")
    print(f"\nfetch one with: loopcpp models fetch NAME (cache: {catalog.cache_dir()})")
    return 0


def _check_loops(specs: Sequence[str]) -> None:
    """Spec errors before any model is fetched or loaded."""
    from .loop import LoopConfig

    for spec in specs:
        LoopConfig.parse(spec)


def cmd_eval(args) -> int:
    from .evals import TaskSpec, evaluate, format_table, summarize, write_csv
    from .evals.data import task_list
    from .model import Model

    _check_loops(args.loop)
    tasks = task_list(args.task or ["ppl"])
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(message)s")
    path = catalog.resolve_model(args.model)
    summaries, results = [], []
    with Model(path, n_gpu_layers=args.n_gpu_layers) as model:
        for task in tasks:
            name, _, corpus = task.partition(":")
            spec = TaskSpec(name, fmt=args.format, shots=args.shots, split=args.split, limit=args.limit,
                            seed=args.seed, corpus=corpus or "boolq", window=args.ctx, max_tokens=args.max_tokens,
                            ubatch=args.ubatch)
            result = evaluate(model, args.loop, spec, n_threads=args.threads, cache=not args.no_cache)
            summary = summarize(result)
            print(format_table(summary) + "\n", flush=True)
            summaries.append(summary)
            results.append(result.to_json())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": str(path), "summaries": summaries, "results": results}, f, indent=1)
    if args.csv:
        write_csv(summaries, args.csv)
    return 0


def cmd_tune(args) -> int:
    from .evals import format_table
    from .evals.tune import tune
    from .gguf_meta import bake
    from .model import Model

    path = catalog.resolve_model(args.model)
    with Model(path) as model:
        out = tune(model, args.objective, args.corpus, keep=args.keep, window=args.ctx, limit=args.limit,
                   n_threads=args.threads)
    print(f"pruned {out['grid']} recipes by perplexity on dev text (unlooped {out['prune_ppl_off']:.4f}); best:")
    for c in out["pruned"][:8]:
        print(f"  {c['spec']:<28} ppl {c['ppl']:.4f}  KLD {c['kld']:.5f}")
    print("\nconfirmed on dev:\n" + format_table(out["dev"]))
    print(f"\nheld-out test of {out['best']}:\n" + format_table(out["test"]))
    if out["chosen"] is None:
        print(f"\nno recipe beat the unlooped model on dev ({args.objective}); nothing to recommend")
    else:
        print(f"\nrecommended: --loop {out['chosen']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.bake:
        if out["chosen"] is None:
            print(f"not baking {args.bake}: no recipe to bake", file=sys.stderr)
        else:
            bake(path, args.bake, out["chosen"])
            print(f"wrote {args.bake} with loopcpp.loop = {out['chosen']}", file=sys.stderr)
    return 0


def cmd_bake(args) -> int:
    from .gguf_meta import bake

    _check_loops([args.loop])
    bake(catalog.resolve_model(args.model), args.output, args.loop)
    print(f"wrote {args.output} with loopcpp.loop = {args.loop}", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    from .serve import serve

    return serve(args)


COMMANDS = {"chat": cmd_chat, "run": cmd_run, "info": cmd_info, "models": cmd_models, "eval": cmd_eval,
            "tune": cmd_tune, "bake": cmd_bake, "serve": cmd_serve}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []  # `loopcpp serve ... -- ARGS`: ARGS go to llama-server as they are
    if "--" in argv:
        extra, argv = argv[argv.index("--") + 1:], argv[:argv.index("--")]
    args = build_parser().parse_args(argv)
    args.extra = extra
    if extra and args.command != "serve":
        print(f"loopcpp: error: arguments after -- are for `loopcpp serve` only: {' '.join(extra)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](args)
    except (LoopcppError, ValueError, OSError) as e:
        print(f"loopcpp: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
