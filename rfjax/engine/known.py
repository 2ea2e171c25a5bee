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
Padding, pooling and the cumulative primitives carry them too, and ``lax.scan`` carries them
per iteration (the structural rules are in :mod:`rfjax.engine.known_structure`, the shared
arithmetic in :mod:`rfjax.engine.bounds`).
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

from collections.abc import Callable

import numpy as np
from jax.extend import core as jcore
from scipy import special as scipy_special

from rfjax.engine import known_structure
from rfjax.engine.bounds import (
    SATURATION,
    Operands,
    default,
    ev,
    exact_only,
    extremes,
    is_float,
    nonzero,
)
from rfjax.engine.fields import INF, Info, Known, bshape, compact

__all__ = ["TABLE", "Operands", "default", "nonzero", "settle"]


# --------------------------------------------------------------------------------------------
# Interval arithmetic, evaluated in the dtype
# --------------------------------------------------------------------------------------------






def _unary_monotone(fn: Callable, increasing: bool = True):
    def rule(eqn, ops):
        dt = ops.dtype(0)
        if not is_float(dt):
            return [exact_only(fn, ops)]
        lo, hi = ops.bounds(0)
        a, b = ev(fn, dt, lo), ev(fn, dt, hi)
        return [(a, b) if increasing else (b, a)]

    return rule


def _abs_interval(lo, hi):
    """``|x|`` for ``x`` in ``[lo, hi]``."""
    amin = np.where(lo >= 0, lo, np.where(hi <= 0, -hi, 0.0))
    amax = np.maximum(np.abs(lo), np.abs(hi))
    return amin, amax


def _abs_rule(eqn, ops):
    dt = ops.dtype(0)
    if not is_float(dt):
        return [exact_only(np.abs, ops)]
    lo, hi = ops.bounds(0)
    a, b = _abs_interval(lo, hi)
    return [(ev(np.abs, dt, a), ev(np.abs, dt, b))]


def _power(y: int | None = None):
    """``integer_pow`` (``y`` from the parameters) and ``square`` (``y=2``)."""

    def rule(eqn, ops):
        n = int(eqn.params["y"]) if y is None else y
        dt = ops.dtype(0)

        def f(x):
            return x ** n

        if not is_float(dt) or n < 0:
            return [exact_only(f, ops)]
        lo, hi = ops.bounds(0)
        if n % 2 == 0:
            lo, hi = _abs_interval(lo, hi)
        return [(ev(f, dt, lo), ev(f, dt, hi))]

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
    if is_float(new):  # a monotone cast (the bounds are values of the old dtype already)
        return [(ev(lambda x: x, new, lo), ev(lambda x: x, new, hi))]
    if new == np.bool_:
        t = (lo > 0) | (hi < 0)
        f = (lo == 0) & (hi == 0)
        return [(np.where(t, 1.0, 0.0), np.where(f, 0.0, 1.0))]
    ex = (lo == hi) & np.isfinite(lo)
    if is_float(old):
        ex = ex & (np.abs(lo) < 2.0 ** 53)
    r = np.where(ex, ev(lambda x: x, new, np.where(ex, np.trunc(lo), 0.0)), np.nan)
    return [(r, r)]


def _add(eqn, ops):
    return _binary(ops, np.add, lambda a, b: (a[0], b[0], a[1], b[1]))


def _sub(eqn, ops):
    return _binary(ops, np.subtract, lambda a, b: (a[0], b[1], a[1], b[0]))


def _binary(ops, fn, corners):
    dt = ops.dtype(0)
    if not is_float(dt):
        return [exact_only(fn, ops)]
    a, b = ops.bounds(0), ops.bounds(1)
    la, lb, ha, hb = corners(a, b)
    return [(ev(fn, dt, la, lb), ev(fn, dt, ha, hb))]




def _mul(eqn, ops):
    dt = ops.dtype(0)
    if not is_float(dt):
        return [exact_only(np.multiply, ops)]
    (la, ha), (lb, hb) = ops.bounds(0), ops.bounds(1)
    # 0 * (a finite value) is 0: the corners give +-0 there, and NaN where a bound is inf.
    return [extremes([ev(np.multiply, dt, x, y) for x in (la, ha) for y in (lb, hb)])]


def _div(eqn, ops):
    dt = ops.dtype(0)
    if not is_float(dt):
        return [exact_only(_int_div, ops)]
    (la, ha), (lb, hb) = ops.bounds(0), ops.bounds(1)
    lo, hi = extremes([ev(np.divide, dt, x, y) for x in (la, ha) for y in (lb, hb)])
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
        if not is_float(dt):
            return [exact_only(fn, ops)]
        (la, ha), (lb, hb) = ops.bounds(0), ops.bounds(1)
        return [(ev(fn, dt, la, lb), ev(fn, dt, ha, hb))]

    return rule


def _logic(kind):
    """and / or / not / xor: monotone on booleans, exact-only on integers."""
    fns = {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor,
           "not": np.invert}

    def rule(eqn, ops):
        if ops.dtype(0) != np.bool_ or kind == "xor":
            return [exact_only(fns[kind], ops)]
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

    if not is_float(dt):
        return [exact_only(f, ops)]
    (l0, h0), (lx, hx), (l1, h1) = ops.bounds(0), ops.bounds(1), ops.bounds(2)

    return [(ev(f, dt, l0, lx, l1), ev(f, dt, h0, hx, h1))]


def _at_special(fn: Callable):
    """A transcendental function where libraries agree exactly: at operands 0 and +-inf only
    (``sin(0) == 0``, ``erf(inf) == 1``); elsewhere NumPy and XLA may differ in the last bit."""

    def rule(eqn, ops):
        if not is_float(ops.dtype(0)):
            return [None]
        lo, hi = ops.bounds(0)
        special = (lo == hi) & ((lo == 0) | np.isinf(lo))
        if not special.any():
            return [None]
        r = np.where(special, ev(fn, ops.dtype(0), np.where(special, lo, 0.0)), np.nan)
        return [(r, r)]

    return rule


_INCREASING = {
    "exp": np.exp, "exp2": np.exp2, "expm1": np.expm1, "log": np.log, "log1p": np.log1p,
    "tanh": np.tanh, "logistic": _logistic, "sqrt": np.sqrt, "cbrt": np.cbrt,
    "floor": np.floor, "ceil": np.ceil, "sign": np.sign, "asinh": np.arcsinh,
    "atan": np.arctan, "sinh": np.sinh, "atanh": np.arctanh,
}

_SPECIAL = {
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "cosh": np.cosh, "acosh": np.arccosh, "erf": scipy_special.erf,
    "erfc": scipy_special.erfc, "erf_inv": scipy_special.erfinv,
}

TABLE: dict[str, Callable] = {
    **{n: _unary_monotone(f) for n, f in _INCREASING.items()},
    "neg": _unary_monotone(np.negative, increasing=False),
    "rsqrt": _unary_monotone(lambda x: 1 / np.sqrt(x), increasing=False),
    "abs": _abs_rule, "integer_pow": _power(), "square": _power(2), "round": _round_rule,
    "is_finite": _is_finite_rule, "convert_element_type": _convert_rule,
    "add": _add, "sub": _sub, "mul": _mul, "div": _div,
    "max": _monotone2(np.maximum), "min": _monotone2(np.minimum),
    "pow": lambda eqn, ops: [exact_only(np.power, ops)],
    "atan2": lambda eqn, ops: [exact_only(np.arctan2, ops)],
    "rem": lambda eqn, ops: [exact_only(np.fmod, ops)],
    "and": _logic("and"), "or": _logic("or"), "xor": _logic("xor"), "not": _logic("not"),
    **{k: _compare(k) for k in ("eq", "ne", "lt", "le", "gt", "ge")},
    "select_n": _select_n, "clamp": _clamp,
    **{n: _at_special(f) for n, f in _SPECIAL.items()},
}
#: The elementwise rules: an output element reads the same element of each operand.
ELEMENTWISE = frozenset(TABLE)
TABLE.update(known_structure.TABLE)


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
    if is_float(aval.dtype):
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
        if is_float(old) and is_float(new) and default(old)[1] < default(new)[1]:
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
        if not is_float(ops.dtype(i)):
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
    that already carry bounds (a call's, computed inside) are left as they are.

    Only elements that become fixed here are emptied (``0 * gate``, a masked logit): one
    that is fixed because what it reads is (padding moved by ``jnp.pad``, ``relu`` of a
    convolution over padding only) keeps its intervals, so regions stay unclipped and
    extrapolate there, and its backward mask reaches no input either way."""
    if not any(i is not None and i.known is None for i in out_infos):
        return out_infos, bwd
    name = eqn.primitive.name
    fn = TABLE.get(name)
    if fn is None:
        return out_infos, bwd
    ops = Operands(eqn, env)
    if (name not in known_structure.STRUCTURAL
            and not any(ops.informative(i) for i in range(len(eqn.invars)))):
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
        kept = None
        if r is not None and len(r) == 3:
            r, kept = r[:2], r[2]
        elif name in known_structure.INHERITED:
            kept = True
        elif name in ELEMENTWISE:
            kept = _operands_exact(eqn, env)
        known = _keep(r, o.aval, narrow)
        if known is None:
            continue
        n = len(o.aval.shape)
        E = known.exact
        if kept is not None:
            E = E & ~bshape(np.asarray(kept, bool), n)
        if E.any():
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


def _operands_exact(eqn, env) -> np.ndarray:
    """Boolean (broadcastable): where every tracked operand of an elementwise equation is
    fixed (constants do not count: ``x * 0`` becomes fixed here)."""
    n = len(eqn.outvars[0].aval.shape)
    res = None
    for v in eqn.invars:
        info = None if isinstance(v, jcore.Literal) else env.read_info(v)
        if info is None:
            continue
        if info.known is None:
            return np.zeros((1,) * n, bool)
        e = bshape(info.known.exact, n)
        res = e if res is None else (res & e)
    return np.zeros((1,) * n, bool) if res is None else res
