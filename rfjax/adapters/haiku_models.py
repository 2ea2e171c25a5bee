"""Haiku models as JAX functions of one batch: ``apply`` without a random key (inference), the
output only (a stateful model's new state is dropped)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = ["from_haiku_parts"]


def _apply(apply: Callable, params: Any, kwargs: dict, x):
    return apply(params, None, x, **kwargs)


def _apply_with_state(apply: Callable, params: Any, state: Any, kwargs: dict, x):
    return apply(params, state, None, x, **kwargs)[0]


def from_haiku_parts(parts: tuple, **apply_kwargs) -> tuple[Callable, bool]:
    """``(fn, stateful)`` for ``(transformed, params)`` or ``(transformed, params, state)``;
    ``apply_kwargs`` (e.g. ``is_training=False``) go to every ``apply`` call."""
    transformed, params, *rest = parts
    stateful = bool(rest) or type(transformed).__name__ == "TransformedWithState"
    if stateful:
        state = rest[0] if rest else {}
        return functools.partial(_apply_with_state, transformed.apply, params, state,
                                 apply_kwargs), True
    return functools.partial(_apply, transformed.apply, params, apply_kwargs), False
