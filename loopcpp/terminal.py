"""Terminal plumbing for the CLI: streaming a generation so that Ctrl-C cancels it at once, dim
status lines, and line editing with history."""

from __future__ import annotations

import os
import queue
import sys
import threading
from pathlib import Path
from typing import Callable, Optional

from .generation import Completion, Generation

_DONE = object()


def stream(gen: Generation, ctx, write: Callable[[str], None]) -> tuple[Completion, bool]:
    """Runs gen on a worker thread and writes its text as it comes. Python delivers Ctrl-C to the
    main thread only between bytecodes, never inside a long llama_decode, so the main thread just
    waits here: Ctrl-C calls ctx.cancel(), which stops compute within a graph node. Returns the
    completion and whether Ctrl-C was pressed; a worker's exception is raised here."""
    pieces: "queue.Queue" = queue.Queue()
    failure: list[BaseException] = []

    def work():
        try:
            for tok in gen:
                pieces.put(tok.text)
        except BaseException as e:  # reported on the main thread
            failure.append(e)
        finally:
            pieces.put(_DONE)

    worker = threading.Thread(target=work, name="loopcpp-generate", daemon=True)
    worker.start()
    interrupted = False
    try:
        while True:
            try:
                piece = pieces.get(timeout=0.1)
                if piece is _DONE:
                    break
                write(piece)
            except queue.Empty:
                continue
            except KeyboardInterrupt:
                interrupted = True
                ctx.cancel()
    finally:  # also when write() fails (a closed pipe): the worker never outlives this call
        if worker.is_alive():
            ctx.cancel()
        _join(worker)
    if failure:
        raise failure[0]
    return gen.completion, interrupted


def _join(worker: threading.Thread) -> None:
    """Waits for the worker, even through a second Ctrl-C (it stops within a graph node)."""
    while worker.is_alive():
        try:
            worker.join(timeout=0.1)
        except KeyboardInterrupt:
            pass


def dim(text: str, stream_=None) -> str:
    """text in the terminal's dim style when the stream is a terminal (NO_COLOR respected)."""
    stream_ = stream_ or sys.stdout
    if stream_.isatty() and not os.environ.get("NO_COLOR"):
        return f"\033[2m{text}\033[0m"
    return text


def enable_line_editing(history_file: Optional[Path]) -> None:
    """readline editing and a persistent history for input(), where the platform has readline."""
    try:
        import readline
    except ImportError:  # Windows without pyreadline
        return
    readline.parse_and_bind("tab: complete")
    if history_file is None:
        return
    try:
        history_file.parent.mkdir(parents=True, exist_ok=True)
        if history_file.exists():
            readline.read_history_file(history_file)
        readline.set_history_length(1000)
    except OSError:
        return
    import atexit

    atexit.register(_save_history, readline, history_file)


def _save_history(readline, path: Path) -> None:
    try:
        readline.write_history_file(path)
    except OSError:
        pass
