"""GGUF headers fuzzed with hypothesis: every number in the header (counts, string and array
lengths, value types, tensor ranks, dimensions, types and offsets, metadata values) set to hostile
values, and random bytes written over the header. Each file is loaded, and when it loads, run, in
a worker process: a process killed by a signal fails the test, a clean error or a working model
passes. A failing example shrinks to one field and one value."""

from __future__ import annotations

import math
import os
import re
import select
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

import ggufwalk
import tinymodels

# Reads file paths from stdin; for each prints one line: ERROR (a clean exception) or RAN.
WORKER = textwrap.dedent("""
    import sys, loopcpp
    for line in sys.stdin:
        path = line.strip()
        try:
            with loopcpp.Model(path) as m:
                with m.context(n_ctx=64) as ctx:
                    ctx.eval(m.tokenize("hello world", add_special=False)[:8] or [3])
                    ctx.set_loop("1:3x2")
                    ctx.eval([3, 4, 5])
            print("RAN", flush=True)
        except (loopcpp.LoopcppError, ValueError) as e:
            print("ERROR", type(e).__name__, " ".join(str(e).split()), flush=True)  # one line, whatever the file held
""")


LOAD_TIMEOUT_S = 120  # a tiny model loads and runs in well under a second


class Worker:
    """One long-lived process that loads files; restarted after a crash so shrinking can go on."""

    def __init__(self):
        self.proc = None

    def load(self, path) -> str:
        if self.proc is None or self.proc.poll() is not None:
            env = dict(os.environ, GGML_NO_BACKTRACE="1")  # ggml's abort would attach gdb
            self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        if not select.select([self.proc.stdout], [], [], LOAD_TIMEOUT_S)[0]:  # one line per file: none buffered
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            pytest.fail(f"the loader hung on {path} (no answer in {LOAD_TIMEOUT_S} s)")
        line = self.proc.stdout.readline()
        if not line.startswith(("ERROR", "RAN")):
            self.proc.stdin.close()
            rc = self.proc.wait(timeout=60)
            err = self.proc.stderr.read()[-1500:]
            self.proc = None
            pytest.fail(f"the loader died (exit {rc}; negative: killed by a signal)\n{err}")
        return line

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


class Pristine(bytes):
    def __repr__(self):  # hypothesis reports the arguments of a failing example
        return f"<the tiny model's {len(self)} bytes>"


@pytest.fixture(scope="module", params=tinymodels.ARCHS)
def pristine(request, tmp_path_factory):
    # few layers keep each load quick
    spec = tinymodels.TinySpec(request.param, n_layer=4)
    return Pristine(tinymodels.write(spec, tmp_path_factory.mktemp("fuzz") / "tiny.gguf").read_bytes())


class Header(list):
    def __repr__(self):
        return f"<{len(self)} header fields>"


@pytest.fixture(scope="module")
def header(pristine):
    return Header(ggufwalk.fields(pristine))


HOSTILE_INTS = [0, 1, 2, 3, 4, 7, 8, 13, 255, 256, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
                2**48, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
HOSTILE_FLOATS = [0.0, -0.0, -1.0, 1e-45, 1e30, -1e30, math.inf, -math.inf, math.nan]
ROLES = ["version", "n_tensors", "n_kv", "key_len", "value_type", "str_len", "array_type", "array_len", "value",
         "n_dims", "dim", "tensor_type", "tensor_offset"]


def check(worker, tmp_path, data: bytes) -> str:
    path = tmp_path / "fuzzed.gguf"
    path.write_bytes(data)
    return worker.load(path)


def outcome(line: str) -> str:
    """The kind of result, for --hypothesis-show-statistics: RAN, or the loader's reason."""
    if line.startswith("RAN"):
        return "RAN"
    reason = line.split("; llama_model_load_from_file_impl")[0].rsplit("error loading model: ", 1)[-1]
    return re.sub(r"\d+", "N", reason)[:90].strip()


@settings(max_examples=int(os.environ.get('LOOPCPP_FUZZ_EXAMPLES', 300)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_header_number_loads_or_fails_cleanly(worker, pristine, header, tmp_path, data):
    blob = pristine
    for _ in range(data.draw(st.integers(1, 3), label="fields")):
        role = data.draw(st.sampled_from(ROLES), label="role")
        field = data.draw(st.sampled_from([f for f in header if f.role == role]), label="field")
        if field.fmt[-1] in "fd":
            value = data.draw(st.sampled_from(HOSTILE_FLOATS) | st.floats(width=32), label="value")
        else:
            (orig,) = ggufwalk.struct.unpack_from(field.fmt, pristine, field.offset)
            value = data.draw(st.sampled_from(HOSTILE_INTS) | st.integers(0, 2**64 - 1)
                              | st.integers(-3, 3).map(lambda d: int(orig) + d), label="value")
        blob = ggufwalk.rewrite(blob, field, value)
    event(outcome(check(worker, tmp_path, blob)))


@settings(max_examples=int(os.environ.get('LOOPCPP_FUZZ_EXAMPLES', 150)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_bytes_over_the_header_load_or_fail_cleanly(worker, pristine, tmp_path, data):
    end = ggufwalk.header_end(pristine)
    blob = bytearray(pristine)
    for _ in range(data.draw(st.integers(1, 8), label="writes")):
        at = data.draw(st.integers(4, end - 1), label="at")
        chunk = data.draw(st.binary(min_size=1, max_size=8), label="bytes")
        blob[at:at + len(chunk)] = chunk
    event(outcome(check(worker, tmp_path, bytes(blob))))


@pytest.mark.parametrize("ggml_type", [24, 25, 26, 27, 28])  # i8 i16 i32 i64 f64
def test_a_weight_of_a_type_no_model_uses_fails_cleanly(worker, pristine, header, tmp_path, ggml_type):
    """Found by the fuzzer: gemma3's blk.1.attn_q.weight retyped i32 (same size as f32) loaded and
    crashed the CPU backend's matrix product in a compute thread."""
    field = next(f for f in header if f.role == "tensor_type" and f.where.startswith("blk.1.attn_q"))
    line = check(worker, tmp_path, ggufwalk.rewrite(pristine, field, ggml_type))
    assert line.startswith("ERROR ModelLoadError"), line
    if ggml_type == 26:  # i32 has f32's size (the tiny models' weights), so only the type check stops it
        assert "no model weight uses" in line, line


@pytest.mark.parametrize("role,value", [
    ("dim", 2**40), ("dim", 2**63 - 1), ("tensor_offset", 2**62), ("tensor_offset", 2**64 - 32),
    ("str_len", 2**62), ("array_len", 2**61), ("n_dims", 5),
])
def test_huge_declared_sizes_fail_cleanly(worker, pristine, header, tmp_path, role, value):
    """A declared size or offset far beyond the file: an error, never an allocation that takes the
    machine down or a read outside the mapping."""
    fields = [f for f in header if f.role == role]
    for field in (fields[0], fields[-1]):
        line = check(worker, tmp_path, ggufwalk.rewrite(pristine, field, value))
        assert line.startswith("ERROR ModelLoadError"), (field, line)


def field_of(header, role, where):
    return next(f for f in header if f.role == role and f.where == where)


def test_what_the_fuzzer_found(worker, pristine, header, tmp_path):
    """Each of these aborted the host before loopcpp's patch: a GGML_ASSERT in the loader
    (block_count 0), one inside a compute thread (a negative norm epsilon), an exception through the
    C tokenizer (a byte token renamed), an assert in graph building (head size != rope size), one
    in a compute thread when that was not the main one (gemma3's odd RoPE size); and one hung it
    (gemma3 with RoPE over 0 dimensions)."""
    arch = next(f.where for f in header if f.where.endswith(".block_count")).split(".")[0]
    cases = [
        (field_of(header, "value", f"{arch}.block_count"), 0, "ERROR ModelLoadError", "n_layer_all > 0"),
        (field_of(header, "value", f"{arch}.attention.layer_norm_rms_epsilon"), -1.0, "ERROR ModelLoadError",
         "invalid layer_norm_rms_epsilon"),
    ]
    if arch != "gemma3":  # gemma3's graph does not check the rope size
        cases.append((field_of(header, "value", f"{arch}.rope.dimension_count"), 8, "ERROR", "n_rot"))
    else:  # RoPE over 0 dimensions: ggml's CPU rope looped forever (ggml-fixes.patch); now nothing rotates.
        # An odd or too wide size: ggml's RoPE asserted in a compute thread (aborting when not the main one)
        rope = field_of(header, "value", f"{arch}.rope.dimension_count")
        cases += [(rope, 0, "RAN", ""), (rope, 1, "ERROR ModelLoadError", "invalid rope.dimension_count 1"),
                  (rope, 7, "ERROR ModelLoadError", "must be even"), (rope, 64, "ERROR ModelLoadError", "head size")]
    for field, value, kind, needle in cases:
        line = check(worker, tmp_path, ggufwalk.rewrite(pristine, field, value))
        assert line.startswith(kind) and needle in line, (field, line)
    # "<0x68>" (the byte token of "h") renamed: the byte-fallback tokenizer cannot find it
    at = pristine.index(b"<0x68>")
    line = check(worker, tmp_path, pristine[:at] + b"<0x00>" + pristine[at + 6:])
    assert line.startswith("ERROR ValueError tokenization failed") or line.startswith("ERROR ModelLoadError"), line
