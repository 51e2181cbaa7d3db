"""What a generation returns: tokens as they stream, and the finished result with its finish
reason, token usage and timings. Results are values; nothing is left behind on the context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generator, Iterator, Optional

# finish_detail -> finish_reason, as OpenAI's API and llama-cpp-python report it: "stop" where the
# reply ended as it should, "length" where it was cut short
FINISH_REASONS = {"eog": "stop", "stop": "stop", "stop_token": "stop",
                  "max_tokens": "length", "context": "length", "cancelled": "length"}


@dataclass(frozen=True)
class TopLogprob:
    id: int
    text: str
    logprob: float


@dataclass(frozen=True)
class Token:
    """One generated token: its id and the text it completes (may be "" inside a UTF-8 sequence).
    Text held back because it could begin a stop string is flushed at the end with id -1.
    With logprobs= set: the model's log-probability of the token, and the top alternatives."""

    id: int
    text: str
    logprob: Optional[float] = None
    top_logprobs: Optional[tuple[TopLogprob, ...]] = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens reused from the cache, not evaluated again

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    prompt_ms: float  # evaluating the prompt (the tokens not reused from the cache)
    prompt_evaluated: int
    generation_ms: float  # sampling and evaluating the generated tokens
    generated: int

    @property
    def prompt_per_second(self) -> float:
        return self.prompt_evaluated / (self.prompt_ms / 1000) if self.prompt_ms > 0 else 0.0

    @property
    def generation_per_second(self) -> float:
        return self.generated / (self.generation_ms / 1000) if self.generation_ms > 0 else 0.0

    def __str__(self) -> str:
        return (f"prompt {self.prompt_evaluated} tok in {self.prompt_ms / 1000:.2f} s ({self.prompt_per_second:.1f} tok/s), "
                f"generation {self.generated} tok in {self.generation_ms / 1000:.2f} s ({self.generation_per_second:.1f} tok/s)")


@dataclass(frozen=True)
class Completion:
    """A finished generation. str(completion) is its text.

    finish_reason: "stop" (the reply ended as it should) or "length" (cut short), as OpenAI's API
    reports it. finish_detail says why: "eog" (an end-of-generation token), "stop" (a stop
    string), "stop_token", "max_tokens", "context" (the context is full) or "cancelled"."""

    text: str
    finish_reason: str
    usage: Usage
    timings: Timings
    tokens: tuple[Token, ...] = field(default=(), repr=False)
    finish_detail: str = ""

    @property
    def token_ids(self) -> list[int]:
        return [t.id for t in self.tokens if t.id >= 0]

    def __str__(self) -> str:
        return self.text


def _no_steps() -> Generator[Token, None, None]:
    yield from ()


class Generation(Iterator[Token]):
    """A generation in progress: iterate it for Tokens. Once it ends, `completion` holds the
    result (reading it first runs the generation to its end); close() stops it early, with
    finish_detail "cancelled"."""

    def __init__(self) -> None:
        self._steps: Generator[Token, None, None] = _no_steps()  # set by the context that runs it
        self._tokens: list[Token] = []  # appended by the context's stream as it yields them
        self._completion: Optional[Completion] = None

    def __iter__(self) -> "Generation":
        return self

    def __next__(self) -> Token:
        return next(self._steps)

    def _finish(self, completion: Completion) -> None:
        self._completion = completion

    @property
    def completion(self) -> Completion:
        if self._completion is None:
            for _ in self:
                pass
        if self._completion is None:  # closed before it started
            self._completion = Completion(self.text, "length", Usage(0, 0), Timings(0.0, 0, 0.0, 0), tuple(self._tokens),
                                          finish_detail="cancelled")
        return self._completion

    @property
    def text(self) -> str:
        """The text streamed so far."""
        return "".join(t.text for t in self._tokens)

    @property
    def finish_reason(self) -> Optional[str]:
        """"stop" or "length" once the generation has ended (see Completion), None until then."""
        return self._completion.finish_reason if self._completion else None

    @property
    def finish_detail(self) -> Optional[str]:
        """Why the generation ended (see Completion), None until it has."""
        return self._completion.finish_detail if self._completion else None

    def close(self) -> None:
        self._steps.close()

    def __enter__(self) -> "Generation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
