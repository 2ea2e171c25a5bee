"""Windowed primitives: convolutions, pooling (``reduce_window``) and padding.

Per spatial axis they read a window of the operand (see :class:`rfjax.engine.window.Window`);
the cone evaluates them on the unit's window with the padding recomputed so that the result
equals the full computation's (zero padding only where the window meets the array's edge).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rfjax.engine import known
from rfjax.engine.cone_ir import Unsupported, clip, is_dependent
from rfjax.engine.errors import UnsupportedPrimitiveError, source_line
from rfjax.engine.fields import INF, Info, bshape, combine, materialize, union
from rfjax.engine.records import ConeRule, PrimitiveRule
from rfjax.engine.window import (
    Window,
    apply_relation,
    apply_relations,
    group_any,
    group_expand,
    group_reduce,
    window_forward_info,
)


def conv_rule(eqn, infos, env, ctx, prefix):
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
    # A kernel fixed by the program (conv_general_dilated_patches, a fixed filter) with zeros:
    # only its non-zero taps connect, per output feature, input feature and spatial offset.
    taps = None
    if lhs_i is not None and rhs_i is None:
        knz = known.nonzero(env, eqn.invars[1])
        if knz is not None:
            taps = _KernelTaps(np.transpose(materialize(knz, rhs_shape), rspec), G, windows,
                               rhs_dil)
    if taps is not None:
        outs.append(taps.forward(lhs_i, lspec, ospec, ndim, ctx.naxes))
    elif lhs_i is not None:
        lo, hi, slope = [], [], []
        for a in range(ctx.naxes):
            res = []
            for arr, is_lo in ((lhs_i.lo[a], True), (lhs_i.hi[a], False)):
                A = bshape(arr, ndim)
                A = np.transpose(A, lspec)  # (batch, feature, spatial...)
                A = group_reduce(A, 1, G, cin, np.min if is_lo else np.max)
                for i in range(nsp):
                    A = windows[i].forward(A, 2 + i, lhs_i.slope[a][lspec[2 + i]], is_lo)
                A = group_expand(A, 1, G, cout)
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
            L = bshape(rhs_i.lo[a], len(rhs_shape)).min(axis=red)
            H = bshape(rhs_i.hi[a], len(rhs_shape)).max(axis=red)
            shp = [1] * ndim
            shp[ospec[1]] = L.shape[0]
            lo.append(L.reshape(shp))
            hi.append(H.reshape(shp))
            slope.append(np.zeros(ndim))
        outs.append(Info(lo, hi, slope))
    out = combine(outs, ndim, ctx.naxes)
    rels = {i: windows[i].relation() for i in range(nsp)}

    def bwd(oms):
        m = oms[0]
        res = [None, None]
        if taps is not None:
            res[0] = taps.backward(m, lspec, ospec, lhs_shape)
        elif lhs_i is not None:
            M = np.transpose(m, (0,) + tuple(1 + j for j in ospec))  # (Q, batch, feat, sp...)
            M = apply_relations(group_any(M, 2, G, cout), {3 + i: rels[i] for i in range(nsp)})
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


class _KernelTaps:
    """The taps of a convolution kernel fixed by the program that has zeros: output feature
    ``o`` at ``u`` depends on input feature ``c`` at tap ``k`` iff ``w[o, c, k] != 0``.

    ``nz`` is the kernel's may-be-non-zero pattern as ``(out features, in features per group,
    *spatial)``. Each non-zero tap is a single-offset window per axis (a size-1 window whose
    padding is shifted by the tap's offset), so the unclipped hull into the padding is the
    one of the dense rule restricted to those taps."""

    def __init__(self, nz: np.ndarray, G: int, windows: dict, rhs_dil):
        self.G = G
        cout, self.cin_g = nz.shape[:2]
        self.cout_g = cout // G
        self.nsp = nz.ndim - 2
        self.taps = [k for k in np.ndindex(*nz.shape[2:]) if nz[(slice(None),) * 2 + k].any()]
        self.pattern = {k: nz[(slice(None),) * 2 + k].reshape(G, self.cout_g, self.cin_g)
                        for k in self.taps}
        self.win = {}
        for i, w in windows.items():
            for k in {t[i] for t in self.taps}:
                self.win[(i, k)] = dataclasses.replace(w, size=1,
                                                       pad_lo=w.pad_lo - k * rhs_dil[i])
        self.rel = {key: w.relation() for key, w in self.win.items()}

    def _mix(self, A: np.ndarray, P: np.ndarray, fill: float, red) -> np.ndarray:
        """(batch, in feat or 1, *sp) -> (batch, out feat or 1, *sp) through pattern P."""
        sp = A.shape[2:]
        if A.shape[1] == 1:
            sel = P.any(axis=-1).reshape(-1)
            if sel.all():
                return A
            return np.where(sel.reshape((1, -1) + (1,) * len(sp)), A, fill)
        Ar = A.reshape((A.shape[0], self.G, 1, self.cin_g) + sp)
        V = np.where(P.reshape((1,) + P.shape + (1,) * len(sp)), Ar, fill)
        return red(V, axis=3).reshape((A.shape[0], self.G * self.cout_g) + sp)

    def forward(self, info: Info, lspec, ospec, ndim: int, naxes: int) -> Info:
        lo, hi, slope = [], [], []
        for a in range(naxes):
            res = []
            for arr, is_lo in ((info.lo[a], True), (info.hi[a], False)):
                fill, op = (INF, np.minimum) if is_lo else (-INF, np.maximum)
                A = np.transpose(bshape(arr, ndim), lspec)  # (batch, feature, spatial...)
                acc = None
                for k in self.taps:
                    Ak = A
                    for i in range(self.nsp):
                        Ak = self.win[(i, k[i])].forward(Ak, 2 + i,
                                                         info.slope[a][lspec[2 + i]], is_lo)
                    Mk = self._mix(Ak, self.pattern[k], fill, np.min if is_lo else np.max)
                    acc = Mk if acc is None else op(acc, Mk)
                if acc is None:
                    acc = np.full((1,) * ndim, fill)
                res.append(np.transpose(acc, np.argsort(ospec)))
            s = np.zeros(ndim)
            s[ospec[0]] = info.slope[a][lspec[0]]
            for i in range(self.nsp):
                w = self.win[(i, self.taps[0][i])] if self.taps else None
                if w is not None:
                    s[ospec[2 + i]] = info.slope[a][lspec[2 + i]] * w.stride / w.lhs_dilation
            lo.append(res[0])
            hi.append(res[1])
            slope.append(s)
        return Info(lo, hi, slope)

    def backward(self, m: np.ndarray, lspec, ospec, lhs_shape) -> np.ndarray:
        M = np.transpose(m, (0,) + tuple(1 + j for j in ospec))  # (Q, batch, feat, sp...)
        Q, B = M.shape[:2]
        sp_out = M.shape[3:]
        Mg = M.reshape((Q, B, self.G, self.cout_g) + sp_out).astype(np.float32)
        shape_in = tuple(lhs_shape[j] for j in lspec)
        res = np.zeros((Q,) + shape_in, dtype=bool)
        for k in self.taps:
            R = np.einsum("qbgo...,goi->qbgi...", Mg, self.pattern[k].astype(np.float32)) > 0
            R = R.reshape((Q, B, self.G * self.cin_g) + sp_out)
            for i in range(self.nsp):
                R = apply_relation(R, 3 + i, self.rel[(i, k[i])])
            res |= R
        return np.transpose(res, (0,) + tuple(1 + j for j in np.argsort(lspec)))


def reduce_window_rule(eqn, infos, env, ctx, prefix):
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
    each = [(window_forward_info(i, windows, ndim) if i is not None else None)
            for i in data_infos]
    out = combine(each, ndim, ctx.naxes)
    rels = {j: w.relation() for j, w in windows.items()}

    def bwd(oms):
        m = apply_relations(union(oms), {1 + j: R for j, R in rels.items()})
        res = [m if i is not None else None for i in data_infos]
        return res + [None] * (len(infos) - len(data_infos))

    return [out] * len(eqn.outvars), bwd


def pad_rule(eqn, infos, env, ctx, prefix):
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
        outs.append(window_forward_info(op_i, windows, ndim))
    if pv_i is not None:  # an x-dependent padding value: every output may read it
        outs.append(Info([bshape(x, 0) for x in pv_i.lo], [bshape(x, 0) for x in pv_i.hi],
                         [np.zeros(ndim) for _ in pv_i.lo]))
    out = combine(outs, ndim, ctx.naxes)
    rels = {j: w.relation() for j, w in windows.items()}

    def bwd(oms):
        m = oms[0]
        res = [None, None]
        if op_i is not None:
            res[0] = apply_relations(m, {1 + j: R for j, R in rels.items()})
        if pv_i is not None:
            res[1] = m.reshape(m.shape[0], -1).any(axis=1)
        return res

    return [out], bwd


# ---- the cone ------------------------------------------------------------------------------


def _conv_span(p: dict, j: int, ksize: int, out_win) -> tuple[int, int]:
    """First and last (lhs-dilated, unpadded) input positions read by outputs ``out_win``."""
    s, dil, lo = p["window_strides"][j], p["rhs_dilation"][j], p["padding"][j][0]
    o0, o1 = out_win
    return o0 * s - lo, (o1 - 1) * s - lo + (ksize - 1) * dil


def _conv_labels(ir, node, dep, labels):
    if is_dependent(dep, node.ins[1]):
        raise Unsupported("convolution with input-dependent weights")
    p = node.params
    if p["batch_group_count"] != 1:
        raise Unsupported("batch-grouped convolution")
    lab = labels[node.ins[0]]
    dn = p["dimension_numbers"]
    lsp, osp = list(dn.lhs_spec[2:]), list(dn.out_spec[2:])
    if sorted(lab) != sorted(lsp):
        raise Unsupported("convolution over dimensions that are not the spatial axes")
    return tuple(osp[lsp.index(d)] for d in lab)


def _conv_need(ir, node, pos, out_win, lab):
    p = node.params
    dn = p["dimension_numbers"]
    lsp = list(dn.lhs_spec[2:])
    rshape = ir.shape(node.ins[1])
    win = []
    for k, d in enumerate(lab):
        j = lsp.index(d)
        q0, q1 = _conv_span(p, j, rshape[dn.rhs_spec[2 + j]], out_win[k])
        ld = p["lhs_dilation"][j]  # transposed conv: input i sits at q = i * ld
        win.append((-(-q0 // ld), q1 // ld + 1))
    return win


def _conv_params(cone, idx, node, out_win, out_lab):
    ir = cone.ir
    p = dict(node.params)
    i = node.ins[0]
    lab = cone.labels[i]
    dn = p["dimension_numbers"]
    lsp = list(dn.lhs_spec[2:])
    rshape = ir.shape(node.ins[1])
    pad = list(p["padding"])
    for k, ((a, b), d) in enumerate(zip(clip(cone.req[(idx, 0)], lab, ir.shapes[i]), lab,
                                        strict=True)):
        j = lsp.index(d)
        q0, q1 = _conv_span(p, j, rshape[dn.rhs_spec[2 + j]], out_win[k])
        ld = p["lhs_dilation"][j]
        # The window's first/last elements sit at a*ld and (b-1)*ld of the (dilated)
        # input; pad so that the first output reads q0 and the last reads up to q1.
        pad[j] = (a * ld - q0, q1 - (b - 1) * ld)
    p["padding"] = tuple(pad)
    return p


def _reduce_window_labels(ir, node, dep, labels):
    lab = labels[node.ins[0]]
    if any(node.params["base_dilation"][d] != 1 for d in lab):
        raise Unsupported("base-dilated reduce_window")
    return lab


def _reduce_window_need(ir, node, pos, out_win, lab):
    p = node.params
    win = []
    for k, d in enumerate(lab):
        ksz, s = p["window_dimensions"][d], p["window_strides"][d]
        dil, lo = p["window_dilation"][d], p["padding"][d][0]
        o0, o1 = out_win[k]
        win.append((o0 * s - lo, (o1 - 1) * s - lo + (ksz - 1) * dil + 1))
    return win


def _reduce_window_params(cone, idx, node, out_win, out_lab):
    p = dict(node.params)
    pad = list(p["padding"])
    for d, lo, hi in cone.edge_padding(idx, node):
        pad[d] = (lo, hi)
    p["padding"] = tuple(pad)
    return p


def _pad_labels(ir, node, dep, labels):
    if is_dependent(dep, node.ins[1]):
        raise Unsupported("input-dependent padding value")
    lab = labels[node.ins[0]]
    if any(node.params["padding_config"][d][2] != 0 for d in lab):
        raise Unsupported("interior padding of a spatial axis")
    return lab


def _pad_need(ir, node, pos, out_win, lab):
    cfg = node.params["padding_config"]
    return [(out_win[k][0] - cfg[d][0], out_win[k][1] - cfg[d][0]) for k, d in enumerate(lab)]


def _pad_params(cone, idx, node, out_win, out_lab):
    p = dict(node.params)
    cfg = list(p["padding_config"])
    for d, lo, hi in cone.edge_padding(idx, node):
        cfg[d] = (lo, hi, 0)
    p["padding_config"] = tuple(cfg)
    return p


_REDUCE_WINDOW_CONE = ConeRule(_reduce_window_labels, _reduce_window_need, _reduce_window_params)

RULES = [
    PrimitiveRule("conv_general_dilated", conv_rule,
                  ConeRule(_conv_labels, _conv_need, _conv_params), row=True),
    PrimitiveRule("reduce_window_sum", reduce_window_rule, _REDUCE_WINDOW_CONE, row=True),
    PrimitiveRule("reduce_window_max", reduce_window_rule, _REDUCE_WINDOW_CONE, row=True),
    PrimitiveRule("reduce_window_min", reduce_window_rule, _REDUCE_WINDOW_CONE, row=True),
    PrimitiveRule("reduce_window", reduce_window_rule, row=True),  # generic: not croppable
    PrimitiveRule("pad", pad_rule, ConeRule(_pad_labels, _pad_need, _pad_params), row=True),
]
