"""A minimal desktop chat window on loopcpp, with Tkinter from the standard library.

    python examples/desktop_chat.py [MODEL] [--loop auto]

The reply streams from a worker thread, so the window never freezes; Stop (or Escape) cancels a
reply at once through Context.cancel(). The window's own thread only ever touches Tk: tokens
reach it through a queue it polls. --events prints what happens (for tests and scripts).
"""

from __future__ import annotations

import argparse
import queue
import threading
import tkinter as tk
from tkinter import scrolledtext

import loopcpp
from loopcpp import catalog


class ChatWindow:
    def __init__(self, root: tk.Tk, ctx: loopcpp.Context, system: str, sampling: loopcpp.Sampling, max_tokens: int,
                 events: bool) -> None:
        self.root, self.ctx, self.events, self.sampling, self.max_tokens = root, ctx, events, sampling, max_tokens
        self.messages = [{"role": "system", "content": system}] if system else []
        self.updates: "queue.Queue" = queue.Queue()
        self.busy = False

        loop = ctx.loop
        root.title(f"loopcpp chat: {ctx.model.description}, loop {loop if loop.enabled else 'off'}")
        self.transcript = scrolledtext.ScrolledText(root, wrap=tk.WORD, height=20, width=72, state=tk.DISABLED)
        self.transcript.tag_configure("user", foreground="#1f4e9c")
        self.transcript.tag_configure("status", foreground="#888888")
        self.transcript.pack(fill=tk.BOTH, expand=True, padx=8, pady=(8, 4))
        bar = tk.Frame(root)
        bar.pack(fill=tk.X, padx=8, pady=(0, 8))
        self.entry = tk.Entry(bar)
        self.entry.pack(side=tk.LEFT, fill=tk.X, expand=True)
        self.send_button = tk.Button(bar, text="Send", command=self.send)
        self.send_button.pack(side=tk.LEFT, padx=(4, 0))
        self.stop_button = tk.Button(bar, text="Stop", command=self.stop, state=tk.DISABLED)
        self.stop_button.pack(side=tk.LEFT, padx=(4, 0))
        self.entry.bind("<Return>", lambda _e: self.send())
        root.bind("<Escape>", lambda _e: self.stop())
        self.entry.focus_set()
        root.after(30, self.poll)
        self.event("ready")

    def event(self, text: str) -> None:
        if self.events:
            print(text, flush=True)

    def append(self, text: str, tag: str = "") -> None:
        self.transcript.configure(state=tk.NORMAL)
        self.transcript.insert(tk.END, text, tag)
        self.transcript.see(tk.END)
        self.transcript.configure(state=tk.DISABLED)

    def send(self) -> None:
        text = self.entry.get().strip()
        if not text or self.busy:
            return
        self.entry.delete(0, tk.END)
        self.append(f"You: {text}\n", "user")
        self.append("Assistant: ")
        self.messages.append({"role": "user", "content": text})
        self.busy = True
        self.send_button.configure(state=tk.DISABLED)
        self.stop_button.configure(state=tk.NORMAL)
        self.event(f"sent {text!r}")
        threading.Thread(target=self.generate, daemon=True).start()

    def generate(self) -> None:
        """Worker thread: never touches Tk, only the queue."""
        try:
            gen = self.ctx.chat(self.messages, stream=True, max_tokens=self.max_tokens, sampling=self.sampling)
            for tok in gen:
                self.updates.put(("token", tok.text))
            self.updates.put(("done", gen.completion))
        except Exception as e:  # the window must leave its busy state whatever happened
            self.updates.put(("error", f"{type(e).__name__}: {e}"))

    def stop(self) -> None:
        if self.busy:
            self.ctx.cancel()
            self.event("stop pressed")

    def poll(self) -> None:
        """Tk thread: applies what the worker produced, then polls again."""
        try:
            while True:
                kind, value = self.updates.get_nowait()
                if kind == "token":
                    self.append(value)
                    self.event(f"token {value!r}")
                else:
                    self.finish(kind, value)
        except queue.Empty:
            pass
        self.root.after(30, self.poll)

    def finish(self, kind: str, value) -> None:
        if kind == "done":
            self.messages.append({"role": "assistant", "content": value.text})
            t = value.timings
            self.append(f"\n[{value.finish_detail}: {t.generated} tokens, {t.generation_per_second:.1f} tok/s]\n\n", "status")
            self.event(f"done {value.finish_detail} {t.generated}")
        else:
            self.messages.pop()
            self.append(f"\n[error: {value}]\n\n", "status")
            self.event(f"error {value}")
        self.busy = False
        self.send_button.configure(state=tk.NORMAL)
        self.stop_button.configure(state=tk.DISABLED)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help=f"a .gguf file or a catalog name (default: {catalog.DEFAULT_MODEL})")
    ap.add_argument("--loop", default="auto", help="loop recipe (default: auto)")
    ap.add_argument("--system", default="You are a helpful assistant.")
    ap.add_argument("-c", "--ctx-size", type=int, default=2048)
    ap.add_argument("--temp", type=float, default=0.8, help="sampling temperature (0: greedy)")
    ap.add_argument("-n", "--max-tokens", type=int, default=256, help="tokens per reply (default: 256)")
    ap.add_argument("--ignore-eos", action="store_true", help="replies run to --max-tokens (or Stop)")
    ap.add_argument("--events", action="store_true", help="print UI events to stdout")
    args = ap.parse_args()
    with loopcpp.Model(catalog.resolve_model(args.model)) as model:
        with model.context(n_ctx=args.ctx_size, loop=args.loop) as ctx:
            root = tk.Tk()
            sampling = loopcpp.Sampling(temperature=args.temp, ignore_eos=args.ignore_eos)
            ChatWindow(root, ctx, args.system, sampling, args.max_tokens, args.events)
            root.mainloop()


if __name__ == "__main__":
    main()
