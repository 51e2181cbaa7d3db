"""The examples build and run: the C host (examples/embed.c) against the installed headers, and
the Tkinter chat window (examples/desktop_chat.py) on a virtual X display, typed into with
xdotool and photographed. The window test needs Xvfb and xdotool (.ci/run installs them)."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import loopcpp

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def test_embed_c_builds_and_streams_a_looped_reply(smollm2_path, smollm2, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("needs a C compiler")
    exe = tmp_path / "embed"
    lib = str(loopcpp.lib_dir())
    subprocess.run([cc, "-Wall", "-Werror", str(EXAMPLES / "embed.c"), "-I", str(loopcpp.include_dir()),
                    "-L", lib, "-lllama", f"-Wl,-rpath,{lib}", "-o", str(exe)], check=True)
    r = subprocess.run([str(exe), str(smollm2_path), "auto", "The capital of France is", "8"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "loop: 13:16x3,block,rk" in r.stderr
    # the C host computes what the library computes (its context: llama.cpp's defaults: 4 threads,
    # flash attention auto, which the CPU resolves to on; n_ctx 1024)
    with smollm2.context(n_ctx=1024, n_batch=2048, n_threads=4, flash_attn=True, loop="auto") as ctx:
        want = ctx.complete("The capital of France is", max_tokens=8, temperature=0)
    assert want.token_ids and r.stdout == want.text + "\n"
    bad = subprocess.run([str(exe), str(smollm2_path), "40:2x3", "x"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "start > end" in bad.stderr


class App:
    """The desktop example on its own X display, with its --events lines in a queue."""

    def __init__(self, display: str, model: Path, *args: str) -> None:
        env = dict(os.environ, DISPLAY=display)
        self.display = display
        self.proc = subprocess.Popen([sys.executable, str(EXAMPLES / "desktop_chat.py"), str(model), "--events",
                                      "--loop", "auto", "--temp", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float = 120) -> list[str]:
        """The lines up to and including the first that starts with prefix."""
        seen, end = [], time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            if line.startswith(prefix):
                return seen
        raise AssertionError(f"no {prefix!r} from the app; it printed: {seen[-20:]}")

    def xdotool(self, *args: str) -> None:
        subprocess.run(["xdotool", *args], check=True, env=dict(os.environ, DISPLAY=self.display), timeout=30)

    def screenshot(self):
        """The window, as a PIL image."""
        from PIL import ImageGrab

        out = subprocess.run(["xdotool", "search", "--name", "loopcpp chat", "getwindowgeometry", "--shell"],
                             check=True, capture_output=True, text=True, env=dict(os.environ, DISPLAY=self.display))
        g = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
        x, y, w, h = (int(g[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
        return ImageGrab.grab(xdisplay=self.display).crop((x, y, x + w, y + h))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def xdisplay():
    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        pytest.skip("needs Xvfb and xdotool (apt-get install xvfb xdotool)")
    try:
        import tkinter  # noqa: F401
    except ImportError:
        pytest.skip("this Python has no tkinter")
    read, write = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    yield f":{number}"
    xvfb.terminate()
    xvfb.wait(timeout=10)


def dark_pixels(image) -> int:
    return sum(image.convert("L").histogram()[:100])  # darker than 100 of 255: text and borders


def test_desktop_chat_streams_a_reply_and_stops_on_request(xdisplay, smollm2_path, smollm2, tmp_path):
    """The window streams the reply the library gives; a reply that cannot end by itself
    (--ignore-eos, a cap beyond reach) is stopped with Escape once its first token shows."""
    app = App(xdisplay, smollm2_path, "-n", "24")
    try:
        app.wait_for("ready", timeout=120)
        app.xdotool("search", "--sync", "--name", "loopcpp chat", "windowfocus", "--sync")
        time.sleep(0.3)  # the first paint, the baseline (painted late, it can only lower it: never a failure)
        empty = dark_pixels(app.screenshot())
        app.xdotool("type", "--delay", "20", "What is the capital of France?")
        app.xdotool("key", "Return")
        lines = app.wait_for("done")
        tokens = [eval(l[len("token "):]) for l in lines if l.startswith("token ")]
        messages = [{"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "What is the capital of France?"}]
        with smollm2.context(n_ctx=2048, loop="auto") as ctx:
            want = ctx.chat(messages, max_tokens=24, temperature=0)
        assert "".join(tokens) == want.text and len(tokens) == len(want.tokens)  # token by token, not all at once
        end = time.monotonic() + 60  # until the reply is painted (a hang guard, not a speed bound)
        while dark_pixels(shot := app.screenshot()) <= empty + 300 and time.monotonic() < end:
            time.sleep(0.1)
        shot.save(tmp_path / "desktop_chat.png")
        if os.environ.get("LOOPCPP_SCREENSHOT_DIR"):
            shot.save(Path(os.environ["LOOPCPP_SCREENSHOT_DIR"]) / "desktop_chat.png")
        assert dark_pixels(shot) > empty + 300, "the window shows no new text"
    finally:
        app.close()

    app = App(xdisplay, smollm2_path, "-n", "100000", "--ignore-eos", "-c", "4096")
    try:
        app.wait_for("ready", timeout=120)
        app.xdotool("search", "--sync", "--name", "loopcpp chat", "windowfocus", "--sync")
        app.xdotool("type", "--delay", "20", "Write a very long story about a dragon.")
        app.xdotool("key", "Return")
        app.wait_for("token ")
        app.xdotool("key", "Escape")  # the window kept handling events while the reply streamed
        lines = app.wait_for("done", timeout=300)
        assert any(l == "stop pressed" for l in lines)
        assert lines[-1].startswith("done cancelled"), lines[-3:]
    finally:
        app.close()
