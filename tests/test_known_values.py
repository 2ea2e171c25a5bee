"""Known values (rfjax.engine.known): a value fixed by the program is part of the architecture.

Masked attention is exact (``exp(-inf) == 0`` is a structural zero, as is ``exp`` of a mask of
``finfo.min`` or ``jax.nn``'s ``-0.7 * finfo.max``); closed-over constant arrays count like
``iota``-built ones; constant zero kernel taps and constant zero masks connect nothing. The
parameters passed to ``fn`` are not architecture. Every mask is checked against the float64
gradient support (unioned over three random inputs and parameter draws) at every unit.
"""

from __future__ import annotations

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import rfjax

T, C = 10, 4  # tokens, channels


def _random_params(params, seed):
    """Random float64 parameters of the same structure (none exactly zero)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(seed)
    out = [jnp.asarray(rng.normal(0.0, 0.5, np.shape(leaf)), jnp.float64) for leaf in leaves]
    return jax.tree_util.tree_unflatten(tree, out)


def _oracle(f, params, shape, units, draws=3):
    """Per unit, the input positions where d(sum over channels of the unit)/dx != 0 (float64),
    unioned over ``draws`` random inputs and random parameters."""
    with jax.enable_x64(True):
        masks = np.zeros((len(units),) + tuple(shape[1:-1]), dtype=bool)
        for seed in range(draws):
            p = _random_params(params, seed) if params is not None else None
            fn = functools.partial(f, p) if p is not None else f
            x = jax.random.normal(jax.random.key(100 + seed), shape, jnp.float64)
            y, vjp = jax.vjp(fn, x)
            cots = np.zeros((len(units),) + y.shape)
            for k, u in enumerate(units):
                cots[(k, 0) + u] = 1.0
            g = jax.vmap(lambda c, vjp=vjp: vjp(c)[0])(jnp.asarray(cots))
            masks |= np.asarray(jnp.abs(g[:, 0]).sum(axis=-1) > 0)
    return masks


def _trfs(f, params, shape):
    """The TRF at float32 and at float64 (parameters passed to fn, i.e. abstract)."""
    out = []
    for dt in (jnp.float32, jnp.float64):
        with jax.enable_x64(dt == jnp.float64):
            p = jax.tree.map(lambda a, dt=dt: jnp.asarray(a, dt), params)
            fn = functools.partial(f, p) if params is not None else f
            out.append(rfjax.trf(fn, jax.ShapeDtypeStruct(shape, dt)))
    return out


def _check_exact(f, params, shape):
    """Every unit's mask equals the oracle; regions hold the masks tightly (no padding
    involved); returns the float32 TRF and the masks."""
    t32, t64 = _trfs(f, params, shape)
    units = list(itertools.product(*[range(n) for n in t32.output_shape]))
    oracle = _oracle(f, params, shape, units)
    for t in (t32, t64):
        masks = t.masks(units)
        for u, m, g in zip(units, masks, oracle, strict=True):
            assert (m == g).all(), f"unit {u}: engine {np.argwhere(m).tolist()} vs oracle " \
                                   f"{np.argwhere(g).tolist()}"
            idx = np.nonzero(m)
            assert t.region(u) == tuple((int(i.min()), int(i.max())) for i in idx)
    return t32, oracle


def _causal(n):
    return np.tril(np.ones((n, n), bool))


def _band(n, left, right):
    i = np.arange(n)
    return (i[:, None] - i[None, :] <= left) & (i[None, :] - i[:, None] <= right)


def _attention(params, x, mask, neg):
    """Single-head attention with projections; masked logits set to ``neg``."""
    q, k, v = x @ params["q"], x @ params["k"], x @ params["v"]
    logits = jnp.einsum("btc,bsc->bts", q, k)
    neg = neg(x.dtype) if callable(neg) else neg
    logits = jnp.where(mask, logits, neg)
    return jnp.einsum("bts,bsc->btc", jax.nn.softmax(logits, axis=-1), v)


_PARAMS = {n: np.ones((C, C)) for n in "qkv"}


@pytest.mark.parametrize("neg", [-jnp.inf, lambda dt: jnp.finfo(dt).min,
                                 lambda dt: -0.7 * jnp.finfo(dt).max],
                         ids=["-inf", "finfo.min", "-0.7*finfo.max"])
def test_causal_attention_sees_the_past_only(neg):
    t, oracle = _check_exact(lambda p, x: _attention(p, x, _causal(T), neg), _PARAMS,
                             (1, T, C))
    for u in range(T):
        assert oracle[u].tolist() == [s <= u for s in range(T)]
        assert t.region((u,)) == ((0, u),)
    assert t.is_global == (False,)


@pytest.mark.parametrize("left,right", [(1, 1), (2, 0), (0, 3)])
def test_band_attention_sees_its_window(left, right):
    t, oracle = _check_exact(
        lambda p, x: _attention(p, x, _band(T, left, right), -jnp.inf), _PARAMS, (1, T, C))
    for u in range(T):
        assert t.region((u,)) == ((max(0, u - left), min(T - 1, u + right)),)
    assert t.is_global == (False,)


def test_small_mask_values_are_not_structural_zeros():
    # Swin's -100 (or BERT's -1e4): exp(-100 - max) need not vanish, a logit could be as low.
    t, oracle = _check_exact(lambda p, x: _attention(p, x, _causal(T), -100.0), _PARAMS,
                             (1, T, C))
    assert oracle.all() and t.is_global == (True,)


def _dpa(params, x, **kw):
    B, n, _ = x.shape
    q = (x @ params["q"]).reshape(B, n, 2, C // 2)
    k = (x @ params["k"]).reshape(B, n, 2, C // 2)
    v = (x @ params["v"]).reshape(B, n, 2, C // 2)
    return jax.nn.dot_product_attention(q, k, v, **kw).reshape(B, n, C)


def test_jax_nn_dot_product_attention_causal_and_local():
    t, _ = _check_exact(lambda p, x: _dpa(p, x, is_causal=True), _PARAMS, (1, T, C))
    assert [t.region((u,)) for u in range(T)] == [((0, u),) for u in range(T)]
    assert t.is_global == (False,)
    t, _ = _check_exact(lambda p, x: _dpa(p, x, local_window_size=(2, 1)), _PARAMS, (1, T, C))
    assert [t.region((u,)) for u in range(T)] == [((max(0, u - 2), min(T - 1, u + 1)),)
                                                  for u in range(T)]
    t, _ = _check_exact(lambda p, x: _dpa(p, x, is_causal=True, local_window_size=(3, 0)),
                        _PARAMS, (1, T, C))
    assert [t.region((u,)) for u in range(T)] == [((max(0, u - 3), u),) for u in range(T)]


def test_flax_multi_head_attention_with_causal_mask():
    model = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)
    x = jnp.ones((1, T, C))
    params = model.init(jax.random.key(0), x, mask=nn.make_causal_mask(x[..., 0]))

    def f(p, x):
        return model.apply(p, x, mask=nn.make_causal_mask(x[..., 0]))

    t, oracle = _check_exact(f, params, (1, T, C))
    assert [t.region((u,)) for u in range(T)] == [((0, u),) for u in range(T)]
    assert t.is_global == (False,)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_masks_with_a_float32_softmax(dtype):
    # finfo(float16).min is only -65504: it is a structural zero because the float16 logits
    # it competes with are bounded by float16's own range once cast to float32.
    model = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, dtype=dtype,
                                            force_fp32_for_softmax=True)
    x = jnp.ones((1, T, C), dtype)
    params = model.init(jax.random.key(0), x, mask=nn.make_causal_mask(x[..., 0]))

    def f(p, x):
        return model.apply(p, x, mask=nn.make_causal_mask(x[..., 0]))

    t = rfjax.trf(functools.partial(f, params), jax.ShapeDtypeStruct((1, T, C), dtype))
    assert (t.masks() == _causal(T)).all() and t.is_global == (False,)


def test_causal_attention_over_an_image_in_raster_order():
    H = W = 3

    def f(p, x):
        tok = x.reshape(1, H * W, C)
        return _attention(p, tok, _causal(H * W), -jnp.inf).reshape(1, H, W, C)

    t, oracle = _check_exact(f, _PARAMS, (1, H, W, C))
    for u in itertools.product(range(H), range(W)):
        r = u[0] * W + u[1]
        assert t.mask(u).reshape(-1).tolist() == [s <= r for s in range(H * W)]


def test_closed_over_band_matrix_equals_the_iota_built_one():
    n = 12
    band_np = np.asarray(np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) <= 2, np.float32)

    def closed(x):
        return jnp.einsum("ij,bjc->bic", jnp.asarray(band_np, x.dtype), x)

    def built(x):
        i = lax.broadcasted_iota(jnp.int32, (n, n), 0)
        j = lax.broadcasted_iota(jnp.int32, (n, n), 1)
        return jnp.einsum("ij,bjc->bic", (jnp.abs(i - j) <= 2).astype(x.dtype), x)

    t1, o1 = _check_exact(closed, None, (1, n, 3))
    t2, o2 = _check_exact(built, None, (1, n, 3))
    assert (t1.masks() == t2.masks()).all() and (o1 == o2).all()
    assert (t1.size, t1.stride, t1.is_global) == (t2.size, t2.stride, t2.is_global)
    assert t1.region((0,)) == ((0, 2),) and t1.region((6,)) == ((4, 8),)


def test_conv_general_dilated_patches_taps_are_exact():
    def centre(x):  # channel c of tap 4 (the centre) of each 3x3 patch: one pixel
        p = lax.conv_general_dilated_patches(x, (3, 3), (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return p[..., 4::9]

    t, _ = _check_exact(centre, None, (1, 6, 6, 2))
    assert t.size == (1, 1) and t.region((2, 3)) == ((2, 2), (3, 3))

    def corner(x):  # tap 0 of a strided VALID patch: the window's top-left pixel
        p = lax.conv_general_dilated_patches(x, (3, 3), (2, 2), "VALID",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return p[..., :1]

    t, _ = _check_exact(corner, None, (1, 7, 7, 2))
    assert t.size == (1, 1) and t.stride == (2, 2) and t.region((1, 2)) == ((2, 2), (4, 4))


def test_constant_kernel_zero_taps_connect_nothing():
    plus = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.float32)[:, :, None, None]

    def f(x):
        k = jnp.asarray(plus, x.dtype)
        dn = ("NHWC", "HWIO", "NHWC")
        y = lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn)
        return lax.conv_general_dilated(y, k, (1, 1), "SAME", dimension_numbers=dn)

    t32, t64 = _trfs(f, None, (1, 9, 9, 1))
    units = list(itertools.product(range(9), range(9)))
    oracle = _oracle(f, None, (1, 9, 9, 1), units)
    assert (t32.masks(units) == oracle).all() and (t64.masks(units) == oracle).all()
    m = t32.mask((4, 4))
    assert m.sum() == 13 and not m[2, 2] and m[2, 4] and m[4, 2]  # a diamond, not a 5x5 box
    assert t32.region((0, 0)) == ((-2, 2), (-2, 2))  # unclipped: the padding still counts


def test_constant_zero_padded_mask_multiplication():
    mask = np.pad(np.ones((4, 4, 1), np.float32), ((2, 2), (2, 2), (0, 0)))

    def f(x):
        w = jnp.ones((3, 3, 1, 1), x.dtype)
        y = x * jnp.asarray(mask, x.dtype)
        return lax.conv_general_dilated(y, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    t32, t64 = _trfs(f, None, (1, 8, 8, 1))
    units = list(itertools.product(range(8), range(8)))
    oracle = _oracle(f, None, (1, 8, 8, 1), units)
    assert (t32.masks(units) == oracle).all() and (t64.masks(units) == oracle).all()
    assert t32.region((2, 2)) == ((2, 3), (2, 3))  # the zeroed border is not a dependency
    assert t32.region((1, 4)) == ((2, 2), (3, 5))
    with pytest.raises(ValueError, match="no input position"):
        t32.region((0, 0))  # reads only the zeroed border and the padding


def test_literal_zero_is_structural():
    t = rfjax.trf(lambda x: jnp.tanh(x * 0.0) + 1.0, (1, 6, 6, 1))
    assert not t.masks().any()


def test_parameters_are_not_architecture():
    # The same zero as a parameter passed to fn is a weight value, not a structural zero.
    def scaled(w, x):
        return lax.conv_general_dilated(x * w["scale"], w["kernel"], (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    zero = {"scale": jnp.zeros((1, 1, 1, 1)), "kernel": jnp.zeros((3, 3, 1, 1))}
    t = rfjax.trf(functools.partial(scaled, zero), (1, 6, 6, 1))
    assert t.size == (3, 3) and t.mask((3, 3)).sum() == 9

    def masked_attention(p, x):  # a mask passed as a parameter is not structural either
        return _attention(p, x, p["mask"] > 0, -jnp.inf)

    params = dict(_PARAMS, mask=jnp.asarray(_causal(T), jnp.float32))
    t = rfjax.trf(functools.partial(masked_attention, params), (1, T, C))
    assert t.is_global == (True,) and t.mask((0,)).all()


def test_module_weights_are_parameters_not_architecture():
    # NNX and Equinox modules hold their weights; rfjax.trf passes them as parameters, so a
    # zero weight (zero-initialised residual scale, a pruned kernel) does not cut a path.
    import equinox as eqx
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self):
            self.conv = nnx.Conv(1, 1, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
            self.conv.kernel[...] = jnp.zeros_like(self.conv.kernel[...])

        def __call__(self, x):
            return self.conv(x)

    t = rfjax.trf(Net(), (1, 6, 6, 1))
    assert t.size == (3, 3) and t.mask((3, 3)).sum() == 9

    conv = eqx.nn.Conv2d(1, 1, 3, padding=1, key=jax.random.key(0))
    conv = eqx.tree_at(lambda c: c.weight, conv, jnp.zeros_like(conv.weight))

    def batched(x):  # Equinox is single-example and channels-first
        return jax.vmap(conv)(jnp.moveaxis(x, -1, 1)).transpose(0, 2, 3, 1)

    t = rfjax.trf(eqx.Partial(lambda m, x: jax.vmap(m)(jnp.moveaxis(x, -1, 1)).transpose(
        0, 2, 3, 1), conv), (1, 6, 6, 1))
    assert t.size == (3, 3) and t.mask((3, 3)).sum() == 9
    # a plain closure over the same zero weights: closed-over values are the program's own
    assert not rfjax.trf(batched, (1, 6, 6, 1)).masks().any()
