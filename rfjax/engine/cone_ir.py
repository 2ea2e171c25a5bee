"""The dependency cone's graph: a flat list of nodes with integer variable ids, and the
window arithmetic its rules share (see :mod:`rfjax.cone`).

Labels: for a variable that depends on the input, ``labels[k]`` is the dimension holding input
spatial axis ``k``. Windows: per input spatial axis ``(start, stop)`` (stop exclusive) in that
dimension's coordinates; *unclipped* windows may reach past the variable's edges (padding),
*clipped* ones do not.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


class Unsupported(Exception):
    """The jaxpr has an operation whose dependency window is not derived here."""


@dataclasses.dataclass
class Node:
    """One primitive application: ``prim`` (a jax Primitive, or ``"relu"``), its params,
    operands (var ids, or ``("lit", value)``) and output var ids."""

    prim: Any
    params: dict
    ins: list
    outs: list[int]

    @property
    def name(self) -> str:
        return self.prim if isinstance(self.prim, str) else self.prim.name


class IR:
    """A flat graph: nodes in order, every variable's shape, and the constants."""

    def __init__(self):
        self.nodes: list[Node] = []
        self.shapes: dict[int, tuple[int, ...]] = {}
        self.consts: dict[int, Any] = {}
        self._next = 0

    def new(self, shape) -> int:
        """A new variable id of shape ``shape``."""
        i = self._next
        self._next += 1
        self.shapes[i] = tuple(shape)
        return i

    def as_id(self, i) -> int:
        """A variable id for an operand (a literal becomes a constant variable)."""
        if isinstance(i, tuple):
            j = self.new(np.shape(i[1]))
            self.consts[j] = i[1]
            return j
        return i

    def shape(self, i) -> tuple[int, ...]:
        """The shape of an operand (a var id or a literal)."""
        return tuple(np.shape(i[1])) if isinstance(i, tuple) else self.shapes[i]


def is_dependent(dep: dict, i) -> bool:
    """Whether operand ``i`` (a var id or a literal) depends on the input."""
    return not isinstance(i, tuple) and bool(dep.get(i))


def clip(win, lab, shape):
    """Clip a window to a variable's extent along its labelled dims."""
    return [(max(a, 0), min(b, shape[d])) for (a, b), d in zip(win, lab, strict=True)]


@dataclasses.dataclass
class Cone:
    """The analysed cone of one unit (see :func:`rfjax.cone.cone_plan`)."""

    ir: IR
    n_dyn: int
    x_id: int
    out_id: int
    labels: dict
    need: dict  # var id -> clipped window
    req: dict  # (node index, operand position) -> unclipped window
    live: list  # node indices evaluated on windows (input-dependent and needed)
    used: set  # node indices the output needs at all (the others are never evaluated)

    def edge_padding(self, idx: int, node: Node):
        """Per labelled axis ``d`` of the first operand: how far the window it must supply
        reaches past the variable's edges, ``(d, before, after)`` (zero padding to add)."""
        i = node.ins[0]
        lab = self.labels[i]
        req = self.req[(idx, 0)]
        return [(d, a - r0, r1 - b) for (r0, r1), (a, b), d in
                zip(req, clip(req, lab, self.ir.shapes[i]), lab, strict=True)]
