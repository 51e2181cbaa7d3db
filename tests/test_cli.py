"""The `loopcpp` command, run as users run it (a subprocess)."""

import json
import os
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
    assert "do not fit" in r.stderr or "context holds" in r.stderr
    assert len(r.stdout.strip().splitlines()) == 1  # the second turn was answered
