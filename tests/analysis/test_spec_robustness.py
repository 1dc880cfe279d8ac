"""Any layer list, valid or not, either analyzes or stops with a one-line UserError: never a
crash, and whatever analyzes can be written in every format."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.analysis import analyze
from cnnlab.analysis.spec import LAYER_TYPES
from cnnlab.errors import UserError

_junk = st.one_of(st.integers(-1, 6), st.sampled_from(["valid", "same", "relu", "bogus", None, True, 0.5]),
                  st.lists(st.integers(0, 4), min_size=0, max_size=3))
_small = st.one_of(st.integers(1, 3), st.lists(st.integers(1, 3), min_size=2, max_size=2))
_VALID = {
    "padding": st.sampled_from(["valid", "same", 0, 1, [1, 0]]),
    "activation": st.sampled_from(["relu", "linear", "softmax", "hard_swish"]),
    "rate": st.just(0.5),
    **dict.fromkeys(("use_bias", "keepdims", "center", "scale"), st.booleans()),
    **dict.fromkeys(("epsilon", "momentum", "max_value", "negative_slope", "threshold"), st.just(0.1)),
    "strides": st.one_of(st.none(), _small),
}
_ALL_KEYS = sorted({k for req, opt in LAYER_TYPES.values() for k in (*req, *opt)})


def _value(draw, key):
    if draw(st.integers(0, 9)) == 0:
        return draw(_junk)
    return draw(_VALID.get(key, _small))


@st.composite
def _specs(draw):
    layers = []
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(sorted(LAYER_TYPES)))
        required, optional = LAYER_TYPES[kind]
        layer = {"type": kind, "name": f"l{i}"}
        keys = list(required) + draw(st.lists(st.sampled_from(sorted(optional) or ["x"]), max_size=3))
        if draw(st.integers(0, 19)) == 0:
            keys.append(draw(st.sampled_from(_ALL_KEYS)))  # possibly not this type's
        for key in keys:
            if key != "x":
                layer[key] = _value(draw, key)
        if kind in ("Add", "Concatenate") or draw(st.integers(0, 4)) == 0:
            names = ["input"] + [f"l{j}" for j in range(i)]
            layer["inputs"] = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3))
        layers.append(layer)
    shape = draw(st.sampled_from([[3, 9, 9], [2, 16, 12], [10], [1, 1, 1]]))
    return {"input": shape, "layers": layers}


@settings(max_examples=400)
@given(spec=_specs(), batch=st.integers(1, 3))
def test_random_specs_analyze_or_raise_user_error(spec, batch):
    try:
        a = analyze(spec, batch=batch)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert len(a.layers) == len(spec["layers"])
    a.to_json(), a.to_csv(), a.to_markdown()
