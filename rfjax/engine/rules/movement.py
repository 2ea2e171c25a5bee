"""Structural data movement: broadcasting, transposition, reshapes, squeezes, reversal,
slices and concatenation. Each works on the compact interval arrays directly (no index
tables), and its backward is the inverse rearrangement of the mask."""

from __future__ import annotations

import numpy as np

from rfjax.engine.cone_ir import Unsupported
from rfjax.engine.errors import DynamicDependencyError, source_line
from rfjax.engine.fields import INF, Info, bshape
from rfjax.engine.records import ConeRule, PrimitiveRule


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


def _map_info(info: Info, fn, out_ndim: int, in_ndim: int) -> Info:
    """Apply ``fn`` to every interval array (given rank ``in_ndim``); jumps are left to the
    interpreter, which reads them off the arrays."""
    lo = [fn(bshape(x, in_ndim)) for x in info.lo]
    hi = [fn(bshape(x, in_ndim)) for x in info.hi]
    return Info(lo, hi, [np.zeros(out_ndim) for _ in lo])


def _reshape_groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list, list]]:
    """Split two shapes of equal size into consecutive groups of axes with equal products."""
    if 0 in a or 0 in b:  # no elements (jnp.pad's empty edge pieces): one group, no products
        return [(list(range(len(a))), list(range(len(b))))]
    groups, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        gi, gj, pa, pb = [], [], 1, 1
        if i < len(a):
            gi.append(i)
            pa *= a[i]
            i += 1
        if j < len(b):
            gj.append(j)
            pb *= b[j]
            j += 1
        while pa != pb:
            if pa < pb:
                gi.append(i)
                pa *= a[i]
                i += 1
            else:
                gj.append(j)
                pb *= b[j]
                j += 1
        groups.append((gi, gj))
    return groups


def reshape_rule(eqn, infos, env, ctx, prefix):
    """Reshape, on the compact arrays: a group of axes on which an array is constant stays
    size 1; only the groups it varies on are broadcast and reshaped."""
    in_shape = tuple(eqn.invars[0].aval.shape)
    out_shape = tuple(eqn.params["new_sizes"])
    perm = eqn.params.get("dimensions")
    if perm is not None:  # reshape(x, dimensions=p) == reshape(transpose(x, p))
        in_shape = tuple(in_shape[d] for d in perm)
    groups = _reshape_groups(in_shape, out_shape)

    def fn(A):
        if perm is not None:
            A = np.transpose(A, perm)
        src, dst = [], []
        for gi, gj in groups:
            vary = any(A.shape[k] > 1 for k in gi)
            src += [in_shape[k] if vary else 1 for k in gi]
            dst += [out_shape[k] if vary else 1 for k in gj]
        return np.broadcast_to(A, src).reshape(dst)

    out = _map_info(infos[0], fn, len(out_shape), len(eqn.invars[0].aval.shape))
    orig = tuple(eqn.invars[0].aval.shape)
    inv = None if perm is None else tuple(int(i) for i in np.argsort(perm))

    def bwd(oms):
        m = oms[0].reshape((oms[0].shape[0],) + in_shape)
        if inv is not None:
            m = np.transpose(m, (0,) + tuple(1 + i for i in inv))
        return [m.reshape((m.shape[0],) + orig)]

    return [out], bwd


def squeeze_rule(eqn, infos, env, ctx, prefix):
    dims = tuple(eqn.params["dimensions"])
    in_shape = tuple(eqn.invars[0].aval.shape)
    out = _map_info(infos[0], lambda A: np.squeeze(A, dims), len(in_shape) - len(dims),
                    len(in_shape))
    return [out], lambda oms: [oms[0].reshape((oms[0].shape[0],) + in_shape)]


def expand_dims_rule(eqn, infos, env, ctx, prefix):
    dims = tuple(eqn.params["dimensions"])
    in_shape = tuple(eqn.invars[0].aval.shape)
    out = _map_info(infos[0], lambda A: np.expand_dims(A, dims), len(in_shape) + len(dims),
                    len(in_shape))
    return [out], lambda oms: [oms[0].reshape((oms[0].shape[0],) + in_shape)]


def rev_rule(eqn, infos, env, ctx, prefix):
    dims = tuple(eqn.params["dimensions"])
    n = len(eqn.invars[0].aval.shape)
    out = _map_info(infos[0], lambda A: np.flip(A, tuple(d for d in dims if A.shape[d] > 1)),
                    n, n)
    return [out], lambda oms: [np.flip(oms[0], tuple(1 + d for d in dims))]


def slice_rule(eqn, infos, env, ctx, prefix):
    p = eqn.params
    in_shape = tuple(eqn.invars[0].aval.shape)
    n = len(in_shape)
    strides = p["strides"] or (1,) * n
    sl = tuple(slice(a, b, c) for a, b, c in zip(p["start_indices"], p["limit_indices"],
                                                 strides, strict=True))

    def fn(A):
        return A[tuple(s if A.shape[j] > 1 else slice(None) for j, s in enumerate(sl))]

    def bwd(oms):
        m = oms[0]
        r = np.zeros((m.shape[0],) + in_shape, dtype=bool)
        r[(slice(None),) + sl] = m
        return [r]

    return [_map_info(infos[0], fn, n, n)], bwd


def concatenate_rule(eqn, infos, env, ctx, prefix):
    """Concatenation, keeping the interval arrays compact (size 1 where they do not vary)."""
    d = eqn.params["dimension"]
    shapes = [tuple(v.aval.shape) for v in eqn.invars]
    out_shape = tuple(eqn.outvars[0].aval.shape)
    ndim = len(out_shape)
    lo, hi = [], []
    for a in range(ctx.naxes):
        varies = [False] * ndim
        for i in infos:
            if i is not None:
                for arr in (i.lo[a], i.hi[a]):
                    for j, n in enumerate(bshape(arr, ndim).shape):
                        varies[j] |= n > 1
        for side, fill, dst in (("lo", INF, lo), ("hi", -INF, hi)):
            parts = []
            for i, s in zip(infos, shapes, strict=True):
                t = [s[j] if (varies[j] or j == d) else 1 for j in range(ndim)]
                if i is None:
                    parts.append(np.full(t, fill))
                else:
                    parts.append(np.broadcast_to(bshape(getattr(i, side)[a], ndim), t))
            dst.append(np.concatenate(parts, axis=d))
    bounds = np.cumsum([0] + [s[d] for s in shapes])

    def bwd(oms):
        m = oms[0]
        return [None if i is None else np.take(m, range(bounds[k], bounds[k + 1]), axis=d + 1)
                for k, i in enumerate(infos)]

    return [Info(lo, hi, [np.zeros(ndim) for _ in lo])], bwd


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

RULES = [
    PrimitiveRule("broadcast_in_dim", broadcast_in_dim_rule,
                  ConeRule(_broadcast_labels, params=_resize_params("shape"))),
    PrimitiveRule("transpose", transpose_rule, ConeRule(_transpose_labels)),
    PrimitiveRule("concatenate", concatenate_rule, _CONE["concatenate"]),
    PrimitiveRule("reshape", reshape_rule, _CONE["reshape"]),
    PrimitiveRule("squeeze", squeeze_rule, _CONE["squeeze"]),
    PrimitiveRule("slice", slice_rule, _CONE["slice"]),
    PrimitiveRule("expand_dims", expand_dims_rule),
    PrimitiveRule("rev", rev_rule),
]
