"""Which array of ``fn``'s output, and which unit of it, is analysed, and how the input is
read: one convention for :func:`rfjax.trf`, :func:`rfjax.erf` and the command line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from rfjax.callables import InputTypeError

__all__ = ["check_unit", "describe_input", "explain_trace_error", "select_output"]


def select_output(out: Any, output: Any) -> Any:
    """Pick the array whose unit is differentiated from ``fn``'s output.

    ``output`` is ``None`` (the output itself, which must be an array or a pytree holding
    exactly one array), an ``int`` (index
    into a tuple output such as ``(out, intermediates)``), a ``"/"``-separated path (dict
    keys, sequence indices, attributes; e.g. ``"1/block2/conv"``), or a callable
    ``output(out) -> array``. A path that ends on a Flax ``capture_intermediates`` node
    (``{"__call__": (value,)}``) or a ``sow`` tuple takes its last value.
    """
    if output is None:
        if hasattr(out, "shape"):
            return out
        leaves = jax.tree_util.tree_leaves(out)
        if len(leaves) == 1:
            return leaves[0]
        raise ValueError(
            f"fn returned a {type(out).__name__} of {len(leaves)} arrays; pass output=<index, "
            "path or callable> to say which one to analyse")
    if callable(output):
        node = output(out)
    elif isinstance(output, int):
        node = out[output]
    elif isinstance(output, str):
        node = out
        for part in [p for p in output.split("/") if p]:
            node = _lookup(node, part, output)
    else:
        raise InputTypeError(
            f"output must be None, an int, a path string or a callable, got {output!r}"
        )
    while True:
        if isinstance(node, Mapping) and "__call__" in node:
            node = node["__call__"]
        elif isinstance(node, (tuple, list)) and node and not hasattr(node, "_fields"):
            node = node[-1]
        else:
            break
    return node


def _lookup(node: Any, part: str, path: str) -> Any:
    if isinstance(node, Mapping):
        if part in node:
            return node[part]
        raise ValueError(f"output path {path!r}: no key {part!r}; keys are {sorted(node)}")
    if isinstance(node, Sequence) and part.lstrip("-").isdigit():
        return node[int(part)]
    if hasattr(node, part):
        return getattr(node, part)
    raise ValueError(f"output path {path!r}: cannot look up {part!r} in {type(node).__name__}")


def check_unit(unit: Any, spatial: Sequence[int], *, centre: bool = False) -> tuple[int, ...]:
    """A unit (one index per output spatial axis) checked against the spatial shape.

    Args:
      unit: a sequence of ints (or one int for a 1-D output); ``None`` means the centre
        ``(n // 2, ...)`` when ``centre`` is True.
      spatial: the output's spatial shape (without batch and channel axes).

    Raises:
      ValueError: the output has no spatial axis, the unit has the wrong number of indices,
        or an index is outside ``0 <= u < n``.
    """
    spatial = tuple(int(n) for n in spatial)
    if not spatial:
        raise ValueError(
            "the output has no spatial axis (expected (N, *spatial, C)); a unit, region, mask "
            "or ERF map is only defined for outputs with spatial axes. Pick an inner feature "
            "map instead (output=, or an intermediate layer).")
    if unit is None:
        if centre:
            return tuple(n // 2 for n in spatial)
        raise ValueError(f"give a unit: one index per output spatial axis {spatial}")
    try:
        unit = tuple(int(u) for u in np.atleast_1d(np.asarray(unit)))
    except (TypeError, ValueError) as e:
        raise ValueError(f"unit {unit!r} must be a sequence of ints") from e
    if len(unit) != len(spatial):
        raise ValueError(
            f"unit {unit} has {len(unit)} indices but the output has {len(spatial)} spatial "
            f"axes (spatial shape {spatial}): it is outside the output's spatial shape")
    if any(not 0 <= u < n for u, n in zip(unit, spatial, strict=True)):
        raise ValueError(
            f"unit {unit} is outside the output's spatial shape {spatial} (indices must "
            "satisfy 0 <= u < size)")
    return unit


# --------------------------------------------------------------------------------------------
# How the input is read
# --------------------------------------------------------------------------------------------

CONVENTION = ("rfjax expects (N, *spatial, C): a leading batch axis, 1 to 3 spatial axes and "
              "channels last")


def describe_input(shape: Sequence[int]) -> str:
    """How rfjax reads an input of ``shape``, and the convention it expects, in words.

    For example ``describe_input((8, 8, 1))``::

        rfjax read the input of shape (8, 8, 1) as (N, *spatial, C): a batch of N=8, each a
        1-D signal of length 8 with C=1 channel. rfjax expects (N, *spatial, C): a leading
        batch axis, 1 to 3 spatial axes and channels last; if (8, 8, 1) is one input without
        a batch axis, pass shape (1, 8, 8, 1) (x[None]).

    The unbatched reading is offered when one more leading axis still fits the convention
    (rank 2 to 4). Used in the errors of :func:`rfjax.trf` and
    :func:`rfjax.erf` when ``fn`` fails on the input (:func:`explain_trace_error`).
    """
    shape = tuple(int(d) for d in shape)
    k = len(shape) - 2
    if 1 <= k <= 3:
        n, sp, c = shape[0], shape[1:-1], shape[-1]
        size = "x".join(map(str, sp))
        what = (f"a 1-D signal of length {size}" if k == 1 else
                f"a 2-D image of {size} pixels" if k == 2 else f"a 3-D volume of {size} voxels")
        reading = (f"rfjax read the input of shape {shape} as (N, *spatial, C): a batch of "
                   f"N={n}, each {what} with C={c} channel{'s' if c != 1 else ''}.")
    else:
        reading = (f"the input has shape {shape} (rank {len(shape)}), which is not "
                   "(N, *spatial, C) with 1 to 3 spatial axes.")
    text = f"{reading} {CONVENTION}"
    if 2 <= len(shape) <= 4:
        text += (f"; if {shape} is one input without a batch axis, pass shape "
                 f"{(1, *shape)} (x[None])")
    return text + "."


def explain_trace_error(error: BaseException, shape: Sequence[int]) -> BaseException:
    """``error`` (raised by ``fn`` while it was traced on an input of ``shape``) with rfjax's
    reading of the input appended (:func:`describe_input`); raise it ``from error``.

    The new exception has ``error``'s type when that type can be built from one message (a
    ``TypeError`` stays a ``TypeError``, so ``except`` clauses keep working); otherwise it
    is a ``ValueError``. Its first line is the original message's first line.
    """
    original = str(error).strip() or type(error).__name__
    message = (f"{original}\n\nfn raised {type(error).__name__} while rfjax traced it. "
               f"{describe_input(shape)}")
    try:
        new = type(error)(message)
    except Exception:  # a type with a special constructor (e.g. Flax's errors)
        new = None
    if not isinstance(new, type(error)) or str(new) != message:
        new = ValueError(message)
    return new
