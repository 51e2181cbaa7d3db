"""loopcpp: training-free looped transformers for llama.cpp.

Re-runs a mid-depth window of layers K times with damped residual sub-steps (Euler or anchored
Runge-Kutta), inside llama.cpp's graph, on quantized GGUF models.
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    BusyError, CancelledError, CatalogError, ChatTemplateError, ClosedError, ContextError, ContextFullError, DecodeError,
    GrammarError, LibraryError, LoadCancelledError, LoopConfigError, LoopcppError, ModelLoadError, StateError,
    TokenizeError,
)
from .loop import LoopConfig  # noqa: E402
from .model import Model, architectures  # noqa: E402
from .context import Context  # noqa: E402
from .generation import Completion, Generation, Timings, Token, TopLogprob, Usage  # noqa: E402
from .sampling import Sampling  # noqa: E402
from ._paths import include_dir, lib_dir  # noqa: E402
from ._lib import init  # noqa: E402


def llama_cpp_lib_path() -> str:
    """The directory of loopcpp's libllama, for LLAMA_CPP_LIB_PATH (llama-cpp-python 0.3.36 then
    loads this library, loop API included)."""
    return str(lib_dir())


__all__ = [
    "BusyError", "CancelledError", "CatalogError", "ChatTemplateError", "ClosedError", "Completion", "Context",
    "ContextError", "ContextFullError", "DecodeError", "Generation", "GrammarError", "LibraryError", "LoadCancelledError", "LoopConfig",
    "LoopConfigError", "LoopcppError", "Model", "ModelLoadError", "Sampling", "StateError", "Timings", "Token",
    "TokenizeError", "TopLogprob", "Usage", "__version__",
    "architectures",
    "include_dir", "init", "lib_dir", "llama_cpp_lib_path",
]
