"""Indexing: gathers, dynamic slices and updates, scatters with indices fixed by the program,
and ``select_n`` with a fixed predicate.

The generic rule evaluates the primitive itself on arrays of element indices (NumPy for plain
rearrangements, ``primitive.bind`` otherwise), so any static rearrangement is exact; indices
that depend on runtime values are refused.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from rfjax.engine import moves
from rfjax.engine.errors import DynamicDependencyError, UnsupportedPrimitiveError, source_line
from rfjax.engine.fields import INF, Info, bshape, estimate_slopes, materialize
from rfjax.engine.records import PrimitiveRule
from rfjax.engine.rules.elementwise import ELEMENTWISE_CONE, elementwise_rule

# ---- generic data movement: evaluate the primitive on index arrays --------------------------

# For each data-movement primitive: which operands carry data (others are indices/params).
_DATA_OPERANDS = {
    "gather": (0,), "dynamic_slice": (0,), "dynamic_update_slice": (0, 1), "tile": (0,),
    "stack": None, "split": (0,), "unstack": (0,),
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
    srcs = moves.sources(eqn, args)
    # Per tracked axis, lo and hi of every data element over the concatenated index space
    # (one table, so each output needs a single lookup), plus a last entry for "no element"
    # (a gather's fill value). Axes on which every operand is one constant skip the lookup.
    rows, const = [], {}
    for a in range(ctx.naxes):
        for side, fill in (("lo", INF), ("hi", -INF)):
            arrs = [getattr(info, side)[a] if info is not None else None
                    for _o, _s, _sh, info in sizes]
            if all(x is not None and x.size == 1 for x in arrs) and len(
                    {float(x.reshape(())) for x in arrs}) == 1:
                const[(a, side)] = float(arrs[0].reshape(()))
                continue
            parts = [np.full(size, fill) if x is None else materialize(x, shape).ravel()
                     for x, (_o, size, shape, _i) in zip(arrs, sizes, strict=True)]
            const[(a, side)] = len(rows)
            rows.append(np.concatenate(parts + [np.array([fill])]))
    table = np.stack(rows) if rows else None
    outs = []
    for src, ov in zip(srcs, eqn.outvars, strict=True):
        real = (src >= 0) & (src < offset)
        idx = np.where(real, src, offset)
        shape = tuple(ov.aval.shape)
        looked = table[:, idx] if table is not None else None
        every = bool(real.all())
        lo, hi = [], []
        for a in range(ctx.naxes):
            for side, fill, dst in (("lo", INF, lo), ("hi", -INF, hi)):
                c = const[(a, side)]
                if isinstance(c, float):  # one constant: where no element is read, empty
                    v = np.full((1,) * len(shape), c)
                    dst.append(v if every else np.where(real, c, fill))
                else:
                    dst.append(looked[c])
        # (the interpreter compacts the arrays and reads the jumps off them)
        outs.append(Info(lo, hi, [np.zeros(len(shape)) for _ in lo]))

    flat_idx = [np.where((src >= 0) & (src < offset), src, offset).ravel() for src in srcs]
    # Where no element is read twice (reshapes, slices, transposes), the backward is a plain
    # scatter of the mask; otherwise (broadcasting gathers) the reads are OR-ed one by one.
    unique = [np.bincount(i, minlength=offset + 1)[:offset].max(initial=0) <= 1
              for i in flat_idx]

    def bwd(oms):
        flat = None
        for m, idx, once in zip(oms, flat_idx, unique, strict=True):
            if m is None:
                continue
            Q = m.shape[0]
            if flat is None:
                flat = np.zeros((Q, offset + 1), dtype=bool)
            mm = m.reshape(Q, -1)
            if once:
                flat[:, idx] |= mm
            else:
                qs, ps = np.nonzero(mm)
                flat[qs, idx[ps]] = True
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


def _update_reads(eqn) -> tuple[bool, bool]:
    """Whether a scatter's written elements depend on the operand's old value and on the
    update: read off its ``update_jaxpr`` (``old, update -> new``) where it has one. Without
    one, a plain ``scatter`` overwrites and the others combine both."""
    uj = eqn.params.get("update_jaxpr")
    if uj is None:
        return eqn.primitive.name != "scatter", True
    if isinstance(uj, jcore.ClosedJaxpr):
        uj = uj.jaxpr
    need = {v for v in uj.outvars if not isinstance(v, jcore.Literal)}
    for e in reversed(uj.eqns):
        if any(o in need for o in e.outvars):
            need.update(v for v in e.invars if not isinstance(v, jcore.Literal))
    old, upd = uj.invars[-2:]
    return old in need, upd in need


def _destinations(eqn, idx: np.ndarray, shape, ushape) -> np.ndarray:
    """Per update element (flattened), the flat index of the output element it is written
    to, or -1 where it is dropped (out of bounds): the scatter's transpose, a gather, applied
    by JAX itself to the output's element numbers, so every mode and dimension layout is read
    as XLA reads it (1 is added so that a dropped element, gathered as 0, stays apart)."""
    kw = dict(dimension_numbers=eqn.params["dimension_numbers"],
              indices_are_sorted=eqn.params["indices_are_sorted"],
              unique_indices=False, mode=eqn.params["mode"])
    size = int(np.prod(shape, dtype=np.int64))
    with jax.enable_x64(True):  # element numbers are exact in float64
        def scatter(u):
            return lax.scatter_add(jnp.zeros(shape, jnp.float64), idx, u, **kw)

        _, transpose = jax.vjp(scatter, jnp.zeros(ushape, jnp.float64))
        (dest,) = transpose(jnp.arange(1, size + 1, dtype=jnp.float64).reshape(shape))
    return np.asarray(dest).astype(np.int64).ravel() - 1


def scatter_rule(eqn, infos, env, ctx, prefix):
    """scatter / scatter-add / -mul / -min / -max / -sub with indices fixed by the program.

    Each written output element depends on what the scatter's ``update_jaxpr`` reads: the
    updates written to it and the operand element at the same place (a plain ``scatter``
    overwrites, ``x.at[i].apply(f)`` reads only the operand, ``add`` reads both). Several
    updates landing on one element (duplicate indices) are all read by the combining
    scatters (``add``, ``max``, ...); an overwriting ``scatter`` keeps one of them, which one
    XLA leaves unspecified, so that case is refused rather than approximated."""
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
    dest = _destinations(eqn, idx, shape, ushape)
    landed = dest >= 0
    count = np.bincount(dest[landed], minlength=int(np.prod(shape, dtype=np.int64)))
    keeps_operand, reads_update = _update_reads(eqn)
    if count.max(initial=0) > 1 and not keeps_operand:
        raise UnsupportedPrimitiveError(
            f"'{name}' at {source_line(eqn)} writes several updates to one element (duplicate "
            "indices) and keeps one of them, which one XLA leaves unspecified; rfjax.trf does "
            "not support that case (make the indices unique, or combine with .add/.max).")
    written = (count > 0).reshape(shape)
    if not reads_update:
        upd_i = None
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
            uL = materialize(upd_i.lo[a], ushape).ravel()[landed]
            uH = materialize(upd_i.hi[a], ushape).ravel()[landed]
            L, H = L.ravel(), H.ravel()
            np.minimum.at(L, dest[landed], uL)
            np.maximum.at(H, dest[landed], uH)
            L, H = L.reshape(shape), H.reshape(shape)
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
            flat = np.zeros((Q, dest.size), dtype=bool)
            flat[:, landed] = mo.reshape(Q, -1)[:, dest[landed]]
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


RULES = [
    PrimitiveRule("select_n", select_n_rule, ELEMENTWISE_CONE),
] + [PrimitiveRule(n, data_movement_rule, row=n in ("gather", "dynamic_slice"))
     for n in _DATA_OPERANDS] + [
    PrimitiveRule(n, scatter_rule)
    for n in ("scatter", "scatter-add", "scatter_add", "scatter-mul", "scatter_mul",
              "scatter-min", "scatter_min", "scatter-max", "scatter_max", "scatter-sub",
              "scatter_sub")
]
