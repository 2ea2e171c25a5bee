"""Reductions, scans along an axis, sorting, top-k and ``dot_general`` (dense layers,
attention, and constant matrices such as ``jax.image.resize``'s interpolation weights)."""

from __future__ import annotations

import numpy as np

from rfjax.engine import constants, known, known_structure
from rfjax.engine.cone_ir import Unsupported, is_dependent
from rfjax.engine.errors import UnsupportedPrimitiveError, source_line
from rfjax.engine.fields import (
    INF,
    Info,
    bshape,
    combine,
    estimate_slopes,
    materialize,
    union,
)
from rfjax.engine.records import ConeRule, PrimitiveRule


def _reduced(info: Info, n: int, axes: tuple[int, ...]) -> Info:
    """The intervals of a reduction over ``axes`` of an ``n``-dimensional operand (the
    reduced axes dropped): each output reads every element along them."""
    keep = [j for j in range(n) if j not in axes]
    return Info([bshape(x, n).min(axis=axes) for x in info.lo],
                [bshape(x, n).max(axis=axes) for x in info.hi],
                [np.asarray(s)[keep] for s in info.slope])


def _spread(m: np.ndarray, axes: tuple[int, ...], in_shape: tuple[int, ...]) -> np.ndarray:
    """Backward of a reduction over ``axes``: the output's mask over every reduced element."""
    m = np.expand_dims(m, tuple(1 + a for a in axes))
    return np.broadcast_to(m, (m.shape[0],) + in_shape).copy()


def reduce_rule(eqn, infos, env, ctx, prefix):
    axes = tuple(eqn.params["axes"])
    in_shape = tuple(eqn.invars[0].aval.shape)
    out = _reduced(infos[0], len(in_shape), axes)
    return [out], lambda oms: [_spread(oms[0], axes, in_shape)]


def generic_reduce_rule(eqn, infos, env, ctx, prefix):
    """``lax.reduce`` with a computation of its own (several operands, e.g. an argmax as a
    value/index pair): every output reads every operand and initial value along
    ``dimensions``, whatever the computation does with them."""
    axes = tuple(eqn.params["dimensions"])
    half = len(eqn.invars) // 2
    in_shape = tuple(eqn.invars[0].aval.shape)
    n_out = len(in_shape) - len(axes)
    each = [(_reduced(i, len(in_shape), axes) if k < half else  # an initial value (a scalar)
             Info([bshape(x, 0) for x in i.lo], [bshape(x, 0) for x in i.hi],
                  [np.zeros(n_out) for _ in i.lo]))
            for k, i in enumerate(infos) if i is not None]
    out = combine(each, n_out, ctx.naxes)

    def bwd(oms):
        m = union(oms)
        init = m.reshape(m.shape[0], -1).any(axis=1)
        return [(_spread(m, axes, in_shape) if k < half else init) if i is not None else None
                for k, i in enumerate(infos)]

    return [out] * len(eqn.outvars), bwd


def collective_rule(eqn, infos, env, ctx, prefix):
    """``psum``/``pmax``/``pmin`` over positional axes (what ``jax.vmap(..., axis_name=)``
    leaves of ``lax.psum``/``pmean``): a reduction over those axes, per operand. A named
    axis (``shard_map``, ``pmap``) spans devices this analysis cannot see: refused."""
    axes = tuple(eqn.params["axes"])
    if not all(isinstance(a, int) for a in axes):
        raise UnsupportedPrimitiveError(
            f"'{eqn.primitive.name}' at {source_line(eqn)} reduces over the named axes "
            f"{axes}, which span devices; rfjax.trf analyses single-device programs (call "
            "fn without shard_map/pmap).")
    shapes = [tuple(v.aval.shape) for v in eqn.invars]
    outs = [None if i is None else _reduced(i, len(s), axes)
            for i, s in zip(infos, shapes, strict=True)]

    def bwd(oms):
        return [None if (i is None or m is None) else _spread(m, axes, s)
                for i, m, s in zip(infos, oms, shapes, strict=True)]

    return outs, bwd


def cumulative_rule(eqn, infos, env, ctx, prefix):
    axis = eqn.params["axis"]
    rev = eqn.params["reverse"]
    shape = tuple(eqn.invars[0].aval.shape)
    op_i = infos[0]
    n = len(shape)

    def acc(A, op):
        A = bshape(A, n)
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


def sort_rule(eqn, infos, env, ctx, prefix):
    """Every output depends on every operand along the sorted dimension; when the sort keys
    are fixed by the program, the sort is a fixed permutation of the payload (exact)."""
    dim = eqn.params["dimension"]
    shape = tuple(eqn.invars[0].aval.shape)
    n = len(shape)
    perm = _fixed_permutation(eqn, infos, env)
    if perm is not None:
        return _permutation_rule(infos, shape, dim, ctx.naxes, *perm)
    each = []
    for i in infos:
        if i is None:
            continue
        each.append(Info([bshape(x, n).min(axis=dim, keepdims=True) for x in i.lo],
                         [bshape(x, n).max(axis=dim, keepdims=True) for x in i.hi],
                         list(i.slope)))
    out = combine(each, n, ctx.naxes)

    def bwd(oms):
        r = _mixed_back(union(oms), (dim,), shape)
        return [r if i is not None else None for i in infos]

    return [out] * len(eqn.outvars), bwd


def _mixed(info: Info, n: int, axes: tuple[int, ...]) -> Info:
    """The intervals of an operation in which every output reads every operand element
    along ``axes`` (kept, at size 1) and nothing across the others."""
    return Info([bshape(x, n).min(axis=axes, keepdims=True) for x in info.lo],
                [bshape(x, n).max(axis=axes, keepdims=True) for x in info.hi],
                [np.where(np.isin(np.arange(n), axes), 0.0, s) for s in info.slope])


def _mixed_back(m: np.ndarray, axes: tuple[int, ...], in_shape: tuple[int, ...]) -> np.ndarray:
    """Backward of :func:`_mixed`: an output's mask over the whole of ``axes``."""
    m = m.any(axis=tuple(1 + a for a in axes), keepdims=True)
    return np.broadcast_to(m, (m.shape[0],) + in_shape).copy()


def fft_rule(eqn, infos, env, ctx, prefix):
    """``lax.fft`` over the trailing ``len(fft_lengths)`` axes: every output element depends
    on every operand element along those axes (a Fourier coefficient mixes the whole signal;
    the real transforms change the last axis' length) and on nothing elsewhere."""
    shape = tuple(eqn.invars[0].aval.shape)
    n = len(shape)
    axes = tuple(range(n - len(eqn.params["fft_lengths"]), n))
    return [_mixed(infos[0], n, axes)], lambda oms: [_mixed_back(oms[0], axes, shape)]


def _fixed_permutation(eqn, infos, env):
    """``(perm, group)`` when the sort's keys are fixed by the program: ``perm`` (along the
    sorted axis, moved last, flattened to rows) gives the source of each output element;
    ``group`` numbers the runs of equal keys. XLA computes the permutation (a stable sort of
    the keys with an ``iota`` payload); an unstable sort may order equal keys either way, so
    an output of such a run may come from any element of it. ``None``: keys not fixed."""
    nk = eqn.params["num_keys"]
    dim = eqn.params["dimension"]
    keys = [env.read_val(v) if infos[j] is None else None
            for j, v in enumerate(eqn.invars[:nk])]
    if any(k is None for k in keys):
        return None
    shape = tuple(eqn.invars[0].aval.shape)
    iota = np.broadcast_to(np.arange(shape[dim], dtype=np.int32).reshape(
        [-1 if d == dim else 1 for d in range(len(shape))]), shape)
    res = constants.evaluate_primitive(eqn.primitive, [np.asarray(k) for k in keys] + [iota],
                                       dimension=dim, is_stable=True, num_keys=nk)
    perm = np.moveaxis(res[-1], dim, -1).reshape(-1, shape[dim]).astype(np.int64)
    rows, length = perm.shape
    new = np.ones((rows, length), dtype=bool)
    if not eqn.params["is_stable"] and length > 1:
        same = np.ones((rows, length - 1), dtype=bool)
        for k in res[:-1]:
            k = np.moveaxis(np.asarray(k), dim, -1).reshape(rows, length)
            a, b = k[:, :-1], k[:, 1:]
            eq = a == b
            if np.issubdtype(k.dtype, np.floating):
                eq = (eq & (np.signbit(a) == np.signbit(b))) | (np.isnan(a) & np.isnan(b))
            same &= eq
        new[:, 1:] = ~same
    group = np.cumsum(new.ravel()) - 1
    return perm, group


def _permutation_rule(infos, shape, dim, naxes, perm, group):
    """Outputs of a sort by fixed keys: output ``j`` of a row holds the elements ``perm`` of
    its run of equal keys (one element unless an unstable sort met ties)."""
    rows, length = perm.shape
    src = (perm + np.arange(rows)[:, None] * length).ravel()  # flat source, axis moved last
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    moved = tuple(np.moveaxis(np.empty(shape, dtype=bool), dim, -1).shape)

    def to_rows(a):
        return np.moveaxis(materialize(a, shape), dim, -1).reshape(-1)

    def from_rows(flat):
        return np.moveaxis(flat.reshape(moved), -1, dim)

    outs = []
    for i in infos:
        if i is None:
            outs.append(None)
            continue
        lo = [from_rows(np.minimum.reduceat(to_rows(x)[src], starts)[group]) for x in i.lo]
        hi = [from_rows(np.maximum.reduceat(to_rows(x)[src], starts)[group]) for x in i.hi]
        outs.append(Info(lo, hi, [np.zeros(len(shape)) for _ in lo]))
    inverse = np.empty_like(src)
    inverse[src] = np.arange(src.size)

    def bwd(oms):
        res = []
        for m, i in zip(oms, infos, strict=True):
            if i is None or m is None:
                res.append(None)
                continue
            q = m.shape[0]
            flat = np.moveaxis(m, dim + 1, -1).reshape(q, -1)
            flat = np.logical_or.reduceat(flat, starts, axis=1)[:, group][:, inverse]
            res.append(np.moveaxis(flat.reshape((q,) + moved), -1, dim + 1))
        return res

    return outs, bwd


def top_k_rule(eqn, infos, env, ctx, prefix):
    """Each of the k largest along ``axis`` (the last one unless the primitive says otherwise)
    may be any element of that axis: every output depends on the whole axis."""
    shape = tuple(eqn.invars[0].aval.shape)
    n = len(shape)
    axis = eqn.params.get("axis", eqn.params.get("reduction_dimension", -1))  # approx_top_k
    axes = (axis + n if axis < 0 else axis,)
    out = _mixed(infos[0], n, axes)
    return [out, out], lambda oms: [_mixed_back(union(oms), axes, shape)]


def dot_general_rule(eqn, infos, env, ctx, prefix):
    lhs_shape = tuple(eqn.invars[0].aval.shape)
    rhs_shape = tuple(eqn.invars[1].aval.shape)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    nl, nr, no = len(lhs_shape), len(rhs_shape), len(out_shape)
    ls, rs, os_ = known_structure.dot_subscripts(eqn.params["dimension_numbers"], nl, nr)
    lhs_i, rhs_i = infos
    # The zero pattern of an operand fixed by the program (e.g. resize's interpolation matrix,
    # a closed-over band matrix) is architecture; a weight's is not. So are the known zeros of
    # a tracked operand (masked softmax weights, see rfjax.engine.known): a term with a known
    # zero factor contributes nothing.
    nz = [None, None]  # per operand, where it may be non-zero (None: everywhere)
    for k, i in enumerate(infos):
        if i is not None:
            nz[1 - k] = known.nonzero(env, eqn.invars[1 - k])

    def fwd_side(info, sub, shape, other_nz, other_sub):
        lo, hi, slope = [], [], []
        for a in range(ctx.naxes):
            res = []
            for arr, is_lo in ((info.lo[a], True), (info.hi[a], False)):
                A = bshape(arr, len(shape))
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
    out = combine(outs, no, ctx.naxes)
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
                      bshape(other_nz, len(other_sub)).astype(np.float32), optimize=True)
        r = r > 0
        if r.shape[1:] != shape:  # other_nz is compact along a contracted dim
            r = np.ascontiguousarray(np.broadcast_to(r, (m.shape[0],) + shape))
        return r

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


# ---- the cone ------------------------------------------------------------------------------


def _reduce_labels(ir, node, dep, labels):
    axes = node.params["axes"]
    lab = labels[node.ins[0]]
    if any(d in axes for d in lab):
        raise Unsupported(f"{node.name} over a spatial axis (a global operation)")
    return tuple(d - sum(1 for a in axes if a < d) for d in lab)


def _dot_general_labels(ir, node, dep, labels):
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    ldep, rdep = is_dependent(dep, node.ins[0]), is_dependent(dep, node.ins[1])
    if ldep and rdep:
        raise Unsupported("dot_general of two input-dependent operands (attention)")
    lshape, rshape = ir.shape(node.ins[0]), ir.shape(node.ins[1])
    free_l = [d for d in range(len(lshape)) if d not in lc and d not in lb]
    if ldep:
        lab = labels[node.ins[0]]
        if any(d in lc or d in lb for d in lab):
            raise Unsupported("dot_general contracting a spatial axis")
        return tuple(len(lb) + free_l.index(d) for d in lab)
    lab = labels[node.ins[1]]
    free = [d for d in range(len(rshape)) if d not in rc and d not in rb]
    if any(d in rc or d in rb for d in lab):
        raise Unsupported("dot_general contracting a spatial axis")
    return tuple(len(rb) + len(free_l) + free.index(d) for d in lab)


_REDUCE_CONE = ConeRule(_reduce_labels)
_REDUCTIONS = ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
               "reduce_or", "argmax", "argmin")

RULES = [
    PrimitiveRule(n, reduce_rule, _REDUCE_CONE, row=n not in ("reduce_and", "reduce_or"))
    for n in _REDUCTIONS
] + [
    PrimitiveRule("reduce_xor", reduce_rule),
    PrimitiveRule("sort", sort_rule, row=True),
    PrimitiveRule("fft", fft_rule, row=True),
    PrimitiveRule("top_k", top_k_rule, row=True),
    PrimitiveRule("approx_top_k", top_k_rule, row=True),
    PrimitiveRule("reduce", generic_reduce_rule, row=True),
    PrimitiveRule("dot_general", dot_general_rule,
                  ConeRule(_dot_general_labels), row=True),
] + [
    PrimitiveRule(n, collective_rule, row=True) for n in ("psum", "pmax", "pmin")
] + [PrimitiveRule(n, cumulative_rule, row=True)
     for n in ("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp")]
