"""Tests of ERF cropping (rfjax.cone): the cropped gradient equals the uncropped one."""

import dataclasses
import functools
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rfjax.cone import Unsupported, cone_plan, input_window
from rfjax.effective import erf
from rfjax.theoretical import trf

DN = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def conv(x, k, padding="SAME", stride=1, dil=1):
    n = x.ndim - 2
    return jax.lax.conv_general_dilated(
        x, k, (stride,) * n, padding, rhs_dilation=(dil,) * n, dimension_numbers=DN[n]
    )


def kernels(seed, shapes):
    ks = jax.random.split(jax.random.key(seed), len(shapes))
    return [jax.random.normal(k, s) * 0.4 for k, s in zip(ks, shapes, strict=True)]


def strided(ps, x):
    x = jax.nn.relu(conv(x, ps[0], "SAME", stride=2))
    x = jax.nn.relu(conv(x, ps[1], "SAME", stride=2))
    return conv(x, ps[2], "SAME")


def dilated(ps, x):
    x = jnp.tanh(conv(x, ps[0], "SAME", dil=2))
    x = jnp.tanh(conv(x, ps[1], "SAME", dil=3))
    return conv(x, ps[2], "VALID", dil=2)


def residual(ps, x):
    h = jax.nn.relu(conv(x, ps[0]))
    h = h + jax.nn.gelu(conv(h, ps[1]))  # a residual branch
    h = jnp.concatenate([h, conv(h, ps[1]) ** 2], axis=-1)  # channel concat, integer_pow
    return conv(jnp.where(h > 0.1, h, 0.5 * h), ps[2][:, :, :1].repeat(8, axis=2))


def padded(ps, x):
    x = jax.nn.relu(conv(x, ps[0], ((2, 0), (1, 3))))  # explicit, asymmetric
    x = jnp.pad(x, ((0, 0), (1, 2), (2, 1), (0, 0)))  # jnp.pad
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")
    x = x[:, 1:, :-1]  # slice
    x = jax.nn.sigmoid(conv(x, ps[1], "VALID"))
    return conv(x, ps[2], "SAME", stride=2)


def unet_like(ps, x):
    down = jax.nn.relu(conv(x, ps[0], "SAME", stride=2))
    up = jax.lax.conv_transpose(down, ps[1], (2, 2), "SAME", dimension_numbers=DN[2])
    up = up[:, : x.shape[1], : x.shape[2]]  # odd sizes: crop the upsampled map to the skip's
    skip = jax.nn.relu(conv(x, ps[0]))
    return conv(jnp.concatenate([up, skip], axis=-1)[..., ::2], ps[2])  # stride-2 channel slice


SHAPES = [(3, 3, 3, 4), (3, 3, 4, 4), (3, 3, 4, 2)]


@pytest.mark.parametrize("net", [strided, dilated, residual, padded, unet_like])
@pytest.mark.parametrize("unit", ["centre", "corner"])
def test_cone_and_input_crops_equal_uncropped(net, unit):
    ps = kernels(0, SHAPES)
    x = jax.random.normal(jax.random.key(1), (3, 29, 26, 3))
    fn = functools.partial(net, ps)
    out = jax.eval_shape(fn, x).shape
    u = {"centre": None, "corner": (out[1] - 1, 0)}[unit]
    full = erf(fn, x, unit=u, crop="none", reduce="grad")
    # A transposed convolution makes the TRF misaligned: no input window, only the cone.
    for crop in ("cone",) if net is unet_like else ("cone", "input"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback warning
            # verify=False: the comparison below is the (stronger) check, on every image.
            r = erf(fn, x, unit=u, crop=crop, reduce="grad", verify=False)
        assert r.crop == crop
        scale = float(np.abs(np.asarray(full.map)).max())
        np.testing.assert_allclose(np.asarray(r.map), np.asarray(full.map), rtol=1e-4,
                                   atol=1e-5 * scale)


class FlaxNet(nn.Module):
    """Strided, pooled, normalised and a per-pixel Dense: the usual flax building blocks."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3), strides=2)(x))
        x = nn.avg_pool(x, (3, 3), (1, 1), "SAME", count_include_pad=False)
        x = x + nn.Conv(6, (3, 3), kernel_dilation=2)(nn.LayerNorm()(x))
        x = nn.Conv(6, (5, 5), feature_group_count=6)(x)  # depthwise
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.Dense(5)(nn.silu(x))
        x = jnp.transpose(x, (0, 3, 1, 2))  # NCHW inside the model
        x = x.reshape(x.shape[0], 5, x.shape[2], x.shape[3], 1)[..., 0]
        return jnp.transpose(x, (0, 2, 3, 1))


def test_cone_on_a_flax_model_with_pools_norms_and_layout_changes():
    m = FlaxNet()
    x = jax.random.normal(jax.random.key(2), (1, 36, 32, 3))
    p = jax.jit(m.init)(jax.random.key(3), x)
    fn = functools.partial(m.apply, p)
    full = erf(fn, x, crop="none")
    r = erf(fn, x, crop="cone")
    assert r.crop == "cone"
    np.testing.assert_allclose(np.asarray(r.map), np.asarray(full.map), rtol=1e-4,
                               atol=1e-6 * float(full.map.max()))


@pytest.mark.parametrize("n", [1, 3])
def test_cone_in_one_and_three_spatial_dimensions(n):
    shapes = [(3,) * n + (2, 3), (3,) * n + (3, 3)]
    ps = kernels(4, shapes)

    def fn(v):
        return conv(jax.nn.relu(conv(v, ps[0], stride=2)), ps[1])

    x = jax.random.normal(jax.random.key(5), (2,) + (13,) * n + (2,))
    full = erf(fn, x, crop="none")
    r = erf(fn, x, crop="cone")
    assert r.crop == "cone"
    np.testing.assert_allclose(np.asarray(r.map), np.asarray(full.map), rtol=1e-4, atol=1e-7)


def test_cone_window_is_the_trf_region_clipped():
    ps = kernels(6, SHAPES)
    fn = functools.partial(strided, ps)
    x = jax.ShapeDtypeStruct((1, 40, 40, 3), jnp.float32)
    t = trf(fn, x)
    for unit in [(5, 5), (0, 9), (9, 0)]:
        closed = jax.make_jaxpr(lambda d, v: strided(d, v))(ps, x)
        plan = cone_plan(closed, unit)
        region = t.region(unit)
        want = tuple((max(a, 0), min(b + 1, 40)) for a, b in region)
        assert plan.window == want


def test_global_ops_fall_back_and_global_axes_are_not_cropped():
    ps = kernels(7, SHAPES)
    x = jax.random.normal(jax.random.key(8), (2, 24, 24, 3))

    def squeeze_excite(v):  # global average pool: every unit sees the whole image
        h = jax.nn.relu(conv(v, ps[0]))
        return conv(h * jax.nn.sigmoid(h.mean(axis=(1, 2), keepdims=True)), ps[1])

    def attention(v):  # self-attention over all positions
        h = conv(v, ps[0])
        t = h.reshape(h.shape[0], -1, h.shape[-1])
        a = jax.nn.softmax(jnp.einsum("bqc,bkc->bqk", t, t), axis=-1)
        return jnp.einsum("bqk,bkc->bqc", a, t).reshape(h.shape)

    for fn in (squeeze_excite, attention):
        full = erf(fn, x, crop="none")
        r = erf(fn, x, crop="auto")
        assert r.crop == "none"  # global on both axes: nothing to crop
        np.testing.assert_allclose(np.asarray(r.map), np.asarray(full.map), rtol=1e-5)
        with pytest.warns(UserWarning, match="no dependency cone"):
            erf(fn, x, crop="cone")

    def row_mean(v):  # global along W only: H may be cropped, W must not
        h = conv(v, ps[0])
        return conv(h + h.mean(axis=2, keepdims=True), ps[1])

    full = erf(row_mean, x, crop="none", unit=(3, 3))
    r = erf(row_mean, x, crop="auto", unit=(3, 3))
    assert r.crop == "input"
    np.testing.assert_allclose(np.asarray(r.map), np.asarray(full.map), rtol=1e-4, atol=1e-7)
    t = trf(row_mean, x)
    window, _ = input_window(t, (3, 3), (24, 24))
    assert window[1] == (0, 24) and window[0][1] < 24


def test_unused_global_outputs_do_not_prevent_the_cone():
    ps = kernels(12, SHAPES)
    x = jax.random.normal(jax.random.key(13), (2, 20, 20, 3))

    def two_outputs(v):  # (a global summary, the feature map); only the map is analysed
        h = jax.nn.relu(conv(v, ps[0]))
        return h.mean(axis=(1, 2)), {"feat": conv(h, ps[1])}

    full = erf(two_outputs, x, output="1/feat", crop="none")
    r = erf(two_outputs, x, output="1/feat", crop="auto")
    assert r.crop == "cone"
    np.testing.assert_allclose(np.asarray(r.map), np.asarray(full.map), rtol=1e-5, atol=1e-8)


def test_cone_plan_raises_unsupported_for_global_reductions():
    def fn(v):
        return v - v.mean(axis=1, keepdims=True)

    closed = jax.make_jaxpr(fn)(jnp.ones((1, 8, 8, 2)))
    with pytest.raises(Unsupported, match="global"):
        cone_plan(closed, (4, 4))


def test_a_wrong_crop_is_caught_by_the_verification():
    k = kernels(9, [(3, 3, 1, 1)])[0]

    def position_dependent(v):  # not translation-equivariant: a ramp built from the shape
        ramp = jnp.arange(v.shape[1], dtype=v.dtype)[None, :, None, None]
        return conv(v, k) * (1.0 + ramp)

    x = jax.random.normal(jax.random.key(10), (2, 20, 20, 1))
    full = erf(position_dependent, x, crop="none")
    with pytest.warns(UserWarning, match="uncropped gradient is used"):
        r = erf(position_dependent, x, crop="input")
    assert r.crop == "none"
    np.testing.assert_array_equal(np.asarray(r.map), np.asarray(full.map))
    # The cone slices the (input-independent) ramp like any constant: exact.
    c = erf(position_dependent, x, crop="cone")
    assert c.crop == "cone"
    np.testing.assert_allclose(np.asarray(c.map), np.asarray(full.map), rtol=1e-5)


@dataclasses.dataclass
class StandInTRF:
    """The rfjax.trf contract, for testing the window arithmetic alone."""

    stride: tuple
    size: tuple
    padding: tuple
    is_global: tuple
    aligned: bool = True

    def region(self, unit):
        return tuple((u * s - p, u * s - p + z - 1)
                     for u, s, p, z in zip(unit, self.stride, self.padding, self.size, strict=True))


def test_input_window_is_grid_aligned_and_keeps_image_edges():
    t = StandInTRF(stride=(4, 4), size=(11, 11), padding=(4, 4), is_global=(False, False))
    # unit (5, 0) sees rows 16..26 and cols -4..6 of a 37 x 40 image.
    window, unit = input_window(t, (5, 0), (37, 40))
    (r0, r1), (c0, c1) = window
    assert r0 == 16 and r0 % 4 == 0 and r1 >= 27 and (r1 - 37) % 4 == 0
    assert c0 == 0 and c1 >= 7 and (c1 - 40) % 4 == 0  # the left edge is kept
    assert unit == (5 - 16 // 4, 0)
    # a unit whose region reaches past the far edge keeps that edge
    window, _ = input_window(t, (9, 9), (37, 40))
    assert window[0][1] == 37 and window[1][1] == 40
    # a global axis is never cropped, a misaligned TRF not at all
    g = dataclasses.replace(t, is_global=(True, False))
    assert input_window(g, (5, 5), (37, 40))[0][0] == (0, 37)
    assert input_window(dataclasses.replace(t, aligned=False), (5, 5), (37, 40)) is None
    # a region covering the whole image gives nothing to crop
    big = StandInTRF(stride=(1,), size=(99,), padding=(49,), is_global=(False,))
    assert input_window(big, (3,), (7,)) is None


def test_input_crop_matches_on_a_same_padded_strided_net_of_odd_size():
    # SAME padding depends on the input size modulo the stride: the window keeps it.
    ps = kernels(11, SHAPES)
    fn = functools.partial(strided, ps)
    for size in (33, 34):
        x = jax.random.normal(jax.random.key(size), (1, size, size, 3))
        full = erf(fn, x, crop="none", reduce="grad", unit=(3, 5))
        r = erf(fn, x, crop="input", reduce="grad", unit=(3, 5))
        assert r.crop == "input"
        np.testing.assert_allclose(np.asarray(r.map), np.asarray(full.map), rtol=1e-4,
                                   atol=1e-6)


@pytest.mark.parametrize("precision", ["highest", "default"])
def test_crop_verification_tolerance_follows_the_precision(precision):
    """A crop that changes the gradient by 1e-3 of its maximum (the size of TF32 rounding on a
    GPU) is kept at a fast precision and rejected at ``"highest"``; a real error (the ramp of
    the test above, of the order of the gradient) is caught at every precision."""
    k = kernels(9, [(3, 3, 1, 1)])[0]

    def ramp(scale):
        def fn(v):
            r = jnp.arange(v.shape[1], dtype=v.dtype)[None, :, None, None]
            return conv(v, k) * (1.0 + scale * r)
        return fn

    x = jax.random.normal(jax.random.key(11), (2, 20, 20, 1))
    tiny = ramp(1e-4)  # the input crop shifts the ramp by a few rows: ~1e-3 relative
    if precision == "highest":
        with pytest.warns(UserWarning, match="uncropped gradient is used"):
            assert erf(tiny, x, crop="input", precision=precision).crop == "none"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert erf(tiny, x, crop="input", precision=precision).crop == "input"
    with pytest.warns(UserWarning, match="uncropped gradient is used"):
        assert erf(ramp(1.0), x, crop="input", precision=precision).crop == "none"
    with pytest.raises(ValueError, match="precision"):
        erf(tiny, x, precision="tf32")
