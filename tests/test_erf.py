"""Tests of the ERF engine (rfjax.erf): definition, conventions, caching, chunking, errors."""

import functools
import os
import subprocess
import sys
import textwrap

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.signal import convolve

from rfjax.effective import (
    ERF,
    InputTypeError,
    erf,
    erf_intermediate,
    erf_merge,
    erf_weight_draws,
)

DN = ("NHWC", "HWIO", "NHWC")


def conv(x, k, padding="SAME", stride=1, dil=1):
    n = x.ndim - 2
    dn = jax.lax.conv_dimension_numbers(x.shape, k.shape, DN if n == 2 else ("NWC", "WIO", "NWC"))
    return jax.lax.conv_general_dilated(
        x, k, (stride,) * n, padding, rhs_dilation=(dil,) * n, dimension_numbers=dn
    )


def box_stack(depth):
    k = jnp.ones((3, 3, 1, 1))

    def fn(x):
        for _ in range(depth):
            x = conv(x, k.astype(x.dtype))
        return x

    return fn


# ------------------------------------------------------------------ definition and exactness


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_uniform_stack_is_nfold_box_convolution(depth):
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 15, 15, 1)))
        # depth 4 also checks the cone crop, exactly, in float64
        r = erf(box_stack(depth), x, crop="auto" if depth == 4 else "none")
        assert r.map.dtype == jnp.float64 and r.count == 2 and r.nonfinite == 0
        assert r.crop == ("cone" if depth == 4 else "none")
        profile = np.array([1.0])
        for _ in range(depth):
            profile = np.convolve(profile, np.ones(3))
        expected = np.zeros((15, 15))
        c, h = 7, depth
        expected[c - h : c + h + 1, c - h : c + h + 1] = np.outer(profile, profile)
        np.testing.assert_array_equal(np.asarray(r.map), expected)


def test_off_centre_unit_shifts_the_map():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 17, 17, 1)))
        fn = box_stack(3)
        centre = np.asarray(erf(fn, x, crop="none").map)
        moved = erf(fn, x, unit=(10, 6), crop="none")
        assert moved.unit == (10, 6)
        np.testing.assert_array_equal(np.asarray(moved.map), np.roll(centre, (2, -2), (0, 1)))


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_signed_map_of_one_layer_is_its_kernel_cross_correlation(padding):
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        k = jnp.asarray(rng.normal(size=(3, 3, 2, 4)))
        x = jnp.asarray(rng.normal(size=(3, 9, 9, 2)))
        r = erf(lambda v: conv(v, k, padding), x, unit=(3, 4), reduce="grad", crop="none")
        off = 1 if padding == "SAME" else 0  # SAME: unit (i, j) is centred on input (i, j)
        i0, j0 = 3 - off, 4 - off
        expected = np.zeros((9, 9))
        # d y[i, j] / d x[i + a - 1, j + b - 1] = k[a, b] (summed over in/out channels)
        expected[i0 : i0 + 3, j0 : j0 + 3] = np.asarray(k).sum(axis=(2, 3))
        np.testing.assert_allclose(np.asarray(r.map), expected, rtol=1e-12, atol=1e-12)
        sq = erf(lambda v: conv(v, k, padding), x, unit=(3, 4), reduce="square", crop="none")
        want_sq = np.zeros((9, 9))
        want_sq[i0 : i0 + 3, j0 : j0 + 3] = (np.asarray(k).sum(axis=3) ** 2).sum(axis=2)
        np.testing.assert_allclose(np.asarray(sq.map), want_sq, rtol=1e-12)


def test_random_linear_stacks_grow_like_sqrt_depth():
    # Paper, section 2.2: for random zero-mean weights the ERF's width grows like sqrt(n).
    # Each network's width is measured and the widths averaged (averaging maps first mixes in
    # the wandering of each network's centre and biases the slope upwards).
    depths = [4, 8, 16, 32]
    widths = []
    x = jnp.zeros((1, 129, 2))
    keys = jax.random.split(jax.random.key(0), 40)
    for n in depths:

        def init_fn(key, n=n):
            return jax.random.normal(key, (n, 3, 2, 2))

        def apply_fn(ks, v):
            return jax.lax.scan(lambda h, k: (conv(h, k), None), v, ks)[0]

        _, per_draw = erf_weight_draws(init_fn, apply_fn, keys, x, reduce="square")
        m = np.asarray(per_draw, np.float64)
        m = m / m.sum(axis=1, keepdims=True)
        pos = np.arange(m.shape[1])
        mu = (m * pos).sum(axis=1)
        var = (m * (pos[None] - mu[:, None]) ** 2).sum(axis=1)
        widths.append(np.sqrt(var).mean())
    slope = np.polyfit(np.log(depths), np.log(widths), 1)[0]
    assert 0.4 <= slope <= 0.6, (slope, widths)


def test_weight_draws_mean_matches_separate_calls():
    x = jax.random.normal(jax.random.key(3), (2, 11, 11, 1))
    keys = jax.random.split(jax.random.key(4), 3)

    def init_fn(key):
        return jax.random.normal(key, (3, 3, 1, 2))

    traces = []

    def apply_fn(k, v):
        traces.append(1)
        return jnp.tanh(conv(v, k))

    mean, per_draw = erf_weight_draws(init_fn, apply_fn, keys, x)
    n = len(traces)
    again, _ = erf_weight_draws(init_fn, apply_fn, jax.random.split(jax.random.key(5), 3), x)
    assert len(traces) == n  # cached: no retrace for new keys of the same shape
    assert not np.allclose(np.asarray(again.map), np.asarray(mean.map))
    singles = [
        np.asarray(erf(functools.partial(apply_fn, init_fn(k)), x, crop="none").map) for k in keys
    ]
    np.testing.assert_allclose(np.asarray(per_draw), np.stack(singles), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(mean.map), np.mean(singles, 0), rtol=1e-5, atol=1e-7)
    assert mean.count == 6 and per_draw.shape == (3, 11, 11)


# ------------------------------------------------------------------ conventions


def two_layer(params, x):
    h = jnp.tanh(conv(x, params["k1"]))
    return conv(h, params["k2"]) + params["b"]


def make_params(seed=5, cin=3, cout=4):
    ks = jax.random.split(jax.random.key(seed), 3)
    return {
        "k1": jax.random.normal(ks[0], (3, 3, cin, 6)) * 0.5,
        "k2": jax.random.normal(ks[1], (3, 3, 6, cout)) * 0.5,
        "b": jax.random.normal(ks[2], (cout,)),
    }


def manual_maps(params, x, target, post):
    """The public scripts' loop: one image at a time, its gradient, then the reduction."""
    grads = jax.jit(jax.vmap(jax.grad(lambda v: target(two_layer(params, v[None])[0]))))(x)
    return np.mean([post(np.asarray(g)) for g in grads], axis=0)


def test_paper_reductions_match_a_per_image_loop():
    params = make_params()
    x = jax.random.normal(jax.random.key(6), (5, 12, 10, 3))
    fn = functools.partial(two_layer, params)

    def centre(o):
        return o[6, 5].sum()

    for reduce, post in [
        ("abs", lambda g: np.abs(g).sum(-1)),
        ("grad", lambda g: g.sum(-1)),
        ("relu", lambda g: np.maximum(g, 0).sum(-1)),
        ("square", lambda g: (g**2).sum(-1)),
    ]:
        r = erf(fn, x, reduce=reduce, crop="none")
        np.testing.assert_allclose(
            np.asarray(r.map), manual_maps(params, x, centre, post), rtol=2e-5, atol=1e-6
        )
        assert r.reduce == reduce and r.unit == (6, 5)


def test_replknet_and_openerf_conventions():
    params = make_params(7)
    x = jax.random.normal(jax.random.key(8), (4, 12, 12, 3))
    fn = functools.partial(two_layer, params)
    rep = erf(fn, x, crop="none", convention="replknet")
    want = manual_maps(
        params, x, lambda o: jax.nn.relu(o[6, 6]).sum(), lambda g: np.maximum(g, 0).sum(-1)
    )
    np.testing.assert_allclose(np.asarray(rep.map), want, rtol=2e-5, atol=1e-6)
    assert rep.reduce == "relu" and rep.convention == "replknet"
    ope = erf(fn, x, crop="none", convention="openerf")
    want = manual_maps(params, x, lambda o: o[6, 6].mean(), lambda g: np.maximum(g.mean(-1), 0))
    np.testing.assert_allclose(np.asarray(ope.map), want, rtol=2e-5, atol=1e-6)
    with pytest.raises(ValueError, match="replknet"):
        erf(fn, x, convention="replknet", reduce="grad")
    with pytest.raises(ValueError, match="openerf"):
        erf(fn, x, convention="openerf", reduce="relu")


def test_channel_selection_and_vmap_method():
    params = make_params(9)
    x = jax.random.normal(jax.random.key(10), (3, 10, 10, 3))
    fn = functools.partial(two_layer, params)
    r = erf(fn, x, crop="none", channels=[1, 3], reduce="grad")
    want = manual_maps(params, x, lambda o: o[5, 5, 1] + o[5, 5, 3], lambda g: g.sum(-1))
    np.testing.assert_allclose(np.asarray(r.map), want, rtol=2e-5, atol=1e-6)
    v = erf(fn, x, crop="none", method="vmap", reduce="grad", channels=[1, 3])
    np.testing.assert_allclose(np.asarray(v.map), np.asarray(r.map), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ results, merging, chunks


def test_merge_per_image_and_chunks_equal_one_shot():
    params = make_params(11)
    fn = functools.partial(two_layer, params)
    x = jax.random.normal(jax.random.key(12), (7, 10, 10, 3))
    full = erf(fn, x, per_image=True, crop="none")
    a, b = erf(fn, x[:3], crop="none"), erf(fn, x[3:], crop="none")
    merged = a.merge(b)
    np.testing.assert_allclose(np.asarray(merged.map), np.asarray(full.map), rtol=1e-5)
    assert merged.count == 7 and erf_merge(a, b).count == 7
    np.testing.assert_allclose(np.asarray(full.per_image.mean(0)), np.asarray(full.map), 1e-5)
    assert full.per_image.shape == (7, 10, 10)
    chunked = erf(fn, x, batch_size=3, per_image=True, crop="none")  # 3 + 3 + 1 (padded)
    assert chunked.count == 7
    np.testing.assert_allclose(np.asarray(chunked.map), np.asarray(full.map), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(chunked.per_image), np.asarray(full.per_image), 1e-5)
    gen = erf(fn, (np.asarray(x[i : i + 2]) for i in range(0, 7, 2)), crop="none")
    np.testing.assert_allclose(np.asarray(gen.map), np.asarray(full.map), rtol=1e-5)
    dicts = erf(fn, iter([{"img": x[:4]}, {"img": x[4:]}]), image_key="img", crop="none")
    np.testing.assert_allclose(np.asarray(dicts.map), np.asarray(full.map), rtol=1e-5)
    with pytest.raises(ValueError, match="without the image key 'image'"):
        erf(fn, [{"img": x}], crop="none")
    # a TFDS-like stream of uint8 images, normalised by a callable image_key
    u8 = np.random.default_rng(0).integers(0, 256, size=(5, 10, 10, 3), dtype=np.uint8)
    stream = ({"image": u8[i : i + 2], "label": i} for i in range(0, 5, 2))
    got = erf(fn, stream, image_key=lambda b: b["image"].astype(np.float32) / 255, crop="none")
    want = erf(fn, u8.astype(np.float32) / 255, crop="none")
    np.testing.assert_allclose(np.asarray(got.map), np.asarray(want.map), rtol=1e-5)
    with pytest.raises(ValueError, match="different units"):
        a.merge(erf(fn, x[:2], unit=(0, 0)))
    # The result is a pytree: map and per-image maps are its leaves.
    leaves = jax.tree_util.tree_leaves(full)
    assert len(leaves) == 2
    doubled = jax.tree_util.tree_map(lambda v: 2 * v, full)
    assert isinstance(doubled, ERF) and doubled.count == 7


def test_nonfinite_images_are_excluded_and_counted():
    def fn(x):  # images whose pixel (0, 0) is negative get a NaN gradient
        return conv(x, jnp.ones((3, 3, 1, 1))) * jnp.sqrt(x[:, :1, :1, :])

    x = np.abs(np.random.default_rng(13).normal(size=(5, 7, 7, 1))).astype(np.float32) + 0.1
    x[[1, 3], 0, 0, 0] = -1.0
    r = erf(fn, x, crop="none", per_image=True)
    assert r.count == 3 and r.nonfinite == 2
    assert np.all(np.isfinite(np.asarray(r.map)))
    assert np.all(np.isnan(np.asarray(r.per_image[1]))) and np.all(np.isnan(r.per_image[3]))
    good = erf(fn, x[[0, 2, 4]], crop="none")
    np.testing.assert_allclose(np.asarray(r.map), np.asarray(good.map), rtol=1e-6)


# ------------------------------------------------------------------ function kinds and caching


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="conv1")(x)
        x = nn.relu(x)
        self.sow("intermediates", "feat", x)
        x = nn.Conv(4, (3, 3), strides=2, name="conv2")(x)
        return nn.Dense(2)(x)


@functools.cache
def linen_variables():
    """LinenNet's variables, initialised once (they do not depend on the image size)."""
    return jax.jit(LinenNet().init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def test_linen_nnx_equinox_and_plain_functions_agree():
    x = jax.random.normal(jax.random.key(14), (2, 9, 9, 3))
    nnx_conv = nnx.Conv(3, 5, (3, 3), rngs=nnx.Rngs(0))
    ref = erf(lambda v: nnx_conv(v), x, crop="none")
    got = erf(nnx_conv, x, crop="none")
    np.testing.assert_allclose(np.asarray(got.map), np.asarray(ref.map), rtol=1e-6)
    eqx_conv = eqx.nn.Conv2d(3, 5, 3, padding=1, key=jax.random.key(1))

    def batched(m, v):  # equinox is unbatched and channels-first
        return jnp.moveaxis(jax.vmap(m)(jnp.moveaxis(v, -1, 1)), 1, -1)

    got = erf(eqx.Partial(batched, eqx_conv), x, crop="none")  # an Equinox pytree callable
    ref = erf(lambda v: batched(eqx_conv, v), x, crop="none")
    np.testing.assert_allclose(np.asarray(got.map), np.asarray(ref.map), rtol=1e-6)


def test_no_retrace_on_second_call():
    traces = []
    model = LinenNet()

    def apply(params, x):
        traces.append(1)  # a Python side effect runs once per trace
        return model.apply(params, x)

    x = jax.random.normal(jax.random.key(15), (3, 12, 12, 3))
    p1 = linen_variables()
    p2 = jax.tree_util.tree_map(lambda a: 1.5 * a + 0.1, p1)
    for crop in ("none", "auto"):
        erf(functools.partial(apply, p1), x, crop=crop)
        n = len(traces)
        assert n > 0
        r2 = erf(functools.partial(apply, p2), x, crop=crop)  # new partial, new params
        assert len(traces) == n, f"retraced with crop={crop}"
        ref = erf(functools.partial(apply, p2), x, crop="none")  # compiled in the first round
        np.testing.assert_allclose(np.asarray(r2.map), np.asarray(ref.map), rtol=1e-5, atol=1e-8)
        assert not np.allclose(np.asarray(r2.map), np.asarray(erf(functools.partial(
            apply, p1), x, crop="none").map))  # the new parameters were used, not the old
    # A plain function: cached on the function object.
    calls = []

    def f(v):
        calls.append(1)
        return jnp.tanh(conv(v, jnp.ones((3, 3, 3, 2))))

    erf(f, x, crop="none")
    n = len(calls)
    erf(f, x, crop="none")
    assert len(calls) == n
    # Uncropped, the unit is a traced argument: another unit compiles nothing new.
    other = erf(f, x, crop="none", unit=(2, 9))
    assert len(calls) == n and other.unit == (2, 9)
    manual = jax.vmap(jax.grad(lambda v: f(v[None])[0, 2, 9].sum()))(x)
    np.testing.assert_allclose(np.asarray(other.map), np.abs(np.asarray(manual)).sum(-1).mean(0),
                               rtol=1e-5, atol=1e-7)


def test_the_compile_cache_does_not_keep_a_model_alive():
    import gc
    import weakref

    from rfjax.callables import cache_size

    model = LinenNet()
    x = jnp.ones((1, 8, 8, 3))
    params = linen_variables()
    before = cache_size()
    erf(functools.partial(model.apply, params), x, crop="none")
    assert cache_size() == before + 1
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None and cache_size() == before


def test_intermediate_units_by_name():
    model = LinenNet()
    x = jax.random.normal(jax.random.key(16), (2, 11, 11, 3))
    variables = linen_variables()
    p1 = variables["params"]["conv1"]

    def conv1_only(v):
        return nn.Conv(4, (3, 3)).apply({"params": p1}, v)

    want = erf(conv1_only, x, crop="none")
    got = erf_intermediate(model, variables, x, "conv1")
    np.testing.assert_allclose(np.asarray(got.map), np.asarray(want.map), rtol=1e-6)
    sown = erf_intermediate(model, variables, x, "feat", unit=(2, 3))
    want = erf(lambda v: jax.nn.relu(conv1_only(v)), x, crop="none", unit=(2, 3))
    np.testing.assert_allclose(np.asarray(sown.map), np.asarray(want.map), rtol=1e-6)

    def with_inter(v):  # a model returning (out, intermediates)
        h = conv1_only(v)
        return h.sum(), {"block": {"conv": h}}

    got = erf(with_inter, x, output="1/block/conv")
    want = erf(conv1_only, x, crop="none")
    np.testing.assert_allclose(np.asarray(got.map), np.asarray(want.map), 1e-6)
    with pytest.raises(ValueError, match="conv9"):
        erf_intermediate(model, variables, x, "conv9")


class ExampleResNet(nn.Module):
    """Like Flax's ImageNet example ResNet: ``__call__(x, train=True)``, BatchNorm with batch
    statistics unless ``train=False``, its first one named ``bn_init``."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
        x = nn.relu(norm(name="bn_init")(nn.Conv(4, (3, 3), name="conv_init")(x)))
        h = norm(name="bn1")(nn.Conv(4, (3, 3), name="conv1")(x))
        return nn.relu(x + h)


def _captured(module, variables, name, **kw):
    """The oracle: ``name``'s output through Flax's capture_intermediates, as fn of x."""

    def fn(v):
        state = module.apply(variables, v, capture_intermediates=True,
                             mutable=["intermediates"], **kw)[1]
        node = state["intermediates"]
        for part in name.split("/"):
            node = node[part]
        return node["__call__"][0]

    return fn


def test_intermediate_units_of_batchnorm_models():
    from rfjax.models.zoo import ResNet

    x = jax.random.normal(jax.random.key(17), (2, 12, 12, 3))
    model = ExampleResNet()
    variables = model.init(jax.random.key(0), x[:1], train=False)
    stats = jax.tree_util.tree_map(lambda a: a + 0.5, variables["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": stats}
    # Its call defaults to training mode (BatchNorm would update "mean" in "/bn_init"):
    # evaluation mode is forced, as for torch and Keras models; asking for training mode
    # explicitly gets an error that says why and which flag to pass.
    auto = erf_intermediate(model, variables, x, "bn1")
    want = erf(_captured(model, variables, "bn1", train=False), x)
    np.testing.assert_allclose(np.asarray(auto.map), np.asarray(want.map), rtol=1e-6)
    with pytest.raises(ValueError, match=r"training mode.*apply_kwargs=\{'train': False\}"):
        erf_intermediate(model, variables, x, "conv_init", apply_kwargs={"train": True})
    with pytest.raises(ValueError, match="'batch_stats'"):
        erf_intermediate(model, {"params": variables["params"]}, x, "conv_init",
                         apply_kwargs={"train": False})
    for name in ("conv_init", "bn_init", "conv1", "bn1"):
        got = erf_intermediate(model, variables, x, name, apply_kwargs={"train": False})
        want = erf(_captured(model, variables, name, train=False), x, crop="none")
        np.testing.assert_allclose(np.asarray(got.map), np.asarray(want.map), rtol=1e-6)
    # The running averages are used: the BatchNorm is the affine map of its statistics.
    conv = erf_intermediate(model, variables, x, "conv_init", apply_kwargs={"train": False},
                            reduce="grad", channels=1)
    bn = erf_intermediate(model, variables, x, "bn_init", apply_kwargs={"train": False},
                          reduce="grad", channels=1)
    p = variables["params"]["bn_init"]
    gain = p["scale"][1] / jnp.sqrt(stats["bn_init"]["var"][1] + 1e-5)
    np.testing.assert_allclose(np.asarray(bn.map), np.asarray(gain * conv.map), rtol=1e-5,
                               atol=1e-6)
    # The zoo's ResNet runs BatchNorm in inference mode already: every inner layer works.
    zoo = ResNet(blocks=(1, 1), width=4, stages=2, bottleneck=False)
    zv = zoo.init(jax.random.key(1), x[:1])
    for name in ("bn1", "layer1_0", "layer2_0/bn1"):
        got = erf_intermediate(zoo, zv, x, name)
        want = erf(_captured(zoo, zv, name), x, crop="none")
        np.testing.assert_allclose(np.asarray(got.map), np.asarray(want.map), rtol=1e-5,
                                   atol=1e-7)


# ------------------------------------------------------------------ errors


def test_errors_name_the_problem():
    fn = box_stack(1)
    x = jnp.ones((2, 8, 8, 1))
    with pytest.raises(ValueError, match="batch axis"):
        erf(fn, jnp.ones((8, 8)))
    with pytest.raises(ValueError, match="rank 6"):
        erf(fn, jnp.ones((1, 2, 2, 2, 2, 1)))
    with pytest.raises(ValueError, match="outside the output"):
        erf(fn, x, unit=(8, 0))
    with pytest.raises(ValueError, match="outside the output"):
        erf(fn, x, unit=(1, 2, 3))
    with pytest.raises(ValueError, match="empty iterable"):
        erf(fn, iter([]))
    with pytest.raises(ValueError, match="share one image shape"):
        erf(fn, [jnp.ones((1, 8, 8, 1)), jnp.ones((1, 9, 8, 1))])
    with pytest.raises(TypeError, match="floating point"):
        erf(fn, jnp.ones((2, 8, 8, 1), jnp.int32))
    with pytest.raises(ValueError, match="floating point"):  # InputTypeError is both
        erf(fn, np.ones((2, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match="reduce must be one of"):
        erf(fn, x, reduce="max")
    with pytest.raises(ValueError, match="no ERF map"):
        erf(lambda v: v.sum(axis=(1, 2)), x)
    with pytest.raises(InputTypeError, match="callable"):
        erf("not a function", x)
    with pytest.raises(ValueError, match="crop must be"):
        erf(fn, x, crop="some")
    with pytest.raises(ValueError, match="empty"):
        erf(fn, jnp.ones((0, 8, 8, 1)))


# ------------------------------------------------------------------ devices


def test_sharded_equals_unsharded_on_two_cpu_devices(tmp_path):
    script = textwrap.dedent(
        """
        import functools, jax, jax.numpy as jnp, numpy as np
        from rfjax.effective import erf
        assert len(jax.devices()) == 2, jax.devices()
        k = jax.random.normal(jax.random.key(0), (3, 3, 2, 3))
        def fn(k, x):
            return jnp.tanh(jax.lax.conv_general_dilated(
                x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
        x = jax.random.normal(jax.random.key(1), (5, 10, 10, 2))
        a = erf(functools.partial(fn, k), x, per_image=True, crop="none")
        b = erf(functools.partial(fn, k), x, per_image=True, crop="none", shard=False)
        c = erf(functools.partial(fn, k), x, batch_size=3, crop="cone")
        assert a.count == b.count == c.count == 5
        np.testing.assert_allclose(np.asarray(a.map), np.asarray(b.map), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(c.map), np.asarray(b.map), rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(np.asarray(a.per_image), np.asarray(b.per_image), rtol=1e-6)
        print("OK")
        """
    )
    env = dict(os.environ)
    env.update(
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        RFJAX_NO_PROGRESS="1",
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout


def test_scipy_oracle_for_a_linear_net():
    # For a linear net the gradient is independent of x: the signed ERF of two stacked single-
    # channel convolutions is the full 2-D convolution of their kernels (cross-correlation).
    with jax.enable_x64(True):
        rng = np.random.default_rng(17)
        k1, k2 = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))

        def fn(v):
            h = conv(v, jnp.asarray(k1)[..., None, None], "VALID")
            return conv(h, jnp.asarray(k2)[..., None, None], "VALID")

        x = jnp.asarray(rng.normal(size=(2, 9, 9, 1)))
        r = erf(fn, x, unit=(0, 0), reduce="grad", crop="none")
        np.testing.assert_allclose(np.asarray(r.map)[:5, :5], convolve(k1, k2), rtol=1e-12)
        assert np.all(np.asarray(r.map)[5:, :] == 0)


def test_progress_bar_is_off_without_a_terminal_or_when_asked(monkeypatch):
    from rfjax.effective import _progress

    monkeypatch.setenv("RFJAX_NO_PROGRESS", "0")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with _progress(3, "ERF") as bar:
        assert not bar.disable
    with _progress(3, "ERF", enabled=False) as bar:
        assert bar.disable
    monkeypatch.setenv("RFJAX_NO_PROGRESS", "1")
    with _progress(3, "ERF") as bar:
        assert bar.disable
    monkeypatch.setenv("RFJAX_NO_PROGRESS", "0")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with _progress(3, "ERF") as bar:
        assert bar.disable
