"""Sampling parameters, checked in Python before llama.cpp's sampler chain is built from them.

The chain follows llama.cpp's common order: logit bias, penalties, grammar, then either greedy
(temperature <= 0), mirostat, or top-k, typical-p, top-p, min-p, temperature and a seeded draw.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union


@dataclass(frozen=True)
class Sampling:
    """llama.cpp's sampler chain parameters; temperature <= 0 is greedy.

    repeat_penalty / presence_penalty / frequency_penalty act on the last `penalty_last_n`
    tokens (prompt included; -1: the whole context). mirostat 1 or 2 replaces top-k/p/min-p.
    logit_bias maps token ids to additive biases (-inf bans a token). ignore_eos=True bans every
    end-of-generation token (llama.cpp's --ignore-eos), so a reply runs to max_tokens, a stop or
    the end of the context. grammar is GBNF text;
    json_schema (a dict or JSON text) is converted to GBNF by llama.cpp's own converter.
    """

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    ignore_eos: bool = False
    grammar: Optional[str] = None
    json_schema: Optional[Union[Mapping[str, Any], str]] = None
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} must be {what}")

        def number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        check("temperature", number(self.temperature) and self.temperature >= 0, ">= 0 (0 = greedy)")
        check("top_k", isinstance(self.top_k, int) and self.top_k >= 0, "an int >= 0 (0 = off)")
        check("top_p", number(self.top_p) and 0.0 < self.top_p <= 1.0, "in (0, 1]")
        check("min_p", number(self.min_p) and 0.0 <= self.min_p <= 1.0, "in [0, 1]")
        check("typical_p", number(self.typical_p) and 0.0 < self.typical_p <= 1.0, "in (0, 1] (1 = off)")
        check("repeat_penalty", number(self.repeat_penalty) and self.repeat_penalty > 0, "> 0 (1 = off)")
        check("presence_penalty", number(self.presence_penalty), "a finite number (0 = off)")
        check("frequency_penalty", number(self.frequency_penalty), "a finite number (0 = off)")
        check("penalty_last_n", isinstance(self.penalty_last_n, int) and self.penalty_last_n >= -1,
              "an int >= -1 (-1 = the whole context)")
        check("mirostat", self.mirostat in (0, 1, 2), "0 (off), 1 or 2")
        check("mirostat_tau", number(self.mirostat_tau) and self.mirostat_tau > 0, "> 0")
        check("mirostat_eta", number(self.mirostat_eta) and self.mirostat_eta > 0, "> 0")
        check("ignore_eos", isinstance(self.ignore_eos, bool), "True or False")
        check("seed", self.seed is None or isinstance(self.seed, int), "an int or None")
        if not isinstance(self.logit_bias, Mapping):
            raise ValueError(f"logit_bias={self.logit_bias!r} must map token ids to biases")
        for tok, bias in self.logit_bias.items():
            if not isinstance(tok, int) or isinstance(tok, bool) or not isinstance(bias, (int, float)) or math.isnan(bias):
                raise ValueError(f"logit_bias entry {tok!r}: {bias!r} must be an int token id and a number")
        if self.grammar is not None and self.json_schema is not None:
            raise ValueError("give grammar or json_schema, not both")
        if self.grammar is not None and (not isinstance(self.grammar, str) or not self.grammar.strip()):
            raise ValueError(f"grammar={self.grammar!r} must be GBNF text")
        if self.json_schema is not None:
            schema = self.json_schema
            if isinstance(schema, str):
                try:
                    schema = json.loads(schema)
                except json.JSONDecodeError as e:
                    raise ValueError(f"json_schema is not valid JSON: {e}") from None
            if not isinstance(schema, (Mapping, bool)):
                raise ValueError(f"json_schema={self.json_schema!r} must be a JSON object")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def with_changes(self, **changes) -> "Sampling":
        """A copy with some fields changed; unknown names raise TypeError naming them."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown sampling parameter(s): {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        return dataclasses.replace(self, **changes)

    def grammar_text(self) -> Optional[str]:
        """The GBNF grammar to constrain output with, converting json_schema if given."""
        if self.grammar is not None:
            return self.grammar
        if self.json_schema is None:
            return None
        from ._native_tools import json_schema_to_grammar

        schema = self.json_schema if isinstance(self.json_schema, str) else json.dumps(self.json_schema)
        return json_schema_to_grammar(schema)


def sampling_from(sampling: Optional[Sampling], **kw) -> Sampling:
    """`sampling=` and sampling keyword arguments together: the keywords change the given
    Sampling (or the defaults), so none is silently dropped."""
    base = sampling if sampling is not None else Sampling()
    if not isinstance(base, Sampling):
        raise TypeError(f"sampling= must be a loopcpp.Sampling, got {type(base).__name__}")
    return base.with_changes(**kw) if kw else base
