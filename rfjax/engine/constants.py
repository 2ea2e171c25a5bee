"""Values fixed by the program: evaluating the equations that do not depend on the input.

The engine needs the values of integer and boolean index operands (gather indices,
dynamic-slice starts, select predicates, loop counters) and of floating constants computed
purely from literals and ``iota`` (the interpolation matrices of ``jax.image.resize``), whose
zero pattern is part of the architecture. They are computed here with NumPy versions of the
primitives they are built from (one jax dispatch per equation would compile each one), with
``primitive.bind`` for anything else.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rfjax.engine.errors import source_line

#: Primitives never evaluated (effects, randomness, host callbacks).
NO_EVAL = frozenset({"rng_bit_generator", "rng_uniform", "random_bits", "random_seed",
                     "random_wrap", "random_unwrap", "debug_callback", "io_callback",
                     "pure_callback"})

CALLS = frozenset({"pjit", "jit", "closed_call", "core_call"})


def is_intlike(aval) -> bool:
    dt = getattr(aval, "dtype", None)
    return dt is not None and (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.bool_))


def _np_dot_general(a, b, dimension_numbers, **_):
    (lc, rc), (lb, rb) = dimension_numbers
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    la, ra = [""] * a.ndim, [""] * b.ndim
    for x, y in list(zip(lb, rb, strict=True)) + list(zip(lc, rc, strict=True)):
        la[x] = ra[y] = next(letters)
    for d in range(a.ndim):
        la[d] = la[d] or next(letters)
    for d in range(b.ndim):
        ra[d] = ra[d] or next(letters)
    out = [la[d] for d in lb] + [c for d, c in enumerate(la) if d not in lc and d not in lb]
    out += [c for d, c in enumerate(ra) if d not in rc and d not in rb]
    return np.einsum(f"{''.join(la)},{''.join(ra)}->{''.join(out)}", a, b)


def _np_convert(x, new_dtype, **_):
    return np.asarray(x).astype(np.dtype(new_dtype))


def _np_iota(dtype, shape, dimension, **_):
    ar = np.arange(shape[dimension], dtype=np.dtype(dtype))
    shp = [1] * len(shape)
    shp[dimension] = shape[dimension]
    return np.broadcast_to(ar.reshape(shp), shape).copy()


def _np_select_n(pred, *cases):
    return np.choose(np.asarray(pred).astype(np.int64), np.broadcast_arrays(*cases))


def _np_div(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if np.issubdtype(np.result_type(a, b), np.integer):
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(np.result_type(a, b))
    return a / b


# NumPy versions of the primitives that structural constants are built from (iota, index
# arithmetic, interpolation weights): evaluating them with jax would compile each one.
_NP_EVAL: dict[str, Callable] = {
    "iota": lambda dtype, shape, dimension, **k: _np_iota(dtype, shape, dimension),
    "convert_element_type": lambda x, new_dtype, **k: _np_convert(x, new_dtype),
    "add": lambda a, b: np.add(a, b), "sub": lambda a, b: np.subtract(a, b),
    "mul": lambda a, b, **k: np.multiply(a, b), "div": _np_div,
    "max": lambda a, b: np.maximum(a, b), "min": lambda a, b: np.minimum(a, b),
    "neg": lambda a, **k: np.negative(a), "abs": lambda a, **k: np.abs(a),
    "floor": lambda a, **k: np.floor(a), "ceil": lambda a, **k: np.ceil(a),
    "sqrt": lambda a, **k: np.sqrt(a), "exp": lambda a, **k: np.exp(a),
    "sign": lambda a, **k: np.sign(a),
    "round": lambda a, rounding_method=None, **k: np.round(a),
    "eq": lambda a, b: np.equal(a, b), "ne": lambda a, b: np.not_equal(a, b),
    "lt": lambda a, b: np.less(a, b), "le": lambda a, b: np.less_equal(a, b),
    "gt": lambda a, b: np.greater(a, b), "ge": lambda a, b: np.greater_equal(a, b),
    "and": lambda a, b: np.bitwise_and(a, b), "or": lambda a, b: np.bitwise_or(a, b),
    "not": lambda a: np.invert(a), "rem": lambda a, b: np.fmod(a, b),
    "select_n": _np_select_n,
    "clamp": lambda lo, x, hi: np.clip(x, lo, hi),
    "reshape": lambda x, new_sizes, **k: np.reshape(x, new_sizes),
    "transpose": lambda x, permutation: np.transpose(x, permutation),
    "squeeze": lambda x, dimensions: np.squeeze(x, tuple(dimensions)),
    "reduce_sum": lambda x, axes, **k: np.sum(x, axis=tuple(axes)),
    "reduce_max": lambda x, axes, **k: np.max(x, axis=tuple(axes)),
    "reduce_min": lambda x, axes, **k: np.min(x, axis=tuple(axes)),
    "concatenate": lambda *xs, dimension: np.concatenate(xs, axis=dimension),
    "dot_general": lambda a, b, dimension_numbers, **k: _np_dot_general(a, b,
                                                                        dimension_numbers),
    "copy": lambda x: np.array(x), "copy_p": lambda x: np.array(x),
}


def _np_broadcast_in_dim(x, shape, broadcast_dimensions, **_):
    x = np.asarray(x)
    shp = [1] * len(shape)
    for i, d in enumerate(broadcast_dimensions):
        shp[d] = x.shape[i]
    return np.broadcast_to(x.reshape(shp), shape).copy()


_NP_EVAL["broadcast_in_dim"] = _np_broadcast_in_dim


class ConstantEvaluationError(RuntimeError):
    """An input-independent equation whose value could not be computed."""


def evaluate(eqn, vals, run_call: Callable | None = None) -> list[np.ndarray]:
    """The concrete outputs of ``eqn`` given concrete operand values ``vals``.

    ``run_call(eqn, vals) -> list`` evaluates a call primitive's body equation by equation
    (so that its constants are NumPy-evaluated too); it returns ``None`` entries for outputs it
    could not compute.

    Raises:
      ConstantEvaluationError: neither NumPy nor ``primitive.bind`` could compute it (the
        message names the primitive and the source line).
    """
    name = eqn.primitive.name
    f = _NP_EVAL.get(name)
    if f is not None:
        try:
            r = f(*[np.asarray(v) for v in vals], **eqn.params)
        except (TypeError, ValueError, KeyError):  # a parameter this NumPy version lacks
            r = None
        if r is not None:
            dt = eqn.outvars[0].aval.dtype
            return [np.asarray(r).astype(dt, copy=False).reshape(eqn.outvars[0].aval.shape)]
    if name in CALLS and run_call is not None:
        outs = run_call(eqn, vals)
        if all(o is not None for o in outs):
            return [np.asarray(o) for o in outs]
    try:
        out = eqn.primitive.bind(*vals, **eqn.params)
    except Exception as e:  # any failure of jax itself: report it with the equation
        raise ConstantEvaluationError(
            f"cannot evaluate '{name}' at {source_line(eqn)}: {type(e).__name__}: {e}") from e
    if eqn.primitive.multiple_results:
        return [np.asarray(o) for o in out]
    return [np.asarray(out)]
