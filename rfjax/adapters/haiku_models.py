"""Haiku models as JAX functions of one batch: ``apply`` without a random key (inference), the
output only (a stateful model's new state is dropped), or the output of the module named
``layer`` (its ``module_name``, e.g. ``res_net18/~/block_group_3``: read with
``hk.intercept_methods`` during the call; the first call of a module shared by several places).

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
    layer: str | None = None

    def apply(self, params: Any, state: Any, kwargs: dict, x):
        apply = self.apply_ref()
        if apply is None:  # pragma: no cover - the program dies with its apply
            raise RuntimeError("the Haiku model of a cached rfjax program was garbage-collected")
        head = (params, state) if self.stateful else (params,)
        if self.rng:
            head = head + (None,)
        if self.layer is None:
            out = apply(*head, x, **kwargs)
            return out[0] if self.stateful else out
        import haiku as hk

        seen: dict[str, Any] = {}

        def intercept(next_f, args, kw, context):
            out = next_f(*args, **kw)
            if context.method_name == "__call__":
                seen.setdefault(context.module.module_name, out)
            return out

        with hk.intercept_methods(intercept):
            apply(*head, x, **kwargs)
        if self.layer not in seen:
            raise ValueError(f"layer={self.layer!r} is not a Haiku module called by this model; "
                             f"its modules: {sorted(seen)}")
        return seen[self.layer]


_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def from_haiku_parts(parts: tuple, layer: str | None = None,
                     **apply_kwargs) -> tuple[Callable, bool]:
    """``(fn, stateful)`` for ``(transformed, params)`` or ``(transformed, params, state)``;
    ``layer``: a module name whose output ``fn`` returns instead of the model's;
    ``apply_kwargs`` (e.g. ``is_training=False``) go to every ``apply`` call."""
    transformed, params, *rest = parts
    stateful = bool(rest) or type(transformed).__name__ == "TransformedWithState"
    state = (rest[0] if rest else {}) if stateful else None
    apply = transformed.apply
    rng = _takes_rng(apply, stateful)
    try:
        per = _PROGRAMS.setdefault(apply, {})
    except TypeError:  # not weakly referenceable (a callable object): held strongly
        per = {(stateful, layer): HaikuProgram(lambda: apply, stateful, rng, layer)}
    if (stateful, layer) not in per:
        per[(stateful, layer)] = HaikuProgram(weakref.ref(apply), stateful, rng, layer)
    prog = per[(stateful, layer)]
    return functools.partial(prog.apply, params, state, apply_kwargs), stateful
