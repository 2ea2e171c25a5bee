"""The front door for JAX-based frameworks (:mod:`rfjax.adapters`): Keras 3 (JAX backend),
Haiku and Equinox models, and the layout options (``channel_axis``, ``grid``/``prefix_tokens``)
on plain JAX functions.

Oracles are independent of rfjax: masks against the support of the Jacobian of the model
called through its own framework (``stateless_call``, ``apply``, ``jax.vmap``), unioned over
random inputs; ERF maps against ``jax.grad`` of the unit's channel sum. ReLU and max pooling
cut gradient paths at random, so a nonlinear model's mask must *contain* the gradient support,
and must *equal* the support of its linear twin (ReLU removed, max -> average pooling, same
weights: the same dependency structure).
"""

from __future__ import annotations

import gc
import itertools
import os
import warnings
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import rfjax
from rfjax import adapters, callables
from rfjax.adapters import LayoutWarning

os.environ.setdefault("KERAS_BACKEND", "jax")  # conftest sets it too; Keras reads it at import

RNG = np.random.default_rng(0)


def _normal(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def _support(f, xs):
    """``(*out_spatial, *in_spatial)``: where the Jacobian of ``f`` (channels-last, a batch of
    one) is nonzero for any input of ``xs``, any output channel and any input channel."""
    acc = None
    jac = jax.jit(jax.jacrev(f))
    for x in xs:
        j = np.asarray(jac(jnp.asarray(x)))
        ro = j.ndim - x.ndim
        nz = (j != 0).any(axis=(0, ro - 1, ro, j.ndim - 1))
        acc = nz if acc is None else acc | nz
    return acc


def _grad_map(f, x, unit, channel_axis=-1):
    """The signed ERF by hand: d(sum of the unit's channels)/dx, summed over the input
    channels, averaged over the images."""

    def target(xb):
        out = f(xb)
        ca = channel_axis % out.ndim
        out = jnp.moveaxis(out, ca, -1)
        return out[(slice(None), *unit)].sum()

    g = jax.jit(jax.grad(target))(jnp.asarray(x))
    return np.asarray(g.sum(axis=channel_axis).mean(axis=0))


def _close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.abs(b).max()))


def _erf(fn, x, unit, **kw):
    return rfjax.erf(fn, x, unit=unit, reduce="grad", crop="none", progress=False, **kw)


def _units(t):
    """Corners, edges and the centre of a TRF's output."""
    h, w = t.output_shape
    return sorted({(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (0, w // 2), (h // 2, 0),
                   (h // 2, w // 2), (h - 1, w // 2)})


def _collected(ref) -> bool:
    for _ in range(3):
        gc.collect()
    return ref() is None


# ===================================================================== Keras 3 (JAX backend)


@pytest.fixture(scope="module")
def keras():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("Keras runs on another backend in this process")
    keras.utils.set_random_seed(0)
    return keras


def _keras_cnn(keras, linear=False):
    """Functional CNN (16x16x3 -> 3x3x3): strided "same" conv, BatchNorm, ReLU, dilated
    "same" conv, 2x2 max pooling, "valid" conv. ``linear``: ReLU -> identity, max -> average
    pooling (the same weights fit)."""
    L = keras.layers
    inp = keras.Input((16, 16, 3))
    h = L.Conv2D(4, 3, strides=2, padding="same", name="conv_s2")(inp)
    h = L.BatchNormalization(name="bn")(h)
    h = L.Identity(name="act")(h) if linear else L.ReLU(name="act")(h)
    h = L.Conv2D(4, 3, dilation_rate=2, padding="same", name="conv_dil")(h)
    h = (L.AveragePooling2D(2, name="pool") if linear else L.MaxPooling2D(2, name="pool"))(h)
    h = L.Conv2D(3, 2, padding="valid", name="conv_out")(h)
    return keras.Model(inp, h)


def _keras_seq(keras, linear=False):
    """Sequential (16x16x2 -> 4x4x2): "valid" stride-2 conv, ReLU, 3x3/2 "same" max pooling,
    dilated "same" conv."""
    L = keras.layers
    return keras.Sequential([
        keras.Input((16, 16, 2)),
        L.Conv2D(3, 3, strides=2, padding="valid", name="s_conv1"),
        L.Identity() if linear else L.ReLU(),
        (L.AveragePooling2D if linear else L.MaxPooling2D)(3, strides=2, padding="same"),
        L.Conv2D(2, 3, dilation_rate=2, padding="same", name="s_conv2"),
    ])


def _randomize_bn(bn):
    c = bn.gamma.shape[0]
    bn.gamma.assign(RNG.uniform(0.5, 2.0, c).astype(np.float32))
    bn.beta.assign(_normal(c))
    bn.moving_mean.assign(_normal(c))
    bn.moving_variance.assign(RNG.uniform(0.5, 2.0, c).astype(np.float32))


def _keras_apply(model, training=False):
    """The model through Keras's own ``stateless_call`` (the oracle's forward)."""
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    return lambda x: model.stateless_call(tv, ntv, x, training=training)[0]


@pytest.fixture(scope="module")
def keras_cnn(keras):
    model = _keras_cnn(keras)
    _randomize_bn(model.get_layer("bn"))
    twin = _keras_cnn(keras, linear=True)
    twin.set_weights([np.asarray(v.value) for v in model.weights])
    return model, twin


def test_keras_functional_masks_equal_gradient_support(keras_cnn):
    model, twin = keras_cnn
    t = rfjax.trf(model, (1, 16, 16, 3))
    assert t.output_shape == (3, 3) and t.input_shape == (16, 16)
    masks = t.masks()
    xs = [_normal(1, 16, 16, 3) for _ in range(3)]
    lin = _support(_keras_apply(twin), xs)
    np.testing.assert_array_equal(masks, lin)
    np.testing.assert_array_equal(rfjax.trf(twin, (1, 16, 16, 3)).masks(), lin)
    nonlin = _support(_keras_apply(model), xs)
    assert nonlin.any() and (nonlin <= masks).all()
    for u in _units(t):
        np.testing.assert_array_equal(t.mask(u), lin[u])
    # By hand: conv 3/2 (same: TF pads 0 before, 1 after on 16), dilated 3 -> 5, pool 2/2,
    # conv 2: size 3 + 2*4 + 1*2 + 1*4 = 17, stride 4; the corner unit starts at 0 - 2*2.
    assert (t.size, t.stride) == ((17, 17), (4, 4))
    assert t.region((0, 0)) == ((-4, 12), (-4, 12))


def test_keras_sequential_masks_equal_gradient_support(keras):
    model, twin = _keras_seq(keras), _keras_seq(keras, linear=True)
    twin.set_weights([np.asarray(v.value) for v in model.weights])
    t = rfjax.trf(model, (1, 16, 16, 2))
    assert t.output_shape == (4, 4)
    xs = [_normal(1, 16, 16, 2) for _ in range(3)]
    lin = _support(_keras_apply(twin), xs)
    np.testing.assert_array_equal(t.masks(), lin)
    nonlin = _support(_keras_apply(model), xs)
    assert nonlin.any() and (nonlin <= t.masks()).all()
    # A model that is only linear layers: the TRF is exactly the gradient support.
    np.testing.assert_array_equal(rfjax.trf(twin, (1, 16, 16, 2)).masks(), lin)


def test_keras_erf_equals_direct_gradient_in_inference_mode(keras_cnn):
    model, _ = keras_cnn
    x = _normal(3, 16, 16, 3)
    e = _erf(model, x, (0, 2))
    assert e.map.shape == (16, 16)
    want = _grad_map(_keras_apply(model), x, (0, 2))
    _close(e.map, want)
    # Inference mode matters: BatchNorm on batch statistics gives another gradient.
    train = _grad_map(_keras_apply(model, training=True), x, (0, 2))
    assert not np.allclose(train, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    # The cropped ERF (default crop) goes through the same adapter.
    _close(rfjax.erf(model, x, unit=(0, 2), reduce="grad", progress=False).map, want)


def test_keras_variables_are_read_at_every_call(keras):
    L = keras.layers
    model = keras.Sequential([keras.Input((None, None, 2)),  # any image size
                              L.Conv2D(3, 3, name="v_c1"), L.Conv2D(2, 3, name="v_c2")])
    assert rfjax.trf(model, (1, 12, 20, 2)).output_shape == (8, 16)
    x = _normal(2, 12, 20, 2)
    before = _erf(model, x, (4, 4)).map
    k = model.get_layer("v_c2").kernel
    k.assign(3.0 * k.value)  # a linear model: the ERF triples, not a stale compiled copy
    after = _erf(model, x, (4, 4)).map
    _close(after, 3.0 * np.asarray(before))
    _close(after, _grad_map(_keras_apply(model), x, (4, 4)))


def test_keras_from_keras_is_the_model(keras_cnn):
    model, _ = keras_cnn
    x = _normal(2, 16, 16, 3)
    fn = adapters.from_keras(model)
    _close(fn(x), model(x, training=False))
    with warnings.catch_warnings():  # Keras warned of the sub-model's input structure
        warnings.simplefilter("error", UserWarning)
        sub = adapters.from_keras(model, layer="conv_dil")(x)
    assert sub.shape == (2, 8, 8, 4)
    _close(sub, _keras_apply(_sub(model, "conv_dil"))(x))


def _sub(model, name):
    import keras

    return keras.Model(model.inputs[0], model.get_layer(name).output)


def test_keras_layer_option(keras_cnn):
    model, twin = keras_cnn
    sub = _sub(model, "conv_dil")
    t = rfjax.trf(model, (1, 16, 16, 3), layer="conv_dil")
    ts = rfjax.trf(sub, (1, 16, 16, 3))
    assert t.output_shape == (8, 8)
    assert (t.size, t.stride, t.padding) == (ts.size, ts.stride, ts.padding) == (
        (11, 11), (2, 2), (4, 4))
    np.testing.assert_array_equal(t.masks(), ts.masks())
    xs = [_normal(1, 16, 16, 3)]
    np.testing.assert_array_equal(t.masks(), _support(_keras_apply(_sub(twin, "conv_dil")), xs))
    x = _normal(3, 16, 16, 3)
    e = _erf(model, x, (2, 5), layer="conv_dil")
    _close(e.map, _grad_map(_keras_apply(sub), x, (2, 5)))
    # ...and not the whole model's unit (2, 5) (which does not exist: 3x3 output).
    with pytest.raises(ValueError):
        _erf(model, x, (2, 5))


def test_keras_unknown_layer_is_a_clear_error(keras_cnn):
    model, _ = keras_cnn
    with pytest.raises(ValueError, match=r"'nope' is not a layer of .*conv_dil"):
        rfjax.trf(model, (1, 16, 16, 3), layer="nope")
    with pytest.raises(ValueError, match="'nope' is not a layer"):
        _erf(model, _normal(1, 16, 16, 3), (0, 0), layer="nope")


def test_keras_table_rows_carry_layer_names(keras_cnn):
    model, _ = keras_cnn
    table = rfjax.trf(model, (1, 16, 16, 3)).table()
    for name in ("conv_s2", "conv_dil", "pool", "conv_out"):
        assert name in table
    names = [r.name.split(" @ ")[0] for r in rfjax.trf(model, (1, 16, 16, 3)).layers]
    assert names[:2] == ["conv_s2", "conv_dil"]


def test_keras_subclassed_model_without_training_argument(keras):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.c1 = keras.layers.Conv2D(3, 3, strides=2, name="sub_c1")
            self.c2 = keras.layers.Conv2D(2, 3, name="sub_c2")

        def call(self, x):  # no `training` argument: stateless_call must not pass one
            return self.c2(jax.nn.relu(self.c1(x)))

    net = Net()
    net(np.zeros((1, 16, 16, 3), np.float32))
    t = rfjax.trf(net, (1, 16, 16, 3))
    assert (t.size, t.stride, t.padding) == ((7, 7), (2, 2), (0, 0))
    x = _normal(2, 16, 16, 3)
    _close(_erf(net, x, (2, 3)).map, _grad_map(lambda b: net(b), x, (2, 3)))
    with pytest.raises(ValueError, match="subclassed"):
        rfjax.trf(net, (1, 16, 16, 3), layer="sub_c1")


def test_keras_unbuilt_model_is_a_clear_error(keras):
    model = keras.Sequential([keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="not built"):
        rfjax.trf(model, (1, 8, 8, 3))


def test_keras_channels_first(keras):
    L = keras.layers

    def net(fmt, shape):
        return keras.Sequential([
            keras.Input(shape),
            L.Conv2D(3, 3, strides=2, padding="same", data_format=fmt),
            L.MaxPooling2D(2, data_format=fmt),
            L.Conv2D(2, (2, 2), dilation_rate=(1, 2), padding="valid", data_format=fmt),
        ])

    last = rfjax.trf(net("channels_last", (16, 20, 3)), (1, 16, 20, 3))
    first = rfjax.trf(net("channels_first", (3, 16, 20)), (1, 3, 16, 20), channel_axis=1)
    assert last.output_shape == (3, 3) and last.size == (9, 13)  # 3+2, then +1*4 and +2*4
    assert (first.output_shape, first.size, first.stride, first.padding) == (
        last.output_shape, last.size, last.stride, last.padding)
    np.testing.assert_array_equal(first.masks(), last.masks())
    old = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:  # the configured format is the default layout
        t = rfjax.trf(net("channels_first", (3, 16, 20)), (1, 3, 16, 20))
    finally:
        keras.config.set_image_data_format(old)
    np.testing.assert_array_equal(t.masks(), last.masks())


def test_keras_cache_dies_with_the_model(keras):
    callables.clear_cache()
    model = _keras_seq(keras)
    x = _normal(1, 16, 16, 2)
    _erf(model, x, (1, 1))
    _erf(model, x, (1, 1), layer="s_conv1")
    assert callables.cache_size() == 2
    ref = weakref.ref(model)
    del model
    assert _collected(ref)
    assert callables.cache_size() == 0


# ===================================================================== Haiku


@pytest.fixture(scope="module")
def hk():
    return pytest.importorskip("haiku")


def _hk_net(hk, linear=False):
    """16x16x3 -> 4x4x3: stride-2 "SAME" conv, ReLU, 2x2 max pooling, dilated "SAME" conv."""

    def f(x):
        x = hk.Conv2D(4, 3, stride=2, name="conv1")(x)
        x = x if linear else jax.nn.relu(x)
        x = (hk.avg_pool if linear else hk.max_pool)(x, (2, 2, 1), (2, 2, 1), "VALID")
        return hk.Conv2D(3, 3, rate=2, name="conv2")(x)

    return f


def _hk_bn_net(hk, linear=False):
    def f(x, is_training=False):
        x = hk.Conv2D(4, 3, stride=2, name="conv1")(x)
        x = hk.BatchNorm(True, True, 0.9, name="bn")(x, is_training)
        x = x if linear else jax.nn.relu(x)
        return hk.Conv2D(3, 3, rate=2, padding="VALID", name="conv2")(x)

    return f


@pytest.fixture(scope="module")
def hk_plain(hk):
    tr = hk.transform(_hk_net(hk))
    return tr, tr.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


def test_haiku_transform_masks_and_erf(hk, hk_plain):
    tr, params = hk_plain
    lin_tr = hk.transform(_hk_net(hk, linear=True))
    t = rfjax.trf((tr, params), (1, 16, 16, 3))
    assert t.output_shape == (4, 4)
    assert (t.size, t.stride) == ((21, 21), (4, 4))  # 3 + 2*1 + 4*(5-1)
    xs = [_normal(1, 16, 16, 3) for _ in range(3)]
    lin = _support(lambda x: lin_tr.apply(params, None, x), xs)
    np.testing.assert_array_equal(t.masks(), lin)
    nonlin = _support(lambda x: tr.apply(params, None, x), xs)
    assert nonlin.any() and (nonlin <= t.masks()).all()
    table = t.table()
    assert "conv1" in table and "conv2" in table
    x = _normal(3, 16, 16, 3)
    _close(_erf((tr, params), x, (0, 1)).map,
           _grad_map(lambda b: tr.apply(params, None, b), x, (0, 1)))


def test_haiku_without_apply_rng(hk, hk_plain):
    tr, params = hk_plain
    norng = hk.without_apply_rng(tr)
    np.testing.assert_array_equal(rfjax.trf((norng, params), (1, 16, 16, 3)).masks(),
                                  rfjax.trf((tr, params), (1, 16, 16, 3)).masks())
    x = _normal(2, 16, 16, 3)
    _close(_erf((norng, params), x, (1, 2)).map,
           _grad_map(lambda b: tr.apply(params, None, b), x, (1, 2)))
    tws = hk.without_apply_rng(hk.transform_with_state(_hk_bn_net(hk)))
    p, s = tws.init(jax.random.key(1), jnp.zeros((1, 16, 16, 3)), is_training=True)
    _close(_erf((tws, p, s), x, (1, 2)).map,
           _grad_map(lambda b: tws.apply(p, s, b)[0], x, (1, 2)))


@pytest.fixture(scope="module")
def hk_bn(hk):
    tw = hk.transform_with_state(_hk_bn_net(hk))
    params, state = tw.init(jax.random.key(1), jnp.zeros((1, 16, 16, 3)), is_training=True)
    state = {k: dict(v) for k, v in state.items()}
    for k, v in state.items():  # moving averages far from the batch statistics
        c = v["average"].shape
        if k.endswith("mean_ema"):
            v["average"] = jnp.asarray(RNG.normal(size=c), jnp.float32)
        elif k.endswith("var_ema"):
            v["average"] = jnp.asarray(RNG.uniform(0.5, 2.0, size=c), jnp.float32)
    return tw, params, state


def test_haiku_transform_with_state(hk, hk_bn):
    tw, params, state = hk_bn
    t = rfjax.trf((tw, params, state), (1, 16, 16, 3))
    assert t.output_shape == (4, 4)
    xs = [_normal(1, 16, 16, 3) for _ in range(3)]
    lin_tw = hk.transform_with_state(_hk_bn_net(hk, linear=True))
    lin = _support(lambda x: lin_tw.apply(params, state, None, x)[0], xs)
    np.testing.assert_array_equal(t.masks(), lin)
    x = _normal(3, 16, 16, 3)

    def apply(b, is_training=False):
        return tw.apply(params, state, None, b, is_training=is_training)[0]

    want = _grad_map(apply, x, (1, 2))
    _close(_erf((tw, params, state), x, (1, 2)).map, want)
    fn = adapters.from_haiku(tw, params, state, is_training=False)
    _close(_erf(fn, x, (1, 2)).map, want)
    _close(rfjax.trf(fn, (1, 16, 16, 3)).masks(), lin)
    train = _grad_map(lambda b: apply(b, True), x, (1, 2))
    assert not np.allclose(train, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    # apply_kwargs reach apply: is_training=True normalises with the batch statistics.
    _close(adapters.from_haiku(tw, params, state, is_training=True)(x), apply(x, True))
    assert not np.allclose(apply(x, True), apply(x), atol=1e-3)


def test_a_flax_module_params_pair_is_not_haiku(hk):
    nn = pytest.importorskip("flax.linen")
    mod = nn.Conv(2, (3, 3))
    params = mod.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(TypeError, match="callable"):
        rfjax.trf((mod, params), (1, 8, 8, 3))


def test_haiku_cache_dies_with_the_model(hk):
    callables.clear_cache()
    tr = hk.transform(_hk_net(hk))
    params = tr.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    x = _normal(1, 16, 16, 3)
    _erf((tr, params), x, (1, 1))
    _erf((tr, params), x, (1, 1))
    assert callables.cache_size() == 1  # the second call reuses the first's entry
    ref = weakref.ref(tr.apply)
    del tr
    assert _collected(ref)
    assert callables.cache_size() == 0


# ===================================================================== Equinox


@pytest.fixture(scope="module")
def eqx_model():
    eqx = pytest.importorskip("equinox")
    conv1 = eqx.nn.Conv2d(3, 4, 3, stride=2, padding=1, key=jax.random.key(0))
    conv2 = eqx.nn.Conv2d(4, 4, 3, padding=1, key=jax.random.key(1))
    return eqx.nn.Sequential([conv1, eqx.nn.Lambda(jax.nn.relu), conv2])


def test_equinox_module_is_vmapped_channels_first(eqx_model):
    t = rfjax.trf(eqx_model, (2, 3, 16, 16))
    # The numbers of tests/test_trf.py::test_equinox_module (a hand-vmapped channels-last fn).
    assert (t.size, t.stride, t.padding) == ((7, 7), (2, 2), (3, 3))
    assert t.input_shape == (16, 16) and t.output_shape == (8, 8)

    def by_hand(x):
        return jnp.moveaxis(jax.vmap(eqx_model)(jnp.moveaxis(x, -1, 1)), 1, -1)

    np.testing.assert_array_equal(t.masks(), rfjax.trf(by_hand, (2, 16, 16, 3)).masks())
    x = _normal(3, 3, 16, 20)  # not square: the axes must not be swapped
    for unit in [(0, 0), (3, 9)]:
        e = _erf(eqx_model, x, unit)
        assert e.map.shape == (16, 20)
        _close(e.map, _grad_map(jax.vmap(eqx_model), x, unit, channel_axis=1))


def test_equinox_partial_of_a_batched_function_is_not_vmapped(eqx_model):
    eqx = pytest.importorskip("equinox")
    w = jnp.asarray(_normal(3, 3, 3, 2))

    def batched(w, x):
        assert x.ndim == 4, "a batch (N, H, W, C) was expected"
        return lax.conv_general_dilated(x, w, (2, 2), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    p = eqx.Partial(batched, w)
    t = rfjax.trf(p, (2, 16, 20, 3))
    assert t.output_shape == (8, 10) and (t.size, t.stride) == ((3, 3), (2, 2))
    np.testing.assert_array_equal(t.masks(), _support(p, [_normal(1, 16, 20, 3)]))
    x = _normal(2, 16, 20, 3)
    _close(_erf(p, x, (3, 4)).map, _grad_map(p, x, (3, 4)))


def test_layer_needs_named_layers(hk_plain, eqx_model):
    with pytest.raises(ValueError, match="layer='conv'.*torch, Keras or Haiku"):
        rfjax.trf(lambda x: x, (1, 8, 8, 1), layer="conv")
    with pytest.raises(ValueError, match="layer='conv'"):
        _erf(lambda x: x, _normal(1, 8, 8, 1), (0, 0), layer="conv")
    with pytest.raises(ValueError, match="layer='c'"):
        rfjax.trf(eqx_model, (1, 3, 8, 8), layer="c")
    tr, params = hk_plain
    with pytest.raises(ValueError, match=r"layer='c' is not a Haiku module.*'conv1', 'conv2'"):
        rfjax.trf((tr, params), (1, 16, 16, 3), layer="c")


def test_haiku_layer_by_module_name(hk, hk_plain):
    """``layer=`` names a Haiku module: its output's TRF, masks and ERF (stateful too)."""
    tr, params = hk_plain
    t = rfjax.trf((tr, params), (1, 16, 16, 3), layer="conv1")
    assert t.output_shape == (8, 8) and (t.size, t.stride) == ((3, 3), (2, 2))
    fn = rfjax.from_haiku(tr, params, layer="conv1")
    np.testing.assert_array_equal(t.masks(), _support(fn, [_normal(1, 16, 16, 3)]))
    x = _normal(2, 16, 16, 3)
    _close(_erf((tr, params), x, (3, 4), layer="conv1").map, _grad_map(fn, x, (3, 4)))
    trs = hk.transform_with_state(_hk_bn_net(hk))
    p, st = trs.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), is_training=True)
    t = rfjax.trf((trs, p, st), (1, 16, 16, 3), layer="bn")
    assert t.output_shape == (8, 8) and (t.size, t.stride) == ((3, 3), (2, 2))


# ===================================================================== layouts (plain JAX)


W1 = jnp.asarray(_normal(3, 3, 3, 4))  # HWIO
W2 = jnp.asarray(_normal(3, 2, 4, 2))


def _net(x, fmt):
    """strided SAME conv, ReLU, 2x2 max pool, dilated conv with asymmetric padding; in
    ``fmt`` ("NHWC" or "NCHW")."""
    dn = (fmt, "HWIO", fmt)
    h = lax.conv_general_dilated(x, W1, (2, 2), "SAME", dimension_numbers=dn)
    h = jax.nn.relu(h)
    win = (1, 2, 2, 1) if fmt == "NHWC" else (1, 1, 2, 2)
    h = lax.reduce_window(h, -jnp.inf, lax.max, win, win, "VALID")
    return lax.conv_general_dilated(h, W2, (1, 1), ((2, 0), (0, 1)), rhs_dilation=(2, 1),
                                    dimension_numbers=dn)


def net_cl(x):
    return _net(x, "NHWC")


def net_cf(x):
    return _net(x, "NCHW")


def test_channels_first_equals_channels_last():
    last = rfjax.trf(net_cl, (1, 16, 24, 3))
    first = rfjax.trf(net_cf, (1, 3, 16, 24), channel_axis=1)
    assert first.input_shape == last.input_shape == (16, 24)
    assert first.output_shape == last.output_shape == (2, 6)
    assert (first.size, first.stride, first.padding, first.aligned) == (
        last.size, last.stride, last.padding, last.aligned)
    np.testing.assert_array_equal(first.masks(), last.masks())
    for u in itertools.product(range(2), range(6)):
        assert first.region(u) == last.region(u)
    rows = [(r.shape, r.size, r.stride, r.padding) for r in last.layers]
    rows_cf = [(r.shape, r.size, r.stride, r.padding) for r in first.layers]
    assert [x[1:] for x in rows_cf] == [x[1:] for x in rows]
    assert rows_cf[0][0] == (1, 4, 8, 12)  # feature maps stay in the model's layout
    # ERF: the same map, and the gradient by hand.
    x = _normal(3, 3, 16, 24)
    e = _erf(net_cf, x, (1, 4), channel_axis=1)
    _close(e.map, _erf(net_cl, np.moveaxis(x, 1, -1), (1, 4)).map)
    _close(e.map, _grad_map(net_cf, x, (1, 4), channel_axis=1))
    cropped = rfjax.erf(net_cf, x, unit=(1, 4), reduce="grad", progress=False, channel_axis=1)
    _close(cropped.map, e.map)
    # A negative axis is the same axis.
    np.testing.assert_array_equal(
        rfjax.trf(net_cf, (1, 3, 16, 24), channel_axis=-3).masks(), last.masks())


@pytest.mark.parametrize("axis, err, match", [
    (0, ValueError, "channel_axis=0 is not a non-batch axis.*rank 4"),
    (4, ValueError, "channel_axis=4 is not a non-batch axis"),
    (-4, ValueError, "channel_axis=-4 is not a non-batch axis"),
    (1.0, TypeError, "channel_axis must be an int, got float"),
    (True, TypeError, "channel_axis must be an int, got bool"),
    ("1", TypeError, "channel_axis must be an int, got str"),
])
def test_channel_axis_errors(axis, err, match):
    with pytest.raises(err, match=match):
        rfjax.trf(net_cf, (1, 3, 16, 24), channel_axis=axis)
    with pytest.raises(err, match=match):
        _erf(net_cf, _normal(1, 3, 16, 24), (0, 0), channel_axis=axis)


def _pool(x):
    return lax.reduce_window(x, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")


def test_layout_warning():
    with pytest.warns(LayoutWarning, match=r"channel_axis=1") as rec:
        rfjax.trf(_pool, (2, 3, 32, 32))
    assert rec[0].filename == __file__  # points at the caller
    with pytest.warns(LayoutWarning) as rec:
        _erf(_pool, _normal(2, 3, 32, 32), (0, 0))
    assert rec[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayoutWarning)
        rfjax.trf(_pool, (2, 3, 32, 32), channel_axis=1)
        rfjax.trf(_pool, (2, 3, 32, 32), channel_axis=-1)  # said explicitly: no warning
        rfjax.trf(_pool, (2, 32, 32, 3))
        _erf(_pool, _normal(2, 32, 32, 3), (0, 0))
        _erf(_pool, _normal(2, 3, 32, 32), (0, 0), channel_axis=1)


P = 4
W_TOK = jnp.asarray(_normal(P * P * 3, 5))


def tokens(x):
    """A ViT-like stem: (N, 8, 16, 3) -> (N, 1 + 2*4, 5): 4x4 patches embedded linearly,
    row-major, after a class token (the mean of the patch tokens)."""
    n, h, w, c = x.shape
    p = x.reshape(n, h // P, P, w // P, P, c).transpose(0, 1, 3, 2, 4, 5)
    t = p.reshape(n, (h // P) * (w // P), P * P * c) @ W_TOK
    return jnp.concatenate([t.mean(axis=1, keepdims=True), t], axis=1)


def test_token_outputs_with_grid():
    t = rfjax.trf(tokens, (1, 8, 16, 3), grid=(2, 4), prefix_tokens=1)
    assert t.output_shape == (2, 4)
    assert (t.size, t.stride, t.padding) == ((4, 4), (4, 4), (0, 0))
    want = np.zeros((8, 16), bool)
    want[4:8, 8:12] = True
    np.testing.assert_array_equal(t.mask((1, 2)), want)
    assert t.region((1, 2)) == ((4, 7), (8, 11))
    x = _normal(3, 8, 16, 3)
    e = _erf(tokens, x, (1, 2), grid=(2, 4), prefix_tokens=1)
    assert e.map.shape == (8, 16)

    def patch_sum(b):
        return tokens(b)[:, 1 + 1 * 4 + 2].sum()

    g = np.asarray(jax.grad(patch_sum)(jnp.asarray(x)).sum(-1).mean(0))
    _close(e.map, g)
    assert (np.asarray(e.map)[~want] == 0).all() and (np.asarray(e.map)[want] != 0).all()


@pytest.mark.parametrize("grid, prefix", [((3, 3), 1), ((2, 4), 0), ((2, 4), 2)])
def test_token_grid_mismatch_is_a_clear_error(grid, prefix):
    match = rf"9 tokens; with prefix_tokens={prefix} .* grid=\({grid[0]}, {grid[1]}\)"
    with pytest.raises(ValueError, match=match):
        rfjax.trf(tokens, (1, 8, 16, 3), grid=grid, prefix_tokens=prefix)
    with pytest.raises(ValueError, match=match):
        _erf(tokens, _normal(1, 8, 16, 3), (0, 0), grid=grid, prefix_tokens=prefix)


def test_negative_prefix_tokens():
    with pytest.raises(ValueError, match="prefix_tokens must be >= 0"):
        rfjax.trf(tokens, (1, 8, 16, 3), grid=(2, 4), prefix_tokens=-1)


def test_weights_are_parameters_not_architecture(keras, hk):
    # Zero weights (a pruned kernel) do not cut a path: every framework's weights reach the
    # engine as parameters, not as constants of the program.
    eqx = pytest.importorskip("equinox")
    conv = eqx.nn.Conv2d(1, 1, 3, padding=1, key=jax.random.key(0))
    conv = eqx.tree_at(lambda c: c.weight, conv, jnp.zeros_like(conv.weight))
    assert rfjax.trf(conv, (1, 1, 6, 6)).mask((3, 3)).sum() == 9

    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(1, 3, padding="same")])
    model.layers[0].kernel.assign(np.zeros((3, 3, 1, 1), np.float32))
    assert rfjax.trf(model, (1, 6, 6, 1)).mask((3, 3)).sum() == 9

    tr = hk.transform(lambda x: hk.Conv2D(1, 3)(x))
    params = jax.tree_util.tree_map(jnp.zeros_like,
                                    tr.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1))))
    assert rfjax.trf((tr, params), (1, 6, 6, 1)).mask((3, 3)).sum() == 9
