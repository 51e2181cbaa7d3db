"""Exceptions raised by loopcpp. Every failure of the native library surfaces as one of these."""


class LoopcppError(Exception):
    """Base class of loopcpp's errors."""


class LibraryError(LoopcppError):
    """The native library is missing or does not match this Python package."""


class ModelLoadError(LoopcppError):
    """A model file could not be loaded (missing, corrupt, unsupported architecture)."""


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


class BusyError(ContextError):
    """A context is in the middle of a generation that has not finished."""
