"""What the engine propagates: per-variable index intervals forward, masks backward.

Two passes over the jaxpr of ``fn``:

* **Forward**: for every variable that depends on the input ``x`` we keep an :class:`Info`: per
  tracked input axis ``a`` (``0`` = batch, ``1..k`` = spatial axes of ``x``), two float64 arrays
  ``lo[a]`` and ``hi[a]`` *broadcastable* to the variable's shape: the smallest and largest input
  index along axis ``a`` that the element can depend on. They are **unclipped**: where an
  operation reads padding, the padded position gets the virtual input coordinate extrapolated
  with the variable's jump (``slope``), exactly as the textbook receptive-field recurrences do.
  Empty sets are ``(+inf, -inf)``. Arrays keep size 1 along axes they do not vary on, so a
  ResNet-50 at 224x224 costs kilobytes, not gigabytes (:func:`compact` restores that after an
  operation that had to materialise them).
* **Backward** (the :class:`Tape`): every rule returns a closure mapping boolean masks over its
  outputs (with a leading query axis ``Q``) to masks over its inputs. Running the tape from a
  one-hot output mask gives, for each query, *exactly* the set of input elements that have a
  path to it (padding positions are not elements, so masks are clipped).

An :class:`Info` may also carry :class:`Known` bounds on its variable's *values*: elements
whose value the program fixes whatever ``x`` and the parameters are (a masked logit, a
softmax weight that is exactly 0) depend on nothing (see :mod:`rfjax.engine.known`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from jax.extend import core as jcore

INF = np.inf


# --------------------------------------------------------------------------------------------
# Data structures
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Known:
    """Bounds on the values of a variable's elements, whatever ``x`` and the parameters are:
    float64 arrays ``lo <= value <= hi``, broadcastable to the variable's shape (compact).
    Where ``lo == hi`` the element's value is fixed by the program (see
    :mod:`rfjax.engine.known`)."""

    lo: np.ndarray
    hi: np.ndarray
    narrow: bool = False  # holds the range of a narrower float dtype (float16 cast up)

    @property
    def exact(self) -> np.ndarray:
        """Boolean (compact): the elements whose value is fixed."""
        return self.lo == self.hi


@dataclasses.dataclass
class Info:
    """Forward information of one tracked variable (see module docstring)."""

    lo: list[np.ndarray]
    hi: list[np.ndarray]
    slope: list[np.ndarray]  # per tracked axis: float array (ndim,), the jump along each axis
    known: Known | None = None  # bounds on the values (None: nothing beyond the default)

    @property
    def naxes(self) -> int:
        return len(self.lo)


Backward = Callable[[list], list]  # out masks (or None) -> in masks (or None)


@dataclasses.dataclass
class Row:
    """One line of the per-layer table: the field of an equation's output."""

    name: str
    source: str
    primitive: str
    shape: tuple[int, ...]
    info: Info


@dataclasses.dataclass
class Tape:
    """What the backward pass needs: per equation, its in/out vars and a backward closure."""

    entries: list  # (invars, outvars, backward)


@dataclasses.dataclass
class Context:
    """Per-call state of one analysis.

    Attributes:
      naxes: the number of tracked input axes (batch + spatial).
      rows: the per-layer table being collected (``None``: no table).
      forward: the interpreter's forward pass (set by
        :func:`rfjax.engine.interpreter.forward`); rules that recurse into sub-jaxprs (calls,
        loops, branches) call :meth:`run`, which returns ``(out_infos, out_vals, out_pure,
        tape)``.
    """

    naxes: int
    rows: list[Row] | None = None
    forward: Callable | None = None

    def run(self, jaxpr, consts, infos, vals, pure, prefix: str = ""):
        """The forward pass over a sub-jaxpr in this context."""
        return self.forward(jaxpr, consts, infos, vals, pure, self, prefix)


# --------------------------------------------------------------------------------------------
# Small array helpers
# --------------------------------------------------------------------------------------------


def bshape(arr: np.ndarray, ndim: int) -> np.ndarray:
    """Give ``arr`` rank ``ndim`` by prepending size-1 axes."""
    if arr.ndim < ndim:
        arr = arr.reshape((1,) * (ndim - arr.ndim) + arr.shape)
    return arr


def materialize(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(bshape(arr, len(shape)), tuple(shape)))


def compact(arr: np.ndarray) -> np.ndarray:
    """``arr`` with size 1 along every axis it is constant on (it still broadcasts to the same
    array): keeps the arrays small after an operation that had to materialise them."""
    for j in range(arr.ndim):
        if arr.shape[j] > 1:
            first = arr[(slice(None),) * j + (slice(0, 1),)]
            if np.array_equal(arr, np.broadcast_to(first, arr.shape)):
                arr = first
    return arr


def estimate_slopes(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Jump of ``arr`` along each axis: the least-squares slope of its finite entries (exact
    for an affine axis; the average step of a staircase, e.g. after upsampling)."""
    out = np.zeros(len(shape))
    arr = bshape(arr, len(shape))
    for j, n in enumerate(shape):
        if n < 2 or arr.shape[j] < 2:
            continue
        line = np.moveaxis(arr, j, -1).reshape(-1, arr.shape[j])
        u = np.broadcast_to(np.arange(arr.shape[j], dtype=float), line.shape)
        ok = np.isfinite(line)
        cnt = ok.sum(axis=1)
        good = cnt >= 2
        if not good.any():
            continue
        uz, lz = np.where(ok, u, 0.0), np.where(ok, line, 0.0)
        c = np.maximum(cnt, 1)
        um, lm = uz.sum(1) / c, lz.sum(1) / c
        cov = (np.where(ok, (uz - um[:, None]) * (lz - lm[:, None]), 0.0)).sum(1)
        var = (np.where(ok, (u - um[:, None]) ** 2, 0.0)).sum(1)
        out[j] = float(np.mean(cov[good] / var[good]))
    return out


def empty_info(naxes: int, ndim: int) -> Info:
    one = np.ones((1,) * ndim)
    return Info([one * INF for _ in range(naxes)], [one * -INF for _ in range(naxes)],
                [np.zeros(ndim) for _ in range(naxes)])


def combine(infos: Sequence[Info | None], ndim: int, naxes: int) -> Info:
    """Union (hull) of several infos of the same shape (elementwise ops)."""
    tracked = [i for i in infos if i is not None]
    lo, hi, slope = [], [], []
    for a in range(naxes):
        lo.append(_reduce_pair(np.minimum, [bshape(i.lo[a], ndim) for i in tracked]))
        hi.append(_reduce_pair(np.maximum, [bshape(i.hi[a], ndim) for i in tracked]))
        s = np.zeros(ndim)
        for i in tracked:
            if len(i.slope[a]) == ndim:
                s = np.where(s == 0, i.slope[a], s)
        slope.append(s)
    return Info(lo, hi, slope)


def _reduce_pair(op, arrs):
    out = arrs[0]
    for a in arrs[1:]:
        out = op(out, a)
    return out


def reduce_to(m: np.ndarray, shape, target) -> np.ndarray:
    """OR-reduce a (Q, *shape) mask to (Q, *target) where target broadcasts to shape."""
    target = tuple(target)
    t = (1,) * (len(shape) - len(target)) + target
    axes = tuple(1 + j for j, (a, b) in enumerate(zip(shape, t, strict=True)) if b == 1 and a != 1)
    r = m.any(axis=axes, keepdims=True) if axes else m
    return r.reshape((m.shape[0],) + target)


def or_masks(a, b):
    """Union of two masks, either of which may be ``None`` (no dependency)."""
    if a is None:
        return b
    if b is None:
        return a
    return a | b


def union(masks) -> np.ndarray | None:
    """Union of several masks (``None``: no dependency), ``None`` when all are."""
    out = None
    for m in masks:
        out = or_masks(out, m)
    return out


def backward(tape: Tape, jaxpr: jcore.Jaxpr, out_masks: Sequence[np.ndarray | None],
             after_step: Callable[[int, dict], dict] | None = None):
    """Run the tape backward from ``out_masks`` (leading query axis); returns invar masks.

    ``after_step(step, masks) -> masks`` may rewrite the live masks after each equation (the
    TRF merges queries whose masks have become identical)."""
    masks: dict = {}
    for v, m in zip(jaxpr.outvars, out_masks, strict=True):
        if m is not None and not isinstance(v, jcore.Literal):
            masks[v] = m if v not in masks else (masks[v] | m)
    for step, (invars, outvars, bwd) in enumerate(reversed(tape.entries)):
        # an equation's outputs are defined once: their masks are not needed after it
        oms = [None if isinstance(o, jcore.DropVar) else masks.pop(o, None) for o in outvars]
        if all(m is None for m in oms):
            continue
        ims = bwd(oms)
        for v, m in zip(invars, ims, strict=True):
            if m is None or isinstance(v, jcore.Literal):
                continue
            masks[v] = m if v not in masks else (masks[v] | m)
        if after_step is not None and masks:
            masks = after_step(step, masks)
    return [masks.get(v) for v in jaxpr.invars]
