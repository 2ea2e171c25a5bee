"""Values fixed by the program: evaluating the equations that do not depend on the input.

The engine needs the values of integer and boolean index operands (gather indices,
dynamic-slice starts, select predicates, loop counters, sort keys) and of floating constants
computed purely from literals and ``iota`` (the interpolation matrices of
``jax.image.resize``), whose zero pattern is part of the architecture. They decide the
dependency pattern, so they are computed exactly as XLA computes them: by XLA itself, on the
CPU backend, with the program's own dtypes, roundings and casts.

**One compiled program per jaxpr.** When the interpreter reaches the first input-independent
equation of a jaxpr, :class:`Evaluator` plans the rest of it (:func:`plan`): which equations
can be evaluated (their operands are literals, constants, known arguments or outputs of such
equations; never the abstract parameter arguments), which of those the analysis wants (values
fixed by the program, index-like values, and whatever feeds them), and which of their values
it may read (operands of input-dependent equations, the jaxpr's outputs). Those equations
become one jaxpr, jitted on the CPU and run once, when a rule first reads one of its values
(so a jaxpr whose constants no rule reads compiles nothing). Compiled programs are cached by
their text (and the values of the constants of nested jaxprs, which the text omits), so a
re-traced model, or a loop body evaluated at every iteration (``scan``, ``while``), compiles
once. Calls without effects (``jit`` of ``jnp`` helpers, ``jax.random``) are part of the
program; a call with effects (a ``jax.debug.print`` inside) is evaluated by the interpreter
recursively, and the plan is redone where new values appear. Should the program fail, its
equations are evaluated one by one, and the failures are recorded per variable
(``env.why``) for the error a rule raises if it needs one.

Key-typed values (``jax.random.key``) are program constants: a fixed key is evaluated like any
other constant, a key that is an argument is unknown (so is every value drawn from it).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend import core as jcore

from rfjax.engine.errors import source_line

#: Primitives never evaluated (nondeterministic, host callbacks, printing).
NO_EVAL = frozenset({"rng_uniform", "debug_callback", "debug_print", "io_callback",
                     "pure_callback"})

CALLS = frozenset({"pjit", "jit", "closed_call", "core_call"})

#: Counters: ``programs`` (XLA programs compiled for constants), ``runs`` (their executions),
#: ``plans`` (jaxpr segments planned), ``single`` (equations evaluated one by one after a
#: program failed), ``ops`` (single primitives evaluated for a rule, e.g. a sort's permutation).
STATS: collections.Counter = collections.Counter()

_MAX_PROGRAMS = 256


class ConstantEvaluationError(RuntimeError):
    """An input-independent equation whose value could not be computed."""


def is_key(aval) -> bool:
    """Whether ``aval`` holds PRNG keys (``key<fry>``)."""
    dt = getattr(aval, "dtype", None)
    return dt is not None and jax.dtypes.issubdtype(dt, jax.dtypes.prng_key)


def is_intlike(aval) -> bool:
    """Integer, boolean or key-typed: index-like values the analysis evaluates wherever it
    can (their producers included)."""
    dt = getattr(aval, "dtype", None)
    if dt is None:
        return False
    if is_key(aval):
        return True
    try:
        return bool(np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.bool_))
    except TypeError:  # another extended dtype
        return False


def _cpu():
    return jax.devices("cpu")[0]


def to_host(x):
    """A value as the engine stores it: a NumPy array, or a (CPU) jax array for keys."""
    if isinstance(x, jax.Array) and is_key(x):
        return x
    return np.asarray(x)


# --------------------------------------------------------------------------------------------
# Compiled programs, cached by their text
# --------------------------------------------------------------------------------------------

_PROGRAMS: collections.OrderedDict = collections.OrderedDict()


def _nested_consts(params, out: list) -> None:
    """The constants of the closed jaxprs in ``params`` (recursively): the text of a jaxpr
    names them without their values."""
    for p in params.values() if isinstance(params, dict) else params:
        if isinstance(p, jcore.ClosedJaxpr):
            for c in p.consts:
                if isinstance(c, jax.Array) and is_key(c):
                    c = jax.random.key_data(c)
                c = np.asarray(c)
                out.append((c.shape, str(c.dtype), hashlib.sha1(c.tobytes()).hexdigest()))
            p = p.jaxpr
        if isinstance(p, jcore.Jaxpr):
            for e in p.eqns:
                _nested_consts(e.params, out)
        elif isinstance(p, tuple | list):
            _nested_consts(p, out)


def _program(jaxpr: jcore.Jaxpr) -> Callable:
    """The jitted function of a closed-over-nothing jaxpr; one compilation per distinct text
    (and values of the constants of the jaxprs nested in it)."""
    nested: list = []
    for e in jaxpr.eqns:
        _nested_consts(e.params, nested)
    key = (str(jaxpr), tuple(nested))
    fn = _PROGRAMS.get(key)
    if fn is None:
        fn = jax.jit(jcore.jaxpr_as_fun(jcore.ClosedJaxpr(jaxpr, ())))
        _PROGRAMS[key] = fn
        STATS["programs"] += 1
        while len(_PROGRAMS) > _MAX_PROGRAMS:
            _PROGRAMS.popitem(last=False)
    else:
        _PROGRAMS.move_to_end(key)
    return fn


def clear_cache() -> None:
    """Drop the compiled constant programs (and the plans)."""
    _PROGRAMS.clear()
    _OPS.clear()
    _STRUCTURES.clear()


def _run(fn: Callable, args: Sequence[Any]) -> list:
    cpu = _cpu()
    with jax.default_device(cpu):
        args = [jax.device_put(a, cpu) for a in args]
        outs = fn(*args)
    return [to_host(o) for o in outs]


_OPS: dict = {}


def evaluate_primitive(primitive, args: Sequence[Any], **params) -> list:
    """``primitive.bind(*args, **params)`` compiled by XLA on the CPU (cached per primitive,
    parameters and argument types): for rules that evaluate an operation on values fixed by
    the program (e.g. a sort's permutation). ``params`` must be hashable."""
    avals = tuple((tuple(np.shape(a)), str(getattr(a, "dtype", np.asarray(a).dtype)))
                  for a in args)
    key = (primitive, tuple(sorted(params.items())), avals)
    fn = _OPS.get(key)
    if fn is None:
        def f(*xs):
            out = primitive.bind(*xs, **params)
            return list(out) if primitive.multiple_results else [out]

        fn = jax.jit(f)
        _OPS[key] = fn
        STATS["programs"] += 1
    STATS["ops"] += 1
    return _run(fn, args)


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------

EVAL, SKIP, OPEN, RECURSE = "eval", "skip", "open", "recurse"
"""Per equation of a plan: evaluated by the program; not wanted (a weight's float
transform); not evaluated now (input-dependent, or an operand is unknown); a call with
effects, evaluated recursively by the interpreter."""


class _Structure:
    """Per jaxpr: equation positions, readers of each variable, and the variables that cross
    each planning boundary (cached weakly per jaxpr)."""

    def __init__(self, jaxpr: jcore.Jaxpr):
        self.eqns = list(jaxpr.eqns)
        self.position = {id(e): j for j, e in enumerate(self.eqns)}
        self.outvars = {v for v in jaxpr.outvars if not isinstance(v, jcore.Literal)}
        self.used: set = set(self.outvars)
        for e in self.eqns:
            self.used.update(v for v in e.invars if not isinstance(v, jcore.Literal))
        self.defined_before = [list(jaxpr.constvars) + list(jaxpr.invars)]
        self._boundary: dict[int, list] = {}
        self.plans: dict = {}

    def boundary(self, start: int) -> list:
        """Variables defined before equation ``start`` and read from there on."""
        b = self._boundary.get(start)
        if b is None:
            later = set(self.outvars)
            for e in self.eqns[start:]:
                later.update(v for v in e.invars if not isinstance(v, jcore.Literal))
            defined = list(self.defined_before[0])
            for e in self.eqns[:start]:
                defined.extend(o for o in e.outvars if not isinstance(o, jcore.DropVar))
            b = [v for v in dict.fromkeys(defined) if v in later]
            self._boundary[start] = b
        return b


_STRUCTURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def structure(jaxpr: jcore.Jaxpr) -> _Structure:
    s = _STRUCTURES.get(jaxpr)
    if s is None:
        s = _Structure(jaxpr)
        _STRUCTURES[jaxpr] = s
    return s


@dataclasses.dataclass
class Plan:
    """The evaluation of a jaxpr's input-independent equations from position ``start``."""

    start: int
    status: dict  # equation position -> EVAL / SKIP / OPEN / RECURSE
    args: list  # boundary variables the program reads
    outs: list  # variables it returns
    pure: list  # per returned variable: fixed by the program (not derived from a weight)
    eqns: list  # the equations of the program, in order
    program: jcore.Jaxpr | None


def _jaxpr(invars, outvars, eqns) -> jcore.Jaxpr:
    info = jcore.DebugInfo("rfjax constants", "rfjax.engine.constants", None, None)
    return jcore.Jaxpr(constvars=(), invars=invars, outvars=outvars, eqns=eqns,
                       effects=jcore.no_effects, debug_info=info)


def _usable(eqn) -> bool:
    return eqn.primitive.name not in NO_EVAL and not eqn.effects


def plan(struct: _Structure, start: int, state: Sequence[tuple[bool, bool, bool]]) -> Plan:
    """Plan the equations from ``start``, given per boundary variable ``(tracked, known,
    pure)``. Cached per jaxpr, start and state."""
    key = (start, tuple(state))
    p = struct.plans.get(key)
    if p is not None:
        return p
    STATS["plans"] += 1
    boundary = struct.boundary(start)
    tracked = {v for v, (t, _k, _p) in zip(boundary, state, strict=True) if t}
    known = {v: (pu or is_key(v.aval)) for v, (t, k, pu) in zip(boundary, state, strict=True)
             if k and not t}
    status: dict[int, str] = {}
    cand: list[int] = []
    pure_eqn: dict[int, bool] = {}
    for j in range(start, len(struct.eqns)):
        e = struct.eqns[j]
        ins = [v for v in e.invars if not isinstance(v, jcore.Literal)]
        if any(v in tracked for v in ins):
            tracked.update(e.outvars)
            status[j] = OPEN
            continue
        if any(v not in known for v in ins):
            status[j] = OPEN
            continue
        if not _usable(e):
            status[j] = RECURSE if (e.primitive.name in CALLS and e.primitive.name
                                    not in NO_EVAL) else OPEN
            continue
        pu = all(known[v] for v in ins)
        pure_eqn[j] = pu
        cand.append(j)
        for o in e.outvars:
            if not isinstance(o, jcore.DropVar):
                known[o] = pu or is_key(o.aval)
    # What the analysis wants: values fixed by the program, index-like values, and whatever
    # an evaluated equation reads.
    demand: set = set()
    wanted = []
    for j in reversed(cand):
        e = struct.eqns[j]
        if pure_eqn[j] or any(is_intlike(o.aval) for o in e.outvars) or any(
                o in demand for o in e.outvars):
            wanted.append(j)
            demand.update(v for v in e.invars if not isinstance(v, jcore.Literal))
        else:
            status[j] = SKIP
    wanted.reverse()
    # What it reads: operands of the equations not evaluated here, and the outputs.
    read = set(struct.outvars)
    for j, st in status.items():
        if st in (OPEN, RECURSE):
            read.update(v for v in struct.eqns[j].invars if not isinstance(v, jcore.Literal))
    produced = {o: j for j in wanted for o in struct.eqns[j].outvars
                if not isinstance(o, jcore.DropVar)}
    outs = [o for o in produced if o in read]
    # Keep only the equations the returned values need.
    need, keep = set(outs), []
    for j in reversed(wanted):
        e = struct.eqns[j]
        if any(o in need for o in e.outvars):
            keep.append(j)
            need.update(v for v in e.invars if not isinstance(v, jcore.Literal))
        else:
            status[j] = SKIP
    keep.reverse()
    for j in keep:
        status[j] = EVAL
    eqns = [struct.eqns[j] for j in keep]
    inner = {o for e in eqns for o in e.outvars}
    args = [v for v in boundary if v in need and v not in inner]
    program = None
    if outs:
        program = _jaxpr(args, outs, eqns)
    p = Plan(start, status, args, outs, [known[o] for o in outs], eqns, program)
    struct.plans[key] = p
    return p


# --------------------------------------------------------------------------------------------
# The evaluator used by the interpreter
# --------------------------------------------------------------------------------------------


class Evaluator:
    """Evaluates a jaxpr's input-independent equations as the interpreter reaches them.

    ``env`` holds ``info`` (input-dependent variables), ``val``/``pure`` (known values and
    whether they are fixed by the program) and ``why`` (why a value is missing). A plan's
    program runs when a value it computes is first read (:meth:`value`, through
    ``env.read_val``): values that no rule reads (the zeros of a ``jnp.where``) compile
    nothing.
    """

    def __init__(self, jaxpr: jcore.Jaxpr, env):
        self.struct = structure(jaxpr)
        self.env = env
        self.plan: Plan | None = None
        self.pending: dict = {}  # variable -> the plan whose program computes it

    def known(self, v) -> bool:
        """Whether ``v``'s value is known or computable by a planned program."""
        return (isinstance(v, jcore.Literal) or self.env.val.get(v) is not None
                or v in self.pending)

    def value(self, v):
        """``v``'s value, running the program that computes it if it has not run yet."""
        p = self.pending.get(v)
        if p is not None:
            self._execute(p)
        return self.env.val.get(v)

    def _replan(self, start: int) -> None:
        env = self.env
        boundary = self.struct.boundary(start)
        state = [(v in env.info, self.known(v), bool(env.pure.get(v, False)))
                 for v in boundary]
        self.plan = p = plan(self.struct, start, state)
        for o, pu in zip(p.outs, p.pure, strict=True):
            self.pending[o] = p
            env.pure[o] = pu

    def _execute(self, p: Plan) -> None:
        for o in p.outs:
            self.pending.pop(o, None)
        vals = [self.value(v) for v in p.args]
        STATS["runs"] += 1
        try:
            outs = _run(_program(p.program), vals)
        except Exception:  # noqa: BLE001 - find the equation that fails, one by one
            self._one_by_one(p, vals)
            return
        for o, val in zip(p.outs, outs, strict=True):
            self.env.val[o] = val

    def _one_by_one(self, p: Plan, vals: list) -> None:
        env = self.env
        local = {v: x for v, x in zip(p.args, vals, strict=True) if x is not None}
        why: dict = {v: env.why[v] for v in p.args if v in env.why}
        for e in p.eqns:
            ins = [v for v in e.invars if not isinstance(v, jcore.Literal)]
            missing = [v for v in ins if v not in local]
            outs = [o for o in e.outvars if not isinstance(o, jcore.DropVar)]
            if missing:
                for o in outs:
                    why[o] = why.get(missing[0], "")
                continue
            STATS["single"] += 1
            single = _jaxpr(ins, outs, [e])
            try:
                with jax.default_device(_cpu()):
                    res = jcore.jaxpr_as_fun(jcore.ClosedJaxpr(single, ()))(
                        *[jax.device_put(local[v], _cpu()) for v in ins])
            except Exception as err:  # any failure of jax itself: report it with the equation
                msg = (f"cannot evaluate '{e.primitive.name}' at {source_line(e)}: "
                       f"{type(err).__name__}: {err}")
                for o in outs:
                    why[o] = msg
                continue
            for o, r in zip(outs, res, strict=True):
                local[o] = to_host(r)
        for o in p.outs:
            if o in local:
                env.val[o] = local[o]
            elif why.get(o):
                env.why[o] = why[o]

    def visit(self, eqn, run_call: Callable | None = None) -> None:
        """The interpreter reached ``eqn``, which does not depend on the input: make its
        values known where the program fixes them (and the analysis wants them)."""
        j = self.struct.position[id(eqn)]
        if self.plan is None or j < self.plan.start:
            self._replan(j)
        st = self.plan.status.get(j, OPEN)
        if st in (EVAL, SKIP):
            return
        ins = [v for v in eqn.invars if not isinstance(v, jcore.Literal)]
        if not all(self.known(v) for v in ins):
            return
        if st == RECURSE or (eqn.primitive.name in CALLS and eqn.effects):
            if run_call is not None and eqn.primitive.name not in NO_EVAL:
                self._recurse(eqn, run_call)
            return
        if _usable(eqn) and j > self.plan.start:
            # Its operands became known after the plan (a call evaluated recursively, a
            # value a rule made known): plan again from here.
            self._replan(j)

    def _recurse(self, eqn, run_call: Callable) -> None:
        env = self.env
        vals = [env.read_val(v) for v in eqn.invars]
        pure = [env.is_pure(v) for v in eqn.invars]
        outs = run_call(eqn, vals, pure)
        pu = all(pure)
        for o, val in zip(eqn.outvars, outs, strict=True):
            if val is not None and not isinstance(o, jcore.DropVar):
                env.val[o] = val
                env.pure[o] = pu


@contextlib.contextmanager
def counting():
    """Count the constant programs compiled and run inside a ``with`` block (for tests and
    benchmarks): yields a Counter updated in place."""
    before = STATS.copy()
    diff: collections.Counter = collections.Counter()
    try:
        yield diff
    finally:
        diff.update({k: STATS[k] - before.get(k, 0) for k in STATS})
