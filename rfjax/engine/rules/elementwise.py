"""Elementwise primitives: each output element depends on the same element of each operand
(rank-0 operands are broadcast). Also the identity-like multi-output primitives."""

from __future__ import annotations

from rfjax.engine.cone_ir import Unsupported, is_dependent
from rfjax.engine.fields import combine, reduce_to
from rfjax.engine.records import ConeRule, PrimitiveRule

ELEMENTWISE = frozenset("""
    abs acos acosh add and asin asinh atan atan2 atanh bessel_i0e bessel_i1e cbrt ceil clamp clz
    complex conj convert_element_type copy copy_p cos cosh digamma div erf erf_inv erfc exp exp2
    expm1 eq ne lt le gt ge eq_to le_to lt_to floor igamma igammac igamma_grad_a imag
    integer_pow is_finite lgamma log log1p logistic max min mul mulhi neg nextafter not or
    polygamma population_count pow real reduce_precision regularized_incomplete_beta rem round
    rsqrt shift_left shift_right_arithmetic shift_right_logical sign sin sinh sqrt square
    stop_gradient sub tan tanh xor zeta sharding_constraint pvary mesh_cast reshard
""".split())


def elementwise_rule(eqn, infos, env, ctx, prefix):
    """TRF: the union of the operands' fields, element by element."""
    shape = tuple(eqn.outvars[0].aval.shape)
    ndim = len(shape)
    out = combine(infos, ndim, ctx.naxes)
    in_shapes = [tuple(getattr(v.aval, "shape", ())) for v in eqn.invars]

    def bwd(oms):
        m = oms[0]
        res = []
        for i, s in zip(infos, in_shapes, strict=True):
            if i is None:
                res.append(None)
            elif s == shape:
                res.append(m)
            else:  # rank-0 operand broadcast against the others
                res.append(reduce_to(m, shape, s))
        return res

    return [out] * len(eqn.outvars), bwd


def identity_multi_rule(eqn, infos, env, ctx, prefix):
    """TRF: each output i is operand i (optimization_barrier, device_put)."""

    def bwd(oms):
        return [m if i is not None else None for m, i in zip(oms, infos, strict=True)]

    return list(infos), bwd


def elementwise_labels(ir, node, dep, labels):
    """Cone: the output has the operands' layout; non-spatial dims may broadcast (size 1),
    spatial ones may not."""
    dins = [i for i in node.ins if is_dependent(dep, i)]
    lab = labels[dins[0]]
    out_shape = ir.shapes[node.outs[0]]
    for i in dins:
        if labels[i] != lab or any(ir.shapes[i][d] != out_shape[d] for d in lab):
            raise Unsupported(f"{node.name} mixes differently laid out spatial operands")
    return lab


ELEMENTWISE_CONE = ConeRule(elementwise_labels, slice_consts=True)

RULES = [PrimitiveRule(n, elementwise_rule, ELEMENTWISE_CONE) for n in sorted(ELEMENTWISE)] + [
    PrimitiveRule("optimization_barrier", identity_multi_rule, ELEMENTWISE_CONE),
    PrimitiveRule("device_put", identity_multi_rule),
]
