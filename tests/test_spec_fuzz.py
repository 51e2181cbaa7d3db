"""Fuzzing the spec-string parser (C, reached from LOOPCPP_LOOP and GGUF metadata): any string
parses or fails with a message, and every valid config survives format -> parse unchanged."""

import re
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

import loopcpp
from loopcpp import LoopConfig

PIECES = ["", ":", "x", ",", "=", "auto", "off", "block", "layer", "naive", "euler", "rk", "beta", "kv", "first",
          "last", "decode", "bypass", "full", "freeze", "0", "3", "15", "18", "-1", "0.5", "1e9", "nan", " ", "\t"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12).map("".join) | st.text(max_size=40))
def test_any_string_parses_or_fails_cleanly(spec):
    try:
        cfg = LoopConfig.parse(spec)
    except loopcpp.LoopConfigError as e:
        assert str(e)  # a reason, never an empty message
    else:
        assert LoopConfig.parse(str(cfg)) == cfg


configs = st.builds(
    LoopConfig,
    start=st.none(), end=st.none(), steps=st.integers(1, 64),
    mode=st.sampled_from(["auto", "block"]), integrator=st.sampled_from(["rk"]),
    beta=st.sampled_from([0.0, 0.25, 0.3, 0.5, 1.0]), kv=st.sampled_from(["first", "last"]),
    decode=st.sampled_from(["bypass", "full"]) | st.integers(0, 1000).map(lambda n: f"first:{n}"),
    freeze_routing=st.booleans(),
) | st.builds(
    LoopConfig,
    start=st.none(), end=st.none(), steps=st.integers(1, 64), mode=st.sampled_from(["auto", "block", "layer"]),
    integrator=st.sampled_from(["naive", "euler", "rk"]), kv=st.sampled_from(["first", "last"]),
) | st.tuples(st.integers(0, 200), st.integers(0, 200), st.integers(2, 64)).map(
    lambda t: LoopConfig(start=min(t[0], t[1]), end=max(t[0], t[1]), steps=t[2]))


@settings(max_examples=300, deadline=None)
@given(configs)
def test_valid_configs_round_trip(cfg):
    parsed = LoopConfig.parse(str(cfg))
    if cfg.enabled:
        assert parsed == cfg
    else:
        assert not parsed.enabled  # K = 1 formats as "off"


@pytest.mark.parametrize("spec,needle", [
    ("2:4x3,layer,block", 'conflicts with "layer"'),
    ("2:4x3,euler,euler", "is repeated"),
    ("2:4x3,kv=first,kv=last", 'conflicts with "kv=first"'),
    ("2:4x3,euler,beta=0.3", "only applies to the rk integrator"),
    ("2:4x3,naive,beta=0.5", "only applies to the rk integrator"),
    ("2:4x3,layer,freeze", "applies to block mode"),
    ("2:4x3,beta=0,5", "bad option"),
])
def test_the_grammar_refuses_what_it_cannot_honour(spec, needle):
    with pytest.raises(loopcpp.LoopConfigError, match=re.escape(needle)):
        LoopConfig.parse(spec)


def test_numbers_do_not_depend_on_the_c_locale():
    """A host in a locale whose decimal separator is a comma still reads and writes "beta=0.25"."""
    code = (
        "import ctypes, ctypes.util, locale\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
        "libc.setlocale.restype = ctypes.c_char_p\n"
        "ok = any(libc.setlocale(1, n.encode()) for n in ('de_DE.UTF-8', 'de_DE.utf8', 'fr_FR.UTF-8'))\n"
        "libc.localeconv.restype = ctypes.POINTER(ctypes.c_char_p)\n"
        "if not ok or libc.localeconv()[0] != b',': raise SystemExit(3)\n"
        "import loopcpp\n"
        "c = loopcpp.LoopConfig.parse('2:4x3,beta=0.25')\n"
        "print(libc.setlocale(1, None).decode(), c.beta, str(c))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if r.returncode == 3:
        pytest.skip("no locale with a decimal comma is installed (e.g. apt-get install locales; localedef -i de_DE -f UTF-8 de_DE.UTF-8)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[1:] == ["0.25", "2:4x3,rk,beta=0.25,kv=first,decode=bypass"]
