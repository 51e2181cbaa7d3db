"""`loopcpp chat`: the interactive conversation loop, its commands and its history.

The conversation is kept as messages and rendered with the model's chat template each turn; the
context reuses the cached prefix of the previous turn. When the history outgrows the context, the
oldest turns are dropped (the system prompt stays), so a long chat never fails every later turn.
"""

from __future__ import annotations

import json
import sys
from typing import Optional, TextIO

from . import __version__
from .errors import ContextFullError, LoopcppError
from .generation import Completion
from .terminal import dim, stream

HELP = '''commands:
  /help            this help
  /loop SPEC       loop the model with SPEC (e.g. /loop 13:16x3, /loop auto); /loop off; /loop shows it
  /stats           tokens and speed of the last reply
  /save FILE       save the conversation as JSON; /load FILE restores one
  /reset           forget the conversation (the system prompt stays)
  /exit            quit (or Ctrl-D)
  """              on a line of its own: start or end a multi-line message
Ctrl-C stops a reply; Ctrl-C at the prompt quits.'''


class ChatSession:
    def __init__(self, model, ctx, sampling, max_tokens: int, system: Optional[str] = None,
                 stop=(), chat_template: Optional[str] = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
                 show_stats: bool = False) -> None:
        self.model, self.ctx, self.sampling, self.max_tokens = model, ctx, sampling, max_tokens
        self.system, self.stop, self.chat_template = system, list(stop), chat_template
        self.out, self.err, self.show_stats = out, err, show_stats
        self.messages: list[dict] = []
        self.last: Optional[Completion] = None
        self.reset()

    # --- commands ----------------------------------------------------------------------------
    def handle(self, text: str) -> bool:
        """One input: a command or a message. Returns False when the session should end."""
        line = text.strip()
        if not line:
            return True
        if line in ("/exit", "/quit"):
            return False
        if line == "/help":
            self.note(HELP)
        elif line == "/reset":
            self.reset()
            self.note("conversation cleared")
        elif line == "/stats":
            self.note(self.stats() if self.last else "no reply yet")
        elif line == "/loop" or line.startswith("/loop "):
            self.set_loop(line[len("/loop"):].strip())
        elif line.startswith("/save"):
            self.save(line[len("/save"):].strip())
        elif line.startswith("/load"):
            self.load(line[len("/load"):].strip())
        elif line.startswith("/") and " " not in line:
            self.note(f"unknown command {line}; /help lists them")
        else:
            self.reply(text)
        return True

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.ctx.reset()

    def set_loop(self, spec: str) -> None:
        try:
            if spec:
                self.ctx.set_loop(spec, clear=True)
        except (LoopcppError, ValueError) as e:
            self.note(f"loopcpp: {e}")
            return
        loop = self.ctx.loop
        self.note(f"loop: {loop if loop.enabled else 'off'}")

    def save(self, path: str) -> None:
        if not path:
            self.note("usage: /save FILE")
            return
        data = {"loopcpp": __version__, "model": self.model.description, "loop": str(self.ctx.loop),
                "messages": self.messages}
        try:
            with open(path, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, ensure_ascii=False)
        except OSError as e:
            self.note(f"loopcpp: could not save: {e}")
            return
        self.note(f"saved {len(self.messages)} messages to {path}")

    def load(self, path: str) -> None:
        if not path:
            self.note("usage: /load FILE")
            return
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            messages = data["messages"]
            if not isinstance(messages, list) or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in messages):
                raise ValueError("every message needs a role and a content, both strings")
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.note(f"loopcpp: could not load {path}: {e}")
            return
        self.messages = messages
        self.ctx.reset()
        saved = data.get("loop")
        hint = f" (saved under loop {saved}; /loop {saved} to use it)" if saved and saved != str(self.ctx.loop) else ""
        self.note(f"loaded {len(messages)} messages from {path}{hint}")

    # --- a turn ------------------------------------------------------------------------------
    def reply(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})
        try:
            dropped = self.fit()
            if dropped:
                self.note(f"(the oldest {dropped} messages were dropped to fit the {self.ctx.n_ctx}-token context)")
            gen = self.ctx.chat(self.messages, stream=True, max_tokens=self.max_tokens, sampling=self.sampling,
                                stop=self.stop, chat_template=self.chat_template)
            done, interrupted = stream(gen, self.ctx, self._write)
        except ContextFullError as e:
            self.messages.pop()
            self.note(f"loopcpp: {e}")
            return
        except (LoopcppError, ValueError) as e:  # a failed decode or template ends this turn, not the session
            self.messages.pop()
            self.out.write("\n")
            self.note(f"loopcpp: error: {e}")
            return
        self.out.write(" [stopped]\n" if interrupted else "\n")
        self.out.flush()
        self.messages.append({"role": "assistant", "content": done.text})
        self.last = done
        if self.show_stats:
            self.out.write(dim(self.stats_line(), self.out) + "\n")
            self.out.flush()

    def fit(self) -> int:
        """Drops the oldest turns until the prompt and room for a reply fit the context; returns
        how many messages were dropped. The system prompt and the newest message always stay."""
        room = min(self.max_tokens, self.ctx.n_ctx // 2)
        first = 1 if self.messages and self.messages[0]["role"] == "system" else 0
        dropped = 0
        while self.prompt_tokens() + room > self.ctx.n_ctx:
            if len(self.messages) - first <= 1:
                raise ContextFullError(f"this message needs {self.prompt_tokens()} tokens plus {room} for the reply, "
                                       f"more than the {self.ctx.n_ctx}-token context: shorten it or raise --ctx-size")
            del self.messages[first]
            dropped += 1
            # a conversation starts with a user turn
            while len(self.messages) - first > 1 and self.messages[first]["role"] != "user":
                del self.messages[first]
                dropped += 1
        return dropped

    def prompt_tokens(self) -> int:
        return len(self.model.tokenize_chat(self.messages, chat_template=self.chat_template))

    def stats(self) -> str:
        d = self._last()
        return (f"reply: {d.usage.completion_tokens} tokens ({d.finish_detail}); prompt: {d.usage.prompt_tokens} tokens, "
                f"{d.usage.cached_tokens} reused from the cache\n{d.timings}")

    def _last(self) -> Completion:
        if self.last is None:
            raise RuntimeError("no reply yet")
        return self.last

    def stats_line(self) -> str:
        t = self._last().timings
        return (f"[{t.generated} tok, {t.generation_per_second:.1f} tok/s; "
                f"prompt {t.prompt_evaluated} tok, {t.prompt_per_second:.1f} tok/s]")

    def _write(self, piece: str) -> None:
        self.out.write(piece)
        self.out.flush()

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)


def read_message(first: str, readline_fn) -> Optional[str]:
    """A message from its first line: a line that is only \"\"\" starts a block that runs to the
    next such line. None at end of input inside a block."""
    if first.strip() != '"""':
        return first
    lines: list[str] = []
    while True:
        line = readline_fn()
        if line is None:
            return "\n".join(lines) if lines else None
        if line.strip() == '"""':
            return "\n".join(lines)
        lines.append(line)
