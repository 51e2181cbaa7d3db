"""The `loopcpp` command, run as users run it (a subprocess)."""

import json
import os
import re
import subprocess
import sys
import tempfile

import pytest


def _env() -> dict:
    """The environment for `python -m loopcpp` run outside the source tree (so the installed
    package is used); a developer's relative PYTHONPATH=. keeps working from there."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep))
    return env


def loopcpp(*args, stdin=None):
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-m", "loopcpp", *map(str, args)], input=stdin, cwd=cwd,
                              capture_output=True, text=True, timeout=300, env=_env())


# The CLI's context: -c 4096 -b 512 -ub 512 (its defaults), the default threads and flash attention.
CLI_CONTEXT = dict(n_ctx=4096, n_batch=512, n_ubatch=512)


def library_complete(model, prompt, loop=None, **kw):
    """What the library gives for prompt in a fresh context like the CLI's: `loopcpp run` must
    print exactly this (the same batch shapes give the same logits on any machine)."""
    with model.context(loop=loop, **CLI_CONTEXT) as ctx:
        return ctx.complete(prompt, **kw)


def library_chat(model, lines, loop=None, max_tokens=512, system=None, n_ctx=CLI_CONTEXT["n_ctx"], **sampling):
    """`loopcpp chat` fed `lines`, run in this process: (stdout, the session, how many turns got a
    reply). Each turn reuses the previous turn's cache as the CLI's does, so the two print the
    same text."""
    import io

    import loopcpp
    from loopcpp.chat_repl import ChatSession, read_message

    out, err = io.StringIO(), io.StringIO()
    feed = iter(lines)
    replies = 0
    with model.context(loop=loop, **{**CLI_CONTEXT, "n_ctx": n_ctx}) as ctx:
        session = ChatSession(model, ctx, loopcpp.Sampling(**sampling), max_tokens, system=system, out=out, err=err)
        for first in feed:
            text = read_message(first, lambda: next(feed, None))
            before = session.last
            if text is None or not session.handle(text):
                break
            replies += session.last is not before  # a reply sets it; a command or a failed turn does not
    return out.getvalue(), session, replies


def test_help_shows_an_example():
    r = loopcpp("chat", "--help")
    assert r.returncode == 0
    assert "loopcpp chat model.gguf --loop 15:18x3" in r.stdout


def _command_paths(parser, prefix=()):
    """Every command of the parser tree, as argument lists: [], ["chat"], ["models"], ..."""
    import argparse

    yield list(prefix)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _command_paths(sub, (*prefix, name))


def test_every_command_has_help(capsys):
    """`--help` on the whole command tree: argparse formats each help text only when it prints
    it, so a stray "%" in one (it once read "95 % intervals") crashes there and nowhere else."""
    from loopcpp.cli import build_parser, main

    paths = list(_command_paths(build_parser()))
    assert len(paths) > 10 and ["chat"] in paths and ["eval"] in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_:
            main([*path, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0, path
        assert out.startswith("usage: loopcpp"), (path, out[:200])


@pytest.mark.parametrize("args", [["--help"], ["--version"], []])
def test_first_commands_a_user_types(args):
    """`loopcpp --help`, `loopcpp --version` and a bare `loopcpp`, as the installed script and as
    `python -m loopcpp`: each exits 0 and prints to stdout."""
    import shutil

    script = shutil.which("loopcpp", path=os.path.dirname(sys.executable)) or shutil.which("loopcpp")
    runs = [loopcpp(*args)]
    if script:
        with tempfile.TemporaryDirectory() as cwd:
            runs.append(subprocess.run([script, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=_env()))
    for r in runs:
        assert r.returncode == 0 and r.stdout.strip() and "Traceback" not in r.stderr, r.stderr[-2000:]
    if "--version" not in args:
        assert all("chat" in r.stdout and "serve" in r.stdout for r in runs)


def test_info_prints_architecture_and_default_window(tiny_paths):
    r = loopcpp("info", tiny_paths["qwen3moe"])
    assert r.returncode == 0, r.stderr
    assert "qwen3moe" in r.stdout and "4 (2 used)" in r.stdout
    assert "default window 1:4x3,layer,rk" in r.stdout
    data = json.loads(loopcpp("info", tiny_paths["gemma3"], "--json").stdout)
    assert (data["arch"], data["n_layer"], data["n_swa"], data["tensor_types"]) == ("gemma3", 6, 5, {"F32": 81})


def test_run_completes_a_prompt(smollm2_path, smollm2):
    r = loopcpp("run", smollm2_path, "-p", "The capital of France is", "-n", "8", "--temp", "0", "--loop", "auto")
    assert r.returncode == 0, r.stderr
    want = library_complete(smollm2, "The capital of France is", loop="auto", max_tokens=8, temperature=0)
    assert want.token_ids and r.stdout == want.text + "\n"


def test_chat_reads_one_prompt_per_line_from_stdin(smollm2_path, smollm2):
    lines = ["What is the capital of France?", "/loop off", "And what is the capital of Italy?", "/exit", "ignored"]
    r = loopcpp("chat", smollm2_path, "--temp", "0", "-n", "24", "--loop", "13:16x3", stdin="\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    want, session, _ = library_chat(smollm2, lines, loop="13:16x3", max_tokens=24, temperature=0)
    assert r.stdout == want
    assert [m["role"] for m in session.messages] == ["user", "assistant"] * 2  # two turns, nothing after /exit
    assert "loop: off" in r.stderr


def test_models_lists_the_catalog():
    r = loopcpp("models")
    assert r.returncode == 0
    assert "smollm2-135m" in r.stdout and "gemma3-270m" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["run", "{tiny}", "-p", "x", "--loop", "1:99x3"], "outside the model"),
    (["run", "{tiny}", "-p", "x", "--loop", "1:2x3,sideways"], "bad option \"sideways\""),
    (["info", "/nonexistent.gguf"], "neither a file nor a catalog name"),
    (["models", "fetch", "no-such-model"], "unknown model"),
])
def test_errors_are_one_line_without_traceback(args, needle, tiny_paths):
    r = loopcpp(*[a.replace("{tiny}", str(tiny_paths["llama"])) for a in args])
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


class Streaming:
    """A `loopcpp chat` or `run` subprocess whose stdout is read as it streams."""

    def __init__(self, *args, stdin=False):
        import threading

        self._cwd = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen([sys.executable, "-m", "loopcpp", *map(str, args)], cwd=self._cwd.name, env=_env(),
                                     text=True, stdin=subprocess.PIPE if stdin else None, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.out: list[str] = []
        self._reader = threading.Thread(target=lambda: self.out.extend(iter(lambda: self.proc.stdout.read(1), "")),
                                        daemon=True)
        self._reader.start()

    @property
    def text(self) -> str:
        return "".join(self.out)

    def wait_for(self, done, what, timeout=300):
        """Waits for an event in the output (done(text) is true), not for a time."""
        import time

        end = time.monotonic() + timeout  # a hang guard only
        while not done(self.text):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"{what} never happened; output: {self.text[-500:]!r}; "
                                     f"stderr: {self.proc.stderr.read()[-2000:] if self.proc.poll() is not None else ''}")
            time.sleep(0.02)

    def send(self, text):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def finish(self):
        self.proc.wait(timeout=300)
        self._reader.join(timeout=30)
        self._cwd.cleanup()
        return self.proc.returncode, self.text, self.proc.stderr.read()


def test_ctrl_c_stops_the_reply_but_not_the_session(smollm2_path):
    """Replies that cannot end by themselves (--ignore-eos, a 4000-token cap), each stopped by
    Ctrl-C once it streams: however fast the machine, the signal lands inside the reply."""
    import signal

    chat = Streaming("chat", smollm2_path, "--temp", "0", "-n", "4000", "--ignore-eos", "--loop", "auto", stdin=True)
    chat.send("Write a very long story about a dragon who learns to sing.\n")
    chat.wait_for(lambda t: len(t) >= 20, "the first reply streaming")
    chat.proc.send_signal(signal.SIGINT)
    chat.wait_for(lambda t: "[stopped]" in t, "the first reply stopped")
    chat.send("What is the capital of France?\n")  # the session goes on
    chat.wait_for(lambda t: len(t.partition("[stopped]")[2].strip()) >= 20, "the second reply streaming")
    chat.proc.send_signal(signal.SIGINT)
    chat.wait_for(lambda t: t.count("[stopped]") == 2, "the second reply stopped")
    chat.send("/exit\n")
    code, text, err = chat.finish()
    assert code == 0, err[-2000:]
    assert text.count("[stopped]") == 2 and text.endswith(" [stopped]\n")


def test_chat_survives_a_full_context(tiny_paths, tiny_models):
    """A turn that does not fit is reported and dropped; the session goes on."""
    lines = ["tok " * 200, "hi"]
    r = loopcpp("chat", tiny_paths["llama"], "-c", "64", "-n", "4", "--temp", "0", stdin="\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    assert "more than the 256-token context: shorten it" in r.stderr  # llama.cpp rounds n_ctx up to 256
    want, session, replies = library_chat(tiny_models["llama"], lines, max_tokens=4, n_ctx=64, temperature=0)
    assert replies == 1 and [m["content"] for m in session.messages if m["role"] == "user"] == ["hi"]
    assert r.stdout == want


def test_version_names_the_commit_and_backends():
    r = loopcpp("--version")
    assert r.returncode == 0
    assert re.fullmatch(r"loopcpp \d+\.\d+\.\d+\S* \(llama\.cpp [0-9a-f]{9}\); backends: CPU.*\n", r.stdout)


def test_run_reads_the_prompt_from_a_file_or_stdin_and_prints_json(smollm2_path, smollm2, tmp_path):
    (tmp_path / "p.txt").write_text("The capital of France is")
    flags = ["-n", "8", "--temp", "0", "--ignore-eos", "--json"]
    by_file = loopcpp("run", smollm2_path, "-f", tmp_path / "p.txt", *flags)
    assert by_file.returncode == 0, by_file.stderr
    data = json.loads(by_file.stdout)
    want = library_complete(smollm2, "The capital of France is", max_tokens=8, temperature=0, ignore_eos=True)
    assert data["text"] == want.text and data["finish_reason"] == "length" and data["loop"] == "off"
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 8, "cached_tokens": 0}
    assert data["timings"]["generated"] == 8 and data["timings"]["generation_per_second"] > 0
    by_stdin = loopcpp("run", smollm2_path, *flags, stdin="The capital of France is")
    assert json.loads(by_stdin.stdout)["text"] == data["text"]


def test_run_stop_grammar_and_logit_bias_flags(smollm2_path, smollm2):
    import numpy as np

    full = library_complete(smollm2, "1, 2, 3,", max_tokens=20, temperature=0, ignore_eos=True).text
    stop = full[len(full) // 2:len(full) // 2 + 2]
    r = loopcpp("run", smollm2_path, "-p", "1, 2, 3,", "-n", "20", "--temp", "0", "--ignore-eos", "--stop", stop)
    assert r.returncode == 0 and r.stdout == full[:full.index(stop)] + "\n"
    r = loopcpp("run", smollm2_path, "--chat", "-p", "Name a colour.", "--temp", "0", "--grammar", 'root ::= "red" | "blue"')
    assert r.stdout.strip() in ("red", "blue")
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 999}}, "required": ["n"],
              "additionalProperties": False}
    r = loopcpp("run", smollm2_path, "-p", "Data:", "--temp", "0", "-n", "200", "-j", json.dumps(schema))
    assert 0 <= json.loads(r.stdout)["n"] <= 999
    # the bias reaches the sampler: banning the model's first choice gives its second
    with smollm2.context(**CLI_CONTEXT) as ctx:
        order = np.argsort(-ctx.eval(smollm2.tokenize("The capital of France is")), kind="stable")
    banned = loopcpp("run", smollm2_path, "-p", "The capital of France is", "-n", "1", "--temp", "0",
                     "-l", f"{order[0]}-inf")
    assert banned.returncode == 0, banned.stderr
    assert banned.stdout == smollm2.token_to_piece(int(order[1])).decode() + "\n"


@pytest.mark.parametrize("args,needle", [
    (["run", "no-such-model", "-p", "x", "--loop", "3:1x2"], "start > end"),  # before any fetch
    (["run", "no-such-model", "-p", "x", "-l", "12x"], "--logit-bias '12x'"),
    (["run", "no-such-model", "-p", "x", "--top-p", "0"], "top_p=0.0"),
    (["run", "{tiny}"], "no prompt"),
    (["chat", "{tiny}", "--grammar", "root ::= ("], "grammar does not parse"),  # before the first turn
    (["run", "{tiny}", "-p", "x", "-l", "999999+1"], "outside the vocabulary"),
])
def test_bad_flags_fail_before_loading(args, needle, tiny_paths):
    r = loopcpp(*[a.replace("{tiny}", str(tiny_paths["llama"])) for a in args], stdin="")
    assert r.returncode == 2 and needle in r.stderr, r.stderr


def test_log_file_gets_llama_cpps_log(tiny_paths, tmp_path):
    log = tmp_path / "llama.log"
    r = loopcpp("run", tiny_paths["llama"], "-p", "a b", "-n", "2", "--log-file", log, "--chat-template", "chatml")
    assert r.returncode == 0, r.stderr
    text = log.read_text()
    assert "llama_model_loader" in text and "llama_context" in text
    assert "llama_model_loader" not in r.stderr  # the terminal stays quiet


def test_chat_commands_multiline_and_save_load(smollm2_path, smollm2, tmp_path):
    saved = tmp_path / "chat.json"
    lines = ['"""', "What is the capital", "of France?", '"""', "/stats", f"/save {saved}", "/reset", f"/load {saved}",
             "/loop 13:16x3", "/loop", "/bogus", "And of Italy?"]
    r = loopcpp("chat", smollm2_path, "--temp", "0", "-n", "24", "-s", "You are a helpful assistant.",
                stdin="\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    want, session, _ = library_chat(smollm2, lines, max_tokens=24, system="You are a helpful assistant.",
                                    temperature=0)
    assert r.stdout == want
    data = json.loads(saved.read_text())
    assert [m["role"] for m in data["messages"]] == ["system", "user", "assistant"]
    assert data["messages"][1]["content"] == "What is the capital\nof France?"
    assert [m["content"] for m in session.messages[1:]] == [*(m["content"] for m in data["messages"][1:]), "And of Italy?",
                                                             session.messages[-1]["content"]]
    assert "prompt:" in r.stderr and "tok/s" in r.stderr  # /stats
    assert "loaded 3 messages" in r.stderr and "loop: 13:16x3,block,rk" in r.stderr
    assert "unknown command /bogus" in r.stderr


def test_chat_drops_the_oldest_turns_when_the_history_outgrows_the_context(smollm2_path, smollm2):
    """Every reply runs to its 48 tokens (--ignore-eos), so twelve turns cannot fit 256 tokens."""
    lines = [f"Tell me fact number {i} about the moon, in detail please." for i in range(12)]
    flags = ["-c", "256", "-n", "48", "--temp", "0", "--ignore-eos", "-s", "Be brief."]
    r = loopcpp("chat", smollm2_path, *flags, stdin="\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    assert "messages were dropped to fit the 256-token context" in r.stderr
    assert "error" not in r.stderr
    want, _, replies = library_chat(smollm2, lines, max_tokens=48, system="Be brief.", n_ctx=256, temperature=0,
                                    ignore_eos=True)
    assert replies == 12  # every turn got a reply
    assert r.stdout == want


def test_run_exits_130_after_ctrl_c(smollm2_path):
    import signal

    run = Streaming("run", smollm2_path, "-n", "4000", "--temp", "0.7", "--seed", "1", "--ignore-eos",
                    "-p", "Once upon a time")
    run.wait_for(lambda t: len(t) >= 20, "the reply streaming")  # it cannot end before 4000 tokens
    run.proc.send_signal(signal.SIGINT)
    code, text, err = run.finish()  # a hang fails on finish()'s timeout
    assert code == 130, err[-2000:]


@pytest.fixture
def tmux(tmp_path):
    """A private tmux server (its own socket) with one 120x40 terminal."""
    import shutil

    if not shutil.which("tmux"):
        pytest.skip("needs tmux")
    sock = f"loopcpp-test-{os.getpid()}"

    def run(*args):
        return subprocess.run(["tmux", "-L", sock, *args], check=True, capture_output=True, text=True, timeout=30)

    yield run
    subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


def test_chat_in_a_real_terminal(tmux, smollm2_path, tmp_path):
    """Line editing, history, multi-line input, the dim speed line and Ctrl-C in a real terminal.
    Replies cannot end by themselves (--ignore-eos): each is stopped with Ctrl-C once it streams,
    so every step waits for what the screen shows, never for a time."""
    import shlex
    import time

    env = {k: v for k, v in _env().items() if k in ("PATH", "PYTHONPATH", "LOOPCPP_LIB_PATH", "HOME")}
    env["LOOPCPP_CACHE_DIR"] = str(tmp_path)  # the chat history file goes here
    cmd = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.quote(sys.executable), "-m", "loopcpp",
                    "chat", shlex.quote(str(smollm2_path)), "--temp", "0", "-n", "2000", "--ignore-eos", "-s",
                    shlex.quote("You are a helpful assistant.")])
    tmux("new-session", "-d", "-s", "chat", "-x", "120", "-y", "40", "-c", str(tmp_path), cmd + "; sleep 30")

    def screen(escapes=False):
        # the scrollback too: what scrolled off the 40 lines still counts
        return tmux("capture-pane", "-p", "-S", "-", *(["-e"] if escapes else []), "-t", "chat").stdout

    def wait_until(done, what, timeout=300):  # a hang guard, not a measure of speed
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = screen()
            if done(text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"{what} never happened:\n{screen()}")

    def wait_for(needle):
        return wait_until(lambda text: needle in text, repr(needle))

    def keys(*k):
        tmux("send-keys", "-t", "chat", *k)

    def stop_the_reply(after, n_stopped):
        """Waits for the reply to `after` to stream, then Ctrl-C; it must end as [stopped]."""
        def reply(text):  # what follows the input line, less the input lines ("> ...")
            tail = text.rpartition(after)[2] if after in text else ""
            return "".join(line for line in tail.splitlines() if not line.startswith(">")).strip()

        wait_until(lambda text: len(reply(text)) >= 10, f"a reply to {after!r}")
        keys("C-c")
        wait_until(lambda text: text.count("[stopped]") >= n_stopped, f"[stopped] #{n_stopped}")

    wait_for("/help for commands")
    keys("What is the capital of France?", "Enter")
    stop_the_reply("capital of France?", 1)
    wait_for("tok/s]")
    assert "\x1b[2m[" in screen(escapes=True)  # the speed line is dim
    # readline: Up recalls the last line, Ctrl-U clears it
    keys("Up")
    assert wait_for("> What is the capital of France?").count("> What is the capital of France?") == 2
    keys("C-u")
    keys('"""', "Enter", "Answer in one word:", "Enter", "what colour is the sky?", "Enter", '"""', "Enter")
    stop_the_reply("what colour is the sky?", 2)
    keys("Write a very long story about a dragon.", "Enter")
    stop_the_reply("about a dragon.", 3)
    keys("/exit", "Enter")
    wait_until(lambda text: (tmp_path / "chat_history").exists(), "the history file")


def test_a_failed_reply_ends_the_turn_not_the_session(tiny_models):
    import io

    import loopcpp
    from loopcpp.chat_repl import ChatSession

    with tiny_models["llama"].context(n_ctx=256) as ctx:
        out, err = io.StringIO(), io.StringIO()
        session = ChatSession(tiny_models["llama"], ctx, loopcpp.Sampling(temperature=0), 4, out=out, err=err,
                              chat_template="chatml")
        real_chat, calls = ctx.chat, []

        def failing_once(*a, **kw):
            calls.append(1)
            if len(calls) == 1:
                raise loopcpp.DecodeError("llama_decode returned -3: compute failed")
            return real_chat(*a, **kw)

        ctx.chat = failing_once
        assert session.handle("first") and session.handle("second")
    assert "loopcpp: error: llama_decode returned -3" in err.getvalue()
    assert [m["content"] for m in session.messages if m["role"] == "user"] == ["second"]
    assert session.last is not None and session.last.usage.completion_tokens > 0


def test_dup_writes_a_self_merged_gguf_the_unmodified_model_runs(tiny_paths, tmp_path):
    import gguf
    import numpy as np

    import loopcpp as api

    out = tmp_path / "dup.gguf"
    r = loopcpp("dup", tiny_paths["gemma3"], "--loop", "2:3x3", "-o", out)
    assert r.returncode == 0, r.stderr
    reader = gguf.GGUFReader(str(out))
    assert reader.get_field("gemma3.block_count").contents() == 10
    src = gguf.GGUFReader(str(tiny_paths["gemma3"]))
    want = {t.name: t for t in src.tensors}
    got = {t.name: t for t in reader.tensors}
    assert np.array_equal(got["blk.6.attn_q.weight"].data, want["blk.2.attn_q.weight"].data)  # 2 3 | 2 3 | 2 3
    # gemma3's sliding window pattern (period 3 in the file) is written out per layer
    assert reader.get_field("gemma3.attention.sliding_window_pattern").contents() == [
        True, True, False, True, False, True, False, True, True, False]
    with api.Model(out) as m, m.context(n_ctx=32) as ctx:
        assert np.isfinite(ctx.eval([5, 6])).all()
    bad = loopcpp("dup", tiny_paths["gemma3"], "--loop", "auto", "-o", out)
    assert bad.returncode == 2 and "explicit window" in bad.stderr


def test_info_says_why_a_model_cannot_loop(tmp_path):
    import tinymodels

    path = tinymodels.write_mamba(tmp_path / "mamba.gguf")
    r = loopcpp("info", path)
    assert r.returncode == 0, r.stderr
    assert "architecture 'mamba' cannot loop: it is recurrent" in r.stdout
