"""Metrics of an effective-receptive-field (ERF) map: size, Gaussian fit, contribution ratios.

Every function here is a pure function of a map ``m``: a real array of shape ``(H, W)``
(1-D ``(L,)`` and 3-D ``(D, H, W)`` maps are accepted wherever the definition is natural),
typically ``rfjax.erf(...).map`` (the ``rfjax.erf`` result itself is accepted too: any object
with an array attribute ``map`` is read through it). Coordinates are array indices (pixels,
row first). All functions but :func:`summary` (every metric at once, as Python numbers) can
be called under ``jax.jit``; arguments that change the output shape or the code path
(``method``, ``reference``, ``thresholds``, ``max_radius``...) are static and listed as
``static_argnames`` in each function's docstring. Eager calls run a jitted core too (compiled
once per shape and static configuration).

Validity. The maps are read as nonnegative weights (``reduce="abs"``, ``"relu"`` or
``"square"`` maps; take ``abs`` of a signed ``"grad"`` map first). A map with a negative or
non-finite entry, or whose entries are all zero, has no size: called eagerly (on a concrete
array) every metric raises a ``ValueError`` naming the problem (:func:`normalize_map`, a
plain rescaling, checks nothing); under ``jax.jit`` the values cannot be inspected, so the
float outputs are NaN instead (never a silent number). Shape and dtype errors raise in both
cases.

Which size the figures use. The paper (Luo et al., NIPS 2016) sizes the ERF by the pixels
whose value exceeds ``1 - 95.45%`` of the centre pixel's value, a number chosen because 95.45%
is the mass of a Gaussian within two standard deviations; it can be read literally (that
threshold) or as its intent, two standard deviations of the Gaussian the ERF approximates.
``erf_size`` defaults to the Gaussian reading, ``4 * sigma`` per axis
(2 sigma either side), because it is a smooth function of the whole map: it does not jump by
whole pixels when one pixel crosses a threshold, it does not depend on the value of a single
(noisy) reference pixel, it is well defined for maps averaged over few images, and its growth
with depth is exactly the ``sqrt(n)`` law of ``rfjax.theory``. The literal threshold reading
(``method="threshold"``) is kept for comparison with the paper's text; on a sampled Gaussian the
two agree only roughly: for a Gaussian, ``value > 0.0455 * peak`` holds within
``sqrt(2 ln(1/0.0455)) = 2.49`` sigma of the centre, so the threshold extent is about
``5 * sigma``, not ``4 * sigma``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

__all__ = [
    "GaussianFit",
    "Size",
    "SizeRatio",
    "PAPER_FRACTION",
    "REPLKNET_THRESHOLDS",
    "fit_gaussian",
    "gaussian_size",
    "threshold_size",
    "erf_size",
    "erf_trf_ratio",
    "high_contribution_area_ratio",
    "radial_profile",
    "normalize_map",
    "summary",
]

#: The paper's literal threshold: a pixel is in the ERF when its value exceeds this fraction of
#: the centre's value (1 - 95.45%; 95.45% is the Gaussian mass within two standard deviations).
PAPER_FRACTION = 1.0 - 0.9545

#: The thresholds RepLKNet's ``erf/analyze_erf.py`` reports.
REPLKNET_THRESHOLDS = (0.2, 0.3, 0.5, 0.99)


# --------------------------------------------------------------------------------------------
# Result types (frozen dataclasses registered as pytrees, so they cross jax.jit boundaries)
# --------------------------------------------------------------------------------------------


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["mean", "sigma", "cov", "amplitude", "r2", "rel_l2"],
    meta_fields=["refined"],
)
@dataclasses.dataclass(frozen=True)
class GaussianFit:
    """An axis-aligned Gaussian fitted to a map of ``ndim`` spatial axes.

    Attributes:
      mean: ``(ndim,)`` float, the centre in index coordinates (row first).
      sigma: ``(ndim,)`` float, the standard deviation along each axis, in pixels.
      cov: ``(ndim, ndim)`` float, the full second-moment matrix of the normalised map (its
        off-diagonal terms show a tilted ERF; the fitted model itself is axis-aligned).
      amplitude: scalar, the peak value of the fitted model.
      r2: scalar, goodness of fit ``1 - sum((m - g)**2) / sum((m - mean(m))**2)`` where ``g``
        is the fitted Gaussian sampled on the map's grid. 1 is a perfect fit; lower means
        "less Gaussian"; a square box gives about 0.7. NaN for a constant map (nothing to
        explain). It depends a little on how much zero background surrounds the ERF (it tends
        to ``1 - rel_l2**2`` as the background grows).
      rel_l2: scalar, ``||m - g||_2 / ||m||_2``, 0 for a perfect fit, about 0.52 for a square
        box. Invariant to the map's scale and to zero padding: prefer it when comparing maps
        of different sizes.
      refined: whether the parameters come from the least-squares refinement.
    """

    mean: Array
    sigma: Array
    cov: Array
    amplitude: Array
    r2: Array
    rel_l2: Array
    refined: bool = False


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["extent", "area"],
    meta_fields=["method"],
)
@dataclasses.dataclass(frozen=True)
class Size:
    """The size of an ERF.

    Attributes:
      extent: ``(ndim,)`` float, the size along each axis in pixels.
      area: scalar float, the area (volume in 3-D, length in 1-D) in pixels.
      method: ``"gaussian"`` (extent = 4 sigma per axis) or ``"threshold"`` (extent = bounding
        extent of the thresholded pixels, area = their count).
    """

    extent: Array
    area: Array
    method: str


@partial(jax.tree_util.register_dataclass, data_fields=["axis", "area"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class SizeRatio:
    """ERF-to-TRF ratio: ``axis`` ``(ndim,)`` per-axis ratio, ``area`` the area ratio."""

    axis: Array
    area: Array


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _is_traced(x: object) -> bool:
    return isinstance(x, jax.core.Tracer)


def _as_map(m: ArrayLike, ndims: Sequence[int] = (1, 2, 3), name: str = "map") -> Array:
    """Validate a map; shape/dtype always, values only when concrete (see module docstring).

    An object with an array attribute ``map`` (an ``rfjax.erf`` result) is read through it."""
    inner = getattr(m, "map", None)
    if not isinstance(m, (jax.Array, np.ndarray)) and isinstance(inner, (jax.Array, np.ndarray)):
        m = inner
    if not isinstance(m, (jax.Array, np.ndarray, np.generic, int, float, list, tuple)):
        raise TypeError(f"{name} must be an array, got {type(m).__name__}")
    arr = jnp.asarray(m)
    if arr.dtype == jnp.bool_ or not (
        jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)
    ):
        raise TypeError(f"{name} must have a real (float or int) dtype, got {arr.dtype}")
    if arr.ndim not in ndims:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, ndims))} spatial axes (no batch or channel "
            f"axis), got shape {arr.shape}"
        )
    if 0 in arr.shape:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    if not _is_traced(arr):
        host = np.asarray(arr)
        if not np.all(np.isfinite(host)):
            raise ValueError(f"{name} has {np.sum(~np.isfinite(host))} non-finite entries")
        if np.any(host < 0):
            raise ValueError(
                f"{name} has negative entries (min {host.min():.3g}); metrics read the map as "
                "nonnegative weights: pass abs(map) for a signed gradient map"
            )
        if not np.any(host > 0):
            raise ValueError(f"{name} is all zero: an all-zero ERF has no size or centre")
    return arr


def _invalid(m: Array) -> Array:
    """Traced counterpart of the value checks of ``_as_map``: a boolean scalar."""
    return ~(jnp.all(jnp.isfinite(m)) & jnp.all(m >= 0) & jnp.any(m > 0))


def _nan_if(bad: Array, x: Array) -> Array:
    return jnp.where(bad, jnp.nan, x)


def _grid(shape: tuple[int, ...], dtype) -> list[Array]:
    """Index coordinates, one broadcastable array per axis."""
    return [
        jnp.arange(n, dtype=dtype).reshape([n if a == i else 1 for a in range(len(shape))])
        for i, n in enumerate(shape)
    ]


def _centre_index(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The map's geometric centre ``n // 2`` per axis (where ``rfjax.erf``'s default unit of a
    stride-1, 'SAME'-padded network sits in the input)."""
    return tuple(n // 2 for n in shape)


def _check_point(point, shape: tuple[int, ...], name: str, integer: bool) -> tuple:
    if not isinstance(point, (tuple, list)) or len(point) != len(shape):
        raise ValueError(
            f"{name} must be a tuple of {len(shape)} indices (one per axis of the map of shape "
            f"{shape}), got {point!r}"
        )
    out = []
    for a, (p, n) in enumerate(zip(point, shape, strict=True)):
        if integer and not isinstance(p, (int, np.integer)):
            raise ValueError(f"{name}[{a}] must be an int index, got {p!r}")
        if not isinstance(p, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name}[{a}] must be a number, got {p!r}")
        if not 0 <= p <= n - 1:
            raise ValueError(f"{name}[{a}] = {p} is outside the map's axis of length {n}")
        out.append(p)
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Gaussian fit
# --------------------------------------------------------------------------------------------


def _moments(m: Array) -> tuple[Array, Array]:
    """Mean ``(ndim,)`` and covariance ``(ndim, ndim)`` of the map normalised to unit mass."""
    p = m / jnp.sum(m)
    xs = _grid(m.shape, m.dtype)
    mean = jnp.stack([jnp.sum(p * x) for x in xs])
    ds = [x - mu for x, mu in zip(xs, mean, strict=True)]
    cov = jnp.stack([jnp.stack([jnp.sum(p * da * db) for db in ds]) for da in ds])
    return mean, cov


def _gaussian_on_grid(shape, mean: Array, sigma: Array, dtype) -> Array:
    """``exp(-sum_a ((x_a - mean_a) / sigma_a)**2 / 2)`` on the index grid (peak 1).

    A zero sigma (all mass on one coordinate) gives the indicator of that coordinate."""
    q = jnp.zeros(shape, dtype)
    for x, mu, s in zip(_grid(shape, dtype), mean, sigma, strict=True):
        d = x - mu
        safe = jnp.where(s > 0, s, 1.0)
        z2 = jnp.where(s > 0, (d / safe) ** 2, jnp.where(d == 0, 0.0, jnp.inf))
        q = q + z2
    return jnp.exp(-0.5 * q)


def _goodness(m: Array, g: Array) -> tuple[Array, Array]:
    resid = jnp.sum((m - g) ** 2)
    spread = jnp.sum((m - jnp.mean(m)) ** 2)
    # a constant map has no spread to explain: R^2 is undefined there (NaN, not -inf)
    r2 = jnp.where(spread > 0, 1.0 - resid / jnp.where(spread > 0, spread, 1.0), jnp.nan)
    rel_l2 = jnp.sqrt(resid) / jnp.sqrt(jnp.sum(m**2))
    return r2, rel_l2


@jax.jit
def _fit_moments(m: Array) -> GaussianFit:
    bad = _invalid(m)
    mean, cov = _moments(m)
    sigma = jnp.sqrt(jnp.maximum(jnp.diagonal(cov), 0.0))
    shape_ = _gaussian_on_grid(m.shape, mean, sigma, m.dtype)
    # Mass-matched: the model carries the map's total mass on the grid.
    scale = jnp.sum(m) / jnp.sum(shape_)
    g = scale * shape_
    r2, rel_l2 = _goodness(m, g)
    return GaussianFit(
        mean=_nan_if(bad, mean),
        sigma=_nan_if(bad, sigma),
        cov=_nan_if(bad, cov),
        amplitude=_nan_if(bad, scale),
        r2=_nan_if(bad, r2),
        rel_l2=_nan_if(bad, rel_l2),
        refined=False,
    )


def fit_gaussian(m: ArrayLike, *, refine: bool = False) -> GaussianFit:
    """Fit an axis-aligned Gaussian to a nonnegative map.

    Moment fit (default; jit-able, ``static_argnames=("refine",)``): the map is normalised to
    unit mass and read as a distribution over pixel indices; ``mean`` is its first moment and
    ``sigma[a]`` the square root of its variance along axis ``a``. The fitted model ``g`` is the
    Gaussian with that mean and sigma sampled on the grid and scaled to the map's total mass.
    For a sampled Gaussian with ``sigma >= 1`` pixel whose map extends at least 5 sigma either
    side of the centre, the moments are exact to float precision (the discretisation error is
    about ``exp(-2 pi^2 sigma^2)``); a Gaussian cut off by the map's border has its sigma
    underestimated (use ``refine=True``).

    Least-squares refinement (``refine=True``; host only, raises under ``jax.jit``): starting
    from the moments, ``scipy.optimize.least_squares`` minimises ``sum((A * G(x) - m)**2)``
    over the amplitude ``A``, centre and per-axis sigma; ``g = A * G``. This recovers the
    sigma of a truncated or noisy Gaussian; ``cov`` stays the moment covariance.

    Goodness of fit, for either model: ``r2 = 1 - sum((m - g)**2) / sum((m - mean(m))**2)``
    and ``rel_l2 = ||m - g|| / ||m||``. The comparison "ReLU makes the ERF less Gaussian" is a
    lower ``r2`` (higher ``rel_l2``) of the ReLU network's map than of the linear network's.

    Args:
      m: ``(H, W)`` (or ``(L,)``, ``(D, H, W)``) nonnegative real map.
      refine: refine the moment fit by least squares (host only).

    Returns:
      A ``GaussianFit``; all fields NaN under ``jax.jit`` for an invalid map.

    Raises:
      ValueError: bad shape, negative / non-finite / all-zero map (eager), or
        ``refine=True`` under a trace.
    """
    arr = _as_map(m)
    if not refine:
        return _fit_moments(arr)
    if _is_traced(arr):
        raise ValueError("fit_gaussian(refine=True) runs scipy on the host: call it outside "
                         "jax.jit (the moment fit, refine=False, is jit-able)")
    return _refine(np.asarray(arr, dtype=np.float64), _fit_moments(arr))


def _refine(m: np.ndarray, init: GaussianFit) -> GaussianFit:
    from scipy.optimize import least_squares

    ndim = m.ndim
    xs = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in m.shape], indexing="ij")

    def model(theta):
        amp, mu, logs = theta[0], theta[1 : 1 + ndim], theta[1 + ndim :]
        s = np.exp(logs)
        q = sum(((x - c) / si) ** 2 for x, c, si in zip(xs, mu, s, strict=True))
        return amp * np.exp(-0.5 * q)

    sigma0 = np.maximum(np.asarray(init.sigma, np.float64), 0.3)
    theta0 = np.concatenate(
        [[m.max()], np.asarray(init.mean, np.float64), np.log(sigma0)]
    )
    res = least_squares(lambda th: (model(th) - m).ravel(), theta0, method="lm", xtol=1e-12,
                        ftol=1e-12, gtol=1e-12, max_nfev=2000)
    theta = res.x
    g = model(theta)
    resid = np.sum((m - g) ** 2)
    spread = np.sum((m - m.mean()) ** 2)
    r2 = 1.0 - resid / spread if spread > 0 else math.nan
    rel_l2 = math.sqrt(resid) / math.sqrt(np.sum(m**2))
    dtype = init.mean.dtype
    return GaussianFit(
        mean=jnp.asarray(theta[1 : 1 + ndim], dtype),
        sigma=jnp.asarray(np.exp(theta[1 + ndim :]), dtype),
        cov=init.cov,
        amplitude=jnp.asarray(theta[0], dtype),
        r2=jnp.asarray(r2, dtype),
        rel_l2=jnp.asarray(rel_l2, dtype),
        refined=True,
    )


# --------------------------------------------------------------------------------------------
# ERF size: both readings of the paper
# --------------------------------------------------------------------------------------------

_UNIT_BALL = {1: 2.0, 2: math.pi, 3: 4.0 * math.pi / 3.0}


def gaussian_size(m: ArrayLike, *, area: str = "box") -> Size:
    """ERF size as two standard deviations either side of the moment-fitted Gaussian.

    ``extent[a] = 4 * sigma[a]`` (``fit_gaussian`` moments). ``area="box"`` (default) is the
    product of the extents, directly comparable with a rectangular TRF (``k_h * k_w``);
    ``area="ellipse"`` is the volume of the 2-sigma ellipse ``V_n * prod(2 * sigma)``
    (``pi * (2 s_h) * (2 s_w)`` in 2-D, which is ``pi / 4`` of the box). Jit-able
    (``static_argnames=("area",)``); NaN for an invalid map under jit.
    """
    if area not in ("box", "ellipse"):
        raise ValueError(f"area must be 'box' or 'ellipse', got {area!r}")
    return _gaussian_size(_as_map(m), area)


@partial(jax.jit, static_argnums=(1,))
def _gaussian_size(arr: Array, area: str) -> Size:
    sigma = _fit_moments(arr).sigma
    extent = 4.0 * sigma
    a = jnp.prod(extent)
    if area == "ellipse":
        a = _UNIT_BALL[arr.ndim] * jnp.prod(2.0 * sigma)
    return Size(extent=extent, area=a, method="gaussian")


def threshold_size(
    m: ArrayLike, *, reference="max", fraction: float = PAPER_FRACTION
) -> Size:
    """ERF size by the paper's literal threshold.

    A pixel belongs to the ERF when ``m[pixel] > fraction * m[reference]`` (default fraction
    ``1 - 0.9545``). All such pixels count, connected or not. ``extent[a]`` is the bounding
    extent of that set along axis ``a`` (``max index - min index + 1``; 0 when the set is
    empty) and ``area`` its pixel count.

    Args:
      m: nonnegative map.
      reference: the "centre pixel" whose value sets the threshold: ``"max"`` (default, the
        map's maximum; it equals the unit's location for the centred maps of a
        translation-equivariant net, and needs no location), ``"centre"`` (the map's geometric
        centre ``n // 2`` per axis, the unit's input location for a stride-1 'SAME' net with
        the default centre unit), or a tuple of ints (the unit's input location).
      fraction: the threshold fraction, in ``[0, 1)``.

    Jit-able with ``static_argnames=("reference", "fraction")``.
    """
    if not (isinstance(fraction, (int, float)) and 0.0 <= fraction < 1.0):
        raise ValueError(f"fraction must be a number in [0, 1), got {fraction!r}")
    arr = _as_map(m)
    if isinstance(reference, str):
        if reference not in ("max", "centre"):
            raise ValueError(f"reference must be 'max', 'centre' or a tuple of indices, "
                             f"got {reference!r}")
        index = _centre_index(arr.shape)
    else:
        index = _check_point(reference, arr.shape, "reference", integer=True)
    # Index and fraction are traced, so every reference and fraction shares one compilation.
    index = tuple(jnp.asarray(int(i), jnp.int32) for i in index)
    return _threshold_size(arr, reference == "max", index, jnp.asarray(fraction, arr.dtype))


@partial(jax.jit, static_argnums=(1,))
def _threshold_size(arr: Array, use_max: bool, index: tuple, fraction: Array) -> Size:
    bad = _invalid(arr)
    ref = jnp.max(arr) if use_max else arr[index]
    mask = arr > fraction * ref
    extents = []
    for a, n in enumerate(arr.shape):
        other = tuple(b for b in range(arr.ndim) if b != a)
        hit = jnp.any(mask, axis=other) if other else mask
        idx = jnp.arange(n)
        hi = jnp.max(jnp.where(hit, idx, -1))
        lo = jnp.min(jnp.where(hit, idx, n))
        extents.append(jnp.maximum(hi - lo + 1, 0))
    extent = jnp.stack(extents).astype(arr.dtype)
    area = jnp.sum(mask).astype(arr.dtype)
    return Size(extent=_nan_if(bad, extent), area=_nan_if(bad, area), method="threshold")


def erf_size(
    m: ArrayLike,
    method: str = "gaussian",
    *,
    area: str = "box",
    reference="max",
    fraction: float = PAPER_FRACTION,
) -> Size:
    """ERF size, ``method="gaussian"`` (default, used by the figures) or ``"threshold"``.

    ``"gaussian"``: ``gaussian_size(m, area=area)``, 4 sigma per axis. ``"threshold"``:
    ``threshold_size(m, reference=reference, fraction=fraction)``. See the module docstring
    for why the figures use the Gaussian reading. Jit-able with all keyword arguments static.
    """
    if method == "gaussian":
        return gaussian_size(m, area=area)
    if method == "threshold":
        if area != "box":
            raise ValueError("area='ellipse' applies to method='gaussian' only; the threshold "
                             "area is the pixel count")
        return threshold_size(m, reference=reference, fraction=fraction)
    raise ValueError(f"method must be 'gaussian' or 'threshold', got {method!r}")


def erf_trf_ratio(erf: Size | ArrayLike, trf) -> SizeRatio:
    """ERF-to-TRF size ratio, per axis and by area.

    Args:
      erf: a ``Size`` (its ``area`` is used for the area ratio) or per-axis ERF extents
        ``(ndim,)`` (then the area ratio is the product of the per-axis ratios).
      trf: the theoretical receptive field size, one number per axis ``(ndim,)`` or a single
        number for every axis, e.g. ``rfjax.trf(fn, x).size`` or
        ``rfjax.theory.stack_trf_size(...)``; an object with a tuple ``size`` attribute (the
        ``TRF`` result itself) is read through it.

    Returns:
      ``SizeRatio(axis=erf_extent / trf, area=erf_area / prod(trf))``. The paper's "ERF/TRF
      ratio shrinks like 1/sqrt(n)" is the per-axis ratio. Jit-able.
    """
    if isinstance(getattr(trf, "size", None), tuple):  # an rfjax.trf.TRF (duck-typed)
        trf = trf.size
    extent = erf.extent if isinstance(erf, Size) else jnp.asarray(erf)
    if extent.ndim != 1:
        raise ValueError(f"erf extents must be 1-D (one per axis), got shape {extent.shape}")
    t = jnp.asarray(trf, dtype=jnp.result_type(extent.dtype, float))
    if t.ndim == 0:
        t = jnp.broadcast_to(t, extent.shape)
    if t.shape != extent.shape:
        raise ValueError(f"trf has {t.shape[0] if t.ndim == 1 else t.shape} entries but the "
                         f"ERF has {extent.shape[0]} axes")
    if not _is_traced(t) and np.any(np.asarray(t) <= 0):
        raise ValueError(f"trf sizes must be positive, got {np.asarray(t)}")
    axis = extent / t
    area = erf.area / jnp.prod(t) if isinstance(erf, Size) else jnp.prod(axis)
    return SizeRatio(axis=axis, area=area)


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------


def normalize_map(m: ArrayLike) -> np.ndarray | Array:
    """``m / max(|m|)``: the map scaled to peak 1 (the figures' and RepLKNet's normalisation).

    Any shape and sign (a signed map keeps its sign: its largest magnitude becomes 1). An
    all-zero or empty map is returned unchanged (zeros, no division by zero), and so is a map
    with a NaN (its peak is NaN): nothing is checked or raised, unlike the metrics above.

    Called eagerly (NumPy data, a list or a concrete ``jax.Array``) it returns a float64 NumPy
    array; under ``jax.jit`` (a traced map) a jax array of the map's float dtype.
    """
    if _is_traced(m):
        a = jnp.asarray(m)
        if not jnp.issubdtype(a.dtype, jnp.floating):
            a = a.astype(jnp.result_type(float))
        if a.size == 0:
            return a
        peak = jnp.max(jnp.abs(a))
        ok = peak > 0
        return jnp.where(ok, a / jnp.where(ok, peak, 1), a)
    a = np.asarray(m, dtype=np.float64)
    peak = float(np.max(np.abs(a))) if a.size else 0.0
    return a / peak if peak > 0 else a


# --------------------------------------------------------------------------------------------
# RepLKNet's high-contribution area ratio
# --------------------------------------------------------------------------------------------


def high_contribution_area_ratio(
    m: ArrayLike, thresholds: Sequence[float] = REPLKNET_THRESHOLDS, *, log: bool = True
) -> tuple[Array, Array]:
    """RepLKNet's "high-contribution area ratio" (Ding et al., CVPR 2022), reproduced exactly.

    This is ``get_rectangle`` + ``analyze_erf`` of RepLKNet's ``erf/analyze_erf.py``
    (github.com/DingXiaoH/RepLKNet-pytorch): the map (there: the mean over images of the
    per-image sum over channels of ``relu(grad)``, i.e. ``rfjax.erf`` with the RepLKNet
    convention) is transformed as ``data = log10(m + 1)`` then ``data = data / max(data)``;
    with ``h, w = data.shape`` and centre ``(h // 2, w // 2)``, for ``i = 1, 2, ..., h//2 - 1``
    the square ``data[h//2 - i : h//2 + i + 1, w//2 - i : w//2 + i + 1]`` of side ``2 i + 1``
    is tested, and the first whose sum is strictly greater than ``t * sum(data)`` gives
    ``side = 2 i + 1`` and ``ratio = (side / h) * (side / w)``.

    Conventions to know when comparing numbers: the max normalisation does not change the
    ratio (it is scale-free), but ``log10(m + 1)`` does and is not scale-invariant, so the
    result depends on the map's absolute units (mean vs sum over images, input
    normalisation); ``log=False`` skips it (as SLaK's variant of the script does). As in the
    original, ``i = 0`` (the centre pixel alone) and the largest square ``i = h // 2`` are never
    tested; where RepLKNet returns ``None`` (no tested square exceeds ``t``), this returns
    ``side = 0`` and ``ratio = NaN``. Squares are clipped at the map's border, which matches
    the original whenever ``w >= h - 1`` (for narrower maps NumPy's negative start index makes
    the original's slice wrap around; that is a bug not reproduced).

    Args:
      m: ``(h, w)`` nonnegative map.
      thresholds: the mass fractions ``t``; static.
      log: apply ``log10(m + 1)`` (RepLKNet's default).

    Returns:
      ``(side, ratio)``: int32 ``(len(thresholds),)`` side lengths and float area ratios.
      Jit-able with ``static_argnames=("thresholds", "log")``; NaN ratios (side 0) for an
      invalid map under jit.
    """
    arr = _as_map(m, ndims=(2,))
    ts = tuple(float(t) for t in thresholds)
    if not ts or any(not 0.0 <= t < 1.0 for t in ts):
        raise ValueError(f"thresholds must be a non-empty sequence in [0, 1), got {thresholds}")
    return _hcar(arr, ts, bool(log))


@partial(jax.jit, static_argnums=(1, 2))
def _hcar(arr: Array, ts: tuple[float, ...], log: bool) -> tuple[Array, Array]:
    bad = _invalid(arr)
    data = normalize_map(jnp.log10(arr + 1.0) if log else arr)
    h, w = data.shape
    ci, cj = h // 2, w // 2
    # Chebyshev distance from the centre: square i holds the pixels with distance <= i, so its
    # sum is a cumulative sum of ring sums (O(h w), no subtraction of large partial sums).
    rows = jnp.abs(jnp.arange(h) - ci)[:, None]
    cols = jnp.abs(jnp.arange(w) - cj)[None, :]
    ring = jnp.maximum(rows, cols)
    n_rings = max(h - ci, ci + 1, w - cj, cj + 1)
    ring_sums = jax.ops.segment_sum(data.ravel(), ring.ravel(), num_segments=n_rings)
    square_sums = jnp.cumsum(ring_sums)
    total = jnp.sum(data)
    i = np.arange(1, h // 2)  # the radii RepLKNet tests
    sides, ratios = [], []
    for t in ts:
        if i.size == 0:
            sides.append(jnp.int32(0))
            ratios.append(jnp.asarray(jnp.nan, data.dtype))
            continue
        hit = square_sums[i] / total > t
        found = jnp.any(hit) & ~bad
        side = jnp.where(found, 2 * jnp.asarray(i)[jnp.argmax(hit)] + 1, 0).astype(jnp.int32)
        fside = side.astype(data.dtype)
        ratio = jnp.where(found, (fside / h) * (fside / w), jnp.nan)
        sides.append(side)
        ratios.append(ratio)
    return jnp.stack(sides), jnp.stack(ratios)


# --------------------------------------------------------------------------------------------
# Radial mass profile
# --------------------------------------------------------------------------------------------


def radial_profile(
    m: ArrayLike, *, centre="centre", max_radius: int | None = None
) -> tuple[Array, Array]:
    """Fraction of the map's total mass within Euclidean distance ``r`` of a centre.

    ``fraction[r] = sum(m[x] for |x - centre| <= r) / sum(m)`` for integer ``r = 0..R``.

    Args:
      m: nonnegative map (1-D, 2-D or 3-D).
      centre: ``"centre"`` (default, the geometric centre ``n // 2`` per axis), ``"max"`` (the
        index of the maximum), ``"mean"`` (the map's centroid, fractional), or a tuple of
        numbers (index coordinates, may be fractional).
      max_radius: ``R``; default: the largest distance from the centre to a corner of the map,
        rounded up (for ``"max"``/``"mean"``, whose location is data-dependent, the map's
        diagonal), so that ``fraction[R] == 1``.

    Returns:
      ``(radii, fraction)``: int32 ``(R + 1,)`` and float ``(R + 1,)``, nondecreasing.
      Jit-able with ``static_argnames=("centre", "max_radius")``; NaN fractions for an invalid
      map under jit.
    """
    arr = _as_map(m)
    shape = arr.shape
    if isinstance(centre, str):
        if centre not in ("centre", "max", "mean"):
            raise ValueError(f"centre must be 'centre', 'max', 'mean' or a tuple of indices, "
                             f"got {centre!r}")
    else:
        centre = _check_point(centre, shape, "centre", integer=False)
        centre = tuple(int(v) if isinstance(v, (int, np.integer)) else float(v) for v in centre)
    if max_radius is None:
        if centre in ("max", "mean"):
            far = [n - 1 for n in shape]
        else:
            c = _centre_index(shape) if centre == "centre" else centre
            far = [max(v, n - 1 - v) for v, n in zip(c, shape, strict=True)]
        max_radius = math.ceil(math.sqrt(sum(float(f) ** 2 for f in far)) - 1e-12)
    if not isinstance(max_radius, (int, np.integer)) or max_radius < 0:
        raise ValueError(f"max_radius must be an int >= 0, got {max_radius!r}")
    return _radial_profile(arr, centre, int(max_radius))


@partial(jax.jit, static_argnums=(1, 2))
def _radial_profile(arr: Array, centre, R: int) -> tuple[Array, Array]:
    bad = _invalid(arr)
    shape = arr.shape
    if centre == "centre":
        c, integer_centre = _centre_index(shape), True
    elif centre == "max":
        c, integer_centre = jnp.unravel_index(jnp.argmax(arr), shape), True
    elif centre == "mean":
        c, integer_centre = tuple(_moments(arr)[0]), False
    else:
        c, integer_centre = centre, all(isinstance(v, int) for v in centre)
    if integer_centre:
        # Exact integer arithmetic: bin = ceil(sqrt(d2)) with a correction for float sqrt.
        grid = _grid(shape, jnp.int32)
        d2 = sum((x - jnp.asarray(v, jnp.int32)) ** 2 for x, v in zip(grid, c, strict=True))
        s = jnp.floor(jnp.sqrt(d2.astype(jnp.float32))).astype(jnp.int32)
        s = s - (s * s > d2)
        s = s + ((s + 1) * (s + 1) <= d2)  # now s = floor(sqrt(d2)) exactly
        bins = s + (s * s < d2)
    else:
        d2 = sum((x - v) ** 2 for x, v in zip(_grid(shape, arr.dtype), c, strict=True))
        bins = jnp.ceil(jnp.sqrt(d2)).astype(jnp.int32)
    bins = jnp.minimum(bins, R + 1)  # everything beyond R lands in one overflow bin
    sums = jax.ops.segment_sum(arr.ravel(), bins.ravel(), num_segments=R + 2)
    fraction = jnp.cumsum(sums[: R + 1]) / jnp.sum(arr)
    return jnp.arange(R + 1, dtype=jnp.int32), _nan_if(bad, fraction)


# --------------------------------------------------------------------------------------------
# Every metric at once
# --------------------------------------------------------------------------------------------


def _py(x: Any) -> list[float] | float:
    """A float array as Python floats: a list (``ndim >= 1``) or a float (a scalar)."""
    a = np.asarray(x, dtype=np.float64)
    return a.tolist() if a.ndim else float(a)


def summary(m: ArrayLike, trf: Any = None) -> dict[str, Any]:
    """Every metric of an ERF map as plain Python data (dicts, lists, floats, ints), ready for
    ``json.dump``; what ``rfjax erf`` prints and writes.

    Args:
      m: a nonnegative map (1-D, 2-D or 3-D; take ``abs`` of a signed ``"grad"`` map), or an
        ``rfjax.erf`` result (read through its ``map``).
      trf: the TRF size, one number per axis or one for every axis, or the ``rfjax.trf``
        result itself (as for :func:`erf_trf_ratio`); ``None`` leaves out the TRF entries.

    Returns:
      A dict with these keys, in this order (``extent``/``sigma``/``mean``/``axis`` lists
      have one entry per axis):

      * ``size_gaussian``, ``size_threshold``: ``{"extent", "area"}`` of
        ``erf_size(m, "gaussian")`` and ``erf_size(m, "threshold")``;
      * ``gaussian_fit``: ``{"mean", "sigma", "r2", "rel_l2"}`` of :func:`fit_gaussian`
        (``r2`` is NaN for a constant map, where it is undefined);
      * with ``trf``: ``trf_size`` (the TRF size per axis) and ``erf_trf_ratio_gaussian``,
        ``erf_trf_ratio_threshold``: ``{"axis", "area"}`` of :func:`erf_trf_ratio` for each
        size reading;
      * 2-D maps only: ``area_ratio``: ``{"thresholds", "side", "ratio"}`` of
        :func:`high_contribution_area_ratio` at ``REPLKNET_THRESHOLDS`` (a ratio that is not
        found is ``None``);
      * ``radius_mass``: ``{"50%": r, "90%": r}``, the smallest integer radius around the
        map's maximum that encloses that fraction of the mass (:func:`radial_profile` with
        ``centre="max"``).

    Raises:
      ValueError: an invalid map (negative or non-finite entries, all zero; see the module
        docstring), a bad shape, or a ``trf`` that does not match the map's axes.
      TypeError: a map that is not a real array, or a traced one: ``summary`` returns Python
        numbers, so it runs eagerly only (jit the individual metrics instead).
    """
    if _is_traced(m) or _is_traced(getattr(m, "map", None)):
        raise TypeError("metrics.summary returns Python numbers: call it eagerly, not under "
                        "jax.jit (the individual metrics are jit-able)")
    arr = _as_map(m)
    g, th = erf_size(arr, "gaussian"), erf_size(arr, "threshold")
    fit = fit_gaussian(arr)
    out: dict[str, Any] = {
        "size_gaussian": {"extent": _py(g.extent), "area": _py(g.area)},
        "size_threshold": {"extent": _py(th.extent), "area": _py(th.area)},
        "gaussian_fit": {"mean": _py(fit.mean), "sigma": _py(fit.sigma), "r2": _py(fit.r2),
                         "rel_l2": _py(fit.rel_l2)},
    }
    if trf is not None:
        if isinstance(getattr(trf, "size", None), tuple):  # an rfjax.trf.TRF (duck-typed)
            trf = trf.size
        rg, rt = erf_trf_ratio(g, trf), erf_trf_ratio(th, trf)  # these check trf
        sizes = np.broadcast_to(np.asarray(trf, dtype=np.float64), (arr.ndim,))
        out["trf_size"] = [int(s) if float(s).is_integer() else float(s) for s in sizes]
        out["erf_trf_ratio_gaussian"] = {"axis": _py(rg.axis), "area": _py(rg.area)}
        out["erf_trf_ratio_threshold"] = {"axis": _py(rt.axis), "area": _py(rt.area)}
    if arr.ndim == 2:
        side, ratio = high_contribution_area_ratio(arr)
        out["area_ratio"] = {"thresholds": list(REPLKNET_THRESHOLDS),
                             "side": [int(s) for s in np.asarray(side)],
                             "ratio": [None if math.isnan(r) else r
                                       for r in np.asarray(ratio, np.float64).tolist()]}
    radii, frac = radial_profile(arr, centre="max")
    radii, frac = np.asarray(radii), np.asarray(frac)
    out["radius_mass"] = {f"{int(p * 100)}%": int(radii[np.argmax(frac >= p)])
                          for p in (0.5, 0.9)}
    return out
