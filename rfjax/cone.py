"""Cropping for the ERF engine: evaluate only what one output unit depends on.

Two levels, both exact by construction for local, translation-equivariant computation and
verified against the uncropped gradient by :func:`rfjax.erf` (which falls back with a warning
when they differ):

1. **Input window** (``crop="input"``): from the unit's theoretical receptive field
   (:func:`rfjax.trf`: ``stride``, ``region(unit)``, ``is_global``), run ``fn`` on the smallest
   input window that contains the region, clipped to the image. The window starts on a
   multiple of the net's total stride and its length is congruent to the image's modulo that
   stride, so every layer's ``SAME`` padding, and hence the output grid, is the same as on the
   whole image; a window that reaches an image edge keeps that edge (the padding there is the
   real one). A global axis is never cropped.
2. **Dependency cone** (``crop="cone"``): :func:`jax.make_jaxpr` of ``fn`` on one image, a
   backward pass that gives every intermediate variable the window (per spatial axis) that the
   unit needs, and a forward interpreter in which every variable holds only its window: a
   convolution or pooling runs on its window with the padding recomputed so that it equals
   the full computation's (zero padding exists only where the window meets the image edge).
   The gradient is then the batched VJP of this windowed function. Supported: elementwise
   ops (with size-1 broadcasting of per-channel constants), ``conv_general_dilated`` (strides,
   rhs dilation, padding, feature groups, lhs dilation: transposed convolutions),
   ``reduce_window_{sum,max,min}`` (pools),
   ``broadcast_in_dim``, ``reshape``/``squeeze``/``transpose`` that keep the spatial axes,
   ``dot_general`` and reductions over non-spatial axes (Dense layers, LayerNorm),
   ``concatenate`` along a non-spatial axis, ``pad``, ``slice``, ``select_n``, and calls
   (``jit``, ``custom_jvp_call``, ``custom_vjp_call``, ``remat``), which are inlined (``relu``
   keeps its custom derivative; other custom rules are replaced by autodiff of their primal,
   which the verification checks). Anything else, e.g. a reduction over a spatial axis
   (global pooling) or attention, makes the cone unavailable.

The plan is derived once per function and shape and cached with the compiled function.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.extend import core as jcore

from rfjax import callables
from rfjax.engine import registry
from rfjax.engine.cone_ir import IR, Cone, Node, Unsupported, clip, is_dependent
from rfjax.engine.records import INLINE, ConeRule
from rfjax.engine.rules.elementwise import ELEMENTWISE_CONE
from rfjax.selection import select_output
from rfjax.theoretical import TRFError, trf

__all__ = ["CropPlan", "Unsupported", "cone_plan", "input_window", "plan_crop"]


@dataclasses.dataclass(frozen=True, eq=False)
class CropPlan:
    """How to evaluate the unit on a crop.

    Attributes:
      window: per input spatial axis ``(start, stop)``, the evaluated input window (clipped).
      unit: the unit's index in the cropped computation's output.
      apply: for the cone, ``apply(dyn, x_window) -> (B, 1, ..., 1, C_out)``; else ``None``.
    """

    window: tuple[tuple[int, int], ...]
    unit: tuple[int, ...]
    apply: Callable[[Any, jax.Array], jax.Array] | None = None


# --------------------------------------------------------------------------------------------
# Step 1: the input window from the TRF contract
# --------------------------------------------------------------------------------------------


def input_window(trf: Any, unit: tuple[int, ...], spatial: tuple[int, ...]):
    """Grid-aligned input window ``((start, stop), ...)`` and the unit's index in its output.

    ``trf`` is anything with ``stride``, ``is_global`` (tuples per input spatial axis),
    ``aligned`` and ``region(unit) -> ((first, last), ...)`` inclusive and unclipped (the
    :func:`rfjax.trf` contract). Returns ``None`` if nothing can be cropped.
    """
    if not getattr(trf, "aligned", False):
        return None
    region = trf.region(tuple(unit))
    window, new_unit = [], []
    for k, size in enumerate(spatial):
        stride = trf.stride[k]
        u = unit[k] if k < len(unit) else 0
        if trf.is_global[k] or stride != int(stride) or int(stride) < 1:
            window.append((0, size))
            new_unit.append(u)
            continue
        stride = int(stride)
        first, last = int(region[k][0]), int(region[k][1])
        start = 0 if first <= 0 else (first // stride) * stride
        if last >= size - 1:
            stop = size
        else:  # the smallest stop >= last + 1 with stop = size (mod stride)
            stop = last + 1 + (size - (last + 1)) % stride
            stop = min(stop, size)
        window.append((start, stop))
        new_unit.append(u - start // stride)
    if all(w == (0, s) for w, s in zip(window, spatial, strict=True)):
        return None
    return tuple(window), tuple(new_unit)


# --------------------------------------------------------------------------------------------
# Step 2: the dependency cone through the jaxpr
# --------------------------------------------------------------------------------------------


def _cone_rule(node: Node) -> ConeRule:
    """The node's cone rule from the registry (``relu`` is elementwise)."""
    if node.name == "relu":
        return ELEMENTWISE_CONE
    rule = registry.lookup(node.name)
    if rule is None or not isinstance(rule.cone, ConeRule):
        raise Unsupported(f"primitive {node.name!r}")
    return rule.cone


def _flatten(ir: IR, jaxpr, consts, in_ids) -> list:
    """Append ``jaxpr``'s equations to ``ir`` with calls inlined; returns the output ids."""
    env: dict = {}
    for v, c in zip(jaxpr.constvars, consts, strict=True):
        i = ir.new(np.shape(c))
        ir.consts[i] = c
        env[v] = i
    for v, i in zip(jaxpr.invars, in_ids, strict=True):
        env[v] = i

    def read(v):
        if isinstance(v, jcore.Literal):
            return ("lit", v.val)
        return env[v]

    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "custom_jvp_call" and eqn.params.get("name") == "relu":
            # keep relu's custom derivative (its autodiff at 0 differs)
            out = ir.new(eqn.outvars[0].aval.shape)
            ir.nodes.append(Node("relu", {}, ins, [out]))
            env[eqn.outvars[0]] = out
            continue
        rule = registry.lookup(name)
        if rule is not None and rule.cone is INLINE:
            sub = (eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr")
                   or eqn.params.get("fun_jaxpr"))
            if sub is None:
                raise Unsupported(f"call primitive {name} without a jaxpr")
            sub_jaxpr, sub_consts = (sub.jaxpr, sub.consts) if hasattr(sub, "consts") else (
                sub, ())
            ids = [ir.as_id(i) for i in ins]
            outs = _flatten(ir, sub_jaxpr, sub_consts, ids[len(ids) - len(sub_jaxpr.invars):])
            for v, o in zip(eqn.outvars, outs, strict=True):
                env[v] = ir.as_id(o)
            continue
        outs = [ir.new(v.aval.shape) for v in eqn.outvars]
        ir.nodes.append(Node(eqn.primitive, dict(eqn.params), ins, outs))
        for v, o in zip(eqn.outvars, outs, strict=True):
            env[v] = o
    return [read(v) for v in jaxpr.outvars]


def _labels(ir: IR, node: Node, dep, labels) -> tuple:
    """Output labels of a node with at least one input-dependent operand."""
    if len(node.outs) != 1:
        raise Unsupported(f"{node.name} with several outputs")
    return _cone_rule(node).labels(ir, node, dep, labels)


def _needs(ir: IR, node: Node, out_win, labels) -> dict:
    """Unclipped windows each input-dependent operand must provide for ``out_win``."""
    need = _cone_rule(node).need
    req = {}
    for pos, i in enumerate(node.ins):
        if isinstance(i, tuple) or i not in labels:
            continue
        # default: the window per spatial axis is the output's (dims may move, sizes do not)
        req[pos] = list(out_win) if need is None else need(ir, node, pos, out_win, labels[i])
    return req


def _analyse(closed, unit: tuple[int, ...]) -> Cone:
    ir = IR()
    jaxpr = closed.jaxpr
    in_ids = [ir.new(v.aval.shape) for v in jaxpr.invars]
    outs = _flatten(ir, jaxpr, closed.consts, in_ids)
    if len(outs) != 1 or isinstance(outs[0], tuple):
        raise Unsupported("fn must return one array")
    x_id, out_id = in_ids[-1], outs[0]
    n = len(ir.shapes[x_id]) - 2
    # Nodes the output needs at all (dead code, e.g. unused intermediates, is ignored).
    used, reach = set(), {out_id}
    for idx in range(len(ir.nodes) - 1, -1, -1):
        if any(o in reach for o in ir.nodes[idx].outs):
            used.add(idx)
            reach.update(i for i in ir.nodes[idx].ins if not isinstance(i, tuple))
    labels = {x_id: tuple(range(1, n + 1))}
    dep = {x_id: True}
    for idx, node in enumerate(ir.nodes):
        if idx in used and any(is_dependent(dep, i) for i in node.ins):
            labels[node.outs[0]] = _labels(ir, node, dep, labels)
            for o in node.outs:
                dep[o] = True
    if out_id not in labels:
        raise Unsupported("the output does not depend on the input")
    if labels[out_id] != tuple(range(1, n + 1)) or len(ir.shapes[out_id]) != n + 2:
        raise Unsupported("the output's spatial axes are not those of the input")
    need = {out_id: [(u, u + 1) for u in unit]}
    req = {}
    live = []
    for idx in range(len(ir.nodes) - 1, -1, -1):
        node = ir.nodes[idx]
        o = node.outs[0]
        if o not in need or o not in labels:
            continue
        live.append(idx)
        for pos, win in _needs(ir, node, need[o], labels).items():
            i = node.ins[pos]
            req[(idx, pos)] = win
            clipped = clip(win, labels[i], ir.shapes[i])
            if any(a >= b for a, b in clipped):
                raise Unsupported(f"an operand of {node.name} contributes nothing to the unit")
            if i in need:
                clipped = [(min(a, c), max(b, d)) for (a, b), (c, d) in
                           zip(need[i], clipped, strict=True)]
            need[i] = clipped
    if x_id not in need:
        raise Unsupported("the unit does not depend on the input")
    live.reverse()
    return Cone(ir, len(in_ids) - 1, x_id, out_id, labels, need, req, live, used)


def _slice_to(val, have, want, lab):
    """Slice ``val`` (covering window ``have`` on dims ``lab``) down to window ``want``."""
    idx = [slice(None)] * np.ndim(val)
    for (h0, _), (w0, w1), d in zip(have, want, lab, strict=True):
        idx[d] = slice(w0 - h0, w1 - h0)
    return val[tuple(idx)]


def _slice_const(val, out_win, lab, full_shape):
    """Slice a constant operand on the spatial dims where it is not broadcast (size > 1)."""
    shape = np.shape(val)
    if len(shape) != len(full_shape):
        return val
    idx = [slice(None)] * len(shape)
    for (a, b), d in zip(out_win, lab, strict=True):
        if shape[d] == full_shape[d] and shape[d] != 1:
            idx[d] = slice(a, b)
    return val[tuple(idx)]


def _evaluate(cone: Cone, dyn_leaves: list, x_window) -> jax.Array:
    """Run the jaxpr with every input-dependent variable restricted to its needed window."""
    ir = cone.ir
    env: dict = dict(ir.consts)
    for i, v in zip(range(cone.n_dyn), dyn_leaves, strict=True):
        env[i] = v
    env[cone.x_id] = x_window
    live = set(cone.live)

    def read(i):
        return i[1] if isinstance(i, tuple) else env[i]

    for idx, node in enumerate(ir.nodes):
        if idx not in cone.used:
            continue
        out = node.outs[0]
        if out not in cone.labels:  # input-independent: computed in full (params, constants)
            if node.prim == "relu":
                vals = [jax.nn.relu(read(node.ins[0]))]
            else:
                vals = node.prim.bind(*[read(i) for i in node.ins], **node.params)
                vals = vals if node.prim.multiple_results else [vals]
            for o, v in zip(node.outs, vals, strict=True):
                env[o] = v
            continue
        if idx not in live:
            continue
        env[out] = _eval_node(cone, idx, node, read)
    return env[cone.out_id]


def _eval_node(cone: Cone, idx: int, node: Node, read):
    """One node on its windows: operands sliced to what it needs, parameters adjusted."""
    ir = cone.ir
    rule = _cone_rule(node)
    out = node.outs[0]
    out_win = cone.need[out]
    out_lab = cone.labels[out]
    args = []
    for pos, i in enumerate(node.ins):
        v = read(i)
        if (idx, pos) in cone.req:
            want = clip(cone.req[(idx, pos)], cone.labels[i], ir.shapes[i])
            v = _slice_to(v, cone.need[i], want, cone.labels[i])
        elif rule.slice_consts:
            v = _slice_const(v, out_win, out_lab, ir.shapes[out])
        args.append(v)
    if node.name == "relu":
        return jax.nn.relu(args[0])
    p = node.params if rule.params is None else rule.params(cone, idx, node, out_win, out_lab)
    return node.prim.bind(*args, **p)


def cone_plan(closed, unit: tuple[int, ...]) -> CropPlan:
    """The cone plan for a jaxpr of ``(dyn leaves..., x) -> output`` traced on one image.

    Raises:
      Unsupported: when some operation on the input's path is not supported.
    """
    cone = _analyse(closed, unit)
    window = tuple(cone.need[cone.x_id])
    n_dyn = cone.n_dyn

    def apply(dyn, xw):
        leaves = jax.tree_util.tree_leaves(dyn)
        if len(leaves) != n_dyn:
            raise ValueError("parameter structure changed since the cone was planned")

        def one(xi):
            return _evaluate(cone, leaves, xi[None])[0]

        return jax.vmap(one)(xw)

    return CropPlan(window, (0,) * len(unit), apply)


# --------------------------------------------------------------------------------------------
# Choosing the crop for rfjax.erf
# --------------------------------------------------------------------------------------------


def plan_crop(entry: callables.CacheEntry, res: callables.Resolved, unit: tuple[int, ...],
              output: Any, x_aval: jax.ShapeDtypeStruct, crop: str):
    """``(mode, plan)`` for :func:`rfjax.erf`: ``"cone"``, ``"input"`` or ``"none"``.

    Args:
      entry, res: the function's cache entry and resolved form (:mod:`rfjax.callables`).
      unit: the output unit; output: the output selection (:func:`select_output`).
      x_aval: the input batch's shape and dtype; crop: ``"auto"``, ``"cone"`` or ``"input"``.

    Cached in ``entry`` per unit, output and shapes.
    """
    sig = callables.signature(res.dyn)
    key = (crop, unit, output, x_aval.shape[1:], str(x_aval.dtype), sig)
    if key in entry.plans:
        return entry.plans[key]
    one = jax.ShapeDtypeStruct((1, *x_aval.shape[1:]), x_aval.dtype)
    spatial = tuple(x_aval.shape[1:-1])
    result = ("none", None)
    reason = None

    def selected(d, x):
        return select_output(res.rebuild(d)(x), output)

    if crop in ("auto", "cone"):
        try:
            # The jaxpr does not depend on the unit: traced once per function and shape (with
            # the parameters as arguments, so the cached jaxpr holds none of their values).
            closed = entry.get("jaxprs", (output, x_aval.shape[1:], str(x_aval.dtype), sig),
                               lambda: jax.make_jaxpr(selected)(res.dyn, one))
            plan = cone_plan(closed, unit)
            if tuple(plan.window) != tuple((0, s) for s in spatial) or crop == "cone":
                result = ("cone", plan)
        except Unsupported as e:
            reason = str(e)
    if result[0] == "none" and crop in ("auto", "cone", "input"):
        try:  # (not cached: a TRF holds the traced parameters as constants)
            t = trf(functools.partial(selected, res.dyn), one)
            win = input_window(t, unit, spatial)
        except (TRFError, TypeError, ValueError) as e:  # no TRF for this fn: nothing to crop by
            win, reason = None, f"{reason or ''} {type(e).__name__}: {e}".strip()
        if win is not None:
            result = ("input", CropPlan(win[0], win[1], None))
    if crop == "cone" and result[0] != "cone":
        warnings.warn(f"rfjax.erf: no dependency cone ({reason}); using crop={result[0]!r}",
                      stacklevel=4)
    elif crop == "input" and result[0] != "input":
        warnings.warn(f"rfjax.erf: no input window to crop ({reason}); evaluating the whole "
                      "input", stacklevel=4)
    entry.plans[key] = result
    return result
