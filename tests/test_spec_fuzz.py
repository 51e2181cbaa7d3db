"""Fuzzing the spec-string parser (C, reached from LOOPCPP_LOOP and GGUF metadata): any string
parses or fails with a message, and every valid config survives format -> parse unchanged."""

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
    mode=st.sampled_from(["auto", "block", "layer"]), integrator=st.sampled_from(["naive", "euler", "rk"]),
    beta=st.sampled_from([0.0, 0.25, 0.3, 0.5, 1.0]), kv=st.sampled_from(["first", "last"]),
    decode=st.sampled_from(["bypass", "full"]) | st.integers(0, 1000).map(lambda n: f"first:{n}"),
    freeze_routing=st.booleans(),
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
