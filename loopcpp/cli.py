"""The `loopcpp` command: chat, run, info, models, eval, tune, bench, bake, dup and serve. It only
parses arguments and calls the API."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import warnings
from dataclasses import asdict
from typing import Optional, Sequence

from . import catalog
from .kvtypes import GGML_TYPES
from .errors import LoopcppError
from .rpc import parse_endpoints

EXAMPLES = {
    "chat": "loopcpp chat                                  # default model, fetched on first use\n"
            "  loopcpp chat model.gguf --loop 15:18x3          # loop layers 15..18 three times\n"
            "  echo 'What is the capital of France?' | loopcpp chat --loop auto",
    "run": "loopcpp run model.gguf -p 'The capital of France is' -n 16 --loop auto\n"
           "  loopcpp run model.gguf -f prompt.txt --json\n"
           "  echo 'Name a colour:' | loopcpp run model.gguf --chat --grammar 'root ::= \"red\" | \"blue\"'",
    "info": "loopcpp info model.gguf",
    "models": "loopcpp models                 # list the catalog\n  loopcpp models fetch gemma3-270m",
    "eval": "loopcpp eval --loop auto --loop autox4,euler --task ppl --task arc_easy --limit 200\n"
            "  loopcpp eval model.gguf --loop 12:15x3 --task mmlu --format mc --shots 5 --json out.json\n"
            "  loopcpp eval --loop auto --task ppl:notes.txt --ctx 1024",
    "bake": "loopcpp bake model.gguf --loop 12:15x3,rk -o model-looped.gguf",
    "dup": "loopcpp dup model.gguf --loop 12:15x3 -o model-selfmerge.gguf      # layers 12..15 three times\n"
           "  loopcpp dup model.gguf --loop 12:15x3,layer -o out.gguf           # each layer three times in place",
    "serve": "loopcpp serve model.gguf --loop 15:18x3 --port 8080\n"
             "  loopcpp serve --loop auto -np 8 -- --api-key secret     # after --: llama-server's own flags\n"
             "  curl localhost:8080/v1/chat/completions -d '{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
             "\"loop\": \"off\"}'",
    "bench": "loopcpp bench --loop auto --loop autox6 --loop auto,layer,kv=last     # pp512 tg128, 5 rounds\n"
             "  loopcpp bench model.gguf --loop 12:15x3 --decode full -p 2048 -ub 512 --json b.json --plot b.png\n"
             "  loopcpp bench model.gguf --stock         # loop off against an unmodified llama.cpp build",
    "rpc-server": "loopcpp rpc-server --host 0.0.0.0 --port 50052          # on each machine that lends its CPU/GPU\n"
                  "  loopcpp chat model.gguf --rpc 192.168.1.7:50052,192.168.1.8:50052 --loop auto",
    "tune": "loopcpp tune                                  # perplexity on BoolQ passages\n"
            "  loopcpp tune model.gguf --objective arc_easy --limit 300 --bake model-looped.gguf",
}


def _add_model_args(p: argparse.ArgumentParser, optional: bool) -> None:
    if optional:
        p.add_argument("model", nargs="?", help=f"a .gguf file or a catalog name (default: {catalog.DEFAULT_MODEL})")
    else:
        p.add_argument("model", help="a .gguf file or a catalog name")
    p.add_argument("--loop", metavar="SPEC", help="loop recipe, e.g. 15:18x3, 15:18x3,layer,euler, auto, off")
    g = p.add_argument_group("model and context")
    g.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: the physical cores)")
    g.add_argument("-ngl", "--n-gpu-layers", type=int, default=None,
                   help="layers to offload to the GPU (default: all on a GPU build; fewer to save GPU memory)")
    _add_rpc_arg(g)
    g.add_argument("-c", "--ctx-size", type=int, default=4096, help="context size in tokens (default: 4096)")
    g.add_argument("-b", "--batch-size", type=int, default=512, help="tokens per llama_decode (default: 512)")
    g.add_argument("-ub", "--ubatch-size", type=int, default=512,
                   help="tokens per ubatch (default: 512); looped results depend on where ubatches start")
    g.add_argument("-fa", "--flash-attn", choices=["on", "off", "auto"], default="auto", help="flash attention")
    g.add_argument("-ctk", "--cache-type-k", choices=list(GGML_TYPES), help="K cache type (default: f16)")
    g.add_argument("-ctv", "--cache-type-v", choices=list(GGML_TYPES), help="V cache type (default: f16)")
    g.add_argument("--no-mmap", action="store_true", help="read the model into memory instead of mapping it")
    g.add_argument("--mlock", action="store_true", help="keep the model in RAM (no swapping)")
    g.add_argument("--chat-template", metavar="NAME|JINJA",
                   help="a llama.cpp built-in template name (chatml, llama3, gemma, ...) or Jinja text")
    _add_log_args(p)


def _add_rpc_arg(p) -> None:
    p.add_argument("--rpc", action="append", metavar="HOST:PORT[,...]",
                   help="offload layers to these `loopcpp rpc-server`s (repeatable), as llama.cpp's --rpc")


def _add_log_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("log")
    g.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log (same as --log-level debug)")
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None,
                   help="show llama.cpp's log on stderr at this level or above (default: not shown)")
    g.add_argument("--log-file", help="write llama.cpp's log to this file (info and above, or --log-level)")


def _add_sampling_args(p: argparse.ArgumentParser, max_tokens: int) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("-n", "--max-tokens", type=int, default=max_tokens, help=f"tokens per reply (default: {max_tokens})")
    g.add_argument("--temperature", "--temp", type=float, default=0.8, help="0 = greedy (default: 0.8)")
    g.add_argument("--top-k", type=int, default=40)
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--min-p", type=float, default=0.05)
    g.add_argument("--typical", type=float, default=1.0, help="typical-p (default: 1.0 = off)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, help="(default: 1.0 = off)")
    g.add_argument("--repeat-last-n", type=int, default=64, help="tokens the penalties look back (-1: all; default 64)")
    g.add_argument("--presence-penalty", type=float, default=0.0)
    g.add_argument("--frequency-penalty", type=float, default=0.0)
    g.add_argument("--mirostat", type=int, choices=[0, 1, 2], default=0)
    g.add_argument("--mirostat-lr", type=float, default=0.1, help="mirostat eta (default: 0.1)")
    g.add_argument("--mirostat-ent", type=float, default=5.0, help="mirostat tau (default: 5.0)")
    g.add_argument("-l", "--logit-bias", action="append", default=[], metavar="TOKEN(+|-)BIAS",
                   help="e.g. 15043+1 or 15043-inf (repeatable)")
    g.add_argument("--ignore-eos", action="store_true",
                   help="never end a reply with an end-of-generation token (it runs to -n, a stop or a full context)")
    g.add_argument("--grammar", help="GBNF grammar text")
    g.add_argument("--grammar-file", help="GBNF grammar file")
    g.add_argument("-j", "--json-schema", help="JSON schema the output must follow (text, or @FILE)")
    g.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopcpp", description="Training-free looped transformers for llama.cpp.",
        epilog="example: loopcpp chat model.gguf --loop 15:18x3")
    parser.add_argument("--version", action=_VersionAction, help="loopcpp's version, llama.cpp's commit and the backends")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name, help_text):
        # argparse %-formats a subcommand's help (not its description): "95 %" would be a format code
        return sub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text,
                              epilog="examples:\n  " + EXAMPLES[name], formatter_class=argparse.RawDescriptionHelpFormatter)

    p = cmd("chat", "interactive chat (one prompt per line when stdin is not a terminal)")
    _add_model_args(p, optional=True)
    _add_sampling_args(p, 512)
    p.add_argument("-s", "--system", help="system prompt")
    p.add_argument("--no-stats", action="store_true", help="no speed line after each reply")

    p = cmd("run", "one completion of a prompt, to stdout")
    _add_model_args(p, optional=False)
    _add_sampling_args(p, 128)
    src = p.add_mutually_exclusive_group()
    src.add_argument("-p", "--prompt", help="the prompt (default: read from -f or standard input)")
    src.add_argument("-f", "--file", help="read the prompt from this file")
    p.add_argument("--chat", action="store_true", help="format the prompt with the model's chat template")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: text, finish reason, token usage, timings and the loop")

    p = cmd("info", "architecture, size and loop window of a model")
    p.add_argument("model", help="a .gguf file or a catalog name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_log_args(p)

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
    p.add_argument("-ngl", "--n-gpu-layers", type=int, default=None,
                   help="layers to offload to the GPU (default: all on a GPU build)")
    _add_rpc_arg(p)
    _add_log_args(p)

    p = cmd("tune", "search a loop recipe on dev data, then report it on held-out test data")
    p.add_argument("model", nargs="?", help=f"a .gguf file or a catalog name (default: {catalog.DEFAULT_MODEL})")
    p.add_argument("--objective", default="ppl", help="ppl (perplexity on --corpus) or a multiple-choice task")
    p.add_argument("--corpus", default="boolq", help="text for pruning and the ppl objective: boolq, lambada or a file")
    p.add_argument("--keep", type=int, default=3, help="recipes confirmed on the objective after pruning (default: 3)")
    p.add_argument("--ctx", type=int, default=384, help="pruning window in tokens (default: 384)")
    p.add_argument("--confirm-ctx", type=int, default=512,
                   help="perplexity window of the ppl objective, llama-perplexity's protocol (default: 512)")
    p.add_argument("--limit", type=int, default=100,
                   help="items per objective run; for ppl, 25 items weigh one window (default: 100, 4 windows)")
    p.add_argument("--exhaustive", action="store_true",
                   help="prune the whole grid (about 100 recipes) instead of the staged search (about 20)")
    p.add_argument("--bake", metavar="OUT.gguf", help="write the chosen recipe into a copy of the model")
    p.add_argument("--json", help="write every measurement as JSON")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: all)")

    p = cmd("bench", "llama-bench style tokens/s of the unlooped model and each loop, taking turns, "
                     "with time ratios beside the ratios expected from counting layer evaluations")
    p.add_argument("model", nargs="?", help=f"a .gguf file or a catalog name (default: {catalog.DEFAULT_MODEL})")
    p.add_argument("--loop", metavar="SPEC", action="append", default=[],
                   help="a loop to measure (repeatable; default: auto)")
    p.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens (pp; 0: none) (default: 512)")
    p.add_argument("-n", "--n-gen", type=int, default=128, help="generated tokens (tg; 0: none) (default: 128)")
    p.add_argument("-r", "--repetitions", type=int, default=5, help="rounds (default: 5)")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: the physical cores)")
    p.add_argument("-b", "--batch-size", type=int, default=None, help="tokens per llama_decode (default: the prompt)")
    p.add_argument("-ub", "--ubatch-size", type=int, default=512, help="tokens per ubatch (default: 512)")
    p.add_argument("-ngl", "--n-gpu-layers", type=int, default=None,
                   help="layers to offload to the GPU (default: all on a GPU build)")
    p.add_argument("-fa", "--flash-attn", choices=["on", "off", "auto"], default="auto", help="flash attention")
    _add_rpc_arg(p)
    p.add_argument("--decode", metavar="MODE", help="decode mode for every loop: bypass, full or first:N")
    p.add_argument("--stock", action="store_true",
                   help="instead: loop off against an unmodified build of the same llama.cpp (built once, cached)")
    p.add_argument("--json", help="write every measurement as JSON")
    p.add_argument("--plot", metavar="PNG", help="plot measured against expected time ratios")
    _add_log_args(p)

    p = cmd("bake", "write a copy of a GGUF whose metadata carries a loop recipe (loopcpp.loop)")
    p.add_argument("model", help="a .gguf file or a catalog name")
    p.add_argument("--loop", metavar="SPEC", required=True, help="the recipe, e.g. 12:15x3 ('off' removes it)")
    p.add_argument("-o", "--output", required=True, help="the GGUF to write")

    p = cmd("dup", "write a self-merged GGUF: the window's layers physically repeated K times "
                   "(what mergekit's passthrough does), for the unmodified llama.cpp")
    p.add_argument("model", help="a .gguf file or a catalog name")
    p.add_argument("--loop", metavar="S:ExK[,layer]", required=True,
                   help="the window and K to repeat (block order; ',layer' repeats each layer in place)")
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

    p = cmd("rpc-server", "serve this machine's CPU (or GPU) to other machines' --rpc over ggml's RPC protocol "
                          "(no authentication: trusted networks only)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("-p", "--port", type=int, default=50052, help="port (default: 50052)")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: the server's)")
    p.add_argument("-d", "--device", help="the device(s) to serve, e.g. CUDA0 (default: all)")
    p.add_argument("-c", "--cache", action="store_true", help="cache large tensors locally (faster reloads)")

    p = cmd("models", "list the catalog of offline models, or fetch one")
    p.add_argument("action", nargs="?", choices=["list", "fetch"], default="list")
    p.add_argument("name", nargs="?", help="catalog name (with fetch)")
    return parser


class _VersionAction(argparse.Action):
    """--version, computed when asked: it loads the library to list the backends."""

    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def version_text() -> str:
    from . import __version__
    from ._lib import LLAMA_COMMIT, backends

    return f"loopcpp {__version__} (llama.cpp {LLAMA_COMMIT}); backends: {', '.join(backends()) or 'none'}"


def setup_logging(args) -> None:
    """llama.cpp's log (logger `loopcpp`) to stderr at --log-level / -v, and to --log-file."""
    level_name = "debug" if getattr(args, "verbose", False) else getattr(args, "log_level", None)
    logger = logging.getLogger("loopcpp")
    for old in [h for h in logger.handlers if getattr(h, "_loopcpp_cli", False)]:  # main() run again in-process
        logger.removeHandler(old)
        old.close()
    fmt = logging.Formatter("%(levelname).1s %(message)s")
    levels = []
    if level_name:
        h: logging.Handler = logging.StreamHandler(sys.stderr)
        setattr(h, "_loopcpp_cli", True)
        h.setLevel(getattr(logging, level_name.upper()))
        h.setFormatter(fmt)
        logger.addHandler(h)
        levels.append(h.level)
    if getattr(args, "log_file", None):
        h = logging.FileHandler(args.log_file, encoding="utf-8")
        setattr(h, "_loopcpp_cli", True)
        h.setLevel(getattr(logging, (level_name or "info").upper()))
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(h)
        levels.append(h.level)
    if levels:
        logger.setLevel(min(levels))


def _open(args):
    from .model import Model

    flash = {"on": True, "off": False, "auto": None}[args.flash_attn]
    path = catalog.resolve_model(args.model)
    model = Model(path, n_gpu_layers=args.n_gpu_layers, use_mmap=not args.no_mmap, use_mlock=args.mlock,
                  chat_template=args.chat_template, rpc=parse_endpoints(args.rpc))
    try:
        ctx = model.context(n_ctx=args.ctx_size, n_batch=args.batch_size, n_ubatch=args.ubatch_size,
                            n_threads=args.threads, flash_attn=flash, type_k=args.cache_type_k,
                            type_v=args.cache_type_v, loop=args.loop)
    except BaseException:
        model.close()
        raise
    return model, ctx


def parse_logit_bias(items: Sequence[str]) -> dict[int, float]:
    """llama-cli's TOKEN+BIAS / TOKEN-BIAS form (bias may be inf)."""
    out = {}
    for item in items:
        m = re.fullmatch(r"\s*(\d+)\s*([+-])\s*(inf|\d+(?:\.\d*)?)\s*", item)
        if not m:
            raise ValueError(f"--logit-bias {item!r} is not TOKEN+BIAS or TOKEN-BIAS (e.g. 15043+1, 2-inf)")
        out[int(m.group(1))] = float(m.group(3)) * (1 if m.group(2) == "+" else -1)
    return out


def _sampling(args):
    from .sampling import Sampling

    grammar = args.grammar
    if args.grammar_file:
        with open(args.grammar_file, encoding="utf-8") as f:
            grammar = f.read()
    schema = args.json_schema
    if schema and schema.startswith("@"):
        with open(schema[1:], encoding="utf-8") as f:
            schema = f.read()
    return Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                    typical_p=args.typical, repeat_penalty=args.repeat_penalty, penalty_last_n=args.repeat_last_n,
                    presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                    mirostat=args.mirostat, mirostat_eta=args.mirostat_lr, mirostat_tau=args.mirostat_ent,
                    logit_bias=parse_logit_bias(args.logit_bias), ignore_eos=args.ignore_eos, grammar=grammar,
                    json_schema=schema, seed=args.seed)


def _check_with_model(sampling, model) -> None:
    """What in the sampling needs the model, checked now (the grammar parses, biased tokens
    exist), so a bad flag fails before the first turn rather than in it."""
    from ._internals import SamplerHandle

    SamplerHandle(model._h, sampling, 0, grammar=sampling.grammar_text()).close()


def _check_inputs(args):
    """What can be checked before a model is fetched or loaded: the loop and the sampling.
    Returns the Sampling."""
    if args.loop:
        _check_loops([args.loop])
    return _sampling(args)


def cmd_chat(args) -> int:
    from .chat_repl import ChatSession, read_message
    from .terminal import enable_line_editing

    sampling = _check_inputs(args)
    interactive = sys.stdin.isatty()
    model, ctx = _open(args)
    with model, ctx:
        _check_with_model(sampling, model)
        session = ChatSession(model, ctx, sampling, args.max_tokens, system=args.system, stop=args.stop,
                              show_stats=interactive and sys.stdout.isatty() and not args.no_stats)
        if interactive:
            enable_line_editing(catalog.cache_dir() / "chat_history")
            print(f"loopcpp chat: {model.description}, loop {ctx.loop if ctx.loop.enabled else 'off'}. "
                  "/help for commands, /exit to quit; Ctrl-C stops a reply.", file=sys.stderr)

        def next_line():
            try:
                return input("> " if interactive else "")
            except EOFError:
                return None

        while True:
            try:
                first = next_line()
                text = None if first is None else read_message(first, next_line)
            except KeyboardInterrupt:
                print(file=sys.stderr)
                break
            if text is None or not session.handle(text):
                break
    return 0


def _read_prompt(args) -> str:
    if args.prompt is not None:
        return args.prompt
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            return f.read()
    text = "" if sys.stdin.isatty() else sys.stdin.read()
    if not text:
        raise ValueError("no prompt: give -p PROMPT, -f FILE, or pipe the prompt into standard input")
    return text


def cmd_run(args) -> int:
    from .terminal import stream

    sampling = _check_inputs(args)
    prompt = _read_prompt(args)
    model, ctx = _open(args)
    with model, ctx:
        _check_with_model(sampling, model)
        kw = dict(max_tokens=args.max_tokens, sampling=sampling, stop=args.stop)
        if args.chat:
            gen = ctx.chat([{"role": "user", "content": prompt}], stream=True, **kw)
        else:
            gen = ctx.generate(prompt, **kw)
        def write(piece: str) -> None:
            if not args.json:
                sys.stdout.write(piece)
                sys.stdout.flush()

        done, interrupted = stream(gen, ctx, write)
        if args.json:
            print(json.dumps({
                "text": done.text, "finish_reason": done.finish_reason, "finish_detail": done.finish_detail, "usage": asdict(done.usage),
                "timings": {**asdict(done.timings), "prompt_per_second": done.timings.prompt_per_second,
                            "generation_per_second": done.timings.generation_per_second},
                "loop": str(ctx.loop), "model": model.description}, indent=1))
        else:
            sys.stdout.write("\n")
    return 130 if interrupted else 0


def model_info(path) -> dict:
    from .model import Model

    with Model(path, vocab_only=False) as m:
        info = {
            "path": str(path), "description": m.description, "arch": m.arch, "n_layer": m.n_layer,
            "n_embd": m.n_embd, "n_head": m.n_head, "n_head_kv": m.n_head_kv, "n_expert": m.n_expert,
            "n_expert_used": m.n_expert_used, "n_vocab": m.n_vocab, "n_ctx_train": m.n_ctx_train,
            "n_swa": m.n_swa, "size_bytes": m.size, "n_params": m.n_params,
            "chat_template": m.chat_template is not None, "loop_supported": m.loop_supported,
            "loop_refusal": m._h.loop_refusal() or None,
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
        ("loop", f"default window {info['default_loop']}" if info["loop_supported"] else info["loop_refusal"]),
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
    path = catalog.resolve_model(args.model)
    summaries, results = [], []
    with Model(path, n_gpu_layers=args.n_gpu_layers, rpc=parse_endpoints(args.rpc)) as model:
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
        out = tune(model, args.objective, args.corpus, keep=args.keep, window=args.ctx,
                   confirm_window=args.confirm_ctx, limit=args.limit, exhaustive=args.exhaustive,
                   n_threads=args.threads)
    sec = out["seconds"]
    print(f"pruned {out['grid']} recipes ({out['search']} search) by perplexity on {out['prune_tokens']} tokens "
          f"of dev text in {sec['prune']:.0f} s (unlooped {out['prune_ppl_off']:.4f}); best:")
    for c in out["pruned"][:8]:
        print(f"  {c['spec']:<28} ppl {c['ppl']:.4f}  KLD {c['kld']:.5f}  ({c['stage']})")
    print("\nconfirmed on dev:\n" + format_table(out["dev"]))
    print(f"\nheld-out test of {out['best']}:\n" + format_table(out["test"]))
    print(f"\ntook {sum(sec.values()):.0f} s: prune {sec['prune']:.0f}, confirm {sec['confirm']:.0f}, test {sec['test']:.0f}")
    if out["chosen"] is None:
        print(f"\nno recipe beat the unlooped model on dev ({args.objective}); nothing to recommend")
    else:
        print(f"\nrecommended: --loop {out['chosen']}")
        if not out["significant"]:
            print("  (its dev gain is within noise: the 95 % interval includes zero; more dev data, a larger "
                  "--limit, would tell)")
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


def cmd_dup(args) -> int:
    from .gguf_meta import duplicate_layers
    from .loop import LoopConfig

    cfg = LoopConfig.parse(args.loop)
    if cfg.start is None or cfg.end is None or cfg.steps < 2:
        raise ValueError(f"--loop {args.loop}: give an explicit window and K >= 2, e.g. 12:15x3")
    path = catalog.resolve_model(args.model)
    layers = duplicate_layers(path, args.output, cfg.start, cfg.end, cfg.steps, layerwise=cfg.mode == "layer")
    print(f"wrote {args.output}: {len(layers)} layers (source layers {layers})", file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    from . import bench
    from .model import Model

    loops = args.loop or ["auto"]
    _check_loops(loops + ([f"auto,decode={args.decode}"] if args.decode else []))
    path = catalog.resolve_model(args.model)
    flash = {"on": True, "off": False, "auto": None}[args.flash_attn]
    if args.stock:
        from .stock import compare_with_stock, format_table

        out = compare_with_stock(path, args.n_prompt, args.n_gen, args.repetitions, args.threads)
        print(format_table(out))
    else:
        with Model(path, n_gpu_layers=args.n_gpu_layers, rpc=parse_endpoints(args.rpc)) as model:
            out = bench.run(model, loops, args.n_prompt, args.n_gen, args.repetitions, args.threads,
                            args.batch_size, args.ubatch_size, flash, args.decode)
        print(bench.format_table(out))
        if args.plot:
            bench.plot(out, args.plot)
            print(f"wrote {args.plot}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def cmd_rpc_server(args) -> int:
    from .rpc import run

    return run(args)


def cmd_serve(args) -> int:
    from .serve import serve

    return serve(args)


COMMANDS = {"chat": cmd_chat, "run": cmd_run, "info": cmd_info, "models": cmd_models, "eval": cmd_eval,
            "tune": cmd_tune, "bench": cmd_bench, "bake": cmd_bake, "dup": cmd_dup, "serve": cmd_serve,
            "rpc-server": cmd_rpc_server}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"loopcpp: warning: {message}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []  # `loopcpp serve ... -- ARGS`: ARGS go to llama-server as they are
    if "--" in argv:
        extra, argv = argv[argv.index("--") + 1:], argv[:argv.index("--")]
    parser = build_parser()
    if not argv:  # a bare `loopcpp` (a new user's first try) shows the commands
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    args.extra = extra
    if extra and args.command != "serve":
        print(f"loopcpp: error: arguments after -- are for `loopcpp serve` only: {' '.join(extra)}", file=sys.stderr)
        return 2
    warnings.showwarning = _show_warning  # one line, no source location: the CLI's users did not write it
    try:
        setup_logging(args)
        return COMMANDS[args.command](args)
    except (LoopcppError, ValueError, OSError) as e:
        print(f"loopcpp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # while a model loads or a prompt is read
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
