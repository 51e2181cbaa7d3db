"""Exceptions raised by loopcpp. Every failure of the native library surfaces as one of these."""


class LoopcppError(Exception):
    """Base class of loopcpp's errors."""


class LibraryError(LoopcppError):
    """The native library is missing or does not match this Python package."""


class ModelLoadError(LoopcppError):
    """A model file could not be loaded (missing, corrupt, unsupported architecture)."""


class LoadCancelledError(ModelLoadError):
    """Loading a model was stopped by its progress callback (it returned False)."""


class ContextError(LoopcppError):
    """A context could not be created with the requested parameters."""


class DecodeError(LoopcppError):
    """llama_decode failed."""


class CancelledError(DecodeError):
    """An evaluation was stopped by Context.cancel(); the cache keeps what was complete."""


class ContextFullError(DecodeError):
    """The tokens do not fit in the context window."""


class LoopConfigError(LoopcppError, ValueError):
    """A loop configuration or spec string is invalid for this model."""


class ClosedError(LoopcppError, ValueError):
    """A Model or Context was used after close() (as a file is: a ValueError)."""


class BusyError(LoopcppError, RuntimeError):
    """A context is in the middle of a generation that has not finished (finish or close() it,
    or use a second context)."""


class TokenizeError(LoopcppError, ValueError):
    """Text could not be tokenized with this model's vocabulary."""


class GrammarError(LoopcppError, ValueError):
    """A GBNF grammar does not parse, or a JSON schema cannot be converted to one."""


class ChatTemplateError(LoopcppError, ValueError):
    """A chat template could not be found, parsed or rendered for these messages."""


class StateError(LoopcppError, ValueError):
    """A saved state does not fit this context (another model, another loop, damaged bytes)."""


class CatalogError(LoopcppError):
    """A catalog model is unknown or could not be fetched."""
