"""Tests of rfjax.theory: closed forms against autodiff ERFs of small linear conv stacks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from rfjax import metrics as M
from rfjax import theory as T


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# ------------------------------------------------------------------------------ autodiff oracle


def conv_stack(x, weights, strides, dilations):
    """Linear 'VALID' conv stack; x (N, *spatial, C), weights (*spatial, C_in, C_out)."""
    nd = x.ndim - 2
    sp = "DHW"[-nd:] if nd <= 3 else None
    dn = ("N" + sp + "C", sp + "IO", "N" + sp + "C")
    for w, s, d in zip(weights, strides, dilations, strict=True):
        x = lax.conv_general_dilated(x, w, window_strides=s, padding="VALID", rhs_dilation=d,
                                     dimension_numbers=dn)
    return x


def autodiff_erf(weights, strides, dilations, trf, sum_output=True):
    """Gradient of the (only) output unit w.r.t. an input of exactly the TRF's size.

    Returns (*spatial, C_0): the per-input-channel gradient map."""
    c0 = weights[0].shape[-2]
    x = jnp.zeros((1, *trf, c0), weights[0].dtype)

    def unit(x):
        y = conv_stack(x, weights, strides, dilations)
        assert y.shape[1:-1] == (1,) * len(trf), y.shape
        out = y[(0,) + (0,) * len(trf)]
        return out.sum() if sum_output else out[0]

    return jax.grad(unit)(x)[0]


# ------------------------------------------------------------------------------ exact maps


def test_nfold_convolution_small_cases():
    np.testing.assert_array_equal(T.nfold_convolution([1, 1, 1], 1), [1, 1, 1])
    np.testing.assert_array_equal(T.nfold_convolution([1, 1, 1], 2), [1, 2, 3, 2, 1])
    np.testing.assert_array_equal(T.nfold_convolution([1, 1], 5), [1, 5, 10, 10, 5, 1])
    out = T.nfold_convolution(np.ones(3, np.int64), 4)
    assert out.dtype == np.int64 and out.sum() == 3**4
    # brute force: count the tap offset tuples summing to each position
    k, n = 4, 3
    counts = np.zeros(n * (k - 1) + 1, np.int64)
    for idx in np.ndindex(*(k,) * n):
        counts[sum(idx)] += 1
    np.testing.assert_array_equal(T.nfold_convolution(np.ones(k, int), n), counts)
    p = T.nfold_convolution([1, 2, 1], 3, normalize=True)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-15)
    np.testing.assert_allclose(p, T.nfold_convolution([1, 2, 1], 3) / 4**3, rtol=1e-15)


def test_nfold_overflow_is_refused():
    with pytest.raises(ValueError, match="overflow"):
        T.nfold_convolution(np.ones(3, np.int64), 60)
    big = T.nfold_convolution(np.ones(3, np.int64), 60, normalize=True)
    np.testing.assert_allclose(big.sum(), 1.0, rtol=1e-12)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_uniform_erf_equals_autodiff_exactly(x64, depth):
    k = 3
    channels = (2,) + (3,) * (depth - 1) + (2,)
    ws = [jnp.ones((k, k, channels[i], channels[i + 1])) for i in range(depth)]
    trf = (depth * (k - 1) + 1,) * 2
    g = autodiff_erf(ws, [(1, 1)] * depth, [(1, 1)] * depth, trf)
    want = T.uniform_erf(k, depth, channels=channels)
    assert want.dtype == np.int64
    np.testing.assert_array_equal(np.asarray(g).sum(-1), want)
    # the map is the outer product of the 1-D n-fold box, times the channel paths
    box = T.nfold_convolution(np.ones(k, np.int64), depth)
    np.testing.assert_array_equal(want, math.prod(channels) * np.outer(box, box))


def test_uniform_erf_rectangular_1d_3d(x64):
    ws = [jnp.ones((3, 2, 1, 1)), jnp.ones((3, 2, 1, 1))]
    g = autodiff_erf(ws, [(1, 1)] * 2, [(1, 1)] * 2, (5, 3))
    np.testing.assert_array_equal(np.asarray(g)[..., 0], T.uniform_erf((3, 2), 2))
    ws1 = [jnp.ones((4, 1, 1))] * 3
    g1 = autodiff_erf(ws1, [(1,)] * 3, [(1,)] * 3, (10,))
    np.testing.assert_array_equal(np.asarray(g1)[..., 0], T.uniform_erf(4, 3, ndim=1))
    ws3 = [jnp.ones((2, 3, 2, 1, 1))] * 2
    g3 = autodiff_erf(ws3, [(1, 1, 1)] * 2, [(1, 1, 1)] * 2, (3, 5, 3))
    np.testing.assert_array_equal(np.asarray(g3)[..., 0], T.uniform_erf((2, 3, 2), 2))
    p = T.uniform_erf(3, 4, normalize=True)
    np.testing.assert_allclose(p, T.uniform_erf(3, 4) / 3**8, rtol=1e-15)


@pytest.mark.parametrize(
    "sizes,strides,dilations",
    [
        ([(3, 3), (2, 4), (5, 3)], [(1, 1), (2, 1), (1, 2)], [(1, 2), (1, 1), (2, 1)]),
        ([(3, 3)] * 4, [(2, 2), (2, 2), (1, 1), (1, 1)], [(1, 1)] * 4),
        ([(1, 1), (3, 3)], [(2, 2), (1, 1)], [(1, 1), (3, 3)]),  # gaps: a sparse comb
    ],
)
def test_linear_stack_erf_equals_autodiff(x64, sizes, strides, dilations):
    rng = np.random.default_rng(len(sizes))
    kernels = [rng.standard_normal(s) for s in sizes]
    want = T.linear_stack_erf(kernels, strides, dilations)
    trf = tuple(T.stack_trf_size(sizes, strides, dilations))
    assert want.shape == trf
    ws = [jnp.asarray(k)[..., None, None] for k in kernels]
    g = autodiff_erf(ws, strides, dilations, trf)
    np.testing.assert_allclose(np.asarray(g)[..., 0], want, rtol=1e-12, atol=1e-14)


def test_linear_stack_integer_taps_are_exact_and_1d(x64):
    kernels = [np.array([1, -2, 3]), np.array([2, 1]), np.array([1, 0, -1, 4])]
    want = T.linear_stack_erf(kernels, [1, 2, 1], [2, 1, 1])
    assert want.dtype == np.int64
    trf = tuple(T.stack_trf_size([3, 2, 4], [1, 2, 1], [2, 1, 1], ndim=1))
    ws = [jnp.asarray(k, jnp.float64)[:, None, None] for k in kernels]
    g = autodiff_erf(ws, [(1,), (2,), (1,)], [(2,), (1,), (1,)], trf)
    np.testing.assert_array_equal(np.asarray(g)[:, 0], want)


def test_dilate_taps_and_jumps():
    t = np.array([[1, 2], [3, 4]])
    np.testing.assert_array_equal(
        T.dilate_taps(t, (2, 3)), [[1, 0, 0, 2], [0, 0, 0, 0], [3, 0, 0, 4]]
    )
    for d in (1, 2, 5):
        np.testing.assert_allclose(
            T.tap_variance(T.dilate_taps(np.ones(3), d)), d**2 * T.tap_variance(np.ones(3))
        )
    assert T.jumps([2, 3, 1, 2], ndim=1) == [(1,), (2,), (6,), (6,)]
    assert T.jumps([(2, 1), (1, 3), 1]) == [(1, 1), (2, 1), (2, 3)]


# ------------------------------------------------------------------------------ random weights


def _mc_squared_gradient(key, variances, channels, strides, dilations, trf, draws, dist):
    shapes = [v.shape + (channels[i], channels[i + 1]) for i, v in enumerate(variances)]
    sd = [jnp.sqrt(jnp.asarray(v))[(...,) + (None, None)] for v in variances]

    def one(key):
        keys = jax.random.split(key, len(shapes))
        if dist == "normal":
            ws = [s * jax.random.normal(k, sh, jnp.float64) for k, sh, s in
                  zip(keys, shapes, sd, strict=True)]
        else:  # uniform on [-sqrt(3 v), sqrt(3 v)]: variance v, not Gaussian
            ws = [s * math.sqrt(3.0) * jax.random.uniform(k, sh, jnp.float64, -1.0, 1.0)
                  for k, sh, s in zip(keys, shapes, sd, strict=True)]
        g_sum = autodiff_erf(ws, strides, dilations, trf, sum_output=True)
        g_one = autodiff_erf(ws, strides, dilations, trf, sum_output=False)
        return (g_sum**2).sum(-1), (g_one**2).sum(-1)

    # A sequential lax.map: vmapping the conv over per-draw weights lowers to grouped
    # convolutions, which are ~100x slower on CPU than 4000 tiny sequential ones.
    return jax.lax.map(one, jax.random.split(key, draws))


@pytest.mark.parametrize("dist", ["normal", "uniform"])
def test_expected_squared_gradient_matches_monte_carlo(x64, dist):
    """Mean of g^2 over 4000 weight draws vs the closed form.

    Statistical tolerance: each pixel's Monte-Carlo mean must lie within 5 standard errors
    (sample std / sqrt(draws)) of the closed form; pixels outside the comb of reachable offsets
    must be exactly zero; the total mass must lie within 5 standard errors (about 1 %)."""
    rng = np.random.default_rng(7)
    # a 1-row first layer with row stride 2 leaves every other input row unreachable
    sizes = [(1, 3), (3, 3), (3, 2)]
    variances = [0.2 + rng.random(s) for s in sizes]
    channels = (2, 3, 2, 2)
    strides = [(2, 1), (1, 2), (1, 1)]
    dilations = [(1, 1), (1, 1), (2, 1)]
    trf = tuple(T.stack_trf_size(sizes, strides, dilations))
    draws = 4000
    g2_sum, g2_one = _mc_squared_gradient(
        jax.random.key(0), variances, channels, strides, dilations, trf, draws, dist
    )
    for samples, kw in (
        (g2_sum, {}),
        (g2_one, {"sum_input_channels": True, "sum_output_channels": False}),
    ):
        samples = np.asarray(samples)
        want = T.expected_squared_gradient(variances, channels, strides, dilations, **kw)
        mean = samples.mean(0)
        se = samples.std(0, ddof=1) / math.sqrt(draws)
        reach = want > 0
        assert 0 < reach.sum() < reach.size
        assert np.all(mean[~reach] == 0)
        z = np.abs(mean[reach] - want[reach]) / se[reach]
        assert z.max() < 5.0, z.max()
        totals = samples.reshape(draws, -1).sum(1)
        z_total = abs(totals.mean() - want.sum()) / (totals.std(ddof=1) / math.sqrt(draws))
        assert z_total < 5.0, z_total
    # the constant: summing over output channels multiplies by C_n
    np.testing.assert_allclose(
        T.expected_squared_gradient(variances, channels, strides, dilations),
        channels[-1] * T.expected_squared_gradient(variances, channels, strides, dilations,
                                                   sum_output_channels=False),
    )
    one_in = T.expected_squared_gradient(variances, channels, strides, dilations,
                                         sum_input_channels=False)
    np.testing.assert_allclose(one_in * channels[0], T.expected_squared_gradient(
        variances, channels, strides, dilations))


def test_expected_squared_gradient_is_the_nfold_variance_convolution():
    # He init, uniform variance: E[g^2] is the n-fold box times prod(C) * v^n
    k, n, c = 3, 4, 5
    v = 2.0 / (k * k * c)
    got = T.expected_squared_gradient([np.full((k, k), v)] * n, (c,) * (n + 1))
    box = T.uniform_erf(k, n).astype(np.float64)
    np.testing.assert_allclose(got, c ** (n + 1) * v**n * box, rtol=1e-13)


# ------------------------------------------------------------------------------ widths


def numpy_sigma(m):
    p = m / m.sum()
    out = []
    for a in range(m.ndim):
        marg = p.sum(axis=tuple(b for b in range(m.ndim) if b != a))
        x = np.arange(marg.size)
        mu = (marg * x).sum()
        out.append(math.sqrt((marg * (x - mu) ** 2).sum()))
    return np.array(out)


def test_stack_sigma_is_the_sigma_of_the_exact_map():
    rng = np.random.default_rng(3)
    kernels = [rng.random((3, 3)), rng.random((5, 2)), rng.random((3, 4))]
    strides = [(2, 1), (1, 2), (1, 1)]
    dilations = [(1, 1), (2, 1), (1, 3)]
    m = T.linear_stack_erf(kernels, strides, dilations)
    np.testing.assert_allclose(T.stack_sigma(kernels, strides, dilations), numpy_sigma(m),
                               rtol=1e-10)
    # var_total = sum_l var_l (d_l J_l)^2, spelled out for axis 0: J = 1, 2, 2
    var0 = [T.tap_variance(k)[0] for k in kernels]
    np.testing.assert_allclose(
        T.stack_sigma(kernels, strides, dilations)[0],
        math.sqrt(var0[0] * 1 + var0[1] * (2 * 2) ** 2 + var0[2] * 2**2),
        rtol=1e-12,
    )
    for n in (1, 3, 10):
        np.testing.assert_allclose(T.uniform_sigma(3, n), numpy_sigma(T.uniform_erf(3, n)),
                                   rtol=1e-12)
        np.testing.assert_allclose(T.stack_sigma([np.ones((5, 5))] * n),
                                   [math.sqrt(n * 2.0)] * 2, rtol=1e-12)  # (25 - 1) / 12


def test_sqrt_n_growth_and_ratio():
    depths = np.arange(1, 65)
    slope = np.polyfit(np.log(depths), np.log(T.uniform_sigma(3, depths)), 1)[0]
    assert abs(slope - 0.5) < 1e-6
    rng = np.random.default_rng(0)
    var_taps = rng.random(5) + 0.1  # random-weight case: per-tap variances along one axis
    ds = T.depth_scaling(5, depths, taps=var_taps)
    slope_r = np.polyfit(np.log(depths), np.log(ds.sigma), 1)[0]
    assert abs(slope_r - 0.5) < 1e-6
    np.testing.assert_allclose(ds.erf_size, 4 * ds.sigma)
    np.testing.assert_array_equal(ds.trf_size, 4 * depths + 1)
    # the ERF/TRF ratio shrinks like 1/sqrt(n): ratio * sqrt(n) -> 4 sqrt(var) / (k - 1)
    big = np.array([10_000, 1_000_000])
    box = T.depth_scaling(3, big)
    limit = 4 * math.sqrt(8 / 12) / 2
    np.testing.assert_allclose(box.ratio * np.sqrt(big), limit, rtol=1e-4)
    np.testing.assert_allclose(T.depth_scaling(3, depths).sigma, T.uniform_sigma(3, depths))


def test_metrics_on_theory_maps_agree_with_closed_forms():
    """rfjax.metrics applied to the exact maps gives the closed-form sizes and ratios."""
    size_fn = jax.jit(M.erf_size)
    r2 = []
    for n in (2, 4, 8, 16):
        m = T.uniform_erf(3, n, normalize=True)
        size = size_fn(m)
        np.testing.assert_allclose(size.extent, [4 * T.uniform_sigma(3, n)] * 2, rtol=1e-5)
        ratio = M.erf_trf_ratio(size, T.stack_trf_size([3] * n))
        np.testing.assert_allclose(ratio.axis, [T.depth_scaling(3, [n]).ratio[0]] * 2,
                                   rtol=1e-5)
        r2.append(float(M.fit_gaussian(m).r2))
    assert r2 == sorted(r2) and r2[-1] > 0.999  # the CLT at work: ever more Gaussian
    m = T.linear_stack_erf([np.ones((3, 3))] * 4, strides=[1, 2, 1, 1], dilations=[1, 1, 2, 1])
    np.testing.assert_allclose(
        M.gaussian_size(m).extent,
        4 * T.stack_sigma([np.ones((3, 3))] * 4, [1, 2, 1, 1], [1, 1, 2, 1]),
        rtol=1e-5,
    )


# ------------------------------------------------------------------------------ bad input


def test_argument_errors():
    with pytest.raises(ValueError, match="n must be"):
        T.nfold_convolution([1, 1], 0)
    with pytest.raises(ValueError, match="axes"):
        T.nfold_convolution(np.ones((2, 2)), 2)
    with pytest.raises(TypeError, match="real"):
        T.nfold_convolution(np.ones(3, bool), 2)
    with pytest.raises(ValueError, match="non-empty"):
        T.nfold_convolution([], 2)
    with pytest.raises(ValueError, match="sum to zero"):
        T.nfold_convolution([1, -1], 2, normalize=True)
    with pytest.raises(ValueError, match="depth"):
        T.uniform_erf(3, 0)
    with pytest.raises(ValueError, match="kernel_size"):
        T.uniform_erf(0, 2)
    with pytest.raises(ValueError, match="channels"):
        T.uniform_erf(3, 2, channels=(1, 2))
    with pytest.raises(ValueError, match="overflow"):
        T.uniform_erf(3, 30, channels=(64,) * 31)
    with pytest.raises(ValueError, match="list or tuple"):
        T.linear_stack_erf(np.ones((3, 3)))
    with pytest.raises(ValueError, match="empty"):
        T.linear_stack_erf([])
    with pytest.raises(ValueError, match="same number of axes"):
        T.linear_stack_erf([np.ones(3), np.ones((3, 3))])
    with pytest.raises(ValueError, match="one entry per layer"):
        T.linear_stack_erf([np.ones((3, 3))] * 2, strides=[1, 2, 1])
    with pytest.raises(ValueError, match="tuple of 2"):
        T.linear_stack_erf([np.ones((3, 3))] * 2, strides=[1, (1, 2, 3)])
    with pytest.raises(ValueError, match="nonnegative"):
        T.expected_squared_gradient([-np.ones((3, 3))])
    with pytest.raises(ValueError, match="nonnegative"):
        T.stack_sigma([np.array([1.0, -1.0, 1.0])])
    with pytest.raises(ValueError, match="all zero"):
        T.tap_variance(np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        T.tap_variance(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="depth"):
        T.uniform_sigma(3, [0, 1])
    with pytest.raises(ValueError, match="kernel_size is 3"):
        T.depth_scaling(3, [1, 2], taps=np.ones(5))
    with pytest.raises(ValueError, match="depths"):
        T.depth_scaling(3, [1.5])
    with pytest.raises(ValueError, match="kernel_sizes"):
        T.stack_trf_size([])
