"""The one table of primitive rules, shared by the TRF engine and the ERF dependency cone.

Each primitive that may lie on the path from the input to the output has one
:class:`PrimitiveRule`:

* ``trf``: the TRF rule, ``trf(eqn, infos, env, ctx, prefix) -> (out_infos, backward)``:
  forward index intervals (:class:`~rfjax.engine.fields.Info`) of the outputs and a closure
  mapping output masks to operand masks (see :mod:`rfjax.engine.fields`);
* ``cone``: how :mod:`rfjax.cone` evaluates it on the unit's dependency window
  (:class:`ConeRule`), :data:`INLINE` for calls whose body is inlined, or ``None`` (not
  croppable: the cone is then unavailable and the ERF falls back to an input window);
* ``row``: whether its outputs are rows of the per-layer table (:meth:`rfjax.TRF.table`).

The rules live with their family (:mod:`rfjax.engine.rules`); this module only collects them.
Every primitive the cone handles is one the TRF handles, by construction (a record needs a TRF
rule) and by test. :func:`register` adds a primitive for both at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rfjax.engine.records import INLINE, ConeRule, PrimitiveRule
from rfjax.engine.rules import ALL_RULES

__all__ = ["INLINE", "ConeRule", "PrimitiveRule", "cone_primitives", "lookup", "register",
           "registered", "trf_primitives"]


def _collect() -> dict[str, PrimitiveRule]:
    table: dict[str, PrimitiveRule] = {}
    for rule in ALL_RULES:
        if rule.name in table:
            raise RuntimeError(f"primitive {rule.name!r} has two rules")  # a bug in rules/
        table[rule.name] = rule
    return table


_TABLE: dict[str, PrimitiveRule] = _collect()


def lookup(name: str) -> PrimitiveRule | None:
    """The rule of primitive ``name``, or ``None`` when the engine has none."""
    return _TABLE.get(name)


def trf_primitives() -> frozenset[str]:
    """Every primitive the TRF engine handles."""
    return frozenset(_TABLE)


def cone_primitives() -> frozenset[str]:
    """Every primitive the dependency cone handles (evaluates on windows or inlines)."""
    return frozenset(n for n, r in _TABLE.items() if r.cone is not None)


def register(rule: PrimitiveRule, *, replace: bool = False) -> None:
    """Add ``rule`` to the table: the TRF engine and the cone both pick it up.

    Raises:
      ValueError: a rule for that primitive exists and ``replace`` is False.
    """
    if not isinstance(rule, PrimitiveRule):
        raise TypeError(f"register takes a PrimitiveRule, got {type(rule).__name__}")
    if rule.name in _TABLE and not replace:
        raise ValueError(f"primitive {rule.name!r} already has a rule; pass replace=True")
    _TABLE[rule.name] = rule


@contextlib.contextmanager
def registered(rule: PrimitiveRule) -> Iterator[PrimitiveRule]:
    """Register ``rule`` for the duration of a ``with`` block (restores the previous one)."""
    old = _TABLE.get(rule.name)
    _TABLE[rule.name] = rule
    try:
        yield rule
    finally:
        if old is None:
            _TABLE.pop(rule.name, None)
        else:
            _TABLE[rule.name] = old
