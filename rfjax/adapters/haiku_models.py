"""Haiku models as JAX functions of one batch: ``apply`` without a random key (inference), the
output only (a stateful model's new state is dropped).

``hk.without_apply_rng`` models (``apply(params, x)``, ``apply(params, state, x)``) are told
from plain ones (``apply(params, rng, x)``) by ``apply``'s signature. The program is cached
per ``apply`` function, weakly: rfjax's compiled functions die with the model.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["HaikuProgram", "from_haiku_parts"]


def _takes_rng(apply: Callable, stateful: bool) -> bool:
    """Whether ``apply`` has Haiku's ``rng`` argument (after ``params`` and ``state``): not
    after ``hk.without_apply_rng``."""
    try:
        names = [p.name for p in inspect.signature(apply).parameters.values()]
    except (TypeError, ValueError):
        return True
    at = 2 if stateful else 1
    return len(names) > at and names[at] == "rng"


@dataclasses.dataclass(eq=False)
class HaikuProgram:
    """``apply(params, state, kwargs, x)``: the output of ``apply`` (weakly referenced: the
    program is cached under it)."""

    apply_ref: Callable[[], Any]
    stateful: bool
    rng: bool

    def apply(self, params: Any, state: Any, kwargs: dict, x):
        apply = self.apply_ref()
        if apply is None:  # pragma: no cover - the program dies with its apply
            raise RuntimeError("the Haiku model of a cached rfjax program was garbage-collected")
        head = (params, state) if self.stateful else (params,)
        if self.rng:
            head = head + (None,)
        out = apply(*head, x, **kwargs)
        return out[0] if self.stateful else out


_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def from_haiku_parts(parts: tuple, **apply_kwargs) -> tuple[Callable, bool]:
    """``(fn, stateful)`` for ``(transformed, params)`` or ``(transformed, params, state)``;
    ``apply_kwargs`` (e.g. ``is_training=False``) go to every ``apply`` call."""
    transformed, params, *rest = parts
    stateful = bool(rest) or type(transformed).__name__ == "TransformedWithState"
    state = (rest[0] if rest else {}) if stateful else None
    apply = transformed.apply
    rng = _takes_rng(apply, stateful)
    try:
        per = _PROGRAMS.setdefault(apply, {})
    except TypeError:  # not weakly referenceable (a callable object): held strongly
        per = {stateful: HaikuProgram(lambda: apply, stateful, rng)}
    if stateful not in per:
        per[stateful] = HaikuProgram(weakref.ref(apply), stateful, rng)
    prog = per[stateful]
    return functools.partial(prog.apply, params, state, apply_kwargs), stateful
