"""The record types of the primitive table (see :mod:`rfjax.engine.registry`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

__all__ = ["INLINE", "ConeRule", "PrimitiveRule"]


@dataclasses.dataclass(frozen=True)
class ConeRule:
    """How the dependency cone handles a primitive (see :mod:`rfjax.cone`).

    Attributes:
      labels: ``labels(ir, node, dep, labels) -> tuple``: for the output, the dimension that
        holds each input spatial axis, given the operands' (raise
        :class:`~rfjax.engine.cone_ir.Unsupported` when the axes are mixed or reduced).
      need: ``need(ir, node, pos, out_win, lab) -> [(start, stop), ...]``: the unclipped
        window (per input spatial axis, in operand ``pos``'s coordinates) that operand must
        provide for the output window ``out_win``; ``None``: the output's window.
      params: ``params(cone, idx, node, out_win, out_lab) -> dict``: the primitive's
        parameters for evaluating it on the windows (padding recomputed, shapes shrunk);
        ``None``: unchanged.
      slice_consts: operands that do not depend on the input are sliced to the output window
        where they are not broadcast (elementwise ops, concatenation).
    """

    labels: Callable
    need: Callable | None = None
    params: Callable | None = None
    slice_consts: bool = False


class _Inline:
    def __repr__(self) -> str:
        return "INLINE"


#: The cone rule of call primitives: the body is inlined into the cone's flat graph.
INLINE = _Inline()


@dataclasses.dataclass(frozen=True)
class PrimitiveRule:
    """One primitive's rules (see the module docstring)."""

    name: str
    trf: Callable
    cone: ConeRule | _Inline | None = None
    row: bool = False
