"""Value bounds of an equation's operands, the arithmetic that the known-value rules share
(:mod:`rfjax.engine.known` for the table and what it means).

Bounds are float64 arrays, compact (size 1 along every axis they are constant on) and
broadcastable to the operand; ``lo == hi`` marks an element whose value the program fixes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from jax import numpy as jnp
from jax.extend import core as jcore

from rfjax.engine.fields import compact

#: Bounds beyond which a value counts as saturated (exp(-1000) == 0 in every float dtype).
SATURATION = 1e3


@functools.lru_cache(maxsize=64)
def default(dtype) -> tuple[float, float] | None:
    """The bounds of a value rfjax cannot bound from the program (``None``: not numeric)."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return 0.0, 1.0
    if np.issubdtype(dt, np.integer):
        ii = np.iinfo(dt)
        return float(ii.min), float(ii.max)
    if jnp.issubdtype(dt, np.floating):
        m = float(jnp.finfo(dt).max) / 2
        return -m, m
    return None


@functools.lru_cache(maxsize=64)
def is_float(dtype) -> bool:
    return bool(jnp.issubdtype(np.dtype(dtype), np.floating))


def as_float(val) -> np.ndarray | None:
    a = np.asarray(val)
    if a.dtype == object or np.iscomplexobj(a):
        return None
    try:
        return compact(a.astype(np.float64))
    except (TypeError, ValueError):  # extended dtypes (PRNG keys)
        return None


class Operands:
    """Lazy access to the value bounds of an equation's operands."""

    def __init__(self, eqn, env):
        self.eqn, self.env = eqn, env
        self._cache: dict = {}

    def dtype(self, i: int):
        return self.eqn.invars[i].aval.dtype

    def shape(self, i: int) -> tuple[int, ...]:
        return tuple(self.eqn.invars[i].aval.shape)

    def informative(self, i: int) -> bool:
        """Whether operand ``i`` has bounds beyond the default."""
        v = self.eqn.invars[i]
        if isinstance(v, jcore.Literal):
            return True
        info = self.env.read_info(v)
        if info is not None:
            return info.known is not None
        return self.env.is_pure(v) and self.env.read_val(v) is not None

    def bounds(self, i: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(lo, hi)`` float64 arrays broadcastable to the operand (``None``: not numeric)."""
        if i in self._cache:
            return self._cache[i]
        v = self.eqn.invars[i]
        res = None
        if self.informative(i):
            if isinstance(v, jcore.Literal):
                val = as_float(v.val)
                res = None if val is None else (val, val)
            else:
                info = self.env.read_info(v)
                if info is not None:
                    res = (info.known.lo, info.known.hi)
                else:
                    val = as_float(self.env.read_val(v))
                    res = None if val is None else (val, val)
        if res is None:
            d = default(self.dtype(i))
            res = None if d is None else (np.array(d[0]), np.array(d[1]))
        self._cache[i] = res
        return res

    def nonzero(self, i: int) -> np.ndarray | None:
        """Boolean (compact): the elements of operand ``i`` that may be non-zero; ``None`` when
        every element may be (no known zero)."""
        return nonzero(self.env, self.eqn.invars[i])


def nonzero(env, v) -> np.ndarray | None:
    """Boolean (compact, broadcastable to ``v``): the elements of ``v`` that may be non-zero
    whatever ``x`` and the parameters are; ``None`` when every element may be non-zero. A
    program constant's zeros and a tracked variable's known zeros count; a parameter's do not."""
    if isinstance(v, jcore.Literal):
        z = np.asarray(v.val) == 0
    else:
        info = env.read_info(v)
        if info is not None:
            k = info.known
            if k is None:
                return None
            z = (k.lo == 0) & (k.hi == 0)
        else:
            val = env.read_val(v)
            if val is None or not env.is_pure(v):
                return None
            z = np.asarray(val) == 0
    if not np.any(z):
        return None
    return ~z


def ev(fn: Callable, dtype, *args) -> np.ndarray:
    """``fn`` applied to float64 arrays cast to ``dtype``; the result as float64 (NaN where
    the operation is undefined)."""
    with np.errstate(all="ignore"):
        r = fn(*[np.asarray(a).astype(dtype) for a in args])
        return np.asarray(r).astype(np.float64)


def exact_only(fn: Callable, ops: Operands):
    """``fn`` on the elements where every operand is exact; NaN (unknown) elsewhere."""
    bs = [ops.bounds(i) for i in range(len(ops.eqn.invars))]
    if any(b is None for b in bs):
        return None
    ex = functools.reduce(np.logical_and, [b[0] == b[1] for b in bs])
    if not np.any(ex):
        return None
    args = []
    for i, (lo, _hi) in enumerate(bs):
        dt = ops.dtype(i)
        a = np.where(ex, lo, 1.0)  # (1: a harmless divisor where the result is not used)
        with np.errstate(all="ignore"):
            args.append(a.astype(dt))
    try:
        with np.errstate(all="ignore"):
            r = np.asarray(fn(*args)).astype(np.float64)
    except (TypeError, ValueError, ArithmeticError):
        return None
    r = np.where(ex, r, np.nan)
    return r, r


def extremes(vals):
    stack = np.broadcast_arrays(*vals)
    nan = functools.reduce(np.logical_or, [np.isnan(v) for v in stack])
    lo = functools.reduce(np.minimum, stack)
    hi = functools.reduce(np.maximum, stack)
    return np.where(nan, np.nan, lo), np.where(nan, np.nan, hi)
