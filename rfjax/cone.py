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
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.extend import core as jcore

__all__ = ["CropPlan", "Unsupported", "cone_plan", "input_window", "plan_crop"]


class Unsupported(Exception):
    """The jaxpr has an operation whose dependency window is not derived here."""


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


@dataclasses.dataclass
class _Node:
    prim: Any  # a jax Primitive, or "relu"
    params: dict
    ins: list  # var ids (int) or ("lit", value)
    outs: list[int]


_ELEMENTWISE = frozenset(
    """abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp convert_element_type
    copy copy_p cos cosh div eq erf erf_inv erfc exp exp2 expm1 floor ge gt imag integer_pow
    is_finite le lgamma digamma log log1p logistic lt max min mul ne neg nextafter not or pow
    real reduce_precision rem round rsqrt select_n sign sin sinh sqrt square stop_gradient sub
    tan tanh xor relu optimization_barrier""".split()
)
_CALLS = frozenset(
    "jit pjit closed_call core_call remat remat2 checkpoint custom_jvp_call custom_vjp_call "
    "custom_vjp_call_jaxpr".split()
)
_REDUCTIONS = frozenset("reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or "
                        "argmax argmin".split())


class _IR:
    """A flat list of primitive applications with integer variable ids."""

    def __init__(self):
        self.nodes: list[_Node] = []
        self.shapes: dict[int, tuple[int, ...]] = {}
        self.consts: dict[int, Any] = {}
        self._next = 0

    def new(self, shape) -> int:
        i = self._next
        self._next += 1
        self.shapes[i] = tuple(shape)
        return i

    def flatten(self, jaxpr, consts, in_ids) -> list:
        env: dict = {}
        for v, c in zip(jaxpr.constvars, consts, strict=True):
            i = self.new(np.shape(c))
            self.consts[i] = c
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
                out = self.new(eqn.outvars[0].aval.shape)
                self.nodes.append(_Node("relu", {}, ins, [out]))
                env[eqn.outvars[0]] = out
                continue
            if name in _CALLS:
                sub = (eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr")
                       or eqn.params.get("fun_jaxpr"))
                if sub is None:
                    raise Unsupported(f"call primitive {name} without a jaxpr")
                sub_jaxpr, sub_consts = (sub.jaxpr, sub.consts) if hasattr(sub, "consts") else (
                    sub, ())
                ids = [self._as_id(i) for i in ins]
                outs = self.flatten(sub_jaxpr, sub_consts,
                                    ids[len(ids) - len(sub_jaxpr.invars):])
                for v, o in zip(eqn.outvars, outs, strict=True):
                    env[v] = self._as_id(o)
                continue
            outs = [self.new(v.aval.shape) for v in eqn.outvars]
            self.nodes.append(_Node(eqn.primitive, dict(eqn.params), ins, outs))
            for v, o in zip(eqn.outvars, outs, strict=True):
                env[v] = o
        return [read(v) for v in jaxpr.outvars]

    def _as_id(self, i):
        if isinstance(i, tuple):
            j = self.new(np.shape(i[1]))
            self.consts[j] = i[1]
            return j
        return i


def _name(node: _Node) -> str:
    return node.prim if isinstance(node.prim, str) else node.prim.name


def _shape(ir: _IR, i) -> tuple[int, ...]:
    return tuple(np.shape(i[1])) if isinstance(i, tuple) else ir.shapes[i]


# Labels: for a variable that depends on the input, labels[k] is the dimension holding input
# spatial axis k. Windows: per axis (start, stop) in that dimension's coordinates.


def _forward_labels(ir: _IR, node: _Node, dep, labels) -> list:
    """Output labels of a node with at least one input-dependent operand."""
    name = _name(node)
    dins = [i for i in node.ins if not isinstance(i, tuple) and dep.get(i)]
    lab = labels[dins[0]]
    out_shape = ir.shapes[node.outs[0]]
    if len(node.outs) != 1:
        raise Unsupported(f"{name} with several outputs")
    if name in _ELEMENTWISE:
        for i in dins:  # non-spatial dims may broadcast (size 1), spatial ones may not
            if labels[i] != lab or any(ir.shapes[i][d] != out_shape[d] for d in lab):
                raise Unsupported(f"{name} mixes differently laid out spatial operands")
        return lab
    if name == "conv_general_dilated":
        if dep.get(node.ins[1]) if not isinstance(node.ins[1], tuple) else False:
            raise Unsupported("convolution with input-dependent weights")
        p = node.params
        if p["batch_group_count"] != 1:
            raise Unsupported("batch-grouped convolution")
        dn = p["dimension_numbers"]
        lsp, osp = list(dn.lhs_spec[2:]), list(dn.out_spec[2:])
        if sorted(lab) != sorted(lsp):
            raise Unsupported("convolution over dimensions that are not the spatial axes")
        return tuple(osp[lsp.index(d)] for d in lab)
    if name in ("reduce_window_sum", "reduce_window_max", "reduce_window_min"):
        if any(node.params["base_dilation"][d] != 1 for d in lab):
            raise Unsupported("base-dilated reduce_window")
        return lab
    if name == "broadcast_in_dim":
        bd = node.params["broadcast_dimensions"]
        in_shape = ir.shapes[dins[0]]
        out = tuple(bd[d] for d in lab)
        if any(in_shape[d] != out_shape[o] for d, o in zip(lab, out, strict=True)):
            raise Unsupported("broadcast of a spatial axis")
        return out
    if name == "transpose":
        perm = list(node.params["permutation"])
        return tuple(perm.index(d) for d in lab)
    if name == "reshape":
        if node.params.get("dimensions") is not None:
            raise Unsupported("reshape with dimensions")
        in_shape = ir.shapes[dins[0]]
        out = []
        for d in lab:
            pre = int(np.prod(in_shape[:d]))
            q = next((q for q in range(len(out_shape))
                      if int(np.prod(out_shape[:q])) == pre and out_shape[q] == in_shape[d]), None)
            if q is None:
                raise Unsupported("reshape that merges or splits a spatial axis")
            out.append(q)
        return tuple(out)
    if name == "squeeze":
        dims = node.params["dimensions"]
        if any(d in dims for d in lab):
            raise Unsupported("squeeze of a spatial axis")
        return tuple(d - sum(1 for s in dims if s < d) for d in lab)
    if name in _REDUCTIONS:
        axes = node.params["axes"]
        if any(d in axes for d in lab):
            raise Unsupported(f"{name} over a spatial axis (a global operation)")
        return tuple(d - sum(1 for a in axes if a < d) for d in lab)
    if name == "dot_general":
        (lc, rc), (lb, rb) = node.params["dimension_numbers"]
        ldep = not isinstance(node.ins[0], tuple) and dep.get(node.ins[0])
        rdep = not isinstance(node.ins[1], tuple) and dep.get(node.ins[1])
        if ldep and rdep:
            raise Unsupported("dot_general of two input-dependent operands (attention)")
        lshape, rshape = _shape(ir, node.ins[0]), _shape(ir, node.ins[1])
        if ldep:
            free = [d for d in range(len(lshape)) if d not in lc and d not in lb]
            if any(d in lc or d in lb for d in lab):
                raise Unsupported("dot_general contracting a spatial axis")
            return tuple(len(lb) + free.index(d) for d in lab)
        free_l = [d for d in range(len(lshape)) if d not in lc and d not in lb]
        free = [d for d in range(len(rshape)) if d not in rc and d not in rb]
        if any(d in rc or d in rb for d in lab):
            raise Unsupported("dot_general contracting a spatial axis")
        return tuple(len(rb) + len(free_l) + free.index(d) for d in lab)
    if name == "concatenate":
        if node.params["dimension"] in lab:
            raise Unsupported("concatenate along a spatial axis")
        for i in dins:
            if labels[i] != lab:
                raise Unsupported("concatenate of differently laid out operands")
        return lab
    if name == "pad":
        if not isinstance(node.ins[1], tuple) and dep.get(node.ins[1]):
            raise Unsupported("input-dependent padding value")
        if any(node.params["padding_config"][d][2] != 0 for d in lab):
            raise Unsupported("interior padding of a spatial axis")
        return lab
    if name == "slice":
        return lab
    raise Unsupported(f"primitive {name!r}")


def _back(ir: _IR, node: _Node, out_win, labels) -> dict:
    """Unclipped windows each input-dependent operand must provide for ``out_win``."""
    name = _name(node)
    p = node.params
    req = {}
    for pos, i in enumerate(node.ins):
        if isinstance(i, tuple) or i not in labels:
            continue
        lab = labels[i]
        if name == "conv_general_dilated":
            dn = p["dimension_numbers"]
            lsp = list(dn.lhs_spec[2:])
            rshape = _shape(ir, node.ins[1])
            win = []
            for k, d in enumerate(lab):
                j = lsp.index(d)
                q0, q1 = _conv_span(p, j, rshape[dn.rhs_spec[2 + j]], out_win[k])
                ld = p["lhs_dilation"][j]  # transposed conv: input i sits at q = i * ld
                win.append((-(-q0 // ld), q1 // ld + 1))
            req[pos] = win
        elif name.startswith("reduce_window"):
            win = []
            for k, d in enumerate(lab):
                ksz, s = p["window_dimensions"][d], p["window_strides"][d]
                dil, lo = p["window_dilation"][d], p["padding"][d][0]
                o0, o1 = out_win[k]
                win.append((o0 * s - lo, (o1 - 1) * s - lo + (ksz - 1) * dil + 1))
            req[pos] = win
        elif name == "pad":
            win = []
            for k, d in enumerate(lab):
                lo = p["padding_config"][d][0]
                win.append((out_win[k][0] - lo, out_win[k][1] - lo))
            req[pos] = win
        elif name == "slice":
            win = []
            for k, d in enumerate(lab):
                st = p["start_indices"][d]
                sd = (p["strides"] or (1,) * len(p["start_indices"]))[d]
                o0, o1 = out_win[k]
                win.append((st + o0 * sd, st + (o1 - 1) * sd + 1))
            req[pos] = win
        else:  # the window per spatial axis is the output's (dims may move, sizes do not)
            req[pos] = list(out_win)
    return req


def _conv_span(p: dict, j: int, ksize: int, out_win) -> tuple[int, int]:
    """First and last (lhs-dilated, unpadded) input positions read by outputs ``out_win``."""
    s, dil, lo = p["window_strides"][j], p["rhs_dilation"][j], p["padding"][j][0]
    o0, o1 = out_win
    return o0 * s - lo, (o1 - 1) * s - lo + (ksize - 1) * dil


def _clip(win, lab, shape):
    return [(max(a, 0), min(b, shape[d])) for (a, b), d in zip(win, lab, strict=True)]


@dataclasses.dataclass
class _Cone:
    ir: _IR
    n_dyn: int
    x_id: int
    out_id: int
    labels: dict
    need: dict  # var id -> clipped window
    req: dict  # (node index, operand position) -> unclipped window
    live: list  # node indices evaluated on windows (input-dependent and needed)
    used: set  # node indices the output needs at all (the others are never evaluated)


def _analyse(closed, unit: tuple[int, ...]) -> _Cone:
    ir = _IR()
    jaxpr = closed.jaxpr
    in_ids = [ir.new(v.aval.shape) for v in jaxpr.invars]
    outs = ir.flatten(jaxpr, closed.consts, in_ids)
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
        if idx in used and any(not isinstance(i, tuple) and dep.get(i) for i in node.ins):
            labels[node.outs[0]] = _forward_labels(ir, node, dep, labels)
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
        for pos, win in _back(ir, node, need[o], labels).items():
            i = node.ins[pos]
            req[(idx, pos)] = win
            clipped = _clip(win, labels[i], ir.shapes[i])
            if any(a >= b for a, b in clipped):
                raise Unsupported(f"an operand of {_name(node)} contributes nothing to the unit")
            if i in need:
                clipped = [(min(a, c), max(b, d)) for (a, b), (c, d) in
                           zip(need[i], clipped, strict=True)]
            need[i] = clipped
    if x_id not in need:
        raise Unsupported("the unit does not depend on the input")
    live.reverse()
    return _Cone(ir, len(in_ids) - 1, x_id, out_id, labels, need, req, live, used)


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


def _evaluate(cone: _Cone, dyn_leaves: list, x_window) -> jax.Array:
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


def _edge_padding(cone: _Cone, ir: _IR, idx: int, node: _Node):
    """Per labelled axis ``d`` of the first input: how far the window it must supply reaches
    past the variable's edges, ``(d, before, after)`` (zero padding to add on the window)."""
    i = node.ins[0]
    lab = cone.labels[i]
    req = cone.req[(idx, 0)]
    return [(d, a - r0, r1 - b) for (r0, r1), (a, b), d in
            zip(req, _clip(req, lab, ir.shapes[i]), lab, strict=True)]


def _eval_node(cone: _Cone, idx: int, node: _Node, read):
    ir = cone.ir
    name = _name(node)
    out = node.outs[0]
    out_win = cone.need[out]
    out_lab = cone.labels[out]
    full_out = ir.shapes[out]
    args = []
    for pos, i in enumerate(node.ins):
        v = read(i)
        if (idx, pos) in cone.req:
            want = _clip(cone.req[(idx, pos)], cone.labels[i], ir.shapes[i])
            v = _slice_to(v, cone.need[i], want, cone.labels[i])
        elif name in _ELEMENTWISE or name == "concatenate":
            v = _slice_const(v, out_win, out_lab, full_out)
        args.append(v)
    p = dict(node.params)
    if name == "relu":
        return jax.nn.relu(args[0])
    if name == "conv_general_dilated":
        i = node.ins[0]
        lab = cone.labels[i]
        dn = p["dimension_numbers"]
        lsp = list(dn.lhs_spec[2:])
        rshape = _shape(ir, node.ins[1])
        pad = list(p["padding"])
        for k, ((a, b), d) in enumerate(zip(_clip(cone.req[(idx, 0)], lab, ir.shapes[i]), lab,
                                            strict=True)):
            j = lsp.index(d)
            q0, q1 = _conv_span(p, j, rshape[dn.rhs_spec[2 + j]], out_win[k])
            ld = p["lhs_dilation"][j]
            # The window's first/last elements sit at a*ld and (b-1)*ld of the (dilated)
            # input; pad so that the first output reads q0 and the last reads up to q1.
            pad[j] = (a * ld - q0, q1 - (b - 1) * ld)
        p["padding"] = tuple(pad)
    elif name.startswith("reduce_window"):
        pad = list(p["padding"])
        for d, lo, hi in _edge_padding(cone, ir, idx, node):
            pad[d] = (lo, hi)
        p["padding"] = tuple(pad)
    elif name == "pad":
        cfg = list(p["padding_config"])
        for d, lo, hi in _edge_padding(cone, ir, idx, node):
            cfg[d] = (lo, hi, 0)
        p["padding_config"] = tuple(cfg)
    elif name == "slice":
        lab = cone.labels[node.ins[0]]
        start, limit = list(p["start_indices"]), list(p["limit_indices"])
        for (a, b), d in zip(cone.req[(idx, 0)], lab, strict=True):
            start[d], limit[d] = 0, b - a
        p["start_indices"], p["limit_indices"] = tuple(start), tuple(limit)
    elif name == "broadcast_in_dim":
        shape = list(p["shape"])
        for (a, b), d in zip(out_win, out_lab, strict=True):
            shape[d] = b - a
        p["shape"] = tuple(shape)
    elif name == "reshape":
        sizes = list(p["new_sizes"])
        for (a, b), d in zip(out_win, out_lab, strict=True):
            sizes[d] = b - a
        p["new_sizes"] = tuple(sizes)
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


def plan_crop(entry: dict, res: Any, spec: Any, x_aval, out_shape, crop: str):
    """``(mode, plan)`` for :func:`rfjax.erf`: ``"cone"``, ``"input"`` or ``"none"``.

    Cached in ``entry`` (the per-function compile cache) per unit, output and shapes.
    """
    from rfjax.erf import _dyn_sig, select_output

    key = ("crop-plan", crop, spec.unit, spec.output, x_aval.shape[1:], str(x_aval.dtype),
           _dyn_sig(res.dyn))
    if key in entry:
        return entry[key]
    one = jax.ShapeDtypeStruct((1, *x_aval.shape[1:]), x_aval.dtype)
    spatial = tuple(x_aval.shape[1:-1])
    result = ("none", None)
    reason = None
    # The jaxpr does not depend on the unit: traced once per function and shape (with the
    # parameters as arguments, so the cached jaxpr holds none of their values).
    shape_key = (spec.output, x_aval.shape[1:], str(x_aval.dtype), _dyn_sig(res.dyn))
    if crop in ("auto", "cone"):
        try:
            if ("jaxpr",) + shape_key not in entry:
                entry[("jaxpr",) + shape_key] = jax.make_jaxpr(
                    lambda d, x: select_output(res.rebuild(d)(x), spec.output))(res.dyn, one)
            plan = cone_plan(entry[("jaxpr",) + shape_key], spec.unit)
            if tuple(plan.window) != tuple((0, s) for s in spatial) or crop == "cone":
                result = ("cone", plan)
        except Unsupported as e:
            reason = str(e)
    if result[0] == "none" and crop in ("auto", "cone", "input"):
        try:  # (not cached: a TRF holds the traced parameters as constants)
            win = input_window(_trf(res, spec, one), spec.unit, spatial)
        except Exception as e:  # no TRF for this fn: nothing to crop by
            win, reason = None, f"{reason or ''} {type(e).__name__}: {e}".strip()
        if win is not None:
            result = ("input", CropPlan(win[0], win[1], None))
    if crop == "cone" and result[0] != "cone":
        warnings.warn(f"rfjax.erf: no dependency cone ({reason}); using crop={result[0]!r}",
                      stacklevel=4)
    elif crop == "input" and result[0] != "input":
        warnings.warn(f"rfjax.erf: no input window to crop ({reason}); evaluating the whole "
                      "input", stacklevel=4)
    entry[key] = result
    return result


def _trf(res, spec, one):
    try:
        from rfjax.trf import trf
    except ImportError as e:
        raise Unsupported("rfjax.trf is not available") from e
    from rfjax.erf import select_output

    dyn = res.dyn

    def f(x):
        return select_output(res.rebuild(dyn)(x), spec.output)

    return trf(f, one)

