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


def test_help_shows_an_example():
    r = loopcpp("chat", "--help")
    assert r.returncode == 0
    assert "loopcpp chat model.gguf --loop 15:18x3" in r.stdout


def test_info_prints_architecture_and_default_window(tiny_paths):
    r = loopcpp("info", tiny_paths["qwen3moe"])
    assert r.returncode == 0, r.stderr
    assert "qwen3moe" in r.stdout and "4 (2 used)" in r.stdout
    assert "default window 1:4x3,layer,rk" in r.stdout
    data = json.loads(loopcpp("info", tiny_paths["gemma3"], "--json").stdout)
    assert (data["arch"], data["n_layer"], data["n_swa"], data["tensor_types"]) == ("gemma3", 6, 5, {"F32": 81})


def test_run_completes_a_prompt(smollm2_path):
    r = loopcpp("run", smollm2_path, "-p", "The capital of France is", "-n", "8", "--temp", "0", "--loop", "auto")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_chat_reads_one_prompt_per_line_from_stdin(smollm2_path):
    r = loopcpp("chat", smollm2_path, "--temp", "0", "-n", "24", "--loop", "13:16x3",
                stdin="What is the capital of France?\n/loop off\nAnd what is the capital of Italy?\n/exit\nignored\n")
    assert r.returncode == 0, r.stderr
    replies = r.stdout.strip().splitlines()
    assert "Paris" in replies[0]
    assert "loop: off" in r.stderr
    assert len(replies) >= 2 and "ignored" not in r.stdout


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


def test_ctrl_c_stops_the_reply_but_not_the_session(smollm2_path):
    import signal
    import threading
    import time

    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.Popen([sys.executable, "-m", "loopcpp", "chat", str(smollm2_path), "--temp", "0",
                                 "-n", "1000", "--loop", "auto"], cwd=cwd, env=_env(), text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.extend(iter(lambda: proc.stdout.read(1), "")), daemon=True)
        reader.start()
        proc.stdin.write("Write a very long story about a dragon who learns to sing.\n")
        proc.stdin.flush()
        deadline = time.time() + 120
        while len(out) < 20 and time.time() < deadline:  # the reply is streaming
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.stdin.write("What is the capital of France?\n/exit\n")
        proc.stdin.flush()
        proc.wait(timeout=120)
        reader.join(timeout=10)
    text = "".join(out)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    first, _, rest = text.partition("[stopped]")
    assert rest, text[-500:]  # the first reply was cut
    assert "Paris" in rest  # and the session answered the next prompt


def test_chat_survives_a_full_context(tiny_paths):
    """A turn that does not fit is reported and dropped; the session goes on."""
    long_line = "tok " * 200
    r = loopcpp("chat", tiny_paths["llama"], "-c", "64", "-n", "4", "--temp", "0", stdin=f"{long_line}\nhi\n")
    assert r.returncode == 0, r.stderr
    assert "more than the 256-token context: shorten it" in r.stderr  # llama.cpp rounds n_ctx up to 256
    assert len(r.stdout.strip().splitlines()) == 1  # the second turn was answered


def test_version_names_the_commit_and_backends():
    r = loopcpp("--version")
    assert r.returncode == 0
    assert re.fullmatch(r"loopcpp \d+\.\d+\.\d+\S* \(llama\.cpp [0-9a-f]{9}\); backends: CPU.*\n", r.stdout)


def test_run_reads_the_prompt_from_a_file_or_stdin_and_prints_json(smollm2_path, tmp_path):
    (tmp_path / "p.txt").write_text("The capital of France is")
    by_file = loopcpp("run", smollm2_path, "-f", tmp_path / "p.txt", "-n", "8", "--temp", "0", "--json")
    assert by_file.returncode == 0, by_file.stderr
    data = json.loads(by_file.stdout)
    assert "Paris" in data["text"] and data["finish_reason"] == "length" and data["loop"] == "off"
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 8, "cached_tokens": 0}
    assert data["timings"]["generated"] == 8 and data["timings"]["generation_per_second"] > 0
    by_stdin = loopcpp("run", smollm2_path, "-n", "8", "--temp", "0", "--json", stdin="The capital of France is")
    assert json.loads(by_stdin.stdout)["text"] == data["text"]


def test_run_stop_grammar_and_logit_bias_flags(smollm2_path):
    r = loopcpp("run", smollm2_path, "-p", "1, 2, 3,", "-n", "20", "--temp", "0", "--stop", " 6")
    assert r.returncode == 0 and r.stdout == " 4, 5,\n"
    r = loopcpp("run", smollm2_path, "--chat", "-p", "Name a colour.", "--temp", "0", "--grammar", 'root ::= "red" | "blue"')
    assert r.stdout.strip() in ("red", "blue")
    r = loopcpp("run", smollm2_path, "-p", "Data:", "--temp", "0", "-n", "40", "-j",
                '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}')
    assert isinstance(json.loads(r.stdout)["n"], int)
    ban_paris = loopcpp("run", smollm2_path, "-p", "The capital of France is", "-n", "3", "--temp", "0",
                        "-l", f"{PARIS}-inf")
    assert ban_paris.returncode == 0 and "Paris" not in ban_paris.stdout


PARIS = 7042  # " Paris" in SmolLM2's vocabulary (checked below)


def test_the_paris_token_id(smollm2):
    assert smollm2.tokenize(" Paris", add_special=False) == [PARIS]


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


def test_chat_commands_multiline_and_save_load(smollm2_path, tmp_path):
    saved = tmp_path / "chat.json"
    script = ('"""\nWhat is the capital\nof France?\n"""\n/stats\n/save ' + str(saved) +
              "\n/reset\n/load " + str(saved) + "\n/loop 13:16x3\n/loop\n/bogus\nAnd of Italy?\n")
    r = loopcpp("chat", smollm2_path, "--temp", "0", "-n", "24", "-s", "You are a helpful assistant.", stdin=script)
    assert r.returncode == 0, r.stderr
    replies = r.stdout.strip().splitlines()
    assert "Paris" in replies[0] and "Rome" in replies[-1]
    data = json.loads(saved.read_text())
    assert [m["role"] for m in data["messages"]] == ["system", "user", "assistant"]
    assert data["messages"][1]["content"] == "What is the capital\nof France?"
    assert "prompt:" in r.stderr and "tok/s" in r.stderr  # /stats
    assert "loaded 3 messages" in r.stderr and "loop: 13:16x3,block,rk" in r.stderr
    assert "unknown command /bogus" in r.stderr


def test_chat_drops_the_oldest_turns_when_the_history_outgrows_the_context(smollm2_path):
    turns = "".join(f"Tell me fact number {i} about the moon, in detail please.\n" for i in range(12))
    r = loopcpp("chat", smollm2_path, "-c", "256", "-n", "48", "--temp", "0", "-s", "Be brief.", stdin=turns)
    assert r.returncode == 0, r.stderr
    assert "messages were dropped to fit the 256-token context" in r.stderr
    assert len(r.stdout.strip().splitlines()) >= 12  # every turn got a reply
    assert "error" not in r.stderr


def test_run_exits_130_after_ctrl_c(smollm2_path):
    import signal
    import time

    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.Popen([sys.executable, "-m", "loopcpp", "run", str(smollm2_path), "-n", "2000", "--temp", "0.7",
                                 "-p", "Once upon a time"], cwd=cwd, env=_env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = proc.stdout.read(20)  # the reply is streaming
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        proc.wait(timeout=60)
    assert first and proc.returncode == 130
    assert time.monotonic() - t0 < 30


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
    """Line editing, history, multi-line input, the dim speed line and Ctrl-C in a real terminal."""
    import shlex
    import time

    env = {k: v for k, v in _env().items() if k in ("PATH", "PYTHONPATH", "LOOPCPP_LIB_PATH", "HOME")}
    env["LOOPCPP_CACHE_DIR"] = str(tmp_path)  # the chat history file goes here
    cmd = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.quote(sys.executable), "-m", "loopcpp",
                    "chat", shlex.quote(str(smollm2_path)), "--temp", "0", "-n", "300", "-s",
                    shlex.quote("You are a helpful assistant.")])
    tmux("new-session", "-d", "-s", "chat", "-x", "120", "-y", "40", "-c", str(tmp_path), cmd + "; sleep 30")

    def screen(escapes=False):
        return tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "chat").stdout

    def wait_for(needle, timeout=120):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = screen()
            if needle in text:
                return text
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} never appeared:\n{screen()}")

    def keys(*k):
        tmux("send-keys", "-t", "chat", *k)

    wait_for("/help for commands")
    keys("What is the capital of France?", "Enter")
    text = wait_for("tok/s]")
    assert "Paris" in text
    assert "\x1b[2m[" in screen(escapes=True)  # the speed line is dim
    # readline: Up recalls the last line, Ctrl-U clears it
    keys("Up")
    assert wait_for("> What is the capital of France?").count("> What is the capital of France?") == 2
    keys("C-u")
    keys('"""', "Enter", "Answer in one word:", "Enter", "what colour is the sky?", "Enter", '"""', "Enter")
    wait_for("one word:")
    time.sleep(2)
    keys("Write a very long story about a dragon.", "Enter")
    time.sleep(3)  # the story is streaming
    keys("C-c")
    wait_for("[stopped]", timeout=30)
    keys("/exit", "Enter")
    time.sleep(1)
    assert (tmp_path / "chat_history").exists()


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
