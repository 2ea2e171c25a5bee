"""Tests of rfjax.metrics against NumPy/SciPy oracles, eagerly and under jax.jit."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from rfjax import metrics as M

JIT_FIT = jax.jit(M.fit_gaussian)
JIT_THRESH = jax.jit(M.threshold_size, static_argnames=("reference", "fraction"))
JIT_SIZE = jax.jit(M.erf_size, static_argnames=("method", "area", "reference", "fraction"))
JIT_HCAR = jax.jit(M.high_contribution_area_ratio, static_argnames=("thresholds", "log"))
JIT_RADIAL = jax.jit(M.radial_profile, static_argnames=("centre", "max_radius"))
JIT_RATIO = jax.jit(M.erf_trf_ratio)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def gaussian_map(shape, mean, sigma):
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    q = sum(((g - m) / s) ** 2 for g, m, s in zip(grids, mean, sigma, strict=True))
    return np.exp(-0.5 * q)


def box_map(shape, lo, hi):
    m = np.zeros(shape)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = 1.0
    return m


# ------------------------------------------------------------------------------ Gaussian fit


@pytest.mark.parametrize(
    "shape,mean,sigma",
    [
        ((64, 64), (32.0, 32.0), (4.0, 4.0)),
        ((61, 75), (25.3, 40.7), (3.0, 6.5)),  # anisotropic, off-centre, fractional centre
        ((101,), (40.0,), (7.0,)),
        ((21, 25, 29), (10.0, 12.5, 15.0), (2.0, 2.5, 3.0)),
    ],
)
def test_fit_recovers_known_sigma(shape, mean, sigma):
    m = gaussian_map(shape, mean, sigma).astype(np.float32)
    for fit in (M.fit_gaussian(m), JIT_FIT(m)):
        np.testing.assert_allclose(fit.sigma, sigma, rtol=2e-4)
        np.testing.assert_allclose(fit.mean, mean, atol=2e-3)
        # oracle: SciPy's centre of mass, NumPy's weighted covariance
        np.testing.assert_allclose(fit.mean, ndimage.center_of_mass(m), rtol=1e-5, atol=1e-4)
        pts = np.stack([g.ravel() for g in np.indices(shape)])
        cov = np.cov(pts, aweights=m.ravel().astype(np.float64), bias=True)
        np.testing.assert_allclose(fit.cov, np.atleast_2d(cov), rtol=1e-4, atol=1e-3)
        assert float(fit.r2) > 0.99999
        assert float(fit.rel_l2) < 1e-3
        assert not fit.refined


def test_fit_goodness_matches_numpy_definition():
    rng = np.random.default_rng(0)
    m = gaussian_map((40, 50), (18.0, 27.0), (4.0, 6.0)) + 0.05 * rng.random((40, 50))
    fit = JIT_FIT(m.astype(np.float32))
    g = gaussian_map(m.shape, np.asarray(fit.mean), np.asarray(fit.sigma))
    amplitude = m.sum() / g.sum()  # the mass-matched model's peak (at the fractional mean)
    g *= amplitude
    r2 = 1 - np.sum((m - g) ** 2) / np.sum((m - m.mean()) ** 2)
    rel = np.linalg.norm(m - g) / np.linalg.norm(m)
    np.testing.assert_allclose(fit.r2, r2, rtol=1e-4)
    np.testing.assert_allclose(fit.rel_l2, rel, rtol=1e-4)
    np.testing.assert_allclose(fit.amplitude, amplitude, rtol=1e-4)


def test_box_is_less_gaussian_and_has_exact_moments():
    k = 9
    box = box_map((31, 31), (11, 11), (11 + k, 11 + k))
    fit = JIT_FIT(box)
    # the discrete uniform distribution on k points has variance (k**2 - 1) / 12
    np.testing.assert_allclose(fit.sigma, [math.sqrt((k * k - 1) / 12)] * 2, rtol=1e-6)
    np.testing.assert_allclose(fit.mean, [15.0, 15.0], atol=1e-5)
    gauss = JIT_FIT(gaussian_map((31, 31), (15, 15), (3, 3)))
    assert float(fit.r2) < 0.95 < float(gauss.r2)
    assert float(fit.rel_l2) > 10 * float(gauss.rel_l2)
    # rel_l2 ignores zero padding and scale; r2 approaches 1 - rel_l2**2 with more padding
    wide = JIT_FIT(7.0 * np.pad(box, 40))
    np.testing.assert_allclose(wide.rel_l2, fit.rel_l2, rtol=1e-5)
    assert abs(float(wide.r2) - (1 - float(wide.rel_l2) ** 2)) < 0.01


def test_delta_map_has_zero_sigma_and_perfect_fit():
    m = np.zeros((9, 9), np.float32)
    m[3, 5] = 2.0
    fit = JIT_FIT(m)
    np.testing.assert_array_equal(fit.sigma, [0.0, 0.0])
    np.testing.assert_array_equal(fit.mean, [3.0, 5.0])
    assert float(fit.r2) == 1.0


def test_constant_map_has_undefined_r2():
    fit = JIT_FIT(jnp.ones((5, 7)))
    assert np.isnan(fit.r2)
    np.testing.assert_allclose(fit.sigma, [math.sqrt(2.0), math.sqrt(4.0)], rtol=1e-6)
    assert np.isfinite(fit.rel_l2)


def test_refine_recovers_truncated_gaussian():
    # centre near the border: the moments see a cut-off Gaussian and underestimate sigma
    m = gaussian_map((40, 40), (4.0, 20.0), (5.0, 3.0))
    moment = M.fit_gaussian(m)
    assert float(moment.sigma[0]) < 4.5
    with jax.enable_x64(True):
        ref = M.fit_gaussian(m, refine=True)
    assert ref.refined
    np.testing.assert_allclose(ref.sigma, [5.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(ref.mean, [4.0, 20.0], atol=1e-6)
    np.testing.assert_allclose(ref.amplitude, 1.0, rtol=1e-6)
    assert float(ref.r2) > 1 - 1e-10


def test_refine_refuses_to_trace():
    with pytest.raises(ValueError, match="outside jax.jit"):
        jax.jit(lambda m: M.fit_gaussian(m, refine=True))(jnp.ones((5, 5)))


def test_fit_result_is_a_pytree():
    fit = M.fit_gaussian(gaussian_map((21, 21), (10, 10), (2, 2)))
    leaves = jax.tree_util.tree_leaves(fit)
    assert len(leaves) == 6
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, fit)
    np.testing.assert_allclose(doubled.sigma, 2 * fit.sigma)


# ------------------------------------------------------------------------------ sizes


def numpy_threshold_size(m, ref_value, fraction):
    mask = m > fraction * ref_value
    ext = []
    for a in range(m.ndim):
        idx = np.nonzero(np.any(mask, axis=tuple(b for b in range(m.ndim) if b != a)))[0]
        ext.append(idx.max() - idx.min() + 1 if idx.size else 0)
    return np.array(ext, float), float(mask.sum())


def test_threshold_size_matches_numpy():
    rng = np.random.default_rng(0)
    m = gaussian_map((33, 47), (14.0, 30.0), (3.0, 5.0)) + 0.03 * rng.random((33, 47))
    m = m.astype(np.float32)
    cases = [
        ("max", m.max(), M.PAPER_FRACTION, True),
        ("centre", m[16, 23], M.PAPER_FRACTION, True),
        ((14, 30), m[14, 30], M.PAPER_FRACTION, True),
        ((0, 0), m[0, 0], M.PAPER_FRACTION, False),
        ("max", m.max(), 0.5, False),
    ]
    for reference, value, fraction, jit in cases:
        want_ext, want_area = numpy_threshold_size(m, value, fraction)
        got = [M.threshold_size(m, reference=reference, fraction=fraction)]
        if jit:
            got.append(JIT_THRESH(m, reference=reference, fraction=fraction))
        for g in got:
            np.testing.assert_array_equal(g.extent, want_ext)
            assert float(g.area) == want_area
            assert g.method == "threshold"


def test_threshold_size_of_a_box_and_1d_3d():
    box = box_map((20, 30), (5, 7), (12, 20))
    s = JIT_THRESH(box)
    np.testing.assert_array_equal(s.extent, [7, 13])
    assert float(s.area) == 7 * 13
    one = np.zeros(15)
    one[3:9] = 1
    np.testing.assert_array_equal(M.threshold_size(one).extent, [6])
    cube = np.zeros((6, 7, 8))
    cube[1:3, 2:6, 0:8] = 1
    s3 = M.threshold_size(cube)
    np.testing.assert_array_equal(s3.extent, [2, 4, 8])
    assert float(s3.area) == 2 * 4 * 8


def test_threshold_reading_of_a_gaussian_is_about_five_sigma():
    sigma = 6.0
    m = gaussian_map((121, 121), (60, 60), (sigma, sigma))
    s = M.threshold_size(m, reference="centre")
    half = math.sqrt(2 * math.log(1 / M.PAPER_FRACTION)) * sigma  # 2.49 sigma
    np.testing.assert_array_equal(s.extent, [2 * math.floor(half) + 1] * 2)


def test_gaussian_size_and_areas():
    m = gaussian_map((61, 81), (30, 40), (3.0, 5.0))
    box = JIT_SIZE(m)
    assert box.method == "gaussian"
    np.testing.assert_allclose(box.extent, [12.0, 20.0], rtol=1e-4)
    np.testing.assert_allclose(box.area, 240.0, rtol=1e-4)
    ell = JIT_SIZE(m, area="ellipse")
    np.testing.assert_allclose(ell.area, math.pi * 6.0 * 10.0, rtol=1e-4)
    thr = JIT_SIZE(m, method="threshold")
    assert thr.method == "threshold"
    one = M.gaussian_size(gaussian_map((81,), (40,), (4.0,)), area="ellipse")
    np.testing.assert_allclose(one.area, 16.0, rtol=1e-4)  # 1-D "ellipse" = the extent
    three = M.gaussian_size(gaussian_map((31, 31, 31), (15,) * 3, (2.0,) * 3), area="ellipse")
    np.testing.assert_allclose(three.area, 4 / 3 * math.pi * 4.0**3, rtol=1e-4)


def test_size_ratio():
    m = gaussian_map((61, 61), (30, 30), (3.0, 4.0))
    size = M.gaussian_size(m)
    r = JIT_RATIO(size, jnp.array([24.0, 40.0]))
    np.testing.assert_allclose(r.axis, [0.5, 0.4], rtol=1e-4)
    np.testing.assert_allclose(r.area, 12 * 16 / (24 * 40), rtol=1e-4)
    scalar = M.erf_trf_ratio([6.0, 12.0], 24)
    np.testing.assert_allclose(scalar.axis, [0.25, 0.5])
    np.testing.assert_allclose(scalar.area, 0.125)
    class FakeTRF:  # rfjax.trf.TRF's interface: a per-axis tuple ``size``
        size = (24, 40)

    np.testing.assert_allclose(M.erf_trf_ratio(size, FakeTRF()).axis, [0.5, 0.4], rtol=1e-4)
    thr = M.threshold_size(box_map((10, 10), (2, 2), (5, 6)))
    np.testing.assert_allclose(M.erf_trf_ratio(thr, (6, 8)).area, 12 / 48)


# ------------------------------------------------------------------------------ RepLKNet


def replknet_reference(m, thresholds, log=True):
    """Independent NumPy transcription of RepLKNet erf/analyze_erf.py (get_rectangle)."""
    data = np.log10(m + 1) if log else m.copy()
    data = data / np.max(data)
    h, w = data.shape
    total = np.sum(data)
    out = []
    for t in thresholds:
        found = None
        for i in range(1, h // 2):
            window = data[h // 2 - i : h // 2 + 1 + i, w // 2 - i : w // 2 + 1 + i]
            if np.sum(window) / total > t:
                found = (i * 2 + 1, (i * 2 + 1) / h * (i * 2 + 1) / w)
                break
        out.append(found)
    return out


@pytest.mark.parametrize(
    "shape,log",
    [((64, 64), True), ((31, 31), False), ((40, 52), True), ((40, 52), False), ((9, 9), True),
     ((3, 5), True)],
)
def test_high_contribution_area_ratio_matches_replknet(x64, shape, log):
    rng = np.random.default_rng(shape[0] + shape[1])
    h, w = shape
    m = 50.0 * gaussian_map(shape, (h / 2 - 1.5, w / 2 + 2.0), (h / 8, w / 6))
    m += rng.random(shape)
    ts = M.REPLKNET_THRESHOLDS
    want = replknet_reference(m, ts, log)
    for side, ratio in (
        M.high_contribution_area_ratio(m, ts, log=log),
        JIT_HCAR(m, thresholds=ts, log=log),
    ):
        for k, found in enumerate(want):
            if found is None:
                assert int(side[k]) == 0 and np.isnan(ratio[k])
            else:
                assert int(side[k]) == found[0]
                np.testing.assert_allclose(ratio[k], found[1], rtol=1e-12)


def test_high_contribution_not_found_and_log_changes_result():
    # uniform map: even the largest tested square (side h - 1) holds less than 99% of it
    m = np.ones((10, 10))
    side, ratio = M.high_contribution_area_ratio(m)
    assert replknet_reference(m, (0.99,)) == [None]
    assert int(side[-1]) == 0 and np.isnan(ratio[-1])
    assert int(side[0]) == 5  # 25 / 100 > 0.2 at i = 2 (i = 1 gives 9 / 100)
    # the log is not scale-invariant: scaling the map changes the ratio
    g = gaussian_map((41, 41), (20, 20), (4, 4))
    s1, _ = M.high_contribution_area_ratio(g, (0.5,))
    s2, _ = M.high_contribution_area_ratio(1000 * g, (0.5,))
    s3, _ = M.high_contribution_area_ratio(g, (0.5,), log=False)
    s4, _ = M.high_contribution_area_ratio(1000 * g, (0.5,), log=False)
    assert int(s1[0]) != int(s2[0])
    assert int(s3[0]) == int(s4[0])


# ------------------------------------------------------------------------------ radial


def numpy_radial(m, centre, R):
    pts = np.indices(m.shape).astype(np.float64)
    d = np.sqrt(sum((p - c) ** 2 for p, c in zip(pts, centre, strict=True)))
    return np.array([m[d <= r].sum() for r in range(R + 1)]) / m.sum()


@pytest.mark.parametrize(
    "shape,centre,oracle_centre",
    [
        ((33, 41), "centre", (16, 20)),
        ((33, 41), (5, 30), (5, 30)),
        ((33, 41), (5.5, 30.25), (5.5, 30.25)),
        ((25,), "centre", (12,)),
        ((9, 10, 11), (2, 3, 4), (2, 3, 4)),
    ],
)
def test_radial_profile_matches_numpy(shape, centre, oracle_centre):
    rng = np.random.default_rng(3)
    m = rng.random(shape)
    radii, frac = JIT_RADIAL(m, centre=centre)
    R = int(radii[-1])
    assert np.array_equal(radii, np.arange(R + 1))
    np.testing.assert_allclose(frac, numpy_radial(m, oracle_centre, R), rtol=1e-5)
    np.testing.assert_allclose(frac[-1], 1.0, rtol=1e-6)
    assert np.all(np.diff(np.asarray(frac)) >= -1e-7)
    r2, f2 = M.radial_profile(m, centre=centre, max_radius=3)
    np.testing.assert_allclose(f2, numpy_radial(m, oracle_centre, 3), rtol=1e-5)


def test_radial_profile_data_dependent_centres():
    m = gaussian_map((30, 40), (8.0, 29.0), (2.0, 3.0))
    _, fmax = JIT_RADIAL(m, centre="max")
    np.testing.assert_allclose(fmax, numpy_radial(m, (8, 29), len(fmax) - 1), rtol=1e-5)
    _, fmean = JIT_RADIAL(m, centre="mean", max_radius=10)
    com = ndimage.center_of_mass(m)
    np.testing.assert_allclose(fmean, numpy_radial(m, com, 10), rtol=1e-4, atol=1e-6)
    # for an isotropic 2-D Gaussian, mass within r is 1 - exp(-r^2 / (2 s^2))
    g = gaussian_map((81, 81), (40, 40), (5.0, 5.0))
    _, f = M.radial_profile(g, max_radius=20)
    np.testing.assert_allclose(f[10], 1 - math.exp(-100 / 50), atol=0.02)


def test_radial_profile_exact_integer_distances():
    # a pixel at distance exactly r (3-4-5 triangle) is within r, not r - 1
    m = np.zeros((11, 11))
    m[5, 5] = 1
    m[8, 9] = 1  # distance 5 from (5, 5)
    _, f = M.radial_profile(m, max_radius=6)
    np.testing.assert_array_equal(f, [0.5, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0])


# ------------------------------------------------------------------------------ bad input


ALL_FUNCS = [
    M.fit_gaussian,
    M.gaussian_size,
    M.threshold_size,
    M.erf_size,
    M.high_contribution_area_ratio,
    M.radial_profile,
    M.summary,
]


@pytest.mark.parametrize("fn", ALL_FUNCS)
def test_all_zero_map_raises_eagerly(fn):
    with pytest.raises(ValueError, match="all zero"):
        fn(np.zeros((8, 8)))


@pytest.mark.parametrize("fn", ALL_FUNCS)
def test_negative_and_nonfinite_maps_raise(fn):
    m = np.ones((8, 8))
    m[2, 2] = -1
    with pytest.raises(ValueError, match="negative"):
        fn(m)
    m[2, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fn(m)


def test_invalid_maps_give_nan_under_jit():
    zero = jnp.zeros((8, 8))
    neg = jnp.ones((8, 8)).at[1, 1].set(-1.0)
    for m in (zero, neg):
        fit = JIT_FIT(m)
        assert np.all(np.isnan(fit.sigma)) and np.isnan(fit.r2)
        assert np.all(np.isnan(JIT_SIZE(m).extent))
        assert np.all(np.isnan(JIT_SIZE(m, method="threshold").extent))
        side, ratio = JIT_HCAR(m, thresholds=(0.2,), log=True)
        assert int(side[0]) == 0 and np.isnan(ratio[0])
        assert np.all(np.isnan(JIT_RADIAL(m, centre="centre")[1]))


@pytest.mark.parametrize("fn", ALL_FUNCS)
def test_bad_shapes(fn):
    with pytest.raises(ValueError, match="spatial axes"):
        fn(np.ones((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="spatial axes"):
        fn(np.float32(1.0))
    with pytest.raises(ValueError, match="empty"):
        fn(np.ones((0, 4)))
    with pytest.raises(TypeError, match="dtype"):
        fn(np.ones((4, 4), bool))
    with pytest.raises(TypeError, match="must be an array"):
        fn("map")


def test_argument_errors():
    m = gaussian_map((11, 11), (5, 5), (2, 2))
    with pytest.raises(ValueError, match="spatial axes"):
        M.high_contribution_area_ratio(np.ones(16))
    with pytest.raises(ValueError, match="thresholds"):
        M.high_contribution_area_ratio(m, (1.5,))
    with pytest.raises(ValueError, match="reference"):
        M.threshold_size(m, reference="middle")
    with pytest.raises(ValueError, match="outside"):
        M.threshold_size(m, reference=(5, 11))
    with pytest.raises(ValueError, match="tuple of 2"):
        M.threshold_size(m, reference=(5,))
    with pytest.raises(ValueError, match="int index"):
        M.threshold_size(m, reference=(5.5, 5))
    with pytest.raises(ValueError, match="fraction"):
        M.threshold_size(m, fraction=1.0)
    with pytest.raises(ValueError, match="method"):
        M.erf_size(m, method="area")
    with pytest.raises(ValueError, match="area"):
        M.erf_size(m, area="disc")
    with pytest.raises(ValueError, match="gaussian"):
        M.erf_size(m, method="threshold", area="ellipse")
    with pytest.raises(ValueError, match="centre"):
        M.radial_profile(m, centre="middle")
    with pytest.raises(ValueError, match="max_radius"):
        M.radial_profile(m, max_radius=-1)
    with pytest.raises(ValueError, match="axes"):
        M.erf_trf_ratio(M.gaussian_size(m), (3, 3, 3))
    with pytest.raises(ValueError, match="positive"):
        M.erf_trf_ratio(M.gaussian_size(m), (3, 0))
    with pytest.raises(ValueError, match="1-D"):
        M.erf_trf_ratio(np.ones((2, 2)), 3)


def test_an_erf_like_result_is_read_through_its_map():
    class FakeERF:  # rfjax.erf's result: an array attribute ``map``
        map = jnp.asarray(gaussian_map((31, 31), (15, 15), (3, 3)))

    np.testing.assert_allclose(M.erf_size(FakeERF()).extent, [12.0, 12.0], rtol=1e-4)
    np.testing.assert_allclose(JIT_FIT(FakeERF.map).sigma, M.fit_gaussian(FakeERF()).sigma)


def test_int_maps_are_accepted():
    m = box_map((9, 9), (3, 3), (6, 6)).astype(np.int32)
    np.testing.assert_allclose(M.fit_gaussian(m).sigma, [math.sqrt(8 / 12)] * 2, rtol=1e-6)


# ------------------------------------------------------------------------------ normalisation


def test_normalize_map_eager_and_under_jit():
    m = gaussian_map((9, 11), (4, 5), (2.0, 3.0)) * 7.0
    got = M.normalize_map(m)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_allclose(got, m / m.max(), rtol=1e-15)
    assert got.max() == 1.0
    signed = np.array([[-4.0, 2.0], [1.0, 0.0]])  # the largest magnitude becomes +-1
    np.testing.assert_array_equal(M.normalize_map(signed), signed / 4.0)
    np.testing.assert_array_equal(M.normalize_map(jnp.asarray(m, jnp.float32)),
                                  np.asarray(jnp.asarray(m, jnp.float32), np.float64)
                                  / np.float64(np.float32(m.max())))
    np.testing.assert_array_equal(M.normalize_map([[0, 2], [1, 4]]), [[0, 0.5], [0.25, 1]])
    for same in (np.zeros((3, 3)), np.zeros((0, 4)), np.array([[1.0, np.nan]])):
        np.testing.assert_array_equal(M.normalize_map(same), same)  # unchanged, no warning
    jitted = jax.jit(M.normalize_map)
    m32 = jnp.asarray(m, jnp.float32)
    out = jitted(m32)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, m32 / jnp.max(m32))
    np.testing.assert_array_equal(jitted(jnp.zeros((2, 2))), np.zeros((2, 2)))
    assert jitted(jnp.arange(4)).dtype == jnp.result_type(float)


# ------------------------------------------------------------------------------ summary


def _check_summary_against_the_metrics(m, trf):
    s = M.summary(m, trf)
    g, th, fit = M.erf_size(m), M.erf_size(m, "threshold"), M.fit_gaussian(m)
    np.testing.assert_allclose(s["size_gaussian"]["extent"], g.extent, rtol=1e-6)
    np.testing.assert_allclose(s["size_gaussian"]["area"], g.area, rtol=1e-6)
    np.testing.assert_allclose(s["size_threshold"]["extent"], th.extent)
    np.testing.assert_allclose(s["size_threshold"]["area"], th.area)
    for k in ("mean", "sigma", "r2", "rel_l2"):
        np.testing.assert_allclose(s["gaussian_fit"][k], getattr(fit, k), rtol=1e-6)
    for key, size in (("erf_trf_ratio_gaussian", g), ("erf_trf_ratio_threshold", th)):
        r = M.erf_trf_ratio(size, trf)
        np.testing.assert_allclose(s[key]["axis"], r.axis, rtol=1e-6)
        np.testing.assert_allclose(s[key]["area"], r.area, rtol=1e-6)
    radii, frac = M.radial_profile(m, centre="max")
    for p in (0.5, 0.9):  # the smallest radius enclosing the fraction p of the mass
        r = s["radius_mass"][f"{int(p * 100)}%"]
        assert frac[r] >= p and (r == 0 or frac[r - 1] < p) and radii[r] == r
    return s


def test_summary_matches_the_individual_metrics_2d():
    m = gaussian_map((31, 35), (15.2, 16.8), (3.0, 4.5))
    s = _check_summary_against_the_metrics(m, (20, 24))
    assert list(s) == ["size_gaussian", "size_threshold", "gaussian_fit", "trf_size",
                       "erf_trf_ratio_gaussian", "erf_trf_ratio_threshold", "area_ratio",
                       "radius_mass"]
    assert s["trf_size"] == [20, 24] and all(type(v) is int for v in s["trf_size"])
    side, ratio = M.high_contribution_area_ratio(m)
    assert s["area_ratio"]["thresholds"] == list(M.REPLKNET_THRESHOLDS)
    assert s["area_ratio"]["side"] == np.asarray(side).tolist()
    got = [np.nan if r is None else r for r in s["area_ratio"]["ratio"]]
    np.testing.assert_allclose(got, ratio, rtol=1e-6)
    assert json.loads(json.dumps(s)) == s  # plain Python data
    assert isinstance(s["size_gaussian"]["area"], float)
    assert all(type(v) is float for v in s["gaussian_fit"]["sigma"])


def test_summary_1d_3d_erf_and_trf_objects_and_no_trf():
    one = _check_summary_against_the_metrics(gaussian_map((41,), (20,), (3.0,)), 15)
    assert one["trf_size"] == [15] and "area_ratio" not in one
    cube = gaussian_map((15, 17, 19), (7, 8, 9), (2.0, 2.5, 3.0))
    three = _check_summary_against_the_metrics(cube, (9, 9.5, 11))
    assert three["trf_size"] == [9, 9.5, 11] and "area_ratio" not in three

    class FakeERF:  # rfjax.erf's and rfjax.trf's results, duck-typed
        map = jnp.asarray(gaussian_map((21, 21), (10, 10), (2.0, 2.0)))

    class FakeTRF:
        size = (9, 11)

    s = M.summary(FakeERF(), FakeTRF())
    assert s == M.summary(FakeERF.map, (9, 11))
    bare = M.summary(FakeERF.map)
    assert "trf_size" not in bare and "erf_trf_ratio_gaussian" not in bare
    assert {k: v for k, v in s.items() if k in bare} == bare
    flat = M.summary(np.ones((9, 9)))  # no tested square holds 99% of a flat map's mass
    side, ratio = M.high_contribution_area_ratio(np.ones((9, 9)))
    assert np.isnan(ratio[-1]) and flat["area_ratio"]["ratio"][-1] is None
    assert flat["area_ratio"]["side"] == np.asarray(side).tolist() and side[-1] == 0
    assert math.isnan(flat["gaussian_fit"]["r2"])  # undefined for a constant map


def test_summary_errors():
    m = gaussian_map((11, 11), (5, 5), (2, 2))
    with pytest.raises(ValueError, match="axes"):
        M.summary(m, (3, 3, 3))
    with pytest.raises(ValueError, match="positive"):
        M.summary(m, (3, 0))
    with pytest.raises(TypeError, match="eagerly"):
        jax.jit(M.summary)(jnp.asarray(m))
