"""Data movement: broadcasting, transposition, reshapes, slices, concatenation, gathers and
scatters with indices fixed by the program, and ``select_n``.

The generic rule evaluates the primitive itself on arrays of element indices, so any static
rearrangement is exact; indices that depend on runtime values are refused.
"""

from __future__ import annotations

import numpy as np
from jax import lax

from rfjax.engine.cone_ir import Unsupported
from rfjax.engine.errors import DynamicDependencyError, UnsupportedPrimitiveError, source_line
from rfjax.engine.fields import INF, Info, bshape, estimate_slopes, materialize
from rfjax.engine.records import ConeRule, PrimitiveRule
from rfjax.engine.rules.elementwise import ELEMENTWISE_CONE, elementwise_rule


def broadcast_in_dim_rule(eqn, infos, env, ctx, prefix):
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
            A = bshape(src, len(in_shape))
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


def transpose_rule(eqn, infos, env, ctx, prefix):
    perm = tuple(eqn.params["permutation"])
    op_i = infos[0]
    n = len(perm)
    out = Info([np.transpose(bshape(x, n), perm) for x in op_i.lo],
               [np.transpose(bshape(x, n), perm) for x in op_i.hi],
               [np.asarray(s)[list(perm)] for s in op_i.slope])
    inv = tuple(int(i) for i in np.argsort(perm))

    def bwd(oms):
        return [np.transpose(oms[0], (0,) + tuple(1 + i for i in inv))]

    return [out], bwd


# ---- generic data movement: evaluate the primitive on index arrays --------------------------

# For each data-movement primitive: which operands carry data (others are indices/params).
_DATA_OPERANDS = {
    "reshape": (0,), "squeeze": (0,), "rev": (0,), "slice": (0,), "concatenate": None,
    "gather": (0,), "dynamic_slice": (0,), "dynamic_update_slice": (0, 1), "tile": (0,),
    "stack": None, "split": (0,), "expand_dims": (0,), "unstack": (0,),
}


def data_movement_rule(eqn, infos, env, ctx, prefix):
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
                why = env.why.get(v)
                raise DynamicDependencyError(
                    f"'{name}' at {source_line(eqn)} uses indices computed from runtime values "
                    "(e.g. parameters); the receptive field is not static."
                    + (f" ({why})" if why else ""))
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
                lo_parts.append(materialize(info.lo[a], shape).ravel())
                hi_parts.append(materialize(info.hi[a], shape).ravel())
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


def scatter_rule(eqn, infos, env, ctx, prefix):
    """scatter / scatter-add / -mul / -min / -max / -sub with indices fixed by the program.

    Each output element depends on the update written to it and, unless a plain ``scatter``
    overwrote it, on the operand element at the same place. Duplicate indices (several updates
    landing on one element) are refused rather than approximated."""
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
            opL, opH = materialize(op_i.lo[a], shape), materialize(op_i.hi[a], shape)
            keep = ~written | keeps_operand
            L = np.where(keep, opL, L)
            H = np.where(keep, opH, H)
        if upd_i is not None:
            uL = materialize(upd_i.lo[a], ushape).ravel()
            uH = materialize(upd_i.hi[a], ushape).ravel()
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


def select_n_rule(eqn, infos, env, ctx, prefix):
    pred = eqn.invars[0]
    pval = env.read_val(pred) if infos[0] is None else None
    shape = tuple(eqn.outvars[0].aval.shape)
    ndim = len(shape)
    if pval is None:
        return elementwise_rule(eqn, infos, env, ctx, prefix)
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
            L = np.where(sel, bshape(i.lo[a], ndim), L)
            H = np.where(sel, bshape(i.hi[a], ndim), H)
        lo.append(L)
        hi.append(H)
        slope.append(estimate_slopes(L, shape))

    def bwd(oms):
        m = oms[0]
        return [None] + [(m & (pval == c)[None]) if i is not None else None
                         for c, i in enumerate(cases)]

    return [Info(lo, hi, slope)], bwd


# ---- the cone ------------------------------------------------------------------------------


def _broadcast_labels(ir, node, dep, labels):
    i = node.ins[0]
    lab = labels[i]
    bd = node.params["broadcast_dimensions"]
    in_shape, out_shape = ir.shapes[i], ir.shapes[node.outs[0]]
    out = tuple(bd[d] for d in lab)
    if any(in_shape[d] != out_shape[o] for d, o in zip(lab, out, strict=True)):
        raise Unsupported("broadcast of a spatial axis")
    return out


def _resize_params(key):
    """Cone params: the output-shape parameter ``key`` shrunk to the window."""

    def params(cone, idx, node, out_win, out_lab):
        p = dict(node.params)
        shape = list(p[key])
        for (a, b), d in zip(out_win, out_lab, strict=True):
            shape[d] = b - a
        p[key] = tuple(shape)
        return p

    return params


def _transpose_labels(ir, node, dep, labels):
    perm = list(node.params["permutation"])
    return tuple(perm.index(d) for d in labels[node.ins[0]])


def _reshape_labels(ir, node, dep, labels):
    if node.params.get("dimensions") is not None:
        raise Unsupported("reshape with dimensions")
    i = node.ins[0]
    in_shape, out_shape = ir.shapes[i], ir.shapes[node.outs[0]]
    out = []
    for d in labels[i]:
        pre = int(np.prod(in_shape[:d]))
        q = next((q for q in range(len(out_shape))
                  if int(np.prod(out_shape[:q])) == pre and out_shape[q] == in_shape[d]), None)
        if q is None:
            raise Unsupported("reshape that merges or splits a spatial axis")
        out.append(q)
    return tuple(out)


def _squeeze_labels(ir, node, dep, labels):
    dims = node.params["dimensions"]
    lab = labels[node.ins[0]]
    if any(d in dims for d in lab):
        raise Unsupported("squeeze of a spatial axis")
    return tuple(d - sum(1 for s in dims if s < d) for d in lab)


def _concatenate_labels(ir, node, dep, labels):
    dins = [i for i in node.ins if not isinstance(i, tuple) and dep.get(i)]
    lab = labels[dins[0]]
    if node.params["dimension"] in lab:
        raise Unsupported("concatenate along a spatial axis")
    if any(labels[i] != lab for i in dins):
        raise Unsupported("concatenate of differently laid out operands")
    return lab


def _slice_labels(ir, node, dep, labels):
    return labels[node.ins[0]]


def _slice_need(ir, node, pos, out_win, lab):
    p = node.params
    win = []
    for k, d in enumerate(lab):
        st = p["start_indices"][d]
        sd = (p["strides"] or (1,) * len(p["start_indices"]))[d]
        o0, o1 = out_win[k]
        win.append((st + o0 * sd, st + (o1 - 1) * sd + 1))
    return win


def _slice_params(cone, idx, node, out_win, out_lab):
    p = dict(node.params)
    start, limit = list(p["start_indices"]), list(p["limit_indices"])
    for (a, b), d in zip(cone.req[(idx, 0)], cone.labels[node.ins[0]], strict=True):
        start[d], limit[d] = 0, b - a
    p["start_indices"], p["limit_indices"] = tuple(start), tuple(limit)
    return p


_CONE = {
    "reshape": ConeRule(_reshape_labels, params=_resize_params("new_sizes")),
    "squeeze": ConeRule(_squeeze_labels),
    "concatenate": ConeRule(_concatenate_labels, slice_consts=True),
    "slice": ConeRule(_slice_labels, _slice_need, _slice_params),
}
_ROWS = {"gather", "dynamic_slice"}

RULES = [
    PrimitiveRule("broadcast_in_dim", broadcast_in_dim_rule,
                  ConeRule(_broadcast_labels, params=_resize_params("shape"))),
    PrimitiveRule("transpose", transpose_rule, ConeRule(_transpose_labels)),
    PrimitiveRule("select_n", select_n_rule, ELEMENTWISE_CONE),
] + [PrimitiveRule(n, data_movement_rule, _CONE.get(n), row=n in _ROWS)
     for n in _DATA_OPERANDS] + [
    PrimitiveRule(n, scatter_rule)
    for n in ("scatter", "scatter-add", "scatter_add", "scatter-mul", "scatter_mul",
              "scatter-min", "scatter_min", "scatter-max", "scatter_max", "scatter-sub",
              "scatter_sub")
]
