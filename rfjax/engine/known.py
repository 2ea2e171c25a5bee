"""Known values: elements whose value the program fixes, whatever ``x`` and the parameters are.

A constant is part of the architecture exactly like a kernel size: ``exp(-inf) == 0`` is a
structural zero, so a causal mask makes attention depend on past tokens only.

**What is fixed by the program.** Literals, ``iota`` and everything computed from them alone,
and closed-over arrays (the jaxpr's constants, e.g. a NumPy band matrix used in an ``einsum``)
are program constants. The parameters passed to ``fn`` (``functools.partial(apply, params)``,
which :func:`rfjax.trf` traces as abstract jaxpr inputs) are *not*: a weight that happens to be
0 is not architecture. Weights that ``fn`` closes over (``lambda x: apply(params, x)``) are
constants of the program, so their exact zeros count (a zero-initialised kernel cuts its path);
pass parameters with ``functools.partial`` to keep them abstract. NNX and Equinox modules given
to :func:`rfjax.trf` are resolved the same way (:func:`rfjax.callables.resolve`): their weights
are parameters.

**What is propagated.** A variable that depends on ``x`` may carry a
:class:`~rfjax.engine.fields.Known`: per element, bounds ``lo <= value <= hi`` computed by
interval arithmetic with NumPy in the variable's dtype (``+ - * /`` are correctly rounded and
rounding is monotone, so those bounds hold for XLA's values). Where ``lo == hi`` the value is
fixed: the element depends on nothing, so :func:`settle` empties its index intervals and
backward masks stop there. :func:`nonzero` gives the elements that may be non-zero, which
``dot_general`` and ``conv_general_dilated`` use to drop the terms of a known-zero operand; a
convolution's output is itself 0 where its window reads only known zeros and padding, and
gathers and dynamic slices with indices fixed by the program move the bounds with the elements.
``lax.scan`` carries them per iteration. (The cumulative primitives do not carry them yet: a
strict xfail in ``tests/test_trf_generated.py``.)
Structure only ever depends on which values are exactly 0, infinite or select a given case.

**The one assumption (finite activations).** A value rfjax cannot bound from the program
(``x``, the parameters and what is computed from them: attention logits, a softmax's row
maximum, its sum) is finite, at most ``finfo(dtype).max / 2`` in magnitude, and non-zero where
it divides (otherwise the network itself produces inf or NaN). So ``0 * a == 0``,
``0 / a == 0``, ``-inf + a == -inf``, and a softmax weight ``exp(m - max)`` of a masked logit
``m`` is exactly 0 when ``exp(m + finfo(dtype).max / 2)`` underflows, i.e. for
``m < -finfo.max / 2 - 1000``: ``-inf``, ``finfo(dtype).min``, ``jax.nn``'s
``-0.7 * finfo(dtype).max``. A smaller mask value (Swin's ``-100``, ``-1e4``, ``-1e9``) is not a
structural zero: a logit could be as negative, so such attention stays dense. Bounds are
kept only where they fix the value, place it beyond ``+-SATURATION`` (where ``exp``,
``logistic`` and ``tanh`` saturate in every float dtype) or hold the smaller default of a
narrower float dtype cast up (float16 logits in a float32 softmax); elsewhere the default
applies, so almost every variable carries no ``Known`` (``None``) and a CNN pays nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from jax import numpy as jnp
from jax.extend import core as jcore

from rfjax.engine import moves
from rfjax.engine.fields import INF, Info, Known, bshape, compact, materialize
from rfjax.engine.window import Window

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
def _is_float(dtype) -> bool:
    return bool(jnp.issubdtype(np.dtype(dtype), np.floating))


def _as_float(val) -> np.ndarray | None:
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
                val = _as_float(v.val)
                res = None if val is None else (val, val)
            else:
                info = self.env.read_info(v)
                if info is not None:
                    res = (info.known.lo, info.known.hi)
                else:
                    val = _as_float(self.env.read_val(v))
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


# --------------------------------------------------------------------------------------------
# Interval arithmetic, evaluated in the dtype
# --------------------------------------------------------------------------------------------


def _ev(fn: Callable, dtype, *args) -> np.ndarray:
    """``fn`` applied to float64 arrays cast to ``dtype``; the result as float64 (NaN where
    the operation is undefined)."""
    with np.errstate(all="ignore"):
        r = fn(*[np.asarray(a).astype(dtype) for a in args])
        return np.asarray(r).astype(np.float64)


def _exact_only(fn: Callable, ops: Operands):
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


def _unary_monotone(fn: Callable, increasing: bool = True):
    def rule(eqn, ops):
        dt = ops.dtype(0)
        if not _is_float(dt):
            return [_exact_only(fn, ops)]
        lo, hi = ops.bounds(0)
        a, b = _ev(fn, dt, lo), _ev(fn, dt, hi)
        return [(a, b) if increasing else (b, a)]

    return rule


def _abs_interval(lo, hi):
    """``|x|`` for ``x`` in ``[lo, hi]``."""
    amin = np.where(lo >= 0, lo, np.where(hi <= 0, -hi, 0.0))
    amax = np.maximum(np.abs(lo), np.abs(hi))
    return amin, amax


def _abs_rule(eqn, ops):
    dt = ops.dtype(0)
    if not _is_float(dt):
        return [_exact_only(np.abs, ops)]
    lo, hi = ops.bounds(0)
    a, b = _abs_interval(lo, hi)
    return [(_ev(np.abs, dt, a), _ev(np.abs, dt, b))]


def _power(y: int | None = None):
    """``integer_pow`` (``y`` from the parameters) and ``square`` (``y=2``)."""

    def rule(eqn, ops):
        n = int(eqn.params["y"]) if y is None else y
        dt = ops.dtype(0)

        def f(x):
            return x ** n

        if not _is_float(dt) or n < 0:
            return [_exact_only(f, ops)]
        lo, hi = ops.bounds(0)
        if n % 2 == 0:
            lo, hi = _abs_interval(lo, hi)
        return [(_ev(f, dt, lo), _ev(f, dt, hi))]

    return rule


def _round(x, rounding_method=0):
    if int(rounding_method) == 0:  # away from zero
        return np.sign(x) * np.floor(np.abs(x) + 0.5)
    return np.round(x)  # to nearest even


def _round_rule(eqn, ops):
    method = eqn.params.get("rounding_method", 0)
    return _unary_monotone(lambda x: _round(x, method))(eqn, ops)


def _logistic(x):
    return 1 / (1 + np.exp(-x))


def _is_finite_rule(eqn, ops):
    lo, hi = ops.bounds(0)
    fin = np.isfinite(lo) & np.isfinite(hi)
    inf = (lo == hi) & np.isinf(lo)
    return [(np.where(fin, 1.0, 0.0), np.where(inf, 0.0, 1.0))]


def _convert_rule(eqn, ops):
    new = np.dtype(eqn.params["new_dtype"])
    old = ops.dtype(0)
    if default(new) is None:
        return [None]
    lo, hi = ops.bounds(0)
    if _is_float(new):  # a monotone cast (the bounds are values of the old dtype already)
        return [(_ev(lambda x: x, new, lo), _ev(lambda x: x, new, hi))]
    if new == np.bool_:
        t = (lo > 0) | (hi < 0)
        f = (lo == 0) & (hi == 0)
        return [(np.where(t, 1.0, 0.0), np.where(f, 0.0, 1.0))]
    ex = (lo == hi) & np.isfinite(lo)
    if _is_float(old):
        ex = ex & (np.abs(lo) < 2.0 ** 53)
    r = np.where(ex, _ev(lambda x: x, new, np.where(ex, np.trunc(lo), 0.0)), np.nan)
    return [(r, r)]


def _add(eqn, ops):
    return _binary(ops, np.add, lambda a, b: (a[0], b[0], a[1], b[1]))


def _sub(eqn, ops):
    return _binary(ops, np.subtract, lambda a, b: (a[0], b[1], a[1], b[0]))


def _binary(ops, fn, corners):
    dt = ops.dtype(0)
    if not _is_float(dt):
        return [_exact_only(fn, ops)]
    a, b = ops.bounds(0), ops.bounds(1)
    la, lb, ha, hb = corners(a, b)
    return [(_ev(fn, dt, la, lb), _ev(fn, dt, ha, hb))]


def _extremes(vals):
    stack = np.broadcast_arrays(*vals)
    nan = functools.reduce(np.logical_or, [np.isnan(v) for v in stack])
    lo = functools.reduce(np.minimum, stack)
    hi = functools.reduce(np.maximum, stack)
    return np.where(nan, np.nan, lo), np.where(nan, np.nan, hi)


def _mul(eqn, ops):
    dt = ops.dtype(0)
    if not _is_float(dt):
        return [_exact_only(np.multiply, ops)]
    (la, ha), (lb, hb) = ops.bounds(0), ops.bounds(1)
    # 0 * (a finite value) is 0: the corners give +-0 there, and NaN where a bound is inf.
    return [_extremes([_ev(np.multiply, dt, x, y) for x in (la, ha) for y in (lb, hb)])]


def _div(eqn, ops):
    dt = ops.dtype(0)
    if not _is_float(dt):
        return [_exact_only(_int_div, ops)]
    (la, ha), (lb, hb) = ops.bounds(0), ops.bounds(1)
    lo, hi = _extremes([_ev(np.divide, dt, x, y) for x in (la, ha) for y in (lb, hb)])
    spans_zero = (lb <= 0) & (hb >= 0)
    # A divisor that is not fixed is non-zero (the assumption): 0 / it is 0.
    zero_num = (la == 0) & (ha == 0) & (lb != hb)
    lo = np.where(spans_zero, np.where(zero_num, 0.0, np.nan), lo)
    hi = np.where(spans_zero, np.where(zero_num, 0.0, np.nan), hi)
    return [(lo, hi)]


def _int_div(a, b):
    """XLA's integer division (towards zero); division by zero is left unknown."""
    if np.any(b == 0):
        raise ArithmeticError("integer division by zero")
    return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(a.dtype)


def _monotone2(fn):
    def rule(eqn, ops):
        dt = ops.dtype(0)
        if not _is_float(dt):
            return [_exact_only(fn, ops)]
        (la, ha), (lb, hb) = ops.bounds(0), ops.bounds(1)
        return [(_ev(fn, dt, la, lb), _ev(fn, dt, ha, hb))]

    return rule


def _logic(kind):
    """and / or / not / xor: monotone on booleans, exact-only on integers."""
    fns = {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor,
           "not": np.invert}

    def rule(eqn, ops):
        if ops.dtype(0) != np.bool_ or kind == "xor":
            return [_exact_only(fns[kind], ops)]
        if kind == "not":
            lo, hi = ops.bounds(0)
            return [(1.0 - hi, 1.0 - lo)]
        (la, ha), (lb, hb) = ops.bounds(0), ops.bounds(1)
        op = np.minimum if kind == "and" else np.maximum
        return [(op(la, lb), op(ha, hb))]

    return rule


def _compare(kind):
    def rule(eqn, ops):
        (la, ha), (lb, hb) = ops.bounds(0), ops.bounds(1)
        same = (la == ha) & (lb == hb) & (la == lb)
        apart = (ha < lb) | (hb < la)
        t, f = {"lt": (ha < lb, la >= hb), "le": (ha <= lb, la > hb),
                "gt": (la > hb, ha <= lb), "ge": (la >= hb, ha < lb),
                "eq": (same, apart), "ne": (apart, same)}[kind]
        return [(np.where(t, 1.0, 0.0), np.where(f, 0.0, 1.0))]

    return rule


def _select_n(eqn, ops):
    plo, phi = ops.bounds(0)
    lo, hi = np.array(INF), np.array(-INF)
    for c in range(1, len(eqn.invars)):
        b = ops.bounds(c)
        if b is None:
            return [None]
        can = (plo <= c - 1) & (c - 1 <= phi)
        lo = np.where(can, np.minimum(lo, b[0]), lo)
        hi = np.where(can, np.maximum(hi, b[1]), hi)
    return [(lo, hi)]


def _clamp(eqn, ops):
    dt = ops.dtype(1)

    def f(a, x, b):
        return np.minimum(np.maximum(x, a), b)

    if not _is_float(dt):
        return [_exact_only(f, ops)]
    (l0, h0), (lx, hx), (l1, h1) = ops.bounds(0), ops.bounds(1), ops.bounds(2)

    return [(_ev(f, dt, l0, lx, l1), _ev(f, dt, h0, hx, h1))]


# --------------------------------------------------------------------------------------------
# Data movement and reductions: the same rearrangement, applied to the bounds
# --------------------------------------------------------------------------------------------


def _moved(fn: Callable, full: bool = False):
    """A movement rule: ``fn(bounds array, eqn, in_shape)`` applied to both bounds (``full``:
    on arrays materialised to the operand's shape)."""

    def rule(eqn, ops):
        if not ops.informative(0):
            return [None]
        shape = ops.shape(0)
        lo, hi = ops.bounds(0)
        prep = (lambda a: materialize(a, shape)) if full else (lambda a: bshape(a, len(shape)))
        return [(fn(prep(lo), eqn, shape), fn(prep(hi), eqn, shape))]

    return rule


def _broadcast(A, eqn, in_shape):
    ndim = len(eqn.params["shape"])
    shp = [1] * ndim
    for i, d in enumerate(eqn.params["broadcast_dimensions"]):
        shp[d] = A.shape[i]
    return A.reshape(shp)


def _reshape(A, eqn, in_shape):
    perm = eqn.params.get("dimensions")
    if perm is not None:
        A = np.transpose(A, perm)
    return A.reshape(tuple(eqn.params["new_sizes"]))


def _slice(A, eqn, in_shape):
    p = eqn.params
    strides = p["strides"] or (1,) * len(in_shape)
    return A[tuple(slice(a, b, c) if A.shape[j] > 1 else slice(None) for j, (a, b, c) in
                   enumerate(zip(p["start_indices"], p["limit_indices"], strides,
                                 strict=True)))]


def _concatenate(eqn, ops):
    if not any(ops.informative(i) for i in range(len(eqn.invars))):
        return [None]
    parts = [ops.bounds(i) for i in range(len(eqn.invars))]
    if any(p is None for p in parts):
        return [None]
    d = eqn.params["dimension"]
    return [tuple(np.concatenate([materialize(p[s], ops.shape(i)) for i, p in
                                  enumerate(parts)], axis=d) for s in (0, 1))]


def _reduce(kind):
    def rule(eqn, ops):
        if not ops.informative(0):
            return [None]
        axes = tuple(eqn.params["axes"])
        shape, dt = ops.shape(0), ops.dtype(0)
        lo, hi = ops.bounds(0)
        if kind in ("max", "min"):
            op = np.max if kind == "max" else np.min
            return [(op(bshape(lo, len(shape)), axis=axes), op(bshape(hi, len(shape)),
                                                                 axis=axes))]
        if kind == "sum" and _is_float(dt):
            return [tuple(_ev(lambda x: np.sum(x, axis=axes), dt, materialize(a, shape))
                          for a in (lo, hi))]
        if kind in ("and", "or"):
            op = np.min if kind == "and" else np.max
            return [(op(bshape(lo, len(shape)), axis=axes), op(bshape(hi, len(shape)),
                                                                 axis=axes))]
        return [None]

    return rule


def _dot_general(eqn, ops):
    """Where every term of the contraction has a known-zero factor, the output is 0."""
    nz = [ops.nonzero(0), ops.nonzero(1)]
    if nz[0] is None and nz[1] is None:
        return [None]
    nl, nr = len(ops.shape(0)), len(ops.shape(1))
    ls, rs, os_ = dot_subscripts(eqn.params["dimension_numbers"], nl, nr)
    arrs = [bshape(n, k).astype(np.float32) if n is not None else np.ones((1,) * k, np.float32)
            for n, k in zip(nz, (nl, nr), strict=True)]
    cnt = np.einsum(f"{ls},{rs}->{os_}", *arrs, optimize=True)
    zero = cnt == 0
    if not zero.any():
        return [None]
    r = np.where(zero, 0.0, np.nan)
    return [(r, r)]


def _conv(eqn, ops):
    """A convolution output is 0 where its window reads only known zeros and padding (the
    weights are finite); the operand's features are OR-ed, so feature groups are ignored and
    the zeros found are a subset of the true ones."""
    nz = ops.nonzero(0)
    if nz is None and not ops.informative(0):
        return [None]
    p = eqn.params
    dn = p["dimension_numbers"]
    lspec, rspec, ospec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    lhs, rhs = ops.shape(0), ops.shape(1)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    nsp = len(lspec) - 2
    A = np.ones((1,) * len(lhs), bool) if nz is None else bshape(nz, len(lhs))
    A = np.transpose(A, lspec).any(axis=1, keepdims=True)  # (batch, 1, spatial...)
    lhs_dil = p["lhs_dilation"] or (1,) * nsp
    rhs_dil = p["rhs_dilation"] or (1,) * nsp
    for i in range(nsp):
        w = Window(n_in=lhs[lspec[2 + i]], n_out=out_shape[ospec[2 + i]],
                   size=rhs[rspec[2 + i]], stride=p["window_strides"][i],
                   pad_lo=p["padding"][i][0], lhs_dilation=lhs_dil[i], rhs_dilation=rhs_dil[i])
        M = np.moveaxis(np.broadcast_to(A, A.shape[:2 + i] + (w.n_in,) + A.shape[3 + i:]),
                        2 + i, -1)
        A = np.moveaxis((M.astype(np.float32) @ w.relation().T.astype(np.float32)) > 0, -1, 2 + i)
    zero = np.transpose(~A, np.argsort(ospec))
    if not zero.any():
        return [None]
    r = np.where(zero, 0.0, np.nan)
    return [(r, r)]


def _indexed(eqn, ops):
    """A gather or dynamic slice with indices fixed by the program moves the bounds with the
    elements (an out-of-range read or a fill value: unknown)."""
    if not ops.informative(0):
        return [None]
    vals = [ops.env.read_val(v) for v in eqn.invars[1:]]
    if any(v is None for v in vals):
        return [None]
    shape = ops.shape(0)
    n = int(np.prod(shape, dtype=np.int64))
    src = moves.sources(eqn, [np.arange(n, dtype=np.int32).reshape(shape), *vals])[0]
    ok = (src >= 0) & (src < n)
    idx = np.where(ok, src, 0)
    lo, hi = ops.bounds(0)
    return [tuple(np.where(ok, materialize(a, shape).ravel()[idx], np.nan) for a in (lo, hi))]


def dot_subscripts(dimension_numbers, nl: int, nr: int) -> tuple[str, str, str]:
    """einsum subscripts (lhs, rhs, out) of a ``dot_general``."""
    (lc, rc), (lb, rb) = dimension_numbers
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lsub, rsub = [""] * nl, [""] * nr
    for dl, dr in list(zip(lb, rb, strict=True)) + list(zip(lc, rc, strict=True)):
        lsub[dl] = rsub[dr] = next(letters)
    lfree = [d for d in range(nl) if not lsub[d]]
    rfree = [d for d in range(nr) if not rsub[d]]
    for d in lfree:
        lsub[d] = next(letters)
    for d in rfree:
        rsub[d] = next(letters)
    osub = [lsub[d] for d in lb] + [lsub[d] for d in lfree] + [rsub[d] for d in rfree]
    return "".join(lsub), "".join(rsub), "".join(osub)


def _identity(eqn, ops):
    if not ops.informative(0):
        return [None]
    return [ops.bounds(0)]


_INCREASING = {
    "exp": np.exp, "exp2": np.exp2, "expm1": np.expm1, "log": np.log, "log1p": np.log1p,
    "tanh": np.tanh, "logistic": _logistic, "sqrt": np.sqrt, "cbrt": np.cbrt,
    "floor": np.floor, "ceil": np.ceil, "sign": np.sign, "asinh": np.arcsinh,
    "atan": np.arctan, "sinh": np.sinh, "atanh": np.arctanh,
}

TABLE: dict[str, Callable] = {
    **{n: _unary_monotone(f) for n, f in _INCREASING.items()},
    "neg": _unary_monotone(np.negative, increasing=False),
    "rsqrt": _unary_monotone(lambda x: 1 / np.sqrt(x), increasing=False),
    "abs": _abs_rule, "integer_pow": _power(), "square": _power(2), "round": _round_rule,
    "is_finite": _is_finite_rule, "convert_element_type": _convert_rule,
    "add": _add, "sub": _sub, "mul": _mul, "div": _div,
    "max": _monotone2(np.maximum), "min": _monotone2(np.minimum),
    "pow": lambda eqn, ops: [_exact_only(np.power, ops)],
    "atan2": lambda eqn, ops: [_exact_only(np.arctan2, ops)],
    "rem": lambda eqn, ops: [_exact_only(np.fmod, ops)],
    "and": _logic("and"), "or": _logic("or"), "xor": _logic("xor"), "not": _logic("not"),
    **{k: _compare(k) for k in ("eq", "ne", "lt", "le", "gt", "ge")},
    "select_n": _select_n, "clamp": _clamp,
    "stop_gradient": _identity, "copy": _identity, "copy_p": _identity,
    "broadcast_in_dim": _moved(_broadcast),
    "transpose": _moved(lambda A, eqn, s: np.transpose(A, eqn.params["permutation"])),
    "reshape": _moved(_reshape, full=True),
    "squeeze": _moved(lambda A, eqn, s: np.squeeze(A, tuple(eqn.params["dimensions"]))),
    "expand_dims": _moved(lambda A, eqn, s: np.expand_dims(A, tuple(eqn.params["dimensions"]))),
    "rev": _moved(lambda A, eqn, s: np.flip(A, tuple(eqn.params["dimensions"])), full=True),
    "slice": _moved(_slice),
    "concatenate": _concatenate,
    "reduce_sum": _reduce("sum"), "reduce_max": _reduce("max"), "reduce_min": _reduce("min"),
    "reduce_and": _reduce("and"), "reduce_or": _reduce("or"),
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    "gather": _indexed, "dynamic_slice": _indexed,
}


# --------------------------------------------------------------------------------------------
# After each rule
# --------------------------------------------------------------------------------------------


def _keep(res, aval, narrow: bool) -> Known | None:
    """The bounds worth keeping: exact values and, for floats, values beyond +-SATURATION;
    with ``narrow`` (a cast up from a narrower float dtype, or an operand that holds such a
    range) also values within half the default (float16 logits cast to float32). Every other
    element gets the default."""
    if res is None:
        return None
    d = default(aval.dtype)
    if d is None:
        return None
    lo, hi = np.asarray(res[0], np.float64), np.asarray(res[1], np.float64)
    valid = ~(np.isnan(lo) | np.isnan(hi)) & (lo <= hi)
    keep = valid & (lo == hi)
    tight = None
    if _is_float(aval.dtype):
        keep |= valid & ((hi < -SATURATION) | (lo > SATURATION))
        if narrow:
            tight = valid & ~keep & (np.maximum(np.abs(lo), np.abs(hi)) <= d[1] / 2)
            keep |= tight
    if not keep.any():
        return None
    ndim = len(aval.shape)
    lo = compact(bshape(np.where(keep, lo, d[0]), ndim))
    hi = compact(bshape(np.where(keep, hi, d[1]), ndim))
    return Known(lo, hi, bool(tight is not None and tight.any()))


def _narrow(eqn, ops: Operands) -> bool:
    """Whether the results may hold the range of a narrower float dtype (see :func:`_keep`)."""
    if eqn.primitive.name == "convert_element_type":
        old, new = ops.dtype(0), np.dtype(eqn.params["new_dtype"])
        if _is_float(old) and _is_float(new) and default(old)[1] < default(new)[1]:
            return True
    for v in eqn.invars:
        info = None if isinstance(v, jcore.Literal) else ops.env.read_info(v)
        if info is not None and info.known is not None and info.known.narrow:
            return True
    return False


def _small(a):
    return a <= SATURATION


#: Per rule, the magnitudes ``|c|`` of a constant operand that, against default operands,
#: give neither an exact value nor a saturated one: ``x + 1``, ``max(x, 0)`` (relu),
#: ``x * 0.5``, ``x / 4``, ``x < 3``.
_ORDINARY = {
    **{n: _small for n in ("add", "sub", "max", "min", "eq", "ne", "lt", "le", "gt", "ge")},
    "mul": lambda a: (a > 0) & (a < INF),
    "div": lambda a: (a > 0) & (a < INF),
    **{n: lambda a: a == a for n in ("pow", "atan2", "rem")},  # exact-only rules
}


def _only_ordinary_constants(eqn, ops: Operands) -> bool:
    """A shortcut for the common case: whether the only bounds are float constants (literals,
    program constants) that :func:`_keep` would keep nothing of (see ``_ORDINARY``)."""
    ordinary = _ORDINARY.get(eqn.primitive.name)
    if ordinary is None:
        return False
    for i, v in enumerate(eqn.invars):
        if not ops.informative(i):
            continue
        if not _is_float(ops.dtype(i)):
            return False
        if isinstance(v, jcore.Literal):
            c = np.asarray(v.val)
        elif ops.env.read_info(v) is None:
            c = np.asarray(ops.env.read_val(v))
        else:
            return False  # a tracked operand with bounds
        with np.errstate(all="ignore"):
            if not np.all(ordinary(np.abs(c.astype(np.float64)))):
                return False
    return True


def settle(eqn, env, out_infos: list, bwd):
    """Compute the outputs' :class:`Known` bounds after a rule; elements whose value is fixed
    depend on nothing: their intervals are emptied and backward masks stop there. Outputs
    that already carry bounds (a call's, computed inside) are left as they are."""
    if not any(i is not None and i.known is None for i in out_infos):
        return out_infos, bwd
    fn = TABLE.get(eqn.primitive.name)
    if fn is None:
        return out_infos, bwd
    ops = Operands(eqn, env)
    if not any(ops.informative(i) for i in range(len(eqn.invars))):
        return out_infos, bwd
    if _only_ordinary_constants(eqn, ops):
        return out_infos, bwd
    try:
        res = fn(eqn, ops)
    except (TypeError, ValueError, ArithmeticError):  # a dtype NumPy cannot compute in
        return out_infos, bwd
    narrow = _narrow(eqn, ops)
    new = list(out_infos)
    exact: list = [None] * len(out_infos)
    for k, (o, info, r) in enumerate(zip(eqn.outvars, out_infos, res, strict=True)):
        if info is None or info.known is not None:
            continue
        known = _keep(r, o.aval, narrow)
        if known is None:
            continue
        E = known.exact
        if E.any():
            n = len(o.aval.shape)
            lo = [np.where(E, INF, bshape(x, n)) for x in info.lo]
            hi = [np.where(E, -INF, bshape(x, n)) for x in info.hi]
            new[k] = Info(lo, hi, list(info.slope), known)
            exact[k] = E
        else:
            new[k] = Info(info.lo, info.hi, info.slope, known)
    if all(e is None for e in exact):
        return new, bwd

    def settled_bwd(oms):
        return bwd([m & ~e if (m is not None and e is not None) else m
                    for m, e in zip(oms, exact, strict=True)])

    return new, settled_bwd
