"""Chat templates: the model's own Jinja template, rendered in a sandbox as transformers and
llama-cpp-python do, with llama.cpp's built-in templates as the fallback.

A template is chosen once per model (`resolve`): an explicit `chat_template=` (a built-in name
such as "chatml" or "llama3", or Jinja text), else the GGUF's `tokenizer.chat_template`, else a
built-in for the architecture, with a warning. `ChatTemplate.stop_tokens` are the end-of-turn
markers the template writes, so a reply stops where the template would close the turn.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Optional, Sequence

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ._internals import apply_builtin_template, builtin_template_names
from .errors import ChatTemplateError

if TYPE_CHECKING:
    from .model import Model

# llama.cpp's built-in used when a GGUF has no template of its own, by architecture.
FALLBACK_TEMPLATES = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma"}
DEFAULT_FALLBACK_TEMPLATE = "chatml"

# Markers that close a turn in common templates; those a template writes and the vocabulary has
# as one token become stop tokens (most are end-of-generation tokens already).
END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>",
                       "<|end_of_text|>", "</s>", "<|return|>", "<｜end▁of▁sentence｜>")


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False) -> str:
    # transformers' tojson: no HTML escaping (Jinja's own would turn quotes into &#34;)
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@dataclass
class ChatTemplate:
    """A chat template ready to render: Jinja text, or the name of a llama.cpp built-in."""

    source: str
    origin: str  # "model", "override" or "fallback"
    bos_token: str = ""
    eos_token: str = ""
    stop_tokens: list[int] = field(default_factory=list)

    @property
    def is_builtin(self) -> bool:
        return self.source in builtin_template_names()

    def tokenize(self, model: "Model", messages: Sequence[dict], add_generation_prompt: bool = True,
                 **extra) -> list[int]:
        """The prompt tokens for messages. Only the template's own markup may become special
        tokens; message content is always text, so a user who types "<|im_end|>" sends those
        characters, not the end-of-turn token.

        Content that holds no special-token text is tokenized with the rest in one piece, as
        llama.cpp does. Otherwise the template is rendered again with a sentinel in place of each
        content: the text between sentinels is markup, and each content is tokenized as text
        (as the template wrote it where that is the content itself or trimmed, else verbatim)."""
        messages = _check_messages(messages)
        text = self.render(messages, add_generation_prompt, **extra)
        add_bos = needs_bos(model, text)
        if not any(_has_special_text(model, m["content"]) for m in messages):
            return model.tokenize(text, add_special=add_bos, parse_special=True)
        sentinels = [{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
        parts = re.split("\ue000(\\d+)\ue001", self.render(sentinels, add_generation_prompt, **extra))
        tokens = model.tokenize(parts[0], add_special=add_bos, parse_special=True)
        pos = len(parts[0]) if text.startswith(parts[0]) else -1  # where `text` is aligned up to
        for index, markup in zip(parts[1::2], parts[2::2]):
            content = messages[int(index)]["content"]
            written = next((c for c in (content, content.strip(), content.lstrip(), content.rstrip())
                            if pos >= 0 and text.startswith(c + markup, pos)), None)
            pos = pos + len(written) + len(markup) if written is not None else -1
            tokens += model.tokenize(content if written is None else written, add_special=False, parse_special=False)
            tokens += model.tokenize(markup, add_special=False, parse_special=True)
        return tokens

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = True, **extra) -> str:
        """The prompt text for messages. `extra` reaches the template as variables (e.g. tools,
        enable_thinking); built-ins ignore it."""
        messages = _check_messages(messages)
        if self.is_builtin:
            return apply_builtin_template(self.source, messages, add_generation_prompt)
        try:
            template = _compiled(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise ChatTemplateError(f"the chat template does not parse (line {e.lineno}: {e.message}); "
                                    "pass chat_template= with a built-in name or other Jinja text") from None
        try:
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   bos_token=self.bos_token, eos_token=self.eos_token, **extra)
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"the chat template refused these messages: {e}") from None
        except Exception as e:  # a template's own Python-level error (e.g. adding None to a str)
            raise ChatTemplateError(f"the chat template failed on these messages: {type(e).__name__}: {e}") from None


def _check_messages(messages: Sequence[dict]) -> list[dict]:
    """The messages with each content as text: a list of content parts ([{"type": "text",
    "text": ...}], as OpenAI's API allows) becomes their text, joined."""
    out = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ChatTemplateError(f"a chat message needs 'role' and 'content', got {m!r}")
        content = m["content"]
        if isinstance(content, list):
            content = "".join(_part_text(part) for part in content)
        elif not isinstance(content, str):
            raise ChatTemplateError(f"a chat message's content must be a string or a list of text parts, got {content!r}")
        out.append({**m, "content": content})
    return out


def _part_text(part) -> str:
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return part["text"]
    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
    raise ChatTemplateError(f"a content part of type {kind!r} is not supported: only text parts "
                            '({"type": "text", "text": ...}) are')


def _has_special_text(model: "Model", text: str) -> bool:
    """Would tokenizing text with special-token parsing produce a control token?"""
    return model.tokenize(text, add_special=False, parse_special=True) != model.tokenize(
        text, add_special=False, parse_special=False)


def needs_bos(model: "Model", text: str) -> bool:
    """Does a prompt of this text need the model's BOS added (it wants one and the text does not
    begin with it already)?"""
    if not model._h.add_bos():
        return False
    bos_text = model.token_to_piece(model.bos, special=True).decode(errors="replace")
    return not (bos_text and text.startswith(bos_text))


_cache: dict[str, jinja2.Template] = {}


def _compiled(source: str) -> jinja2.Template:
    if source not in _cache:
        _cache[source] = _environment().from_string(source)
    return _cache[source]


def looks_like_jinja(text: str) -> bool:
    return "{%" in text or "{{" in text


def check_text(override) -> None:
    """A chat_template= value must be non-empty text (which text is checked by resolve())."""
    if not isinstance(override, str) or not override.strip():
        raise ChatTemplateError(f"chat_template={override!r} must be a built-in name or Jinja text")


def resolve(model: "Model", override: Optional[str] = None) -> ChatTemplate:
    """The template a model's chats use (see the module docstring for the order)."""
    names = builtin_template_names()
    if override is not None:
        check_text(override)
        if override not in names and not looks_like_jinja(override):
            raise ChatTemplateError(f"chat_template={override!r} is neither Jinja text nor a built-in template "
                                    f"(built-ins: {', '.join(names)})")
        source, origin = override, "override"
    elif model.chat_template:
        source, origin = model.chat_template, "model"
    else:
        source, origin = FALLBACK_TEMPLATES.get(model.arch, DEFAULT_FALLBACK_TEMPLATE), "fallback"
        warnings.warn(f"{model.path}: the model has no chat template; using llama.cpp's built-in '{source}' "
                      "(choose one with chat_template= or --chat-template)", stacklevel=3)
    special = lambda t: model.token_to_piece(t, special=True).decode("utf-8", errors="replace") if t >= 0 else ""
    tmpl = ChatTemplate(source, origin, bos_token=special(model.bos), eos_token=special(model.eos))
    tmpl.stop_tokens = _stop_tokens(model, source)
    return tmpl


def _stop_tokens(model: "Model", source: str) -> list[int]:
    """End-of-turn markers the template writes that are single tokens of the vocabulary."""
    text = _builtin_sample(source) if source in builtin_template_names() else source
    out = []
    for marker in END_OF_TURN_MARKERS:
        if marker in text:
            ids = model.tokenize(marker, add_special=False, parse_special=True)
            if len(ids) == 1 and ids[0] not in out:
                out.append(ids[0])
    return out


def _builtin_sample(name: str) -> str:
    """A built-in's output for a short exchange, to find the markers it writes."""
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    try:
        return apply_builtin_template(name, msgs, True)
    except ValueError:
        return ""
