"""Structural dependency propagation through a jaxpr (the machinery behind ``rfjax.trf``).

Two passes over the jaxpr of ``fn``:

* **Forward** (:func:`forward`): for every variable that depends on the input ``x`` we keep, per
  tracked input axis ``a`` (``0`` = batch, ``1..k`` = spatial axes of ``x``), two float64 arrays
  ``lo[a]`` and ``hi[a]`` *broadcastable* to the variable's shape: the smallest and largest input
  index along axis ``a`` that the element can depend on. They are **unclipped**: where an
  operation reads padding, the padded position gets the virtual input coordinate extrapolated
  with the variable's jump (``slope``), exactly as the textbook receptive-field recurrences do.
  Empty sets are ``(+inf, -inf)``. Arrays keep size 1 along axes they do not vary on, so a
  ResNet-50 at 224x224 costs kilobytes, not gigabytes.
* **Backward** (the tape returned by :func:`forward`): every rule returns a closure mapping
  boolean masks over its outputs (with a leading query axis ``Q``) to masks over its inputs.
  Running the tape from a one-hot output mask gives, for each query, *exactly* the set of input
  elements that have a path to it (padding positions are not elements, so masks are clipped).

Dependencies are structural: weight values and activations never shrink a set. The only values
used are those that are fixed by the program itself: integer/boolean index operands that do not
depend on ``x`` (gather indices, dynamic-slice starts, select predicates, loop counters), and
floating constants computed purely from literals and ``iota`` (the interpolation matrices of
``jax.image.resize``), whose zero pattern is part of the architecture.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from jax._src import source_info_util
from jax.extend import core as jcore

INF = np.inf


class TRFError(ValueError):
    """Base class of the errors raised by the TRF engine."""


class UnsupportedPrimitiveError(TRFError, NotImplementedError):
    """A primitive on the path from the input to the output that the engine has no rule for."""


class DynamicDependencyError(TRFError):
    """A primitive whose index map depends on runtime values (e.g. data-dependent gather)."""


def source_line(eqn) -> str:
    """The user's source line of a jaxpr equation (``file:line (function)``)."""
    try:
        return source_info_util.summarize(eqn.source_info)
    except Exception:  # pragma: no cover - source info is best effort
        return "<unknown source>"


def name_of(eqn) -> str:
    """The name stack of an equation (Flax module path), e.g. ``'VGG16/Conv_3'``."""
    try:
        return str(eqn.source_info.name_stack)
    except Exception:  # pragma: no cover
        return ""


# --------------------------------------------------------------------------------------------
# Data structures
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Info:
    """Forward information of one tracked variable (see module docstring)."""

    lo: list[np.ndarray]
    hi: list[np.ndarray]
    slope: list[np.ndarray]  # per tracked axis: float array (ndim,), the jump along each axis

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


class _Ctx:
    """Per-call state: tracked axes count and collected rows."""

    def __init__(self, naxes: int, rows: list[Row] | None):
        self.naxes = naxes
        self.rows = rows


# --------------------------------------------------------------------------------------------
# Small array helpers
# --------------------------------------------------------------------------------------------


def _bshape(arr: np.ndarray, ndim: int) -> np.ndarray:
    """Give ``arr`` rank ``ndim`` by prepending size-1 axes."""
    if arr.ndim < ndim:
        arr = arr.reshape((1,) * (ndim - arr.ndim) + arr.shape)
    return arr


def _materialize(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(_bshape(arr, len(shape)), tuple(shape)))


def estimate_slopes(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Jump of ``arr`` along each axis: the least-squares slope of its finite entries (exact
    for an affine axis; the average step of a staircase, e.g. after upsampling)."""
    out = np.zeros(len(shape))
    arr = _bshape(arr, len(shape))
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


def _empty_like_info(naxes: int, ndim: int) -> Info:
    one = np.ones((1,) * ndim)
    return Info([one * INF for _ in range(naxes)], [one * -INF for _ in range(naxes)],
                [np.zeros(ndim) for _ in range(naxes)])


def _combine(infos: Sequence[Info | None], ndim: int, naxes: int) -> Info:
    """Union (hull) of several infos of the same shape (elementwise ops)."""
    tracked = [i for i in infos if i is not None]
    lo, hi, slope = [], [], []
    for a in range(naxes):
        lo.append(_reduce_pair(np.minimum, [_bshape(i.lo[a], ndim) for i in tracked]))
        hi.append(_reduce_pair(np.maximum, [_bshape(i.hi[a], ndim) for i in tracked]))
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


# --------------------------------------------------------------------------------------------
# Per-axis window relation: conv, reduce_window, pad, slice
# --------------------------------------------------------------------------------------------


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


def _apply_relation(mask: np.ndarray, axis: int, R: np.ndarray) -> np.ndarray:
    """Backward through a per-axis relation: ``in[.., q] = OR_u out[.., u] & R[u, q]``."""
    if not mask.any():
        shape = list(mask.shape)
        shape[axis] = R.shape[1]
        return np.zeros(shape, dtype=bool)
    M = np.moveaxis(mask, axis, -1).astype(np.float32)
    out = (M @ R.astype(np.float32)) > 0
    return np.moveaxis(out, -1, axis)


def _window_forward_info(info: Info, windows: dict[int, Window], ndim: int) -> Info:
    lo, hi, slope = [], [], []
    for a in range(info.naxes):
        L = _bshape(info.lo[a], ndim)
        H = _bshape(info.hi[a], ndim)
        s = np.array(info.slope[a], dtype=float)
        for ax, w in windows.items():
            L = w.forward(L, ax, s[ax], True)
            H = w.forward(H, ax, s[ax], False)
            s[ax] = s[ax] * w.stride / w.lhs_dilation
        lo.append(L)
        hi.append(H)
        slope.append(s)
    return Info(lo, hi, slope)


# --------------------------------------------------------------------------------------------
# The interpreter
# --------------------------------------------------------------------------------------------


class Env:
    """Variable environment: forward infos, concrete values, and purity of concrete values."""

    def __init__(self):
        self.info: dict = {}
        self.val: dict = {}
        self.pure: dict = {}

    def read_info(self, v):
        if isinstance(v, jcore.Literal):
            return None
        return self.info.get(v)

    def read_val(self, v):
        if isinstance(v, jcore.Literal):
            return np.asarray(v.val)
        return self.val.get(v)

    def is_pure(self, v) -> bool:
        if isinstance(v, jcore.Literal):
            return True
        return self.pure.get(v, False)


def _is_intlike(aval) -> bool:
    dt = getattr(aval, "dtype", None)
    return dt is not None and (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.bool_))


def _np_dot_general(a, b, dimension_numbers, **_):
    (lc, rc), (lb, rb) = dimension_numbers
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    la, ra = [""] * a.ndim, [""] * b.ndim
    for x, y in list(zip(lb, rb, strict=True)) + list(zip(lc, rc, strict=True)):
        la[x] = ra[y] = next(letters)
    for d in range(a.ndim):
        la[d] = la[d] or next(letters)
    for d in range(b.ndim):
        ra[d] = ra[d] or next(letters)
    out = [la[d] for d in lb] + [c for d, c in enumerate(la) if d not in lc and d not in lb]
    out += [c for d, c in enumerate(ra) if d not in rc and d not in rb]
    return np.einsum(f"{''.join(la)},{''.join(ra)}->{''.join(out)}", a, b)


def _np_convert(x, new_dtype, **_):
    return np.asarray(x).astype(np.dtype(new_dtype))


def _np_iota(dtype, shape, dimension, **_):
    ar = np.arange(shape[dimension], dtype=np.dtype(dtype))
    shp = [1] * len(shape)
    shp[dimension] = shape[dimension]
    return np.broadcast_to(ar.reshape(shp), shape).copy()


def _np_select_n(pred, *cases):
    return np.choose(np.asarray(pred).astype(np.int64), np.broadcast_arrays(*cases))


def _np_div(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if np.issubdtype(np.result_type(a, b), np.integer):
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(np.result_type(a, b))
    return a / b


# NumPy versions of the primitives that structural constants are built from (iota, index
# arithmetic, interpolation weights): evaluating them with jax would compile each one.
_NP_EVAL: dict[str, Callable] = {
    "iota": lambda dtype, shape, dimension, **k: _np_iota(dtype, shape, dimension),
    "convert_element_type": lambda x, new_dtype, **k: _np_convert(x, new_dtype),
    "add": lambda a, b: np.add(a, b), "sub": lambda a, b: np.subtract(a, b),
    "mul": lambda a, b, **k: np.multiply(a, b), "div": _np_div,
    "max": lambda a, b: np.maximum(a, b), "min": lambda a, b: np.minimum(a, b),
    "neg": lambda a, **k: np.negative(a), "abs": lambda a, **k: np.abs(a),
    "floor": lambda a, **k: np.floor(a), "ceil": lambda a, **k: np.ceil(a),
    "sqrt": lambda a, **k: np.sqrt(a), "exp": lambda a, **k: np.exp(a),
    "sign": lambda a, **k: np.sign(a),
    "round": lambda a, rounding_method=None, **k: np.round(a),
    "eq": lambda a, b: np.equal(a, b), "ne": lambda a, b: np.not_equal(a, b),
    "lt": lambda a, b: np.less(a, b), "le": lambda a, b: np.less_equal(a, b),
    "gt": lambda a, b: np.greater(a, b), "ge": lambda a, b: np.greater_equal(a, b),
    "and": lambda a, b: np.bitwise_and(a, b), "or": lambda a, b: np.bitwise_or(a, b),
    "not": lambda a: np.invert(a), "rem": lambda a, b: np.fmod(a, b),
    "select_n": _np_select_n,
    "clamp": lambda lo, x, hi: np.clip(x, lo, hi),
    "reshape": lambda x, new_sizes, **k: np.reshape(x, new_sizes),
    "transpose": lambda x, permutation: np.transpose(x, permutation),
    "squeeze": lambda x, dimensions: np.squeeze(x, tuple(dimensions)),
    "reduce_sum": lambda x, axes, **k: np.sum(x, axis=tuple(axes)),
    "reduce_max": lambda x, axes, **k: np.max(x, axis=tuple(axes)),
    "reduce_min": lambda x, axes, **k: np.min(x, axis=tuple(axes)),
    "concatenate": lambda *xs, dimension: np.concatenate(xs, axis=dimension),
    "dot_general": lambda a, b, dimension_numbers, **k: _np_dot_general(a, b,
                                                                        dimension_numbers),
    "copy": lambda x: np.array(x), "copy_p": lambda x: np.array(x),
}


def _np_broadcast_in_dim(x, shape, broadcast_dimensions, **_):
    x = np.asarray(x)
    shp = [1] * len(shape)
    for i, d in enumerate(broadcast_dimensions):
        shp[d] = x.shape[i]
    return np.broadcast_to(x.reshape(shp), shape).copy()


_NP_EVAL["broadcast_in_dim"] = _np_broadcast_in_dim


def _eval_concrete(eqn, vals):
    f = _NP_EVAL.get(eqn.primitive.name)
    if f is not None:
        try:
            r = f(*[np.asarray(v) for v in vals], **eqn.params)
        except Exception:
            r = None
        if r is not None:
            dt = eqn.outvars[0].aval.dtype
            return [np.asarray(r).astype(dt, copy=False).reshape(eqn.outvars[0].aval.shape)]
    if eqn.primitive.name in ("pjit", "jit", "closed_call", "core_call"):
        jaxpr, consts = _sub_closed(eqn)
        ctx = _Ctx(0, None)
        _, outs, _, _ = forward(jaxpr, consts, [None] * len(vals), list(vals),
                                [True] * len(vals), ctx)
        if all(o is not None for o in outs):
            return [np.asarray(o) for o in outs]
    out = eqn.primitive.bind(*vals, **eqn.params)
    if eqn.primitive.multiple_results:
        return [np.asarray(o) for o in out]
    return [np.asarray(out)]


def forward(jaxpr: jcore.Jaxpr, consts: Sequence[Any], in_infos: Sequence[Info | None],
            in_vals: Sequence[Any], in_pure: Sequence[bool], ctx: _Ctx, prefix: str = ""):
    """Run the forward pass over ``jaxpr``.

    Returns ``(out_infos, out_vals, out_pure, tape)``.
    """
    env = Env()
    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env.val[v] = c
        env.pure[v] = False
    for v, i, c, p in zip(jaxpr.invars, in_infos, in_vals, in_pure, strict=True):
        if i is not None:
            env.info[v] = i
        elif c is not None:
            env.val[v] = c
            env.pure[v] = p
    tape = Tape([])
    for eqn in jaxpr.eqns:
        infos = [env.read_info(v) for v in eqn.invars]
        if not any(i is not None for i in infos):
            # Independent of x: evaluate when fixed by the program or an index computation.
            vals = [env.read_val(v) for v in eqn.invars]
            if all(v is not None for v in vals):
                pure = all(env.is_pure(v) for v in eqn.invars)
                wants = pure or any(_is_intlike(o.aval) for o in eqn.outvars)
                if wants and eqn.primitive.name not in _NO_EVAL:
                    try:
                        outs = _eval_concrete(eqn, vals)
                    except Exception:
                        outs = None
                    if outs is not None:
                        for o, val in zip(eqn.outvars, outs, strict=True):
                            env.val[o] = val
                            env.pure[o] = pure
            continue
        rule = _RULES.get(eqn.primitive.name)
        if rule is None and eqn.primitive.name in _ELEMENTWISE:
            rule = _elementwise_rule
        if rule is None:
            raise UnsupportedPrimitiveError(
                f"rfjax.trf has no rule for the primitive '{eqn.primitive.name}' at "
                f"{source_line(eqn)}, which lies on the path from the input to the output. "
                "Open an issue with this primitive, or express the operation with supported "
                "primitives (convolutions, pooling, elementwise ops, dot_general, reshapes, "
                "static gathers)."
            )
        out_infos, bwd = rule(eqn, infos, env, ctx, prefix)
        # Where an axis has >= 2 elements its jump is read off the arrays themselves; the
        # rule's value is kept for size-1 axes (needed to extrapolate into padding there).
        for o, i in zip(eqn.outvars, out_infos, strict=True):
            if i is not None:
                shape = tuple(o.aval.shape)
                big = np.array([n >= 2 for n in shape], dtype=bool)
                for a in range(i.naxes):
                    s = np.asarray(i.slope[a], dtype=float)
                    if s.shape != (len(shape),):
                        s = np.zeros(len(shape))
                    est = estimate_slopes(i.lo[a], shape)
                    n = np.maximum(np.array(shape, dtype=float) - 1, 1)
                    # keep the rule's exact jump (e.g. 1/2 after a transposed conv) when the
                    # arrays agree with it up to rounding; otherwise trust the arrays
                    keep = (s != 0) & (np.abs(s - est) * n <= 1.0)
                    i.slope[a] = np.where(big & ~keep, est, s)
        for o, i in zip(eqn.outvars, out_infos, strict=True):
            if i is not None and not isinstance(o, jcore.DropVar):
                env.info[o] = i
        tape.entries.append((eqn.invars, eqn.outvars, bwd))
        if ctx.rows is not None and eqn.primitive.name in _ROW_PRIMS:
            for o, i in zip(eqn.outvars, out_infos, strict=True):
                if i is not None:
                    ctx.rows.append(Row(_join(prefix, name_of(eqn)), source_line(eqn),
                                        eqn.primitive.name, tuple(o.aval.shape), i))
    out_infos = [env.read_info(v) for v in jaxpr.outvars]
    out_vals = [env.read_val(v) if env.read_info(v) is None else None for v in jaxpr.outvars]
    out_pure = [env.is_pure(v) for v in jaxpr.outvars]
    return out_infos, out_vals, out_pure, tape


def backward(tape: Tape, jaxpr: jcore.Jaxpr, out_masks: Sequence[np.ndarray | None]):
    """Run the tape backward from ``out_masks`` (leading query axis); returns invar masks."""
    masks: dict = {}
    for v, m in zip(jaxpr.outvars, out_masks, strict=True):
        if m is not None and not isinstance(v, jcore.Literal):
            masks[v] = m if v not in masks else (masks[v] | m)
    for invars, outvars, bwd in reversed(tape.entries):
        oms = [masks.get(o) if not isinstance(o, jcore.DropVar) else None for o in outvars]
        if all(m is None for m in oms):
            continue
        ims = bwd(oms)
        for v, m in zip(invars, ims, strict=True):
            if m is None or isinstance(v, jcore.Literal):
                continue
            masks[v] = m if v not in masks else (masks[v] | m)
    return [masks.get(v) for v in jaxpr.invars]


def _join(prefix: str, name: str) -> str:
    if prefix and name:
        return f"{prefix}/{name}"
    return prefix or name


# Primitives never evaluated concretely (effects, randomness handled elsewhere).
_NO_EVAL = {"rng_bit_generator", "rng_uniform", "random_bits", "random_seed", "random_wrap",
            "random_unwrap", "debug_callback", "io_callback", "pure_callback"}

# Equations that get a row in the per-layer table.
_ROW_PRIMS = {"conv_general_dilated", "reduce_window_sum", "reduce_window_max",
              "reduce_window_min", "reduce_window", "dot_general", "pad", "gather",
              "reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin",
              "cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp", "sort", "top_k",
              "dynamic_slice"}

_ELEMENTWISE = {
    "abs", "acos", "acosh", "add", "and", "asin", "asinh", "atan", "atan2", "atanh",
    "bessel_i0e", "bessel_i1e", "cbrt", "ceil", "clamp", "clz", "complex", "conj",
    "convert_element_type", "copy", "copy_p", "cos", "cosh", "digamma", "div", "erf", "erf_inv",
    "erfc", "exp", "exp2", "expm1", "eq", "ne", "lt", "le", "gt", "ge", "eq_to", "le_to",
    "lt_to", "floor", "igamma", "igammac", "igamma_grad_a", "imag", "integer_pow", "is_finite",
    "lgamma", "log", "log1p", "logistic", "max", "min", "mul", "mulhi", "neg", "nextafter",
    "not", "or", "polygamma", "population_count", "pow", "real", "reduce_precision",
    "regularized_incomplete_beta", "rem", "round", "rsqrt", "shift_left",
    "shift_right_arithmetic", "shift_right_logical", "sign", "sin", "sinh", "sqrt", "square",
    "stop_gradient", "sub", "tan", "tanh", "xor", "zeta", "sharding_constraint", "pvary",
    "mesh_cast", "reshard",
}


# --------------------------------------------------------------------------------------------
# Rules. Each: (eqn, infos, env, ctx, prefix) -> (out_infos, backward)
# --------------------------------------------------------------------------------------------


def _elementwise_rule(eqn, infos, env, ctx, prefix):
    shape = tuple(eqn.outvars[0].aval.shape)
    ndim = len(shape)
    out = _combine(infos, ndim, ctx.naxes)
    in_shapes = [tuple(getattr(v.aval, "shape", ())) for v in eqn.invars]

    def bwd(oms):
        m = oms[0]
        res = []
        for i, s in zip(infos, in_shapes, strict=True):
            if i is None:
                res.append(None)
            elif s == shape:
                res.append(m)
            else:  # rank-0 operand broadcast against the others
                res.append(_reduce_to(m, shape, s))
        return res

    return [out] * len(eqn.outvars), bwd


def _reduce_to(m: np.ndarray, shape, target) -> np.ndarray:
    """OR-reduce a (Q, *shape) mask to (Q, *target) where target broadcasts to shape."""
    target = tuple(target)
    t = (1,) * (len(shape) - len(target)) + target
    axes = tuple(1 + j for j, (a, b) in enumerate(zip(shape, t, strict=True)) if b == 1 and a != 1)
    r = m.any(axis=axes, keepdims=True) if axes else m
    return r.reshape((m.shape[0],) + target)


def _identity_multi_rule(eqn, infos, env, ctx, prefix):
    """Each output i is operand i (optimization_barrier, device_put)."""

    def bwd(oms):
        return [m if i is not None else None for m, i in zip(oms, infos, strict=True)]

    return list(infos), bwd


def _conv_rule(eqn, infos, env, ctx, prefix):
    lhs_i, rhs_i = infos
    p = eqn.params
    lhs_aval, rhs_aval = eqn.invars[0].aval, eqn.invars[1].aval
    out_shape = tuple(eqn.outvars[0].aval.shape)
    dn = p["dimension_numbers"]
    lspec, rspec, ospec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    G = p["feature_group_count"]
    if p.get("batch_group_count", 1) != 1:
        raise UnsupportedPrimitiveError(
            f"conv_general_dilated with batch_group_count != 1 at {source_line(eqn)} is not "
            "supported by rfjax.trf")
    nsp = len(lspec) - 2
    lhs_shape = tuple(lhs_aval.shape)
    rhs_shape = tuple(rhs_aval.shape)
    cin = lhs_shape[lspec[1]]
    cout = out_shape[ospec[1]]
    lhs_dil = p["lhs_dilation"] or (1,) * nsp
    rhs_dil = p["rhs_dilation"] or (1,) * nsp
    windows = {}
    for i in range(nsp):
        windows[i] = Window(
            n_in=lhs_shape[lspec[2 + i]], n_out=out_shape[ospec[2 + i]],
            size=rhs_shape[rspec[2 + i]], stride=p["window_strides"][i],
            pad_lo=p["padding"][i][0], lhs_dilation=lhs_dil[i], rhs_dilation=rhs_dil[i])
    ndim = len(out_shape)
    outs = []
    if lhs_i is not None:
        lo, hi, slope = [], [], []
        for a in range(ctx.naxes):
            res = []
            for arr, is_lo in ((lhs_i.lo[a], True), (lhs_i.hi[a], False)):
                A = _bshape(arr, ndim)
                A = np.transpose(A, lspec)  # (batch, feature, spatial...)
                A = _group_reduce(A, 1, G, cin, np.min if is_lo else np.max)
                for i in range(nsp):
                    A = windows[i].forward(A, 2 + i, lhs_i.slope[a][lspec[2 + i]], is_lo)
                A = _group_expand(A, 1, G, cout)
                res.append(np.transpose(A, np.argsort(ospec)))
            s = np.zeros(ndim)
            s[ospec[0]] = lhs_i.slope[a][lspec[0]]
            for i in range(nsp):
                w = windows[i]
                s[ospec[2 + i]] = lhs_i.slope[a][lspec[2 + i]] * w.stride / w.lhs_dilation
            lo.append(res[0])
            hi.append(res[1])
            slope.append(s)
        outs.append(Info(lo, hi, slope))
    if rhs_i is not None:
        # A kernel that depends on x: every output feature depends on its whole filter.
        red = tuple(j for j in range(len(rhs_shape)) if j != rspec[0])
        lo, hi, slope = [], [], []
        for a in range(ctx.naxes):
            L = _bshape(rhs_i.lo[a], len(rhs_shape)).min(axis=red)
            H = _bshape(rhs_i.hi[a], len(rhs_shape)).max(axis=red)
            shp = [1] * ndim
            shp[ospec[1]] = L.shape[0]
            lo.append(L.reshape(shp))
            hi.append(H.reshape(shp))
            slope.append(np.zeros(ndim))
        outs.append(Info(lo, hi, slope))
    out = _combine(outs, ndim, ctx.naxes)
    rels = {i: windows[i].relation() for i in range(nsp)}

    def bwd(oms):
        m = oms[0]
        res = [None, None]
        if lhs_i is not None:
            M = np.transpose(m, (0,) + tuple(1 + j for j in ospec))  # (Q, batch, feat, sp...)
            M = _group_any(M, 2, G, cout)
            for i in range(nsp):
                M = _apply_relation(M, 3 + i, rels[i])
            M = np.repeat(M, cin // G, axis=2)
            inv = np.argsort(lspec)
            res[0] = np.transpose(M, (0,) + tuple(1 + j for j in inv))
        if rhs_i is not None:
            red = tuple(1 + j for j in range(ndim) if j != ospec[1])
            per_o = m.any(axis=red)  # (Q, cout)
            shp = [m.shape[0]] + [1] * len(rhs_shape)
            shp[1 + rspec[0]] = cout
            res[1] = np.broadcast_to(per_o.reshape(shp), (m.shape[0],) + rhs_shape).copy()
        return res

    return [out], bwd


def _group_reduce(A, axis, G, c, op):
    """Reduce a feature axis of size c (or 1) to size G (or 1) by feature groups."""
    if A.shape[axis] == 1:
        return A
    A = np.moveaxis(A, axis, -1)
    A = op(A.reshape(A.shape[:-1] + (G, c // G)), axis=-1)
    return np.moveaxis(A, -1, axis)


def _group_any(M, axis, G, c):
    M = np.moveaxis(M, axis, -1)
    M = M.reshape(M.shape[:-1] + (G, c // G)).any(axis=-1)
    return np.moveaxis(M, -1, axis)


def _group_expand(A, axis, G, c):
    """Expand a grouped axis of size G (or 1) to c features."""
    if A.shape[axis] == 1:
        return A
    return np.repeat(A, c // G, axis=axis)


def _reduce_window_rule(eqn, infos, env, ctx, prefix):
    p = eqn.params
    name = eqn.primitive.name
    if name == "reduce_window":
        n_ops = len(eqn.outvars)
        data_infos = infos[:n_ops]
        if any(i is not None for i in infos[n_ops:]):
            raise UnsupportedPrimitiveError(
                f"reduce_window with an input-dependent init value at {source_line(eqn)}")
    else:
        data_infos = infos[:1]
    in_shape = tuple(eqn.invars[0].aval.shape)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    ndim = len(out_shape)
    base = p.get("base_dilation") or (1,) * ndim
    wdil = p.get("window_dilation") or (1,) * ndim
    windows = {}
    for j in range(ndim):
        w = Window(n_in=in_shape[j], n_out=out_shape[j], size=p["window_dimensions"][j],
                   stride=p["window_strides"][j], pad_lo=p["padding"][j][0],
                   lhs_dilation=base[j], rhs_dilation=wdil[j])
        if not w.trivial():
            windows[j] = w
    each = [(_window_forward_info(i, windows, ndim) if i is not None else None)
            for i in data_infos]
    out = _combine(each, ndim, ctx.naxes)
    rels = {j: w.relation() for j, w in windows.items()}

    def bwd(oms):
        m = None
        for o in oms:
            if o is not None:
                m = o if m is None else (m | o)
        for j, R in rels.items():
            m = _apply_relation(m, 1 + j, R)
        res = [m if i is not None else None for i in data_infos]
        return res + [None] * (len(infos) - len(data_infos))

    return [out] * len(eqn.outvars), bwd


def _pad_rule(eqn, infos, env, ctx, prefix):
    op_i, pv_i = infos
    in_shape = tuple(eqn.invars[0].aval.shape)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    ndim = len(out_shape)
    windows = {}
    for j, (lo_, _hi, interior) in enumerate(eqn.params["padding_config"]):
        w = Window(n_in=in_shape[j], n_out=out_shape[j], pad_lo=lo_, lhs_dilation=interior + 1)
        if not w.trivial():
            windows[j] = w
    outs = []
    if op_i is not None:
        outs.append(_window_forward_info(op_i, windows, ndim))
    if pv_i is not None:  # an x-dependent padding value: every output may read it
        outs.append(Info([_bshape(x, 0) for x in pv_i.lo], [_bshape(x, 0) for x in pv_i.hi],
                         [np.zeros(ndim) for _ in pv_i.lo]))
    out = _combine(outs, ndim, ctx.naxes)
    rels = {j: w.relation() for j, w in windows.items()}

    def bwd(oms):
        m = oms[0]
        res = [None, None]
        if op_i is not None:
            r = m
            for j, R in rels.items():
                r = _apply_relation(r, 1 + j, R)
            res[0] = r
        if pv_i is not None:
            res[1] = m.reshape(m.shape[0], -1).any(axis=1)
        return res

    return [out], bwd


def _broadcast_in_dim_rule(eqn, infos, env, ctx, prefix):
    op_i = infos[0]
    if any(i is not None for i in infos[1:]):
        raise DynamicDependencyError(
            f"broadcast_in_dim with a dynamic shape at {source_line(eqn)}")
    in_shape = tuple(eqn.invars[0].aval.shape)
    out_shape = tuple(eqn.params["shape"])
    bd = tuple(eqn.params["broadcast_dimensions"])
    ndim = len(out_shape)
    lo, hi, slope = [], [], []
    for a in range(ctx.naxes):
        for src, dst in ((op_i.lo[a], lo), (op_i.hi[a], hi)):
            A = _bshape(src, len(in_shape))
            shp = [1] * ndim
            for i, d in enumerate(bd):
                shp[d] = A.shape[i]
            dst.append(A.reshape(shp))
        s = np.zeros(ndim)
        for i, d in enumerate(bd):
            if in_shape[i] == out_shape[d]:
                s[d] = op_i.slope[a][i]
        slope.append(s)
    red = tuple(1 + d for d in range(ndim) if d not in bd)
    red_b = tuple(1 + d for i, d in enumerate(bd) if in_shape[i] == 1 and out_shape[d] != 1)

    def bwd(oms):
        m = oms[0]
        if red_b:
            m = m.any(axis=red_b, keepdims=True)
        if red:
            m = m.any(axis=red)
        return [m.reshape((m.shape[0],) + in_shape)] + [None] * (len(infos) - 1)

    return [Info(lo, hi, slope)], bwd


def _transpose_rule(eqn, infos, env, ctx, prefix):
    perm = tuple(eqn.params["permutation"])
    op_i = infos[0]
    n = len(perm)
    out = Info([np.transpose(_bshape(x, n), perm) for x in op_i.lo],
               [np.transpose(_bshape(x, n), perm) for x in op_i.hi],
               [np.asarray(s)[list(perm)] for s in op_i.slope])
    inv = tuple(int(i) for i in np.argsort(perm))

    def bwd(oms):
        return [np.transpose(oms[0], (0,) + tuple(1 + i for i in inv))]

    return [out], bwd


def _reduce_rule(eqn, infos, env, ctx, prefix):
    axes = tuple(eqn.params["axes"])
    in_shape = tuple(eqn.invars[0].aval.shape)
    op_i = infos[0]
    n = len(in_shape)
    keep = [j for j in range(n) if j not in axes]
    out = Info([_bshape(x, n).min(axis=axes) for x in op_i.lo],
               [_bshape(x, n).max(axis=axes) for x in op_i.hi],
               [np.asarray(s)[keep] for s in op_i.slope])

    def bwd(oms):
        m = oms[0]
        m = np.expand_dims(m, tuple(1 + a for a in axes))
        return [np.broadcast_to(m, (m.shape[0],) + in_shape).copy()]

    return [out], bwd


def _cumulative_rule(eqn, infos, env, ctx, prefix):
    axis = eqn.params["axis"]
    rev = eqn.params["reverse"]
    shape = tuple(eqn.invars[0].aval.shape)
    op_i = infos[0]
    n = len(shape)

    def acc(A, op):
        A = _bshape(A, n)
        if A.shape[axis] == 1:
            return A
        if rev:
            return np.flip(op.accumulate(np.flip(A, axis), axis=axis), axis)
        return op.accumulate(A, axis=axis)

    out = Info([acc(x, np.minimum) for x in op_i.lo], [acc(x, np.maximum) for x in op_i.hi],
               list(op_i.slope))

    def bwd(oms):
        m = oms[0]
        ax = axis + 1
        # out j depends on in i <= j (forward); so in i is needed if any out j >= i.
        if rev:
            r = np.logical_or.accumulate(m, axis=ax)
        else:
            r = np.flip(np.logical_or.accumulate(np.flip(m, ax), axis=ax), ax)
        return [r]

    return [out], bwd


def _sort_rule(eqn, infos, env, ctx, prefix):
    """Every output depends on every operand along the sorted dimension."""
    dim = eqn.params["dimension"]
    shape = tuple(eqn.invars[0].aval.shape)
    n = len(shape)
    each = []
    for i in infos:
        if i is None:
            continue
        each.append(Info([_bshape(x, n).min(axis=dim, keepdims=True) for x in i.lo],
                         [_bshape(x, n).max(axis=dim, keepdims=True) for x in i.hi],
                         list(i.slope)))
    out = _combine(each, n, ctx.naxes)

    def bwd(oms):
        m = None
        for o in oms:
            if o is not None:
                m = o if m is None else (m | o)
        r = np.broadcast_to(m.any(axis=dim + 1, keepdims=True), m.shape).copy()
        return [r if i is not None else None for i in infos]

    return [out] * len(eqn.outvars), bwd


def _top_k_rule(eqn, infos, env, ctx, prefix):
    shape = tuple(eqn.invars[0].aval.shape)
    op_i = infos[0]
    n = len(shape)
    out = Info([_bshape(x, n).min(axis=-1, keepdims=True) for x in op_i.lo],
               [_bshape(x, n).max(axis=-1, keepdims=True) for x in op_i.hi], list(op_i.slope))

    def bwd(oms):
        m = None
        for o in oms:
            if o is not None:
                m = o if m is None else (m | o)
        anyk = m.any(axis=-1, keepdims=True)
        return [np.broadcast_to(anyk, (m.shape[0],) + shape).copy()]

    return [out, out], bwd


def _dot_general_rule(eqn, infos, env, ctx, prefix):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs_shape = tuple(eqn.invars[0].aval.shape)
    rhs_shape = tuple(eqn.invars[1].aval.shape)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    nl, nr, no = len(lhs_shape), len(rhs_shape), len(out_shape)
    lfree = [d for d in range(nl) if d not in lc and d not in lb]
    rfree = [d for d in range(nr) if d not in rc and d not in rb]
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lsub = [""] * nl
    rsub = [""] * nr
    for dl, dr in zip(lb, rb, strict=True):
        c = next(letters)
        lsub[dl] = rsub[dr] = c
    for dl, dr in zip(lc, rc, strict=True):
        c = next(letters)
        lsub[dl] = rsub[dr] = c
    for d in lfree:
        lsub[d] = next(letters)
    for d in rfree:
        rsub[d] = next(letters)
    osub = [lsub[d] for d in lb] + [lsub[d] for d in lfree] + [rsub[d] for d in rfree]
    ls, rs, os_ = "".join(lsub), "".join(rsub), "".join(osub)
    lhs_i, rhs_i = infos
    # The zero pattern of an operand fixed by the program (e.g. resize's interpolation matrix)
    # is architecture; a weight's is not.
    nz = [None, None]
    for k, i in enumerate(infos):
        other = 1 - k
        val = env.read_val(eqn.invars[other])
        if i is not None and infos[other] is None and val is not None and env.is_pure(
                eqn.invars[other]):
            nz[other] = np.asarray(val) != 0

    def fwd_side(info, sub, shape, other_nz, other_sub):
        lo, hi, slope = [], [], []
        for a in range(ctx.naxes):
            res = []
            for arr, is_lo in ((info.lo[a], True), (info.hi[a], False)):
                A = _materialize(arr, shape) if other_nz is not None else _bshape(arr,
                                                                                  len(shape))
                if other_nz is None:
                    # dense: reduce contracted dims, keep the rest (size-1 where compact)
                    red = tuple(d for d, c in enumerate(sub) if c not in os_)
                    A = A.min(axis=red) if is_lo else A.max(axis=red)
                    kept = "".join(c for c in sub if c in os_)
                    shp = [A.shape[kept.index(c)] if c in kept else 1 for c in os_]
                    A = np.transpose(A, [kept.index(c) for c in os_ if c in kept]).reshape(shp)
                else:
                    A = _sparse_minplus(A, sub, other_nz, other_sub, os_, is_lo)
                res.append(A)
            s = np.zeros(no)
            for j, c in enumerate(os_):
                if c in sub:
                    s[j] = info.slope[a][sub.index(c)]
            lo.append(res[0])
            hi.append(res[1])
            slope.append(s)
        return Info(lo, hi, slope)

    outs = []
    if lhs_i is not None:
        outs.append(fwd_side(lhs_i, ls, lhs_shape, nz[1], rs))
    if rhs_i is not None:
        outs.append(fwd_side(rhs_i, rs, rhs_shape, nz[0], ls))
    out = _combine(outs, no, ctx.naxes)
    if nz[0] is not None or nz[1] is not None:
        for a in range(ctx.naxes):
            est = estimate_slopes(out.lo[a], out_shape)
            out.slope[a] = np.where(out.slope[a] == 0, est, out.slope[a])

    def bwd_side(m, sub, shape, other_nz, other_sub):
        q = "Q"
        if other_nz is None:
            # dense: any over the other operand's free dims, broadcast over contraction
            red = tuple(1 + j for j, c in enumerate(os_) if c not in sub)
            r = m.any(axis=red) if red else m
            kept = "".join(c for c in os_ if c in sub)
            shp = [m.shape[0]] + [r.shape[1 + kept.index(c)] if c in kept else 1 for c in sub]
            r = np.transpose(r, [0] + [1 + kept.index(c) for c in sub if c in kept])
            return np.broadcast_to(r.reshape(shp), (m.shape[0],) + shape).copy()
        r = np.einsum(f"{q}{os_},{other_sub}->{q}{sub}", m.astype(np.float32),
                      other_nz.astype(np.float32))
        return r > 0

    def bwd(oms):
        m = oms[0]
        res = [None, None]
        if lhs_i is not None:
            res[0] = bwd_side(m, ls, lhs_shape, nz[1], rs)
        if rhs_i is not None:
            res[1] = bwd_side(m, rs, rhs_shape, nz[0], ls)
        return res

    return [out], bwd


def _sparse_minplus(A, sub, other_nz, other_sub, os_, is_lo):
    """min_c where(nz) of A over contracted dims, with A full-shape (exact for fixed zeros)."""
    allsub = "".join(dict.fromkeys(sub + other_sub))
    # Broadcast both to the union of subscripts, mask, reduce contracted ones.
    def expand(x, s):
        shp = [x.shape[s.index(c)] if c in s else 1 for c in allsub]
        return np.transpose(x, [s.index(c) for c in allsub if c in s]).reshape(shp)

    Ae = expand(A, sub)
    Ne = expand(other_nz, other_sub)
    fill = INF if is_lo else -INF
    V = np.where(Ne, Ae, fill)
    red = tuple(j for j, c in enumerate(allsub) if c not in os_)
    V = V.min(axis=red) if is_lo else V.max(axis=red)
    kept = "".join(c for c in allsub if c in os_)
    return np.transpose(V, [kept.index(c) for c in os_])


# ---- generic data movement: evaluate the primitive on index arrays --------------------------

# For each data-movement primitive: which operands carry data (others are indices/params).
_DATA_OPERANDS = {
    "reshape": (0,), "squeeze": (0,), "rev": (0,), "slice": (0,), "concatenate": None,
    "gather": (0,), "dynamic_slice": (0,), "dynamic_update_slice": (0, 1), "tile": (0,),
    "stack": None, "split": (0,), "copy": (0,), "expand_dims": (0,), "unstack": (0,),
}


def _data_movement_rule(eqn, infos, env, ctx, prefix):
    name = eqn.primitive.name
    data_idx = _DATA_OPERANDS.get(name)
    if data_idx is None:
        data_idx = tuple(range(len(eqn.invars)))
    args = []
    sizes = []
    offset = 0
    data_infos = []
    for k, v in enumerate(eqn.invars):
        if k in data_idx:
            shape = tuple(v.aval.shape)
            size = int(np.prod(shape, dtype=np.int64))
            args.append(np.arange(offset, offset + size, dtype=np.int32).reshape(shape))
            sizes.append((offset, size, shape, infos[k]))
            data_infos.append(infos[k])
            offset += size
        else:
            if infos[k] is not None:
                raise DynamicDependencyError(
                    f"'{name}' at {source_line(eqn)} uses indices that depend on the input; "
                    "its receptive field depends on runtime values, so rfjax.trf cannot give "
                    "a static answer.")
            val = env.read_val(v)
            if val is None:
                raise DynamicDependencyError(
                    f"'{name}' at {source_line(eqn)} uses indices computed from runtime values "
                    "(e.g. parameters); the receptive field is not static.")
            args.append(val)
    params = dict(eqn.params)
    if name == "gather" and "fill_value" in params:
        params["fill_value"] = -1
    res = eqn.primitive.bind(*args, **params)
    srcs = [np.asarray(r) for r in (res if eqn.primitive.multiple_results else [res])]
    # Full-size lookup tables per tracked axis over the concatenated index space.
    tables_lo, tables_hi = [], []
    for a in range(ctx.naxes):
        lo_parts, hi_parts = [], []
        for _off, size, shape, info in sizes:
            if info is None:
                lo_parts.append(np.full(size, INF))
                hi_parts.append(np.full(size, -INF))
            else:
                lo_parts.append(_materialize(info.lo[a], shape).ravel())
                hi_parts.append(_materialize(info.hi[a], shape).ravel())
        tables_lo.append(np.concatenate(lo_parts + [np.array([INF])]))
        tables_hi.append(np.concatenate(hi_parts + [np.array([-INF])]))
    outs = []
    for src, ov in zip(srcs, eqn.outvars, strict=True):
        idx = np.where((src >= 0) & (src < offset), src, offset)
        shape = tuple(ov.aval.shape)
        lo = [t[idx] for t in tables_lo]
        hi = [t[idx] for t in tables_hi]
        slope = [estimate_slopes(x, shape) for x in lo]
        outs.append(Info(lo, hi, slope))

    def bwd(oms):
        flat = None
        for m, src in zip(oms, srcs, strict=True):
            if m is None:
                continue
            Q = m.shape[0]
            if flat is None:
                flat = np.zeros((Q, offset + 1), dtype=bool)
            idx = np.where((src >= 0) & (src < offset), src, offset).ravel()
            mm = m.reshape(Q, -1)
            for q in range(Q):
                flat[q, idx[mm[q]]] = True
        res = [None] * len(eqn.invars)
        j = 0
        for k in range(len(eqn.invars)):
            if k in data_idx:
                off, size, shape, info = sizes[j]
                j += 1
                if info is not None and flat is not None:
                    res[k] = flat[:, off:off + size].reshape((flat.shape[0],) + shape)
        return res

    return outs, bwd


def _scatter_rule(eqn, infos, env, ctx, prefix):
    """scatter / scatter-add / -mul / -min / -max / -sub with indices fixed by the program.

    Each output element depends on the update written to it and, unless a plain ``scatter``
    overwrote it, on the operand element at the same place. Duplicate indices (several updates
    landing on one element) are refused rather than approximated."""
    from jax import lax

    name = eqn.primitive.name
    op_v, idx_v, upd_v = eqn.invars[:3]
    op_i, idx_i, upd_i = infos[:3]
    if idx_i is not None or env.read_val(idx_v) is None:
        raise DynamicDependencyError(
            f"'{name}' at {source_line(eqn)} scatters to indices that depend on runtime values; "
            "its receptive field is not static.")
    idx = np.asarray(env.read_val(idx_v))
    shape = tuple(op_v.aval.shape)
    ushape = tuple(upd_v.aval.shape)
    m = int(np.prod(ushape, dtype=np.int64))
    kw = dict(dimension_numbers=eqn.params["dimension_numbers"],
              indices_are_sorted=eqn.params["indices_are_sorted"],
              unique_indices=eqn.params["unique_indices"], mode=eqn.params["mode"])
    src = np.asarray(lax.scatter(np.full(shape, -1, np.int32), idx,
                                 np.arange(m, dtype=np.int32).reshape(ushape), **kw))
    count = np.asarray(lax.scatter_add(np.zeros(shape, np.int32), idx,
                                       np.ones(ushape, np.int32), **kw))
    if count.max(initial=0) > 1:
        raise UnsupportedPrimitiveError(
            f"'{name}' at {source_line(eqn)} writes several updates to one element (duplicate "
            "indices); rfjax.trf does not support that case.")
    written = src >= 0
    keeps_operand = name != "scatter"
    lo, hi, slope = [], [], []
    for a in range(ctx.naxes):
        L = np.full(shape, INF)
        H = np.full(shape, -INF)
        if op_i is not None:
            opL, opH = _materialize(op_i.lo[a], shape), _materialize(op_i.hi[a], shape)
            keep = ~written | keeps_operand
            L = np.where(keep, opL, L)
            H = np.where(keep, opH, H)
        if upd_i is not None:
            uL = _materialize(upd_i.lo[a], ushape).ravel()
            uH = _materialize(upd_i.hi[a], ushape).ravel()
            j = np.where(written, src, 0)
            L = np.where(written, np.minimum(L, uL[j]), L)
            H = np.where(written, np.maximum(H, uH[j]), H)
        lo.append(L)
        hi.append(H)
        slope.append(estimate_slopes(L, shape))

    def bwd(oms):
        mo = oms[0]
        res = [None] * len(eqn.invars)
        if op_i is not None:
            res[0] = mo if keeps_operand else mo & ~written[None]
        if upd_i is not None:
            Q = mo.shape[0]
            flat = np.zeros((Q, m), dtype=bool)
            pos = np.nonzero(written.ravel())[0]
            flat[:, src.ravel()[pos]] = mo.reshape(Q, -1)[:, pos]
            res[2] = flat.reshape((Q,) + ushape)
        return res

    return [Info(lo, hi, slope)], bwd


def _select_n_rule(eqn, infos, env, ctx, prefix):
    pred = eqn.invars[0]
    pval = env.read_val(pred) if infos[0] is None else None
    shape = tuple(eqn.outvars[0].aval.shape)
    ndim = len(shape)
    if pval is None:
        return _elementwise_rule(eqn, infos, env, ctx, prefix)
    pval = np.broadcast_to(np.asarray(pval).astype(np.int64), shape)
    cases = infos[1:]
    lo, hi, slope = [], [], []
    for a in range(ctx.naxes):
        L = np.full(shape, INF)
        H = np.full(shape, -INF)
        for c, i in enumerate(cases):
            if i is None:
                continue
            sel = pval == c
            L = np.where(sel, _bshape(i.lo[a], ndim), L)
            H = np.where(sel, _bshape(i.hi[a], ndim), H)
        lo.append(L)
        hi.append(H)
        slope.append(estimate_slopes(L, shape))

    def bwd(oms):
        m = oms[0]
        return [None] + [(m & (pval == c)[None]) if i is not None else None
                         for c, i in enumerate(cases)]

    return [Info(lo, hi, slope)], bwd


# ---- call-like and control flow ------------------------------------------------------------


def _sub_closed(eqn):
    p = eqn.params
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in p:
            j = p[key]
            if isinstance(j, jcore.ClosedJaxpr):
                return j.jaxpr, j.consts
            if isinstance(j, jcore.Jaxpr):
                return j, []
    raise UnsupportedPrimitiveError(
        f"call primitive '{eqn.primitive.name}' at {source_line(eqn)} has no jaxpr parameter")


def _call_rule(eqn, infos, env, ctx, prefix):
    jaxpr, consts = _sub_closed(eqn)
    vals = [env.read_val(v) for v in eqn.invars]
    pure = [env.is_pure(v) for v in eqn.invars]
    n_extra = len(jaxpr.invars) - len(eqn.invars)
    if n_extra != 0:  # pragma: no cover - defensive
        raise UnsupportedPrimitiveError(
            f"call primitive '{eqn.primitive.name}' at {source_line(eqn)}: arity mismatch")
    sub_prefix = _join(prefix, name_of(eqn))
    if eqn.primitive.name in ("pjit", "jit") and eqn.params.get("name"):
        sub_prefix = _join(sub_prefix, str(eqn.params["name"]))
    outs, _, _, tape = forward(jaxpr, consts, infos, vals, pure, ctx, sub_prefix)

    def bwd(oms):
        return backward(tape, jaxpr, oms)

    return outs, bwd


def _scan_rule(eqn, infos, env, ctx, prefix):
    p = eqn.params
    closed = p["jaxpr"]
    jaxpr, consts = closed.jaxpr, closed.consts
    length, rev = p["length"], p["reverse"]
    nc, nk = p["num_consts"], p["num_carry"]
    n_in = len(eqn.invars)
    c_infos, k_infos, x_infos = infos[:nc], infos[nc:nc + nk], infos[nc + nk:]
    vals = [env.read_val(v) if infos[j] is None else None for j, v in enumerate(eqn.invars)]
    pure = [env.is_pure(v) for v in eqn.invars]
    c_vals, k_vals, x_vals = vals[:nc], vals[nc:nc + nk], vals[nc + nk:]
    x_shapes = [tuple(v.aval.shape) for v in eqn.invars[nc + nk:]]
    y_avals = [v.aval for v in eqn.outvars[nk:]]
    tapes = []
    carry_i, carry_v = list(k_infos), list(k_vals)
    carry_p = pure[nc:nc + nk]
    ys_per_iter = {}
    order = range(length - 1, -1, -1) if rev else range(length)
    for t in order:
        xi = [(_slice_info(i, t, s) if i is not None else None)
              for i, s in zip(x_infos, x_shapes, strict=True)]
        xv = [(np.asarray(v)[t] if v is not None else None) for v in x_vals]
        outs, ovals, opure, tape = forward(
            jaxpr, consts, list(c_infos) + carry_i + xi, list(c_vals) + carry_v + xv,
            list(pure[:nc]) + list(carry_p) + list(pure[nc + nk:]), ctx, prefix)
        tapes.append((t, tape))
        carry_i, carry_v, carry_p = outs[:nk], ovals[:nk], opure[:nk]
        ys_per_iter[t] = outs[nk:]
    out_infos = list(carry_i)
    for k, av in enumerate(y_avals):
        per = [ys_per_iter[t][k] for t in range(length)]
        out_infos.append(_stack_infos(per, tuple(av.shape), ctx.naxes))

    def bwd(oms):
        k_masks = list(oms[:nk])
        y_masks = oms[nk:]
        c_acc = [None] * nc
        x_acc = [None] * len(x_infos)
        for t, tape in reversed(tapes):
            outm = list(k_masks) + [(m[:, t] if m is not None else None) for m in y_masks]
            inm = backward(tape, jaxpr, outm)
            for j in range(nc):
                c_acc[j] = _or(c_acc[j], inm[j])
            k_masks = inm[nc:nc + nk]
            for j, m in enumerate(inm[nc + nk:]):
                if m is None:
                    continue
                if x_acc[j] is None:
                    x_acc[j] = np.zeros((m.shape[0],) + x_shapes[j], dtype=bool)
                x_acc[j][:, t] |= m
        res = c_acc + list(k_masks) + x_acc
        return [r if infos[j] is not None else None for j, r in enumerate(res[:n_in])]

    return out_infos, bwd


def _or(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a | b


def _slice_info(info: Info, t: int, shape) -> Info:
    n = len(shape)

    def take(x):
        x = _bshape(x, n)
        return x[0] if x.shape[0] == 1 else x[t]

    return Info([take(x) for x in info.lo], [take(x) for x in info.hi],
                [np.asarray(s)[1:] for s in info.slope])


def _stack_infos(per: list, shape, naxes) -> Info | None:
    if all(i is None for i in per):
        return None
    n = len(shape)
    lo, hi = [], []
    for a in range(naxes):
        los, his = [], []
        for i in per:
            if i is None:
                los.append(np.full(shape[1:], INF))
                his.append(np.full(shape[1:], -INF))
            else:
                los.append(_materialize(i.lo[a], shape[1:]))
                his.append(_materialize(i.hi[a], shape[1:]))
        lo.append(np.stack(los))
        hi.append(np.stack(his))
    return Info(lo, hi, [estimate_slopes(x, shape) for x in lo]) if n else None


_MAX_WHILE_ITERS = 100_000


def _while_rule(eqn, infos, env, ctx, prefix):
    p = eqn.params
    cj, bj = p["cond_jaxpr"], p["body_jaxpr"]
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    vals = [env.read_val(v) if infos[j] is None else None for j, v in enumerate(eqn.invars)]
    pure = [env.is_pure(v) for v in eqn.invars]
    c_consts_i, b_consts_i = infos[:cn], infos[cn:cn + bn]
    c_consts_v, b_consts_v = vals[:cn], vals[cn:cn + bn]
    carry_i, carry_v = list(infos[cn + bn:]), list(vals[cn + bn:])
    carry_p = list(pure[cn + bn:])
    tapes = []
    for _ in range(_MAX_WHILE_ITERS):
        if any(i is not None for i in c_consts_i) or any(
                carry_i[j] is not None and _cond_uses(cj.jaxpr, cn + j)
                for j in range(len(carry_i))):
            raise DynamicDependencyError(
                f"while_loop at {source_line(eqn)}: its trip count depends on the input, so "
                "the receptive field is not static.")
        cvals = list(c_consts_v) + carry_v
        if any(v is None and _cond_uses(cj.jaxpr, j) for j, v in enumerate(cvals)):
            raise DynamicDependencyError(
                f"while_loop at {source_line(eqn)}: its trip count depends on runtime values "
                "(e.g. parameters), so the receptive field is not static.")
        cvals = [v if v is not None else np.zeros(a.aval.shape, a.aval.dtype)
                 for v, a in zip(cvals, cj.jaxpr.invars, strict=True)]
        go = bool(jcore.jaxpr_as_fun(cj)(*cvals)[0])
        if not go:
            break
        outs, ovals, opure, tape = forward(
            bj.jaxpr, bj.consts, list(b_consts_i) + carry_i, list(b_consts_v) + carry_v,
            list(pure[cn:cn + bn]) + carry_p, ctx, prefix)
        tapes.append(tape)
        carry_i, carry_v, carry_p = outs, ovals, opure
    else:
        raise DynamicDependencyError(
            f"while_loop at {source_line(eqn)} did not stop within {_MAX_WHILE_ITERS} "
            "iterations during analysis")
    nb = len(carry_i)

    def bwd(oms):
        k_masks = list(oms)
        b_acc = [None] * bn
        for tape in reversed(tapes):
            inm = backward(tape, bj.jaxpr, k_masks)
            for j in range(bn):
                b_acc[j] = _or(b_acc[j], inm[j])
            k_masks = inm[bn:bn + nb]
        res = [None] * cn + b_acc + k_masks
        return [r if infos[j] is not None else None for j, r in enumerate(res)]

    return carry_i, bwd


def _cond_uses(jaxpr, j) -> bool:
    v = jaxpr.invars[j]
    used = set()
    for e in jaxpr.eqns:
        for x in e.invars:
            if not isinstance(x, jcore.Literal):
                used.add(x)
    return v in used or v in jaxpr.outvars


def _cond_rule(eqn, infos, env, ctx, prefix):
    branches = eqn.params["branches"]
    idx_i = infos[0]
    ops_i = infos[1:]
    vals = [env.read_val(v) if infos[j] is None else None for j, v in enumerate(eqn.invars)]
    pure = [env.is_pure(v) for v in eqn.invars]
    chosen = None
    if idx_i is None and vals[0] is not None:
        chosen = int(np.clip(int(vals[0]), 0, len(branches) - 1))
    run = [chosen] if chosen is not None else list(range(len(branches)))
    results = []
    for b in run:
        br = branches[b]
        outs, _, _, tape = forward(br.jaxpr, br.consts, ops_i, vals[1:], pure[1:], ctx, prefix)
        results.append((b, outs, tape))
    out_infos = []
    for k, ov in enumerate(eqn.outvars):
        shape = tuple(ov.aval.shape)
        parts = [r[1][k] for r in results]
        if idx_i is not None:
            parts.append(Info([x.reshape(()) * np.ones(()) for x in idx_i.lo],
                              [x.reshape(()) * np.ones(()) for x in idx_i.hi],
                              [np.zeros(len(shape)) for _ in idx_i.lo]))
        if all(x is None for x in parts):
            out_infos.append(None)
        else:
            out_infos.append(_combine(parts, len(shape), ctx.naxes))

    def bwd(oms):
        acc = [None] * len(ops_i)
        for b, _outs, tape in results:
            inm = backward(tape, branches[b].jaxpr, oms)
            acc = [_or(x, y) for x, y in zip(acc, inm, strict=True)]
        idx_m = None
        if idx_i is not None:
            for m in oms:
                if m is not None:
                    a = m.reshape(m.shape[0], -1).any(axis=1)
                    idx_m = _or(idx_m, a)
        return [idx_m] + [a if i is not None else None for a, i in zip(acc, ops_i, strict=True)]

    return out_infos, bwd


_RULES: dict[str, Callable] = {
    "conv_general_dilated": _conv_rule,
    "reduce_window_sum": _reduce_window_rule,
    "reduce_window_max": _reduce_window_rule,
    "reduce_window_min": _reduce_window_rule,
    "reduce_window": _reduce_window_rule,
    "pad": _pad_rule,
    "broadcast_in_dim": _broadcast_in_dim_rule,
    "transpose": _transpose_rule,
    "reduce_sum": _reduce_rule,
    "reduce_max": _reduce_rule,
    "reduce_min": _reduce_rule,
    "reduce_prod": _reduce_rule,
    "reduce_and": _reduce_rule,
    "reduce_or": _reduce_rule,
    "reduce_xor": _reduce_rule,
    "argmax": _reduce_rule,
    "argmin": _reduce_rule,
    "cumsum": _cumulative_rule,
    "cumprod": _cumulative_rule,
    "cummax": _cumulative_rule,
    "cummin": _cumulative_rule,
    "cumlogsumexp": _cumulative_rule,
    "sort": _sort_rule,
    "top_k": _top_k_rule,
    "dot_general": _dot_general_rule,
    "select_n": _select_n_rule,
    "scatter": _scatter_rule,
    "scatter-add": _scatter_rule,
    "scatter_add": _scatter_rule,
    "scatter-mul": _scatter_rule,
    "scatter_mul": _scatter_rule,
    "scatter-min": _scatter_rule,
    "scatter_min": _scatter_rule,
    "scatter-max": _scatter_rule,
    "scatter_max": _scatter_rule,
    "scatter-sub": _scatter_rule,
    "scatter_sub": _scatter_rule,
    "optimization_barrier": _identity_multi_rule,
    "device_put": _identity_multi_rule,
    "pjit": _call_rule,
    "jit": _call_rule,
    "closed_call": _call_rule,
    "core_call": _call_rule,
    "remat": _call_rule,
    "remat2": _call_rule,
    "checkpoint": _call_rule,
    "custom_jvp_call": _call_rule,
    "custom_vjp_call": _call_rule,
    "custom_vjp_call_jaxpr": _call_rule,
    "scan": _scan_rule,
    "while": _while_rule,
    "cond": _cond_rule,
}
for _n in _DATA_OPERANDS:
    _RULES[_n] = _data_movement_rule
del _n

SUPPORTED_PRIMITIVES = frozenset(_RULES) | frozenset(_ELEMENTWISE)

