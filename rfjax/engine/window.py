"""Window geometry: the per-axis relation of convolutions, pooling, padding and slicing.

A :class:`Window` describes one spatial axis of ``conv_general_dilated``, ``reduce_window``
or ``pad``: which input elements (and which virtual padding positions) each output index
reads. It gives the forward hull of index intervals (:meth:`Window.forward`) and the boolean
relation used by the backward masks (:meth:`Window.relation`, :func:`apply_relation`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rfjax.engine.fields import INF, Info, bshape


@dataclasses.dataclass(frozen=True)
class Window:
    """Output index ``u`` reads dilated positions ``p = u*stride + k*dilation - pad_lo``,
    ``k < size``; a dilated position on the grid (``p`` a multiple of ``lhs_dilation``) is the
    element ``p / lhs_dilation`` inside ``[0, n_in)`` and a virtual (padding) element outside;
    positions off the grid are holes and contribute nothing."""

    n_in: int
    n_out: int
    size: int = 1
    stride: int = 1
    pad_lo: int = 0
    lhs_dilation: int = 1
    rhs_dilation: int = 1

    def trivial(self) -> bool:
        return (self.n_in == self.n_out and self.size == 1 and self.stride == 1
                and self.pad_lo == 0 and self.lhs_dilation == 1)

    def positions(self):
        P = (np.arange(self.n_out)[:, None] * self.stride
             + np.arange(self.size)[None, :] * self.rhs_dilation - self.pad_lo)
        D = self.lhs_dilation
        top = (self.n_in - 1) * D
        on_grid = P % D == 0
        real = on_grid & (P >= 0) & (P <= top)
        # Outside the input, only positions on the dilated grid are virtual elements; the
        # zeros between them are holes, as they are inside.
        left = on_grid & (P < 0)
        right = on_grid & (P > top)
        return P, real, left, right

    def relation(self) -> np.ndarray:
        """Boolean ``(n_out, n_in)``: which input elements each output index reads."""
        P, real, _, _ = self.positions()
        R = np.zeros((self.n_out, self.n_in), dtype=bool)
        rows = np.broadcast_to(np.arange(self.n_out)[:, None], P.shape)
        R[rows[real], (P // self.lhs_dilation)[real]] = True
        return R

    def forward(self, arr: np.ndarray, axis: int, slope: float, is_lo: bool) -> np.ndarray:
        """Unclipped hull along ``axis`` (see :class:`Window`)."""
        P, real, left, right = self.positions()
        D = self.lhs_dilation
        A = np.moveaxis(arr, axis, -1)
        m = A.shape[-1]
        idx = np.clip(P // D, 0, self.n_in - 1) if m > 1 else np.zeros_like(P)
        G = A[..., idx]  # (..., n_out, K)
        t = P / D
        first = A[..., :1][..., None]
        last = A[..., -1:][..., None]
        vl = first + t * slope
        vr = last + (t - (self.n_in - 1)) * slope
        per = _period(A) if m > 1 else None
        if per is not None:
            # A staircase (after upsampling) continues periodically into the padding, so a
            # border unit gets the same extent as an interior one.
            p, n = per, m
            ti = np.floor(t).astype(np.int64)
            integral = ti == t
            q = np.mod(ti, p)
            dl = (A[..., p] - A[..., 0])[..., None, None]
            vl = np.where(integral, A[..., q] + ((ti - q) // p) * dl, vl)
            s_end = n - p + np.mod(ti - (n - p), p)
            s_end = np.clip(s_end, 0, n - 1)
            dr = (A[..., n - 1] - A[..., n - 1 - p])[..., None, None]
            vr = np.where(integral, A[..., s_end] + ((ti - s_end) // p) * dr, vr)
        fill = INF if is_lo else -INF
        vals = np.where(real, G, np.where(left, vl, np.where(right, vr, fill)))
        if is_lo:
            out = np.floor(vals).min(axis=-1)
        else:
            out = np.ceil(vals).max(axis=-1)
        return np.moveaxis(out, -1, axis)


def _period(A: np.ndarray, max_period: int = 8) -> int | None:
    """Smallest p such that ``A[..., i + p] - A[..., i]`` is the same finite value for every i
    (per leading index), i.e. the last axis is affine (p = 1) or a periodic staircase."""
    n = A.shape[-1]
    if not np.isfinite(A).all():
        return None
    for p in range(1, min(max_period, n - 1) + 1):
        d = A[..., p:] - A[..., :-p]
        if np.all(d == d[..., :1]):
            return p
    return None


def apply_relation(mask: np.ndarray, axis: int, R: np.ndarray) -> np.ndarray:
    """Backward through a per-axis relation: ``in[.., q] = OR_u out[.., u] & R[u, q]``."""
    if not mask.any():
        shape = list(mask.shape)
        shape[axis] = R.shape[1]
        return np.zeros(shape, dtype=bool)
    M = np.moveaxis(mask, axis, -1).astype(np.float32)
    out = (M @ R.astype(np.float32)) > 0
    return np.moveaxis(out, -1, axis)


def apply_relations(mask: np.ndarray, rels: dict[int, np.ndarray]) -> np.ndarray:
    """:func:`apply_relation` along every axis of ``rels`` (``{axis: R}``). Axes outside
    ``rels`` (not the leading query axis) on which the mask is the same at every index (a
    feature axis whose channels share their mask: depthwise convolutions, pooling) are
    carried at size 1 through the products and broadcast back, so the cost does not grow
    with the number of channels. Returns a new, writable array (``mask`` itself when
    ``rels`` is empty)."""
    if not rels:
        return mask
    out_shape = list(mask.shape)
    for a, R in rels.items():
        out_shape[a] = R.shape[1]
    small = mask
    for a in range(1, mask.ndim):
        if a in rels or small.shape[a] == 1:
            continue
        first = small[(slice(None),) * a + (slice(0, 1),)]
        if np.array_equal(small, np.broadcast_to(first, small.shape)):
            small = first
    for a, R in rels.items():
        small = apply_relation(small, a, R)
    if small.shape == tuple(out_shape):
        return small
    return np.broadcast_to(small, out_shape).copy()


def window_forward_info(info: Info, windows: dict[int, Window], ndim: int) -> Info:
    lo, hi, slope = [], [], []
    for a in range(info.naxes):
        L = bshape(info.lo[a], ndim)
        H = bshape(info.hi[a], ndim)
        s = np.array(info.slope[a], dtype=float)
        for ax, w in windows.items():
            L = w.forward(L, ax, s[ax], True)
            H = w.forward(H, ax, s[ax], False)
            s[ax] = s[ax] * w.stride / w.lhs_dilation
        lo.append(L)
        hi.append(H)
        slope.append(s)
    return Info(lo, hi, slope)


def group_reduce(A, axis, G, c, op):
    """Reduce a feature axis of size c (or 1) to size G (or 1) by feature groups."""
    if A.shape[axis] == 1:
        return A
    A = np.moveaxis(A, axis, -1)
    A = op(A.reshape(A.shape[:-1] + (G, c // G)), axis=-1)
    return np.moveaxis(A, -1, axis)


def group_any(M, axis, G, c):
    """OR a feature axis of size c into its G groups (backward of :func:`group_expand`)."""
    M = np.moveaxis(M, axis, -1)
    M = M.reshape(M.shape[:-1] + (G, c // G)).any(axis=-1)
    return np.moveaxis(M, -1, axis)


def group_expand(A, axis, G, c):
    """Expand a grouped axis of size G (or 1) to c features."""
    if A.shape[axis] == 1:
        return A
    return np.repeat(A, c // G, axis=axis)
