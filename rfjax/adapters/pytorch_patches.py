"""Patch and scatter ATen operators in JAX, with PyTorch's argument order and layouts.

* ``Tensor.unfold(dim, size, step)`` (HaloNet's blocked attention): windows along one axis,
  a fixed-index gather (``(..., n, ..., size)``, the window last).
* ``F.unfold`` / ``aten.im2col`` (VOLO, TNT): ``(N, C * prod(kernel), L)`` with ``C`` major,
  through ``lax.conv_general_dilated_patches`` (a convolution with a constant one-hot kernel:
  its zero taps connect nothing, so the field is the window's).
* ``F.fold`` / ``aten.col2im``: the adjoint of ``im2col`` (overlapping patches summed back),
  its linear transpose.
* ``scatter`` / ``scatter_add`` / ``index_add`` / ``take_along_dim``: PyTorch's per-element
  index semantics as ``.at[]`` updates with full index grids; an index computed from the
  input makes the TRF raise ``DynamicDependencyError``, never a silent field.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["col2im", "im2col", "index_add", "scatter", "take_along_dim", "unfold"]


def _pair(v) -> tuple[int, int]:
    v = (v,) if isinstance(v, int) else tuple(int(a) for a in v)
    return v * 2 if len(v) == 1 else v


def unfold(x, dim, size, step):
    d = dim + x.ndim if dim < 0 else dim
    n = (x.shape[d] - size) // step + 1
    idx = np.arange(n)[:, None] * step + np.arange(size)[None, :]
    return jnp.moveaxis(jnp.take(x, idx, axis=d), d + 1, -1)


def im2col(x, kernel_size, dilation, padding, stride):
    k, dl, p, s = _pair(kernel_size), _pair(dilation), _pair(padding), _pair(stride)
    unbatched = x.ndim == 3
    x = x[None] if unbatched else x
    cols = lax.conv_general_dilated_patches(x, k, s, [(p[0], p[0]), (p[1], p[1])],
                                            rhs_dilation=dl,
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"))
    cols = cols.reshape(cols.shape[0], cols.shape[1], -1)  # channel order (C, kh, kw)
    return cols[0] if unbatched else cols


def col2im(cols, output_size, kernel_size, dilation, padding, stride):
    k = _pair(kernel_size)
    unbatched = cols.ndim == 2
    cols = cols[None] if unbatched else cols
    n, ck, _ = cols.shape
    shape = (n, ck // (k[0] * k[1])) + _pair(output_size)

    def f(img):
        return im2col(img, kernel_size, dilation, padding, stride)

    (img,) = jax.linear_transpose(f, jax.ShapeDtypeStruct(shape, cols.dtype))(cols)
    return img[0] if unbatched else img


def _grids(index, dim):
    """Full index tuples for ``x[..., index, ...]`` along ``dim`` of ``index``'s shape."""
    g = list(np.indices(index.shape, sparse=True))
    g[dim] = index
    return tuple(g)


def scatter(mode):
    """``aten.scatter`` (``.src``, ``.value``, ``reduce=``) / ``scatter_add``."""
    def fn(x, dim, index, src, reduce=None):
        d = dim + x.ndim if dim < 0 else dim
        idx = _grids(index, d)
        if hasattr(src, "shape") and src.ndim:
            src = src[tuple(slice(0, s) for s in index.shape)]
        op = mode if reduce is None else {"add": "add", "sum": "add", "multiply": "multiply",
                                          "prod": "multiply"}[reduce]
        return getattr(x.at[idx], op)(src)
    return fn


def index_add(x, dim, index, source, alpha=1):
    d = dim + x.ndim if dim < 0 else dim
    return x.at[(slice(None),) * d + (index,)].add(alpha * source)


def take_along_dim(x, indices, dim=None):
    if dim is None:
        return jnp.take(x.reshape(-1), indices.reshape(-1))
    shape = jnp.broadcast_shapes(
        tuple(1 if i == dim % x.ndim else s for i, s in enumerate(x.shape)),
        tuple(1 if i == dim % x.ndim else s for i, s in enumerate(indices.shape)))
    d = dim % x.ndim
    xs = jnp.broadcast_to(x, shape[:d] + (x.shape[d],) + shape[d + 1:])
    ix = jnp.broadcast_to(indices, shape[:d] + (indices.shape[d],) + shape[d + 1:])
    return jnp.take_along_axis(xs, ix, axis=d)
