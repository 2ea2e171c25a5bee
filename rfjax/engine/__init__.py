"""The jaxpr engine behind :func:`rfjax.trf` and the ERF's dependency cone (internal).

Modules, in the order the analysis uses them:

* :mod:`~rfjax.engine.errors`: the errors, and an equation's source line and name stack;
* :mod:`~rfjax.engine.fields`: what is propagated (:class:`Info` forward, masks backward
  through the :class:`Tape`) and the array helpers the rules share;
* :mod:`~rfjax.engine.window`: the per-axis geometry of windowed operations;
* :mod:`~rfjax.engine.constants`: values fixed by the program (indices, constant matrices);
* :mod:`~rfjax.engine.known`: known values of tracked variables (masked logits, exact zeros),
  which depend on nothing;
* :mod:`~rfjax.engine.registry` and :mod:`~rfjax.engine.rules`: the one table of primitive
  rules (TRF rule, cone rule, table row), grouped by family;
* :mod:`~rfjax.engine.interpreter`: the forward pass over a jaxpr;
* :mod:`~rfjax.engine.cone_ir`: the cone's flat graph and window arithmetic.
"""

from rfjax.engine.errors import DynamicDependencyError, TRFError, UnsupportedPrimitiveError
from rfjax.engine.fields import Context, Info, Row, Tape, backward, bshape, empty_info
from rfjax.engine.interpreter import forward
from rfjax.engine.records import INLINE, ConeRule, PrimitiveRule
from rfjax.engine.registry import (
    cone_primitives,
    lookup,
    register,
    registered,
    trf_primitives,
)

__all__ = [
    "INLINE",
    "ConeRule",
    "Context",
    "DynamicDependencyError",
    "Info",
    "PrimitiveRule",
    "Row",
    "TRFError",
    "Tape",
    "UnsupportedPrimitiveError",
    "backward",
    "bshape",
    "cone_primitives",
    "empty_info",
    "forward",
    "lookup",
    "register",
    "registered",
    "trf_primitives",
]
