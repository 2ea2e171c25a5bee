"""Known-value rules of the structural primitives: data movement, padding, reductions,
pooling, cumulative scans, contractions and fixed-index gathers apply the same rearrangement
to the bounds (:mod:`rfjax.engine.known` for what the bounds mean and when the rules run).

Each rule is ``rule(eqn, ops) -> [(lo, hi) or None per output]`` (:class:`Operands`); NaN marks
an element the rule cannot bound.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rfjax.engine import moves
from rfjax.engine.bounds import ev, is_float
from rfjax.engine.fields import INF, bshape, materialize
from rfjax.engine.window import Window


def _moved(fn: Callable, full: bool = False):
    """A movement rule: ``fn(bounds array, eqn, in_shape)`` applied to both bounds (``full``:
    on arrays materialised to the operand's shape)."""

    def rule(eqn, ops):
        if not ops.informative(0):
            return [None]
        shape = ops.shape(0)
        lo, hi = ops.bounds(0)
        prep = (lambda a: materialize(a, shape)) if full else (lambda a: bshape(a, len(shape)))
        return [(fn(prep(lo), eqn, shape), fn(prep(hi), eqn, shape))]

    return rule


def _broadcast(A, eqn, in_shape):
    ndim = len(eqn.params["shape"])
    shp = [1] * ndim
    for i, d in enumerate(eqn.params["broadcast_dimensions"]):
        shp[d] = A.shape[i]
    return A.reshape(shp)


def _reshape(A, eqn, in_shape):
    perm = eqn.params.get("dimensions")
    if perm is not None:
        A = np.transpose(A, perm)
    return A.reshape(tuple(eqn.params["new_sizes"]))


def _slice(A, eqn, in_shape):
    p = eqn.params
    strides = p["strides"] or (1,) * len(in_shape)
    return A[tuple(slice(a, b, c) if A.shape[j] > 1 else slice(None) for j, (a, b, c) in
                   enumerate(zip(p["start_indices"], p["limit_indices"], strides,
                                 strict=True)))]


def _concatenate(eqn, ops):
    if not any(ops.informative(i) for i in range(len(eqn.invars))):
        return [None]
    parts = [ops.bounds(i) for i in range(len(eqn.invars))]
    if any(p is None for p in parts):
        return [None]
    d = eqn.params["dimension"]
    return [tuple(np.concatenate([materialize(p[s], ops.shape(i)) for i, p in
                                  enumerate(parts)], axis=d) for s in (0, 1))]


def _reduce(kind):
    def rule(eqn, ops):
        if not ops.informative(0):
            return [None]
        axes = tuple(eqn.params["axes"])
        shape, dt = ops.shape(0), ops.dtype(0)
        lo, hi = ops.bounds(0)
        kept = np.all(bshape(_exact(lo, hi), len(shape)), axis=axes)
        if kind in ("max", "min", "and", "or"):
            op = np.max if kind in ("max", "or") else np.min
            return [(op(bshape(lo, len(shape)), axis=axes), op(bshape(hi, len(shape)),
                                                                 axis=axes), kept)]
        if kind == "sum" and is_float(dt):
            return [tuple(ev(lambda x: np.sum(x, axis=axes), dt, materialize(a, shape))
                          for a in (lo, hi)) + (kept,)]
        return [None]

    return rule


def _dot_general(eqn, ops):
    """Where every term of the contraction has a known-zero factor, the output is 0."""
    nz = [ops.nonzero(0), ops.nonzero(1)]
    if nz[0] is None and nz[1] is None:
        return [None]
    nl, nr = len(ops.shape(0)), len(ops.shape(1))
    ls, rs, os_ = dot_subscripts(eqn.params["dimension_numbers"], nl, nr)
    arrs = [bshape(n, k).astype(np.float32) if n is not None else np.ones((1,) * k, np.float32)
            for n, k in zip(nz, (nl, nr), strict=True)]
    cnt = np.einsum(f"{ls},{rs}->{os_}", *arrs, optimize=True)
    zero = cnt == 0
    if not zero.any():
        return [None]
    r = np.where(zero, 0.0, np.nan)
    return [(r, r)]


def _conv(eqn, ops):
    """A convolution output is 0 where its window reads only known zeros and padding (the
    weights are finite), whether or not the operand has bounds; the operand's features are
    OR-ed, so feature groups are ignored and the zeros found are a subset of the true ones."""
    nz = ops.nonzero(0)
    p = eqn.params
    dn = p["dimension_numbers"]
    lspec, rspec, ospec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    lhs, rhs = ops.shape(0), ops.shape(1)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    nsp = len(lspec) - 2
    lhs_dil = p["lhs_dilation"] or (1,) * nsp
    rhs_dil = p["rhs_dilation"] or (1,) * nsp
    rels = [Window(n_in=lhs[lspec[2 + i]], n_out=out_shape[ospec[2 + i]],
                   size=rhs[rspec[2 + i]], stride=p["window_strides"][i], pad_lo=p["padding"][i][0],
                   lhs_dilation=lhs_dil[i], rhs_dilation=rhs_dil[i]).relation()
            for i in range(nsp)]
    if nz is None and all(R.any(axis=1).all() for R in rels):
        return [None]  # (the common case: every window reads an input element)
    A = np.ones((1,) * len(lhs), bool) if nz is None else bshape(nz, len(lhs))
    A = np.transpose(A, lspec).any(axis=1, keepdims=True)  # (batch, 1, spatial...)
    for i, R in enumerate(rels):
        M = np.moveaxis(np.broadcast_to(A, A.shape[:2 + i] + (R.shape[1],) + A.shape[3 + i:]),
                        2 + i, -1)
        A = np.moveaxis((M.astype(np.float32) @ R.T.astype(np.float32)) > 0, -1, 2 + i)
    zero = np.transpose(~A, np.argsort(ospec))
    if not zero.any():
        return [None]
    r = np.where(zero, 0.0, np.nan)
    return [(r, r)]


def _indexed(eqn, ops):
    """A gather or dynamic slice with indices fixed by the program moves the bounds with the
    elements (an out-of-range read or a fill value: unknown)."""
    if not ops.informative(0):
        return [None]
    vals = [ops.env.read_val(v) for v in eqn.invars[1:]]
    if any(v is None for v in vals):
        return [None]
    shape = ops.shape(0)
    n = int(np.prod(shape, dtype=np.int64))
    src = moves.sources(eqn, [np.arange(n, dtype=np.int32).reshape(shape), *vals])[0]
    ok = (src >= 0) & (src < n)
    idx = np.where(ok, src, 0)
    lo, hi = ops.bounds(0)
    return [tuple(np.where(ok, materialize(a, shape).ravel()[idx], np.nan) for a in (lo, hi))]


def dot_subscripts(dimension_numbers, nl: int, nr: int) -> tuple[str, str, str]:
    """einsum subscripts (lhs, rhs, out) of a ``dot_general``."""
    (lc, rc), (lb, rb) = dimension_numbers
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lsub, rsub = [""] * nl, [""] * nr
    for dl, dr in list(zip(lb, rb, strict=True)) + list(zip(lc, rc, strict=True)):
        lsub[dl] = rsub[dr] = next(letters)
    lfree = [d for d in range(nl) if not lsub[d]]
    rfree = [d for d in range(nr) if not rsub[d]]
    for d in lfree:
        lsub[d] = next(letters)
    for d in rfree:
        rsub[d] = next(letters)
    osub = [lsub[d] for d in lb] + [lsub[d] for d in lfree] + [rsub[d] for d in rfree]
    return "".join(lsub), "".join(rsub), "".join(osub)


def _pad(eqn, ops):
    """The operand's bounds moved to their place; the padding value's bounds everywhere else
    (edges and interior holes); negative padding crops."""
    if not (ops.informative(0) or ops.informative(1)):
        return [None]
    lo, hi = ops.bounds(0)
    plo, phi = ops.bounds(1)
    shape, out_shape = ops.shape(0), tuple(eqn.outvars[0].aval.shape)
    res = []
    for A, pv in ((lo, plo), (hi, phi)):
        A = bshape(A, len(shape))
        for j, (lo_, _hi, interior) in enumerate(eqn.params["padding_config"]):
            w = Window(n_in=shape[j], n_out=out_shape[j], pad_lo=lo_, lhs_dilation=interior + 1)
            if w.trivial():
                continue
            P, real, _, _ = w.positions()
            A = np.broadcast_to(A, A.shape[:j] + (shape[j],) + A.shape[j + 1:])
            idx = np.where(real[:, 0], P[:, 0] // w.lhs_dilation, 0)
            sel = real[:, 0].reshape((-1,) + (1,) * (A.ndim - j - 1))
            A = np.where(sel, np.take(A, idx, axis=j), float(np.asarray(pv).reshape(-1)[0]))
        res.append(A)
    return [tuple(res)]


def _exact(lo, hi) -> np.ndarray:
    return np.asarray(lo == hi)


def _identity(eqn, ops):
    """Every output is its operand (``optimization_barrier``, ``device_put``: several)."""
    return [ops.bounds(i) if ops.informative(i) else None for i in range(len(eqn.invars))]


def _window_reduce(A, axis: int, w: Window, op, identity: float):
    """``op`` over each output's window along ``axis`` (padding and holes: ``identity``)."""
    P, real, _, _ = w.positions()
    A = np.broadcast_to(A, A.shape[:axis] + (w.n_in,) + A.shape[axis + 1:])
    idx = np.where(real, P // w.lhs_dilation, 0)  # (n_out, size)
    V = np.take(A, idx.ravel(), axis=axis).reshape(
        A.shape[:axis] + idx.shape + A.shape[axis + 1:])
    sel = real.reshape(real.shape + (1,) * (A.ndim - axis - 1))
    return op(np.where(sel, V, identity), axis=axis + 1)


def _reduce_window(kind: str):
    """Pooling: max/min move the bounds (padding is the identity, -inf/+inf, as in XLA); a
    sum is 0 where its window reads only known zeros and padding."""

    def rule(eqn, ops):
        p = eqn.params
        shape, out_shape = ops.shape(0), tuple(eqn.outvars[0].aval.shape)
        n = len(shape)
        base = p.get("base_dilation") or (1,) * n
        wdil = p.get("window_dilation") or (1,) * n
        ws = {j: Window(n_in=shape[j], n_out=out_shape[j], size=p["window_dimensions"][j],
                        stride=p["window_strides"][j], pad_lo=p["padding"][j][0],
                        lhs_dilation=base[j], rhs_dilation=wdil[j]) for j in range(n)}
        ws = {j: w for j, w in ws.items() if not w.trivial()}
        if not ops.informative(0) and all(w.relation().any(axis=1).all() for w in ws.values()):
            return [None]  # (the common case: every window reads an input element)
        if kind == "sum":
            nz = ops.nonzero(0)
            A = np.ones((1,) * n) if nz is None else bshape(nz, n).astype(np.float64)
            for j, w in ws.items():
                A = _window_reduce(A, j, w, np.max, 0.0)
            r = np.where(A > 0, np.nan, 0.0)
            return [(r, r)]
        op, ident = (np.max, -INF) if kind == "max" else (np.min, INF)
        lo, hi = ops.bounds(0)
        out = []
        for A, o, i in ((lo, op, ident), (hi, op, ident), (_exact(lo, hi), np.min, True)):
            A = bshape(A, n)
            for j, w in ws.items():
                A = _window_reduce(A, j, w, o, i)
            out.append(A)
        return [tuple(out)]

    return rule


def _cumulative(kind: str):
    """Running max/min move the bounds; a running sum is 0 where every element so far is a
    known 0; a running product is 0 from a known 0 on (the values are finite); a running
    logsumexp is -inf where every element so far is -inf."""

    def rule(eqn, ops):
        if not ops.informative(0):
            return [None]
        axis, rev, shape = eqn.params["axis"], eqn.params["reverse"], ops.shape(0)

        def acc(A, op):
            A = materialize(A, shape)
            if rev:
                return np.flip(op.accumulate(np.flip(A, axis), axis=axis), axis)
            return op.accumulate(A, axis=axis)

        lo, hi = ops.bounds(0)
        kept = acc(_exact(lo, hi), np.logical_and)
        if kind in ("max", "min"):
            op = np.maximum if kind == "max" else np.minimum
            return [(acc(lo, op), acc(hi, op), kept)]
        if kind == "sum":
            fixed = acc((lo == 0) & (hi == 0), np.logical_and)
            r = np.where(fixed, 0.0, np.nan)
        elif kind == "prod":
            r = np.where(acc((lo == 0) & (hi == 0), np.logical_or), 0.0, np.nan)
        else:
            r = np.where(acc((lo == -INF) & (hi == -INF), np.logical_and), -INF, np.nan)
        return [(r, r, kept)]

    return rule


#: Primitives whose exact outputs only ever come from exact operand elements and padding (a
#: value moved, a sum of known zeros): they keep the intervals the rule gave them (see
#: :func:`rfjax.engine.known.settle`). Other rules may return a third array, where that holds.
_IDENTITY = ("stop_gradient", "copy", "copy_p", "device_put", "pvary", "sharding_constraint",
             "mesh_cast", "reshard", "optimization_barrier")

INHERITED = frozenset({*_IDENTITY, "broadcast_in_dim", "transpose", "reshape", "squeeze",
                       "expand_dims", "rev", "slice", "concatenate", "pad", "gather",
                       "dynamic_slice", "conv_general_dilated", "reduce_window_sum", "cumsum"})

#: Primitives whose outputs can be fixed by the structure alone (a window over padding only):
#: :func:`rfjax.engine.known.settle` runs their rule even when no operand has bounds.
STRUCTURAL = frozenset({"conv_general_dilated", "reduce_window_sum", "reduce_window_max",
                        "reduce_window_min"})

TABLE = {
    **{n: _identity for n in _IDENTITY},
    "broadcast_in_dim": _moved(_broadcast),
    "transpose": _moved(lambda A, eqn, s: np.transpose(A, eqn.params["permutation"])),
    "reshape": _moved(_reshape, full=True),
    "squeeze": _moved(lambda A, eqn, s: np.squeeze(A, tuple(eqn.params["dimensions"]))),
    "expand_dims": _moved(lambda A, eqn, s: np.expand_dims(A, tuple(eqn.params["dimensions"]))),
    "rev": _moved(lambda A, eqn, s: np.flip(A, tuple(eqn.params["dimensions"])), full=True),
    "slice": _moved(_slice),
    "concatenate": _concatenate,
    "pad": _pad,
    "reduce_sum": _reduce("sum"), "reduce_max": _reduce("max"), "reduce_min": _reduce("min"),
    "reduce_and": _reduce("and"), "reduce_or": _reduce("or"),
    "reduce_window_sum": _reduce_window("sum"), "reduce_window_max": _reduce_window("max"),
    "reduce_window_min": _reduce_window("min"),
    "cumsum": _cumulative("sum"), "cumprod": _cumulative("prod"),
    "cummax": _cumulative("max"), "cummin": _cumulative("min"),
    "cumlogsumexp": _cumulative("logsumexp"),
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    "gather": _indexed, "dynamic_slice": _indexed,
}
