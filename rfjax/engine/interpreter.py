"""The forward interpreter: walks a jaxpr, evaluates what is fixed by the program, applies
each input-dependent equation's TRF rule from the registry, and records the backward tape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from jax.extend import core as jcore

from rfjax.engine import constants, known, registry
from rfjax.engine.errors import UnsupportedPrimitiveError, name_of, source_line
from rfjax.engine.fields import Context, Info, Row, Tape, compact, estimate_slopes
from rfjax.engine.rules.control import join_names, sub_jaxpr


class Env:
    """Variable environment: forward infos, concrete values, purity of concrete values, and
    why a value could not be computed (reported if something later needs it). ``jaxpr``: the
    program whose input-independent equations :attr:`constants` evaluates."""

    def __init__(self, jaxpr: jcore.Jaxpr | None = None):
        self.info: dict = {}
        self.val: dict = {}
        self.pure: dict = {}
        self.why: dict = {}
        self.jaxpr = jaxpr
        self._constants: constants.Evaluator | None = None

    @property
    def constants(self) -> constants.Evaluator:
        if self._constants is None:
            self._constants = constants.Evaluator(self.jaxpr, self)
        return self._constants

    def read_info(self, v):
        if isinstance(v, jcore.Literal):
            return None
        return self.info.get(v)

    def read_val(self, v):
        if isinstance(v, jcore.Literal):
            return np.asarray(v.val, dtype=v.aval.dtype)
        val = self.val.get(v)
        if val is None and self._constants is not None:
            val = self._constants.value(v)  # computed when first read
        return val

    def is_pure(self, v) -> bool:
        if isinstance(v, jcore.Literal):
            return True
        return self.pure.get(v, False) or constants.is_key(v.aval)

    def unused(self, eqn) -> bool:
        """Whether nothing reads ``eqn``'s outputs (effects such as ``jax.debug.print``)."""
        used = constants.structure(self.jaxpr).used
        return all(isinstance(o, jcore.DropVar) or o not in used for o in eqn.outvars)


def _run_call(ctx: Context):
    """Evaluate a call primitive's body with the interpreter (no tracked input): for calls
    with effects, whose body holds equations that are not evaluated."""

    def run(eqn, vals, pure):
        jaxpr, consts = sub_jaxpr(eqn)
        sub = Context(0, None, ctx.forward)
        _, outs, _, _ = forward(jaxpr, consts, [None] * len(vals), list(vals), list(pure), sub)
        return outs

    return run


def _evaluate_constant(eqn, env: Env, ctx: Context) -> None:
    """Make the outputs of an input-independent equation known where they are fixed by the
    program (pure) or index-like (integer, boolean, keys): evaluated with XLA on the CPU, one
    program for all such equations of the jaxpr (:mod:`rfjax.engine.constants`)."""
    env.constants.visit(eqn, _run_call(ctx))


def _refine_slopes(eqn, out_infos) -> None:
    """Make the outputs' interval arrays compact and set their jumps. Where an axis has >= 2
    elements its jump is read off the arrays themselves; the
    rule's value is kept for size-1 axes (needed to extrapolate into padding there) and
    where the arrays agree with it up to rounding (e.g. 1/2 after a transposed conv)."""
    for o, i in zip(eqn.outvars, out_infos, strict=True):
        if i is None:
            continue
        shape = tuple(o.aval.shape)
        big = np.array([n >= 2 for n in shape], dtype=bool)
        n = np.maximum(np.array(shape, dtype=float) - 1, 1)
        for a in range(i.naxes):
            i.lo[a], i.hi[a] = compact(i.lo[a]), compact(i.hi[a])
            s = np.asarray(i.slope[a], dtype=float)
            if s.shape != (len(shape),):
                s = np.zeros(len(shape))
            est = estimate_slopes(i.lo[a], shape)
            keep = (s != 0) & (np.abs(s - est) * n <= 1.0)
            i.slope[a] = np.where(big & ~keep, est, s)


def forward(jaxpr: jcore.Jaxpr, consts: Sequence[Any], in_infos: Sequence[Info | None],
            in_vals: Sequence[Any], in_pure: Sequence[bool], ctx: Context, prefix: str = ""):
    """Run the forward pass over ``jaxpr``.

    Args:
      jaxpr, consts: the program and its constants.
      in_infos: per invar, its :class:`Info` if it depends on the input, else ``None``.
      in_vals, in_pure: per invar, its concrete value (or ``None``: unknown, e.g. a weight)
        and whether that value is fixed by the program. The jaxpr's own constants
        (closed-over arrays) are fixed by the program.
      ctx: the analysis context (tracked axes, table rows).
      prefix: the name-stack prefix of the enclosing call (for table rows).

    Returns ``(out_infos, out_vals, out_pure, tape)``.
    """
    if ctx.forward is None:
        ctx.forward = forward
    env = Env(jaxpr)
    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env.val[v] = c
        env.pure[v] = True  # closed-over arrays are fixed by the program (rfjax.engine.known)
    for v, i, c, p in zip(jaxpr.invars, in_infos, in_vals, in_pure, strict=True):
        if i is not None:
            env.info[v] = i
        elif c is not None:
            env.val[v] = c
            env.pure[v] = p
    tape = Tape([])
    for eqn in jaxpr.eqns:
        infos = [env.read_info(v) for v in eqn.invars]
        if not any(i is not None for i in infos):
            _evaluate_constant(eqn, env, ctx)
            continue
        if eqn.outvars and all(0 in getattr(o.aval, "shape", (1,)) for o in eqn.outvars):
            # zero-size outputs (jnp.pad's edge mode builds some) hold no element, so no
            # dependency: they are constants of the program
            for o in eqn.outvars:
                if not isinstance(o, jcore.DropVar):
                    env.val[o] = np.zeros(o.aval.shape, o.aval.dtype)
                    env.pure[o] = True
            continue
        rule = registry.lookup(eqn.primitive.name)
        if rule is None and env.unused(eqn):
            continue  # nothing flows out of it (jax.debug.print, other effects)
        if rule is None:
            raise UnsupportedPrimitiveError(
                f"rfjax.trf has no rule for the primitive '{eqn.primitive.name}' at "
                f"{source_line(eqn)}, which lies on the path from the input to the output. "
                "Open an issue with this primitive, or express the operation with supported "
                "primitives (convolutions, pooling, elementwise ops, dot_general, reshapes, "
                "static gathers)."
            )
        out_infos, bwd = rule.trf(eqn, infos, env, ctx, prefix)
        out_infos, bwd = known.settle(eqn, env, out_infos, bwd)
        _refine_slopes(eqn, out_infos)
        for o, i in zip(eqn.outvars, out_infos, strict=True):
            if i is not None and not isinstance(o, jcore.DropVar):
                env.info[o] = i
        tape.entries.append((eqn.invars, eqn.outvars, bwd))
        if ctx.rows is not None and rule.row:
            for o, i in zip(eqn.outvars, out_infos, strict=True):
                if i is not None:
                    ctx.rows.append(Row(join_names(prefix, name_of(eqn)), source_line(eqn),
                                        eqn.primitive.name, tuple(o.aval.shape), i))
    out_infos = [env.read_info(v) for v in jaxpr.outvars]
    out_vals = [env.read_val(v) if env.read_info(v) is None else None for v in jaxpr.outvars]
    out_pure = [env.is_pure(v) for v in jaxpr.outvars]
    return out_infos, out_vals, out_pure, tape
