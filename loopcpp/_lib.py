"""Loads the native library (ABI-mode cffi: no compiler at import) and routes its log.

llama.cpp's log goes to the Python logger `loopcpp` (nothing is printed unless the application
configures logging; `loopcpp` CLI flags -v / --log-level / --log-file do). The library is the
libllama built with loopcpp's patch (found by _paths: the installed build, or
the directory in LOOPCPP_LIB_PATH). The version check refuses a library that was built from
another loopcpp version or llama.cpp commit.
"""

from __future__ import annotations

import collections
import logging
import threading

from cffi import FFI

from . import __version__
from ._cdefs import CDEF
from ._paths import LLAMA_COMMIT, library_path
from .errors import LibraryError

LOOP_API_VERSION = 6

ffi = FFI()
ffi.cdef(CDEF)

GGML_LOG_LEVEL_INFO = 2
GGML_LOG_LEVEL_WARN = 3
GGML_LOG_LEVEL_ERROR = 4
GGML_LOG_LEVEL_CONT = 5


def _open():
    path = library_path()
    try:
        lib = ffi.dlopen(str(path))
    except OSError as e:
        raise LibraryError(f"could not load {path}: {e}") from e
    try:
        version = ffi.string(lib.llama_loop_version()).decode()
        commit = ffi.string(lib.llama_loop_llama_commit()).decode()
        api = lib.llama_loop_api_version()
    except AttributeError as e:
        raise LibraryError(f"{path} is a libllama without loopcpp's loop API; reinstall loopcpp") from e
    if (version, commit, api) != (__version__, LLAMA_COMMIT, LOOP_API_VERSION):
        raise LibraryError(
            f"{path} is loopcpp {version} (llama.cpp {commit}, loop API {api}) but the Python package "
            f"is loopcpp {__version__} (llama.cpp {LLAMA_COMMIT}, loop API {LOOP_API_VERSION}); reinstall loopcpp"
        )
    return lib


# ggml's log levels and the Python levels they become (CONT continues the previous line's level)
GGML_TO_LOGGING = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}

logger = logging.getLogger("loopcpp")
logger.addHandler(logging.NullHandler())  # a library logs; the application decides where to


class _Log:
    """Routes llama.cpp's log into the `loopcpp` logger, one record per line, and keeps each
    thread's recent lines for error messages.

    Lines are kept per thread: llama.cpp logs on the thread that calls it, so an error message
    built on one thread quotes that thread's log only, never another's."""

    def __init__(self, logger: logging.Logger = logger) -> None:
        self.logger = logger
        self._local = threading.local()

    def _state(self):
        st = self._local
        if not hasattr(st, "lines"):
            st.lines = collections.deque(maxlen=256)
            st.partial = ""
            st.last_level = GGML_LOG_LEVEL_INFO
        return st

    @property
    def lines(self) -> collections.deque:
        return self._state().lines

    def write(self, level: int, text: str) -> None:
        st = self._state()
        if level == GGML_LOG_LEVEL_CONT:
            level = st.last_level
        st.last_level = level
        st.partial += text
        while "\n" in st.partial:
            line, st.partial = st.partial.split("\n", 1)
            st.lines.append(line)
            py_level = GGML_TO_LOGGING.get(level, logging.INFO)
            if line.strip() and self.logger.isEnabledFor(py_level):
                self.logger.log(py_level, "%s", line)

    def recent_errors(self, n: int = 3) -> str:
        """The last few lines that look like reasons, for exception messages."""
        lines = [l.strip() for l in self.lines if l.strip()]
        picked = [l for l in lines if "error" in l.lower() or "failed" in l.lower() or "unsupported" in l.lower()]
        return "; ".join((picked or lines)[-n:])

    def clear(self) -> None:
        self.lines.clear()


log = _Log()


@ffi.callback("void(int, const char *, void *)")
def _log_callback(level, text, _user_data):  # pragma: no cover - called from C
    try:
        log.write(level, ffi.string(text).decode("utf-8", errors="replace"))
    except Exception:
        pass


class _Library:
    """The native library, loaded on first use (an attribute of `lib`), not at import: importing
    loopcpp loads nothing and sets nothing process-wide. Loading routes llama.cpp's log into the
    `loopcpp` logger unless init(capture_log=False) came first."""

    def __init__(self) -> None:
        self._lib = None
        self._lock = threading.Lock()
        self.capture_log = True

    @property
    def loaded(self) -> bool:
        return self._lib is not None

    def load(self):
        with self._lock:
            if self._lib is None:
                lib = _open()
                if self.capture_log:
                    lib.llama_log_set(_log_callback, ffi.NULL)
                lib.llama_backend_init()
                if lib.ggml_backend_dev_count() == 0:
                    # A portable build (GGML_BACKEND_DL) loads its backend modules from beside
                    # libggml in llama_backend_init; none loading means none runs on this machine.
                    raise LibraryError(f"no ggml backend in {library_path().parent} runs on this machine: "
                                       f"{log.recent_errors()}")
                self._lib = lib
        return self._lib

    def __getattr__(self, name: str):
        value = getattr(self._lib if self._lib is not None else self.load(), name)
        setattr(self, name, value)  # later lookups skip __getattr__
        return value


lib = _Library()


def init(capture_log: bool = True) -> None:
    """Loads the native library now (otherwise the first Model or other native call does).
    capture_log=False leaves llama.cpp's log where llama.cpp writes it (stderr) instead of the
    `loopcpp` logger; error messages then cannot quote it. A second call changes nothing."""
    if not lib.loaded:
        lib.capture_log = capture_log
    lib.load()


def backends() -> list[str]:
    """The compute devices ggml found, e.g. ["CPU (Intel Xeon ...)", "CUDA0 (NVIDIA H200)"]."""
    out = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        name = ffi.string(lib.ggml_backend_dev_name(dev)).decode(errors="replace")
        desc = ffi.string(lib.ggml_backend_dev_description(dev)).decode(errors="replace").strip()
        out.append(f"{name} ({desc})" if desc and desc != name else name)
    return out


def last_loop_error() -> str:
    return ffi.string(lib.llama_loop_last_error()).decode()
