"""Resampling ATen operators in JAX (``upsample_*``), with PyTorch's argument order and its
``NCHW`` layout: nearest, (bi/tri)linear and, for the kernels without a closed form here
(bicubic, antialiased bilinear and bicubic), the exact weight matrices PyTorch itself computes.

Every resampling PyTorch offers is separable and linear: along each axis the output is
``M @ x`` for an ``(n_out, n_in)`` matrix that depends on the sizes, ``align_corners`` and the
scale only. So the matrix of an operator is read off PyTorch by resampling one-hot columns
(:func:`_probed_matrices`), and the TRF sees exactly the taps PyTorch uses (a bicubic weight that
is exactly 0 connects nothing).
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np

__all__ = ["clear_cache", "upsample_linear", "upsample_nearest", "upsample_probed"]


def _scale_sizes(x, n, output_size, scale_factors):
    if output_size is not None:
        return tuple(int(s) for s in output_size)
    sf = _tuple_f(scale_factors, n)
    return tuple(int(math.floor(x.shape[2 + i] * sf[i])) for i in range(n))


def _tuple_f(v, n):
    if isinstance(v, (int, float)):
        return (float(v),) * n
    v = tuple(float(a) for a in v)
    return v * n if len(v) == 1 else v


def _along(x, M, ax: int, xp=jnp):
    """``M @ x`` along axis ``ax`` (``M``: ``(n_out, n_in)``), in ``xp`` (jnp or NumPy)."""
    return xp.moveaxis(xp.tensordot(x, xp.asarray(M.T, x.dtype), axes=([ax], [0])), -1, ax)


def upsample_nearest(n: int, exact: bool = False):
    """``upsample_nearest{n}d`` / ``_upsample_nearest_exact{n}d`` (``mode="nearest-exact"``):
    a fixed-index gather per axis, the source indices PyTorch itself picks (they depend on
    whether a scale was given, and PyTorch computes them in float32)."""
    op = f"_upsample_nearest_exact{n}d" if exact else f"upsample_nearest{n}d"
    probed = upsample_probed(op, n, align=False)

    def fn(x, *args):
        for ax, M in enumerate(probed.matrices(x, *args), start=2):
            src = M.argmax(axis=1)
            if not (M[np.arange(len(src)), src] == 1).all():  # pragma: no cover
                raise ValueError(f"aten.{op}: a nearest resampling that is not a selection")
            x = jnp.take(x, src, axis=ax)
        return x
    return fn


def _linear_matrix(n_in: int, n_out: int, align_corners: bool, scale: float | None):
    """PyTorch's (bi/tri)linear interpolation weights along one axis, ``(n_out, n_in)``."""
    if align_corners:
        r = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = np.arange(n_out) * r
    else:
        r = 1.0 / scale if scale else n_in / n_out
        src = np.maximum((np.arange(n_out) + 0.5) * r - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    M = np.zeros((n_out, n_in))
    M[np.arange(n_out), i0] += 1 - w1
    M[np.arange(n_out), i1] += w1
    return M


def upsample_linear(n):
    def fn(x, output_size=None, align_corners=False, scale_factors=None, *rest):
        explicit = None
        if not isinstance(scale_factors, (list, tuple, type(None))):  # the per-axis overload
            scale_factors = [scale_factors] + list(rest[:n - 1])
            explicit = scale_factors
        size = _scale_sizes(x, n, output_size, scale_factors)
        for i in range(n):
            ax = 2 + i
            sc = explicit[i] if explicit and explicit[i] else (
                _tuple_f(scale_factors, n)[i] if scale_factors is not None else None)
            x = _along(x, _linear_matrix(x.shape[ax], size[i], bool(align_corners), sc), ax)
        return x
    return fn


@functools.cache
def _probed_matrices(op: str, overload: str, shape: tuple[int, ...], size: tuple[int, ...],
                     out_size: tuple | None, mid: tuple, scales: tuple | None
                     ) -> tuple[np.ndarray, ...]:
    """Per spatial axis, ``(size[a], shape[a])``: PyTorch's own weights of
    ``aten.<op>.<overload>(x, out_size, *mid, scales)`` (``.vec``; the default overload
    takes the scales one per axis), read off the images of one-hot columns along the axis
    (constant along the others, whose outputs are then that constant: the weights of each
    output sum to 1), then checked on a random input of the real shape (PyTorch's
    antialiased kernels take another path on a length-1 axis, so every probe axis has at
    least 2 elements, and the check makes any other such path an error, not a wrong field)."""
    import torch

    n = len(shape)
    aten = getattr(getattr(torch.ops.aten, op), overload)

    def call(x, o_size):
        tail = (scales,) if overload == "vec" else tuple(scales or (None,) * n)
        return aten(x, o_size, *mid, *tail)

    mats = []
    for a in range(n):
        probe = [shape[a], 1] + [2] * n
        probe[2 + a] = shape[a]
        for j in range(n):  # long enough that a scale < 1 leaves 2 outputs
            if j != a and out_size is None and scales and scales[j]:
                probe[2 + j] = max(2, math.ceil(2.0 / float(scales[j])))
        eye = torch.eye(shape[a], dtype=torch.float64).reshape(
            [shape[a], 1] + [shape[a] if j == a else 1 for j in range(n)])
        o_size = None if out_size is None else [size[j] if j == a else 2 for j in range(n)]
        out = call(eye.expand(probe).contiguous(), o_size)
        mats.append(out.movedim(2 + a, -1).reshape(shape[a], -1, size[a])[:, 0, :].T.numpy())
    x = torch.rand((1, 2) + shape, dtype=torch.float64,
                   generator=torch.Generator().manual_seed(0))
    want = call(x, None if out_size is None else list(out_size)).numpy()
    got = x.numpy()
    for a, M in enumerate(mats):
        got = _along(got, M, 2 + a, np)
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-9, atol=1e-12):
        raise ValueError(f"aten.{op}.{overload}: rfjax could not read PyTorch's resampling "
                         f"weights at input shape {shape} (output size {out_size}, scales "
                         f"{scales})")
    return tuple(mats)


def clear_cache() -> None:
    """Forget the weight matrices read off PyTorch (one per operator, shape and scale)."""
    _probed_matrices.cache_clear()


def upsample_probed(op: str, n: int, align: bool = True):
    """``aten.<op>`` (bicubic, ``_upsample_*_aa``; nearest through
    :func:`upsample_nearest`): both overloads, ``.vec`` ``(x, output_size[, align_corners],
    scale_factors)`` and the default ``(x, output_size[, align_corners], *per-axis
    scales)``; each axis multiplies by the matrix :func:`_probed_matrices` reads."""
    def matrices(x, output_size=None, *rest):
        mid = ()
        if align:
            mid, rest = (bool(rest[0]) if rest else False,), rest[1:]
        out = None if output_size is None else tuple(int(s) for s in output_size)
        if rest and isinstance(rest[0], (list, tuple, type(None))):  # .vec
            overload = "vec"
            scales = None if rest[0] is None else tuple(float(s) for s in rest[0])
            scales = None if scales is None else (scales * n if len(scales) == 1 else scales)
            size = _scale_sizes(x, n, out, scales)
        else:
            overload = "default"
            scales = tuple(None if s is None else float(s) for s in
                           list(rest) + [None] * (n - len(rest)))
            scales = None if all(s is None for s in scales) else scales
            size = out
        return _probed_matrices(op, overload, tuple(int(s) for s in x.shape[2:]), size, out,
                                mid, scales)

    def fn(x, *args):
        for ax, M in enumerate(matrices(x, *args), start=2):
            x = _along(x, M, ax)
        return x
    fn.matrices = matrices
    return fn
