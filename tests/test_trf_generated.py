"""Generated architectures (hypothesis): rfjax.trf == an independent NumPy oracle, every unit.

Each case is a random DAG of convolutions (any stride, dilation, explicit/negative/SAME/VALID
padding), transposed convolutions (input dilation), poolings, residual adds and channel
concatenations over 1 to 3 spatial axes. The oracle composes dependency relations forward in
NumPy (a different method from the engine's backward masks); no XLA compilation happens.
"""

from __future__ import annotations

import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax import lax

import rfjax

SPEC = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def _out_size(n, k, s, d, lo, hi, D):
    n_dil = (n - 1) * D + 1
    return (n_dil + lo + hi - d * (k - 1) - 1) // s + 1


@st.composite
def architectures(draw):
    nd = draw(st.integers(1, 3))
    max_n = {1: 14, 2: 9, 3: 6}[nd]
    in_sizes = tuple(draw(st.integers(3, max_n)) for _ in range(nd))
    nodes = [("input", in_sizes)]  # (op, sizes, ...)
    n_ops = draw(st.integers(1, 5))
    for _ in range(n_ops):
        kind = draw(st.sampled_from(["conv", "conv", "conv", "tconv", "pool", "add", "concat"]))
        src = draw(st.integers(0, len(nodes) - 1))
        n = nodes[src][1]
        if kind in ("add", "concat"):
            other = draw(st.integers(0, len(nodes) - 1))
            if nodes[other][1] != n:
                continue
            nodes.append((kind, n, src, other))
            continue
        k = tuple(draw(st.integers(1, 4)) for _ in range(nd))
        s = tuple(draw(st.integers(1, 3)) for _ in range(nd))
        d = tuple(draw(st.integers(1, 3)) for _ in range(nd)) if kind == "conv" else (1,) * nd
        D = tuple(draw(st.integers(2, 3)) for _ in range(nd)) if kind == "tconv" else (1,) * nd
        if kind == "tconv":
            s = (1,) * nd
        pad_mode = draw(st.sampled_from(["explicit", "SAME", "VALID"]))
        if pad_mode == "explicit" or kind == "tconv":
            pads = tuple((draw(st.integers(-1, 3)), draw(st.integers(-1, 3))) for _ in range(nd))
        elif pad_mode == "VALID":
            pads = ((0, 0),) * nd
        else:
            pads = tuple(lax.padtype_to_pads(n, [(kk - 1) * dd + 1 for kk, dd in zip(k, d,
                                                                                     strict=True)],
                                             s, "SAME"))
            pads = tuple(tuple(int(v) for v in p) for p in pads)
        out = tuple(_out_size(n[a], k[a], s[a], d[a], pads[a][0], pads[a][1], D[a])
                    for a in range(nd))
        if any(o < 1 or o > 16 for o in out):
            continue
        op = "pool" if kind == "pool" else "conv"
        nodes.append((op, out, src, k, s, d, pads, D))
    if len(nodes) == 1:
        nodes.append(("conv", in_sizes, 0, (1,) * nd, (1,) * nd, (1,) * nd, ((0, 0),) * nd,
                      (1,) * nd))
    return nd, in_sizes, nodes


def build_fn(nd, nodes):
    def fn(x):
        vals = [x]
        for node in nodes[1:]:
            if node[0] == "add":
                vals.append(vals[node[2]] + vals[node[3]])
            elif node[0] == "concat":
                y = jnp.concatenate([vals[node[2]], vals[node[3]]], axis=-1)
                vals.append(y[..., :1] + y[..., 1:2])  # keep one channel; mixes both branches
            elif node[0] == "conv":
                _, _, src, k, s, d, pads, D = node
                v = vals[src]
                w = jnp.ones(k + (v.shape[-1], 1), v.dtype)
                vals.append(lax.conv_general_dilated(v, w, s, pads, lhs_dilation=D,
                                                     rhs_dilation=d, dimension_numbers=SPEC[nd]))
            else:
                _, _, src, k, s, d, pads, D = node
                v = vals[src]
                vals.append(lax.reduce_window(v, -jnp.inf, lax.max, (1,) + k + (1,),
                                              (1,) + s + (1,), ((0, 0),) + pads + ((0, 0),)))
        return vals[-1]

    return fn


def _relation(n_in, n_out, k, s, d, pad_lo, D):
    R = np.zeros((n_out, n_in), bool)
    for u in range(n_out):
        for t in range(k):
            p = u * s + t * d - pad_lo
            if p % D == 0 and 0 <= p // D < n_in:
                R[u, p // D] = True
    return R


def oracle(nd, in_sizes, nodes):
    """Dependency of every node position on every input position: (*sizes, *in_sizes)."""
    eye = np.eye(int(np.prod(in_sizes)), dtype=bool).reshape(in_sizes + in_sizes)
    deps = [eye]
    for node in nodes[1:]:
        if node[0] in ("add", "concat"):
            deps.append(deps[node[2]] | deps[node[3]])
            continue
        _, out, src, k, s, d, pads, D = node
        dep = deps[src]
        for a in range(nd):
            R = _relation(dep.shape[a], out[a], k[a], s[a], d[a], pads[a][0], D[a])
            # out[u] = OR_q R[u, q] & dep[q] along axis a
            moved = np.moveaxis(dep, a, 0)
            res = np.tensordot(R.astype(np.int32), moved.astype(np.int32), axes=(1, 0)) > 0
            dep = np.moveaxis(res, 0, a)
        deps.append(dep)
    return deps[-1]


# RFJAX_HYPOTHESIS_EXAMPLES lowers the count for quick local runs; CI runs the full 1,000.
EXAMPLES = int(os.environ.get("RFJAX_HYPOTHESIS_EXAMPLES", "1000"))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(architectures())
def test_generated_architectures_match_oracle(arch):
    nd, in_sizes, nodes = arch
    fn = build_fn(nd, nodes)
    x = jax.ShapeDtypeStruct((1,) + in_sizes + (1,), jnp.float32)
    t = rfjax.trf(fn, x)
    expect = oracle(nd, in_sizes, nodes)
    assert t.output_shape == expect.shape[:nd]
    got = t.masks()
    assert got.shape == expect.shape
    assert (got == expect).all()
    # the unclipped region always contains the exact set
    for u in itertools.islice(itertools.product(*[range(n) for n in t.output_shape]), 0, None,
                              7):
        m = expect[u]
        if not m.any() or any(t.is_global):
            continue
        r = t.region(u)
        idx = np.nonzero(m)
        for a in range(nd):
            assert r[a][0] <= idx[a].min() and idx[a].max() <= r[a][1]
    # sequential nets of plain convs/pools: the closed form equals the calculator
    chain = all(nd_[0] in ("conv", "pool") and nd_[2] == i for i, nd_ in enumerate(nodes[1:]))
    plain = all(nd_[7] == (1,) * nd for nd_ in nodes[1:] if nd_[0] in ("conv", "pool"))
    if chain and plain:
        layers = [rfjax.LayerSpec(n[3], n[4], tuple(n[6]), n[5]) for n in nodes[1:]]
        c = rfjax.receptive_field(layers, input_size=in_sizes)
        assert (t.size, t.stride, t.padding) == (c.size, c.stride, c.padding)
        assert t.aligned
