"""Calls and control flow: ``jit``/``pjit``, ``remat``, custom derivatives, ``scan``,
``while`` and ``cond``. Their bodies are interpreted recursively (``ctx.run``); loops are
unrolled with their trip counts, which must be fixed by the program."""

from __future__ import annotations

import jax
import numpy as np
from jax.extend import core as jcore

from rfjax.engine import known as known_values
from rfjax.engine.errors import (
    DynamicDependencyError,
    UnsupportedPrimitiveError,
    enclosing,
    name_of,
    source_line,
)
from rfjax.engine.fields import (
    INF,
    Info,
    Known,
    backward,
    bshape,
    combine,
    estimate_slopes,
    materialize,
    or_masks,
)
from rfjax.engine.records import INLINE, PrimitiveRule


def join_names(prefix: str, name: str) -> str:
    """``prefix/name`` for nested name stacks (either may be empty)."""
    if prefix and name:
        return f"{prefix}/{name}"
    return prefix or name


def sub_jaxpr(eqn):
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


def call_rule(eqn, infos, env, ctx, prefix):
    jaxpr, consts = sub_jaxpr(eqn)
    vals = [env.read_val(v) for v in eqn.invars]
    pure = [env.is_pure(v) for v in eqn.invars]
    n_extra = len(jaxpr.invars) - len(eqn.invars)
    if n_extra != 0:  # pragma: no cover - defensive
        raise UnsupportedPrimitiveError(
            f"call primitive '{eqn.primitive.name}' at {source_line(eqn)}: arity mismatch")
    sub_prefix = join_names(prefix, name_of(eqn))
    if eqn.primitive.name in ("pjit", "jit") and eqn.params.get("name"):
        sub_prefix = join_names(sub_prefix, str(eqn.params["name"]))
    with enclosing(eqn):  # messages inside jnp's own jits name the user's line
        outs, _, _, tape = ctx.run(jaxpr, consts, infos, vals, pure, sub_prefix)

    def bwd(oms):
        return backward(tape, jaxpr, oms)

    return outs, bwd


def scan_rule(eqn, infos, env, ctx, prefix):
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
        xv = [(None if v is None else v[t] if isinstance(v, jax.Array)  # keys stay jax arrays
               else np.asarray(v)[t]) for v in x_vals]
        outs, ovals, opure, tape = ctx.run(
            jaxpr, consts, list(c_infos) + carry_i + xi, list(c_vals) + carry_v + xv,
            list(pure[:nc]) + list(carry_p) + list(pure[nc + nk:]), prefix)
        tapes.append((t, tape))
        carry_i, carry_v, carry_p = outs[:nk], ovals[:nk], opure[:nk]
        ys_per_iter[t] = outs[nk:]
    out_infos = list(carry_i)
    for k, av in enumerate(y_avals):
        per = [ys_per_iter[t][k] for t in range(length)]
        out_infos.append(stack_infos(per, tuple(av.shape), ctx.naxes, av.dtype))

    def bwd(oms):
        k_masks = list(oms[:nk])
        y_masks = oms[nk:]
        c_acc = [None] * nc
        x_acc = [None] * len(x_infos)
        for t, tape in reversed(tapes):
            outm = list(k_masks) + [(m[:, t] if m is not None else None) for m in y_masks]
            inm = backward(tape, jaxpr, outm)
            for j in range(nc):
                c_acc[j] = or_masks(c_acc[j], inm[j])
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


def _slice_info(info: Info, t: int, shape) -> Info:
    n = len(shape)

    def take(x):
        x = bshape(x, n)
        return x[0] if x.shape[0] == 1 else x[t]

    k = info.known
    known = None if k is None else Known(take(k.lo), take(k.hi), k.narrow)
    return Info([take(x) for x in info.lo], [take(x) for x in info.hi],
                [np.asarray(s)[1:] for s in info.slope], known)


def stack_infos(per: list, shape, naxes, dtype=None) -> Info | None:
    """The per-iteration infos of a scan's output stacked on a new leading axis; their value
    bounds too (an iteration without them gets the default bounds of ``dtype``)."""
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
                los.append(materialize(i.lo[a], shape[1:]))
                his.append(materialize(i.hi[a], shape[1:]))
        lo.append(np.stack(los))
        hi.append(np.stack(his))
    known = None
    d = known_values.default(dtype) if dtype is not None else None
    if d is not None and any(i is not None and i.known is not None for i in per):
        ks = [i.known if i is not None and i.known is not None else None for i in per]
        known = Known(*(np.stack([materialize(getattr(k, side) if k is not None else
                                              np.array(d[j]), shape[1:]) for k in ks])
                        for j, side in enumerate(("lo", "hi"))),
                      any(k is not None and k.narrow for k in ks))
    return Info(lo, hi, [estimate_slopes(x, shape) for x in lo], known) if n else None


_MAX_WHILE_ITERS = 100_000


def while_rule(eqn, infos, env, ctx, prefix):
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
        outs, ovals, opure, tape = ctx.run(
            bj.jaxpr, bj.consts, list(b_consts_i) + carry_i, list(b_consts_v) + carry_v,
            list(pure[cn:cn + bn]) + carry_p, prefix)
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
                b_acc[j] = or_masks(b_acc[j], inm[j])
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


def cond_rule(eqn, infos, env, ctx, prefix):
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
        outs, _, _, tape = ctx.run(br.jaxpr, br.consts, ops_i, vals[1:], pure[1:], prefix)
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
            out_infos.append(combine(parts, len(shape), ctx.naxes))

    def bwd(oms):
        acc = [None] * len(ops_i)
        for b, _outs, tape in results:
            inm = backward(tape, branches[b].jaxpr, oms)
            acc = [or_masks(x, y) for x, y in zip(acc, inm, strict=True)]
        idx_m = None
        if idx_i is not None:
            for m in oms:
                if m is not None:
                    a = m.reshape(m.shape[0], -1).any(axis=1)
                    idx_m = or_masks(idx_m, a)
        return [idx_m] + [a if i is not None else None for a, i in zip(acc, ops_i, strict=True)]

    return out_infos, bwd


CALLS = ("pjit", "jit", "closed_call", "core_call", "remat", "remat2", "checkpoint",
         "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr")

RULES = [PrimitiveRule(n, call_rule, INLINE) for n in CALLS] + [
    PrimitiveRule("scan", scan_rule),
    PrimitiveRule("while", while_rule),
    PrimitiveRule("cond", cond_rule),
]
