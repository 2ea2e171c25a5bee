"""rfjax.models.registry: the built-in models by name (what ``rfjax models`` lists)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import rfjax
from rfjax.intermediate import intermediate_apply
from rfjax.models import (
    BuiltinModel,
    CifarNet,
    ConvStack,
    builtin_models,
    examples,
    get_model,
    model_fn,
    zoo,
)


def test_every_zoo_example_then_the_full_and_data_models():
    models = builtin_models()
    names = list(models)
    assert names[: len(examples())] == list(examples())
    assert names[len(examples()):] == ["conv_stack_10x64", "linear_stack_10x64", "resnet50_full",
                                       "resnet18_full", "vgg16_full", "cifar", "camvid"]
    for name, entry in models.items():
        assert isinstance(entry, BuiltinModel) and entry.description, name
        assert 3 <= len(entry.shape) <= 5 and all(type(d) is int for d in entry.shape), name
    assert models["cifar"].method is CifarNet.features
    assert models["conv_stack"].description == "zoo: ConvStack (small width)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        models["cifar"].shape = (1, 8, 8, 3)
    models.pop("cifar")  # a fresh dict at every call
    assert "cifar" in builtin_models()


def test_fn_is_the_flax_model_with_seeded_weights():
    entry = get_model("conv_stack")
    x = np.random.default_rng(0).standard_normal((3, 16, 16, 2)).astype(np.float32)
    v = entry.module.init(jax.random.key(5), np.zeros((1, 16, 16, 2), np.float32))
    np.testing.assert_array_equal(model_fn("conv_stack", seed=5)(x), entry.module.apply(v, x))
    assert not np.allclose(model_fn("conv_stack", seed=6)(x), entry.module.apply(v, x))
    # another input shape; the cifar entry applies its ``features`` method
    assert model_fn("conv_stack", shape=(1, 8, 12, 2))(x[:, :8, :12]).shape == (3, 8, 12, 4)
    cifar = get_model("cifar")
    y = model_fn("cifar")(np.zeros((2, 32, 32, 3), np.float32))
    want = jax.eval_shape(lambda z: cifar.module.apply(
        cifar.module.init(jax.random.key(0), z, method=CifarNet.features), z,
        method=CifarNet.features), jax.ShapeDtypeStruct((2, 32, 32, 3), np.float32))
    assert y.shape == want.shape


def test_abstract_weights_are_zero_and_give_the_same_trf():
    fn = model_fn("conv_stack_strided", abstract=True)
    leaves = jax.tree.leaves(fn.args[0])
    assert leaves and all(isinstance(a, np.ndarray) and not a.any() for a in leaves)
    real = model_fn("conv_stack_strided", seed=3)
    shape = get_model("conv_stack_strided").shape
    assert rfjax.trf(fn, shape).size == rfjax.trf(real, shape).size


def test_inner_layers_by_flax_path():
    entry = get_model("resnet18")
    layers = entry.layers()
    assert list(layers)[:4] == ["bn1", "conv1", "layer1_0", "layer1_0/bn1"]  # sorted per level
    assert "layer2_1" in layers and all(len(s) == 4 for s in layers.values())
    x = np.ones((1, 224, 224, 3), np.float32)
    fn = model_fn("resnet18", layer="layer2_1", seed=1)
    assert fn.func is intermediate_apply
    assert fn(x).shape == layers["layer2_1"]
    v = entry.module.init(jax.random.key(1), np.zeros(entry.shape, np.float32))
    np.testing.assert_array_equal(
        fn(x), intermediate_apply(entry.module, "layer2_1", "intermediates", v, x))
    small = get_model("conv_stack").layers((1, 8, 8, 2))
    assert small == {f"conv{i}": (1, 8, 8, 4) for i in range(1, 5)}


def test_user_errors():
    with pytest.raises(ValueError, match="unknown built-in model 'nope'.*conv_stack, "):
        get_model("nope")
    with pytest.raises(ValueError, match="unknown built-in model"):
        model_fn("resnet50_ful")
    with pytest.raises(ValueError, match=r"ConvStack has no layer 'conv9' at input shape "
                                         r"\(1, 16, 16, 2\); its layers are conv1, conv2"):
        model_fn("conv_stack", layer="conv9")


def test_adding_a_model_is_one_entry(monkeypatch):
    from rfjax.models import registry

    monkeypatch.setattr(registry, "_entries", lambda: {
        "tiny": BuiltinModel(ConvStack(n=2, features=3), (1, 10, 10, 1), None, "two convs")})
    registry._registry.cache_clear()
    try:
        assert list(builtin_models())[-1] == "tiny"
        assert rfjax.trf(model_fn("tiny", abstract=True), (1, 10, 10, 1)).size == (5, 5)
        assert get_model("tiny").layers() == {"conv1": (1, 10, 10, 3), "conv2": (1, 10, 10, 3)}
    finally:
        monkeypatch.undo()
        registry._registry.cache_clear()
    assert "tiny" not in builtin_models()


def test_the_zoo_examples_are_built_ins_as_they_are():
    for name, (module, shape) in zoo.examples().items():
        entry = get_model(name)
        assert entry.module == module and entry.shape == tuple(shape) and entry.method is None
