"""rfjax.intermediate: the output of an inner Flax layer as a function of the model's input."""

from __future__ import annotations

import ast
import functools
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rfjax.intermediate import intermediate_apply, intermediate_names, layer_shapes


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Conv(4, (3, 3), name="conv1")(x)
        self.sow("intermediates", "feat", nn.relu(h))
        h = Block(name="block")(nn.relu(h))
        return nn.Conv(2, (1, 1), name="head")(h).mean(axis=(1, 2))

    def features(self, x):
        return self.__call__(x)


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Conv(3, (3, 3), name="conv")(x) + nn.Conv(3, (1, 1), name="skip")(x)


class Pair(nn.Module):  # returns (out, intermediates)
    @nn.compact
    def __call__(self, x):
        h = nn.Conv(2, (3, 3), name="conv")(x)
        return h.sum(), {"inner": {"map": h}}


ROOT = pathlib.Path(__file__).resolve().parents[1]
X = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))


@functools.cache
def variables():
    return Net().init(jax.random.key(1), X)


def test_submodule_paths_and_sown_names():
    model, v = Net(), variables()
    conv1 = nn.Conv(4, (3, 3)).apply({"params": v["params"]["conv1"]}, X)
    np.testing.assert_array_equal(intermediate_apply(model, "conv1", "intermediates", v, X),
                                  conv1)
    np.testing.assert_array_equal(intermediate_apply(model, "feat", "intermediates", v, X),
                                  nn.relu(conv1))
    inner = intermediate_apply(model, "block/conv", "intermediates", v, X)
    want = nn.Conv(3, (3, 3)).apply({"params": v["params"]["block"]["conv"]}, nn.relu(conv1))
    np.testing.assert_allclose(inner, want, rtol=1e-6)
    assert intermediate_apply(model, "/block/", "intermediates", v, X).shape == (2, 9, 9, 3)
    # method=: the same layer reached through another method of the module
    np.testing.assert_array_equal(
        intermediate_apply(model, "conv1", "intermediates", v, X, method=Net.features), conv1)
    fn = functools.partial(intermediate_apply, model, "block", "intermediates", v)
    assert jax.jit(fn)(X).shape == (2, 9, 9, 3)


def test_a_model_returning_its_intermediates():
    model = Pair()
    v = model.init(jax.random.key(2), X)
    got = intermediate_apply(model, "inner/map", "intermediates", v, X)
    np.testing.assert_array_equal(got, model.apply(v, X)[1]["inner"]["map"])


def test_unknown_names_list_what_was_captured():
    model, v = Net(), variables()
    with pytest.raises(ValueError, match=r"no intermediate named 'conv9'.*\['feat'\]"):
        intermediate_apply(model, "conv9", "intermediates", v, X)
    p = Pair()
    pv = p.init(jax.random.key(2), X)
    with pytest.raises(ValueError, match="output path 'inner/nope': no key 'nope'"):
        intermediate_apply(p, "inner/nope", "intermediates", pv, X)


def test_same_behaviour_as_erf_intermediate():
    # rfjax.erf_intermediate's fn (until erf.py imports this module's, when this is trivial)
    from rfjax.effective import _intermediate_apply

    model, v = Net(), variables()
    for name in ("conv1", "feat", "block/conv", "block"):
        np.testing.assert_array_equal(_intermediate_apply(model, name, "intermediates", v, X),
                                      intermediate_apply(model, name, "intermediates", v, X))
    for m, vv, name in ((model, v, "conv9"), (Pair(), Pair().init(jax.random.key(2), X),
                                              "inner/nope")):
        with pytest.raises(ValueError) as ours:
            intermediate_apply(m, name, "intermediates", vv, X)
        with pytest.raises(ValueError) as theirs:
            _intermediate_apply(m, name, "intermediates", vv, X)
        assert str(ours.value) == str(theirs.value)


def test_names_of_a_captured_tree():
    model, v = Net(), variables()
    _, state = model.apply(v, X, capture_intermediates=True, mutable=["intermediates"])
    assert intermediate_names(state["intermediates"]) == [
        "conv1", "feat", "block/conv", "block/skip", "block", "head", ""]
    assert intermediate_names({"a": {"b": (1,)}, "c": {"__call__": (2,)}}) == ["a/b", "c"]
    assert intermediate_names(jnp.zeros(2)) == [""]


def test_layer_shapes_lists_feature_maps_in_call_order():
    got = layer_shapes(Net(), (2, 9, 9, 3))
    assert got == {"conv1": (2, 9, 9, 4), "block/conv": (2, 9, 9, 3),
                   "block/skip": (2, 9, 9, 3), "block": (2, 9, 9, 3), "head": (2, 9, 9, 2)}
    assert layer_shapes(Net(), [1, 5, 7, 3], method=Net.features)["conv1"] == (1, 5, 7, 4)


def _imported(path):
    """Every module an ``import`` statement of the file names, at any depth."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize(("path", "forbidden"), [
    ("intermediate.py", "rfjax.effective"),
    ("metrics.py", "rfjax.effective"),
    ("progress.py", "rfjax"),
    ("models/registry.py", "rfjax.cli"),
    ("models/__init__.py", "rfjax.cli"),
])
def test_no_import_cycles(path, forbidden):
    names = _imported(ROOT / "rfjax" / path)
    assert not {n for n in names if n == forbidden or n.startswith(forbidden + ".")}, names
