"""Closed forms for the ERF of linear convolution stacks (Luo et al., NIPS 2016, Section 2).

Setting. A stack of ``n`` convolution layers, no nonlinearity, layer ``l`` (1-based) with a
spatial kernel of taps ``k_l`` (an N-D array, one number per tap), stride ``s_l`` and dilation
``d_l``, channels ``C_0`` (input) -> ``C_1`` -> ... -> ``C_n`` (output). The unit is one output
location, its scalar the sum over the ``C_n`` output channels (``rfjax.erf``'s definition),
and it sits far enough from the borders that padding never enters its theoretical receptive
field (TRF). Layers compose as cross-correlations, so the gradient of the unit with respect to
the input pixel at offset ``p`` inside the TRF window is a sum over paths of products of taps,
one per layer, whose offsets add up to ``p``: the offset of layer ``l``'s tap ``a`` in input
pixels is ``a * d_l * J_l``, with the jump ``J_l = s_1 * ... * s_{l-1}`` (``J_1 = 1``). Hence:

* the ERF is the full convolution of the layers' taps, each upsampled by ``d_l * J_l`` (zeros
  inserted between taps), exactly (``linear_stack_erf``); the TRF is its support,
  ``1 + sum_l (k_l - 1) d_l J_l`` per axis (``stack_trf_size``);
* uniform (all-ones) ``k``-tap kernels, stride 1 (the paper's Section 2.1): the n-fold
  convolution of the box, scaled by the number of channel paths (``uniform_erf``);
* random weights (Section 2.2): with every weight independent, zero-mean, of variance
  ``v_l[a]`` for tap ``a`` of layer ``l`` (any distribution, any channel pair), the expectation
  over weight draws of the squared gradient is exactly
  ``E[sum_{c_0} g^2] = C_0 C_1 ... C_n * (v_1 * v_2 * ... * v_n)`` (``*`` the upsampled
  convolution above), because cross terms of distinct paths have zero mean and each path
  contributes ``prod_l v_l[a_l]`` (``expected_squared_gradient``);
* reading a nonnegative taps map as a distribution of offsets, the ERF is the distribution of a
  sum of independent offsets, so means and variances add: per axis
  ``sigma^2 = sum_l (d_l J_l)^2 var_l``, ``var_l`` the variance of layer ``l``'s normalised
  taps (``stack_sigma``). For ``n`` equal layers ``sigma = sqrt(n var)``, e.g.
  ``sqrt(n (k^2 - 1) / 12)`` for a ``k``-box; the central limit theorem makes the ERF Gaussian
  with that sigma, so its size ``4 sigma`` grows like ``sqrt(n)`` while the TRF grows like
  ``n``, and the ERF/TRF ratio shrinks like ``1 / sqrt(n)`` (``depth_scaling``).

These are the exact maps ``rfjax.erf`` must reproduce with ``reduce="grad"`` (uniform and fixed
kernels) and, averaged over weight draws, ``reduce="square"`` (random kernels). The paper's
figures use ``reduce="abs"``: ``E|g|`` has no closed form in general; when many paths
contribute, ``g`` is close to Gaussian and ``E|g| ~ sqrt(2 / pi) sqrt(E[g^2])`` per input
channel, whose sigma is ``sqrt(2)`` times that of ``E[g^2]`` (an approximation, not used by
the functions here).

The jumps and TRF sizes are those of ``rfjax.calculator`` (the one implementation of the
textbook recurrences in rfjax; ``jumps`` and ``stack_trf_size`` are thin wrappers over
``rfjax.calculator.receptive_field``, whose ``CalculatorResult.jumps`` are the ``J_l`` above).

All functions run on the host in NumPy (exact int64 arithmetic for integer taps, float64
otherwise) and return NumPy arrays; they are oracles and predictions, not traced code. Map
index 0 along each axis is the first pixel of the TRF window (row first).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import signal

from rfjax.calculator import LayerSpec, receptive_field

__all__ = [
    "DepthScaling",
    "nfold_convolution",
    "uniform_erf",
    "dilate_taps",
    "jumps",
    "linear_stack_erf",
    "expected_squared_gradient",
    "tap_variance",
    "stack_sigma",
    "uniform_sigma",
    "stack_trf_size",
    "depth_scaling",
]

_INT_LIMIT = 2**62  # keep exact int64 products well inside the range


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------


def _pos_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _taps(taps: ArrayLike, name: str, ndim: int | None = None) -> np.ndarray:
    arr = np.asarray(taps)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(f"{name} must be a real array, got dtype {arr.dtype}")
    if arr.ndim == 0 or 0 in arr.shape:
        raise ValueError(f"{name} must be a non-empty array with spatial axes, got {arr.shape}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} has {arr.ndim} axes, expected {ndim}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite taps")
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    return arr.astype(np.float64)


def _axes(v, ndim: int, where: str) -> tuple[int, ...]:
    """An int (every axis) or a tuple of ``ndim`` ints, as a tuple."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (_pos_int(v, where),) * ndim
    if isinstance(v, (tuple, list)) and len(v) == ndim:
        return tuple(_pos_int(x, where) for x in v)
    raise ValueError(f"{where} must be an int >= 1 or a tuple of {ndim} of them, got {v!r}")


def _per_layer(value, n: int, ndim: int, name: str) -> list[tuple[int, ...]]:
    """``value``: an int (every layer and axis) or a sequence with one entry per layer, each
    an int or a per-axis tuple. Returns ``n`` per-axis tuples."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return [_axes(value, ndim, name)] * n
    if isinstance(value, (tuple, list)) and len(value) == n:
        return [_axes(v, ndim, f"{name}[{i}]") for i, v in enumerate(value)]
    raise ValueError(
        f"{name} must be an int or a sequence with one entry per layer ({n} layers), "
        f"got {value!r}"
    )


def _stack(kernels: Sequence[ArrayLike], name: str) -> list[np.ndarray]:
    if isinstance(kernels, np.ndarray) or not isinstance(kernels, (list, tuple)):
        raise ValueError(f"{name} must be a list or tuple of per-layer tap arrays")
    if len(kernels) == 0:
        raise ValueError(f"{name} is empty: a stack needs at least one layer")
    ks = [_taps(k, f"{name}[{i}]") for i, k in enumerate(kernels)]
    if len({k.ndim for k in ks}) != 1:
        raise ValueError(f"{name}: every layer's taps need the same number of axes, got "
                         f"{[k.ndim for k in ks]}")
    return ks


def _convolve_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype == np.int64 and b.dtype == np.int64:
        bound = int(np.abs(a).sum()) * int(np.abs(b).sum())
        if bound >= _INT_LIMIT:
            raise ValueError(
                "integer ERF entries would overflow int64: pass float taps (float64) or "
                "normalize=True"
            )
    return signal.convolve(a, b, mode="full", method="direct")


# --------------------------------------------------------------------------------------------
# exact maps
# --------------------------------------------------------------------------------------------


def nfold_convolution(taps: ArrayLike, n: int, *, normalize: bool = False) -> np.ndarray:
    """The n-fold full convolution ``taps * taps * ... * taps`` of a 1-D taps array.

    Integer taps give an exact int64 result (a ``ValueError`` if it could overflow); float taps
    give float64. ``normalize=True`` first divides the taps by their sum (float64 result
    summing to 1: the distribution of a sum of ``n`` i.i.d. tap offsets). Returns a 1-D array of
    length ``n (k - 1) + 1``.
    """
    n = _pos_int(n, "n")
    t = _taps(taps, "taps", ndim=1)
    if normalize:
        total = t.sum()
        if total == 0:
            raise ValueError("taps sum to zero: cannot normalise")
        t = t.astype(np.float64) / total
    out = t
    for _ in range(n - 1):
        out = _convolve_exact(out, t)
    return out


def uniform_erf(
    kernel_size: int | Sequence[int],
    depth: int,
    *,
    ndim: int = 2,
    channels: Sequence[int] | None = None,
    normalize: bool = False,
) -> np.ndarray:
    """ERF of ``depth`` stacked all-ones ``k x k`` convolutions, stride 1, no nonlinearity.

    Exact: per axis the n-fold convolution of the ``k``-box (binomial-like integer counts of the
    paths through each input pixel), the N-D map their outer product, times the number of
    channel paths ``C_0 C_1 ... C_n`` when ``channels = (C_0, ..., C_n)`` is given (the map is
    the gradient summed over input channels of the unit summed over output channels; every
    path has weight 1).

    Args:
      kernel_size: ``k`` for every axis, or one per axis.
      depth: ``n >= 1``.
      ndim: number of spatial axes (when ``kernel_size`` is an int).
      channels: ``depth + 1`` channel counts, default all 1.
      normalize: return the float64 map divided by its sum.

    Returns:
      int64 (or float64 when normalised) array of shape ``n (k_a - 1) + 1`` per axis.
    """
    depth = _pos_int(depth, "depth")
    if isinstance(kernel_size, (int, np.integer)) and not isinstance(kernel_size, bool):
        ks = (_pos_int(kernel_size, "kernel_size"),) * _pos_int(ndim, "ndim")
    elif isinstance(kernel_size, (tuple, list)) and kernel_size:
        ks = tuple(_pos_int(k, "kernel_size") for k in kernel_size)
    else:
        raise ValueError(f"kernel_size must be an int or a tuple of ints, got {kernel_size!r}")
    factor = _channel_factor(channels, depth)
    axes = [nfold_convolution(np.ones(k, np.int64), depth, normalize=normalize) for k in ks]
    if not normalize:
        bound = factor * math.prod(int(a.max()) for a in axes)
        if bound >= _INT_LIMIT:
            raise ValueError("the ERF's integer entries would overflow int64: use normalize=True")
    out = axes[0]
    for a in axes[1:]:
        out = np.multiply.outer(out, a)
    return out if normalize else out * factor


def _channel_factor(channels, depth: int, sum_input: bool = True, sum_output: bool = True):
    if channels is None:
        return 1
    if not isinstance(channels, (tuple, list)) or len(channels) != depth + 1:
        raise ValueError(
            f"channels must list depth + 1 = {depth + 1} channel counts (C_0 input, ..., "
            f"C_n output), got {channels!r}"
        )
    cs = [_pos_int(c, f"channels[{i}]") for i, c in enumerate(channels)]
    inner = math.prod(cs[1:-1])
    return inner * (cs[0] if sum_input else 1) * (cs[-1] if sum_output else 1)


def dilate_taps(taps: ArrayLike, dilation: int | Sequence[int]) -> np.ndarray:
    """Insert ``dilation - 1`` zeros between neighbouring taps along each axis.

    A dilated kernel is this array; as an offset distribution its mean and variance are
    ``d`` and ``d^2`` times the undilated ones (``tap_variance``).
    """
    t = _taps(taps, "taps")
    ds = _axes(dilation, t.ndim, "dilation")
    out = np.zeros(tuple((k - 1) * d + 1 for k, d in zip(t.shape, ds, strict=True)), t.dtype)
    out[tuple(slice(None, None, d) for d in ds)] = t
    return out


def jumps(strides: Sequence[int | Sequence[int]], ndim: int = 2) -> list[tuple[int, ...]]:
    """Per-layer jumps ``J_l = s_1 ... s_{l-1}`` (input pixels between neighbouring units of
    layer ``l - 1``), one tuple per axis and layer; ``J_1 = 1``. By
    ``rfjax.calculator.receptive_field`` (``CalculatorResult.jumps``)."""
    if not isinstance(strides, (tuple, list)) or not strides:
        raise ValueError(f"strides must be a non-empty per-layer sequence, got {strides!r}")
    ss = _per_layer(list(strides), len(strides), ndim, "strides")
    return list(receptive_field([LayerSpec(stride=s) for s in ss], ndim=ndim).jumps)


def _upsampled(kernels, strides, dilations) -> list[np.ndarray]:
    ks = _stack(kernels, "kernels")
    n, ndim = len(ks), ks[0].ndim
    ss = _per_layer(strides, n, ndim, "strides")
    ds = _per_layer(dilations, n, ndim, "dilations")
    js = jumps(ss, ndim)
    return [
        dilate_taps(k, tuple(d * j for d, j in zip(dl, jl, strict=True)))
        for k, dl, jl in zip(ks, ds, js, strict=True)
    ]


def linear_stack_erf(
    kernels: Sequence[ArrayLike],
    strides: int | Sequence = 1,
    dilations: int | Sequence = 1,
) -> np.ndarray:
    """Exact gradient map of one output unit of a single-channel linear conv stack.

    ``kernels[l]`` holds layer ``l``'s taps (N-D, cross-correlation orientation, as in
    ``jax.lax.conv_general_dilated``); ``strides`` / ``dilations`` are an int (every layer and
    axis) or a sequence with one entry per layer, each an int or a per-axis tuple. The result
    is the full convolution of the kernels, each upsampled by ``d_l * J_l`` (see the module
    docstring): entry ``p`` is
    ``d unit / d x[window_start + p]`` over the unit's TRF window. Signed taps are allowed
    (this is ``rfjax.erf(..., reduce="grad")``). int64 for integer taps (exact), else float64.
    """
    ups = _upsampled(kernels, strides, dilations)
    out = ups[0]
    for u in ups[1:]:
        out = _convolve_exact(out, u)
    return out


def expected_squared_gradient(
    tap_variances: Sequence[ArrayLike],
    channels: Sequence[int] | None = None,
    strides: int | Sequence = 1,
    dilations: int | Sequence = 1,
    *,
    sum_input_channels: bool = True,
    sum_output_channels: bool = True,
) -> np.ndarray:
    """``E[g^2]`` over random weight draws, for a linear stack with zero-mean weights.

    Assumptions: every weight ``W_l[a, c_in, c_out]`` is independent of all others and has
    mean 0 and variance ``tap_variances[l][a]`` (same for every channel pair; any
    distribution); no nonlinearity (biases then do not affect the gradient); the unit's TRF
    lies inside the input (no padding). Then, exactly,

        E[sum_{c_0} g[c_0, p]^2] = C_0 C_1 ... C_n * (v_1 * ... * v_n)[p]

    with ``*`` the upsampled full convolution of ``linear_stack_erf``; drop ``C_0`` with
    ``sum_input_channels=False`` (one input channel's ``E[g^2]``) and ``C_n`` with
    ``sum_output_channels=False`` (the unit is one output channel). E.g. He init
    ``v = 2 / (k^2 C_{l-1})`` for every tap.

    Args:
      tap_variances: per-layer nonnegative variance maps (N-D, the kernels' spatial shape).
      channels: ``(C_0, ..., C_n)``, default all 1.
      strides, dilations: as in ``linear_stack_erf``.

    Returns:
      float64 map over the TRF window.
    """
    vs = _stack(tap_variances, "tap_variances")
    if any(np.any(v < 0) for v in vs):
        raise ValueError("tap_variances must be nonnegative")
    factor = _channel_factor(channels, len(vs), sum_input_channels, sum_output_channels)
    vs = [v.astype(np.float64) for v in vs]
    return factor * linear_stack_erf(vs, strides, dilations)


# --------------------------------------------------------------------------------------------
# widths and sizes
# --------------------------------------------------------------------------------------------


def tap_variance(taps: ArrayLike) -> np.ndarray:
    """Per-axis variance of the offset distribution ``taps / sum(taps)`` (nonnegative taps).

    A ``k``-box gives ``(k^2 - 1) / 12``. Returns float64 ``(ndim,)``."""
    t = _taps(taps, "taps").astype(np.float64)
    if np.any(t < 0):
        raise ValueError("taps must be nonnegative to be read as a distribution of offsets")
    total = t.sum()
    if total == 0:
        raise ValueError("taps are all zero: no distribution")
    p = t / total
    out = []
    for a in range(t.ndim):
        marg = p.sum(axis=tuple(b for b in range(t.ndim) if b != a))
        x = np.arange(marg.size, dtype=np.float64)
        mu = np.sum(marg * x)
        out.append(np.sum(marg * (x - mu) ** 2))
    return np.array(out)


def stack_sigma(
    kernels: Sequence[ArrayLike],
    strides: int | Sequence = 1,
    dilations: int | Sequence = 1,
) -> np.ndarray:
    """Per-axis standard deviation (pixels) of the ERF of a stack with nonnegative taps.

    ``sigma^2 = sum_l (d_l J_l)^2 var_l`` with ``var_l = tap_variance(kernels[l])``: exact for
    the map of ``linear_stack_erf`` (uniform kernels) or ``expected_squared_gradient`` (pass
    the variance maps), read as a distribution. Float64 ``(ndim,)``.
    """
    ks = _stack(kernels, "kernels")
    n, ndim = len(ks), ks[0].ndim
    ss = _per_layer(strides, n, ndim, "strides")
    ds = _per_layer(dilations, n, ndim, "dilations")
    total = np.zeros(ndim)
    for k, d, j in zip(ks, ds, jumps(ss, ndim), strict=True):
        total += (np.asarray(d, np.float64) * np.asarray(j, np.float64)) ** 2 * tap_variance(k)
    return np.sqrt(total)


def uniform_sigma(kernel_size: int, depth: ArrayLike) -> np.ndarray:
    """``sqrt(n (k^2 - 1) / 12)``: sigma of ``n`` stacked ``k``-box layers (stride 1), for an
    int or an array of depths ``n``. Float64, the shape of ``depth``."""
    k = _pos_int(kernel_size, "kernel_size")
    n = np.asarray(depth)
    if not np.issubdtype(n.dtype, np.integer) or np.any(n < 1):
        raise ValueError(f"depth must be ints >= 1, got {depth!r}")
    return np.sqrt(n.astype(np.float64) * (k * k - 1) / 12.0)


def stack_trf_size(
    kernel_sizes: Sequence[int | Sequence[int]],
    strides: int | Sequence = 1,
    dilations: int | Sequence = 1,
    *,
    ndim: int = 2,
) -> np.ndarray:
    """Per-axis TRF size ``1 + sum_l (k_l - 1) d_l J_l`` of a chain of conv layers (int64
    ``(ndim,)``); the support of ``linear_stack_erf``. ``kernel_sizes``: one int or per-axis
    tuple per layer. By ``rfjax.calculator.receptive_field``."""
    if not isinstance(kernel_sizes, (tuple, list)) or not kernel_sizes:
        raise ValueError(f"kernel_sizes must be a non-empty per-layer sequence, got "
                         f"{kernel_sizes!r}")
    n = len(kernel_sizes)
    ks = _per_layer(list(kernel_sizes), n, ndim, "kernel_sizes")
    ss = _per_layer(strides, n, ndim, "strides")
    ds = _per_layer(dilations, n, ndim, "dilations")
    chain = [LayerSpec(k, s, 0, d) for k, s, d in zip(ks, ss, ds, strict=True)]
    return np.array(receptive_field(chain, ndim=ndim).size, np.int64)


@dataclasses.dataclass(frozen=True)
class DepthScaling:
    """Predicted ERF growth with depth for ``n`` identical stride-1 layers (float64 arrays
    over ``depth``): ``sigma = sqrt(n var)``, ``erf_size = 4 sigma`` (the 2-sigma reading of
    ``rfjax.metrics.erf_size``), ``trf_size = n (k - 1) + 1``, ``ratio = erf_size / trf_size``
    (tends to ``4 sqrt(var) / ((k - 1) sqrt(n))``)."""

    depth: np.ndarray
    sigma: np.ndarray
    erf_size: np.ndarray
    trf_size: np.ndarray
    ratio: np.ndarray


def depth_scaling(
    kernel_size: int, depths: ArrayLike, taps: ArrayLike | None = None
) -> DepthScaling:
    """ERF sigma, size, TRF size and ERF/TRF ratio against depth, along one axis.

    ``taps``: the 1-D per-tap weights of one layer along the axis (the box ``ones(k)`` by
    default; for random weights pass the per-tap variance along the axis, e.g. a row sum of
    the variance map). Its length must be ``kernel_size``.
    """
    k = _pos_int(kernel_size, "kernel_size")
    t = np.ones(k) if taps is None else _taps(taps, "taps", ndim=1)
    if t.shape[0] != k:
        raise ValueError(f"taps has {t.shape[0]} entries but kernel_size is {k}")
    n = np.asarray(depths)
    if n.ndim > 1 or not np.issubdtype(n.dtype, np.integer) or np.any(n < 1):
        raise ValueError(f"depths must be ints >= 1, got {depths!r}")
    var = tap_variance(t)[0]
    nf = n.astype(np.float64)
    sigma = np.sqrt(nf * var)
    erf = 4.0 * sigma
    # identical stride-1 layers: each adds the growth of one layer (by the calculator)
    growth = receptive_field([LayerSpec(k)], ndim=1).size[0] - 1
    trf = nf * growth + 1.0
    return DepthScaling(depth=n, sigma=sigma, erf_size=erf, trf_size=trf, ratio=erf / trf)
