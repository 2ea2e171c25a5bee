"""The TRF's summaries are exact: ``size``, ``stride``, ``padding``, ``aligned`` and
``is_global`` follow from every unit (hand-computed values, and a brute-force check over every
unit's region and mask); the table keeps every named layer; the input's reading is explained
when the batch axis is missing or ``fn`` fails."""

from __future__ import annotations

import functools
import inspect
import itertools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_trf_generated as G
from hypothesis import HealthCheck, given, settings
from jax import lax

import rfjax
from rfjax.models import zoo as Z
from rfjax.models.zoo import common
from rfjax.selection import describe_input, explain_trace_error


def conv(x, k=3, d=1, pad="SAME"):
    """A conv of ones weights (one channel in, one out), any number of spatial axes."""
    nd = x.ndim - 2
    spec = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}[nd]
    w = jnp.ones((k,) * nd + (x.shape[-1], x.shape[-1]), x.dtype)
    return lax.conv_general_dilated(x, w, (1,) * nd, pad, rhs_dilation=(d,) * nd,
                                    dimension_numbers=spec)


def _abstract(model, shape):
    """``functools.partial(model.apply, params)`` with abstract parameters (no init)."""
    spec = jax.ShapeDtypeStruct(shape, jnp.float32)
    return functools.partial(model.apply, jax.eval_shape(model.init, jax.random.key(0), spec))


# ------------------------------------------------------------------ brute force over every unit


def _brute_force_check(t):
    """Every summary against every unit's region and exact mask (the definitions)."""
    units = list(itertools.product(*[range(n) for n in t.output_shape]))
    u_axes = [np.array([u[j] for u in units]) for j in range(len(t.output_shape))]
    masks = t.masks(units)
    k = len(t.input_shape)
    for a in range(k):
        n = t.input_shape[a]
        other = tuple(1 + b for b in range(k) if b != a)
        full = bool((masks.any(axis=other) if other else masks).all())
        regions = np.array([t.region(u)[a] for u in units])
        starts, ext = regions[:, 0], regions[:, 1] - regions[:, 0] + 1
        if t.is_global[a]:
            assert full and t.aligned_axes[a]
            assert (t.size[a], t.stride[a], t.padding[a]) == (n, 0, 0)
            assert (regions == (0, n - 1)).all()
            continue
        # not global: some unit misses an index, or the field moves with an exact stride
        assert not full or (t.aligned_axes[a] and t.stride[a] != 0), a
        assert t.size[a] == ext.max() and t.padding[a] == -starts[0]
        # aligned <=> one closed form fits every unit: equal extents, and starts that are
        # constant or step by one integer jump along one output axis
        one_form = len(set(ext)) == 1 and (
            (starts == starts[0]).all()
            or any((starts == starts[0] + uj * (starts[uj == 1][0] - starts[0])).all()
                   for uj in u_axes if (uj == 1).any()))
        assert t.aligned_axes[a] == one_form, a
        if one_form:  # ... and it is the reported one
            assert (ext == t.size[a]).all()
            assert any((starts == uj * t.stride[a] - t.padding[a]).all()
                       for uj in u_axes + [np.zeros(len(units), int)])
    assert t.aligned == all(t.aligned_axes)


# ------------------------------------------------------------------ item 4: aligned


@pytest.mark.parametrize("op", [lambda x: jnp.cumsum(x, axis=1),
                                lambda x: lax.cummax(x, axis=1),
                                lambda x: lax.associative_scan(jnp.add, x, axis=1)],
                         ids=["cumsum", "cummax", "associative_scan"])
def test_prefix_scans_are_not_aligned(op):
    t = rfjax.trf(op, (1, 16, 1))
    # unit u sees 0..u: the field grows with the unit, no single closed form fits
    assert [t.region((u,)) for u in (0, 5, 15)] == [((0, 0),), ((0, 5),), ((0, 15),)]
    assert not t.aligned and t.aligned_axes == (False,) and t.is_global == (False,)
    assert t.size == (16,) and t.padding == (0,) and t.stride_text == ("-",)
    assert "stride=('-',)" in str(t) and t.as_dict()["stride"] == [None]
    _brute_force_check(t)
    t2 = rfjax.trf(op, (1, 16, 4, 1))  # 2-D: the scanned axis only is misaligned
    assert t2.aligned_axes == (False, True) and not t2.aligned
    assert (t2.size, t2.stride_text, t2.padding) == ((16, 1), ("-", "1"), (0, 0))
    _brute_force_check(t2)


# ------------------------------------------------------------------ item 5: global, consistent


GLOBAL_BLOCKS = {
    "conv_plus_mean": lambda x: conv(x) + x.mean((1, 2), keepdims=True),
    "aspp": lambda x: jnp.concatenate([conv(x, d=6), conv(x, k=1),
                                       jnp.broadcast_to(x.mean((1, 2), keepdims=True),
                                                        x.shape)], axis=-1),
    "se_gate": lambda x: conv(x) * jax.nn.sigmoid(conv(x).mean((1, 2), keepdims=True)),
}


@pytest.mark.parametrize("name", sorted(GLOBAL_BLOCKS))
def test_every_mask_whole_input_is_global(name):
    t = rfjax.trf(GLOBAL_BLOCKS[name], (1, 12, 12, 1))
    assert t.masks().all()  # every unit sees the whole 12x12 input
    assert t.is_global == (True, True) and t.aligned
    assert (t.size, t.stride, t.padding) == ((12, 12), (0, 0), (0, 0))
    assert t.region((0, 0)) == t.region((11, 5)) == ((0, 11), (0, 11))
    assert t.table().splitlines()[-3].split()[1:] == ["1x12x12x" + str(t._out_shape_full[-1]),
                                                     "all", "all", "0", "0", "0", "0"]
    _brute_force_check(t)


def test_one_global_axis():
    # rows: conv rows i-1..i+1 plus the column mean (every row): global; columns: 3, moving
    t = rfjax.trf(lambda x: conv(x) + x.mean(1, keepdims=True), (1, 12, 10, 1))
    assert t.is_global == (True, False) and t.aligned
    assert (t.size, t.stride, t.padding) == ((12, 3), (0, 1), (0, 1))
    assert t.region((0, 0)) == ((0, 11), (-1, 1))
    _brute_force_check(t)


def test_moving_field_over_a_small_image_keeps_its_closed_form():
    # 12 stacked 3x3 convs on 12x12: every unit's 25x25 field holds the whole image, but the
    # field moves with stride 1: the closed form 25 / 1 / 12 is exact, not a global axis
    def f(x):
        for _ in range(12):
            x = conv(x)
        return x

    t = rfjax.trf(f, (1, 12, 12, 1))
    assert t.masks().all()
    assert (t.size, t.stride, t.padding, t.is_global) == ((25, 25), (1, 1), (12, 12),
                                                          (False, False))
    _brute_force_check(t)


# ------------------------------------------------------------------ item 6: every unit


def test_global_only_at_the_old_probe_units_is_not_global():
    probes = np.zeros(16, bool)
    probes[[0, 8, 15]] = True  # the units {0, n//2, n-1} the old check sampled

    def f(x):
        everything = jnp.broadcast_to(x.sum(1, keepdims=True), x.shape)
        ends = jnp.broadcast_to(x[:, :1] + x[:, -1:], x.shape)
        return jnp.where(probes[None, :, None], everything, ends)

    t = rfjax.trf(f, (1, 16, 1))
    assert t.mask((8,)).all() and np.flatnonzero(t.mask((5,))).tolist() == [0, 15]
    assert t.is_global == (False,)
    # every unit's region is (0, 15): one closed form with stride 0 fits (masks have holes)
    assert (t.size, t.stride, t.padding, t.aligned) == ((16,), (0,), (0,), True)
    _brute_force_check(t)

    grid = np.zeros((5, 5), bool)
    grid[np.ix_([0, 2, 4], [0, 2, 4])] = True

    def g(x):
        everything = jnp.broadcast_to(x.sum((1, 2), keepdims=True), x.shape)
        corners = jnp.broadcast_to(x[:, :1, :1] + x[:, -1:, -1:], x.shape)
        return jnp.where(grid[None, :, :, None], everything, corners)

    t2 = rfjax.trf(g, (1, 5, 5, 1))
    assert t2.mask((2, 2)).all() and t2.mask((1, 3)).sum() == 2
    assert t2.is_global == (False, False) and (t2.size, t2.stride) == ((5, 5), (0, 0))
    _brute_force_check(t2)


SMALL_ZOO = ["conv_stack", "conv_stack_strided", "dilated", "nonsquare", "transposed",
             "transposed_k3", "misaligned", "misaligned_gap", "inception", "unet",
             "unet_bilinear", "vit_embed", "vit", "conv1d", "spatial_attention"]


@pytest.mark.parametrize("name", SMALL_ZOO)
def test_zoo_summaries_follow_from_every_unit(name):
    model, shape = Z.examples()[name]
    _brute_force_check(rfjax.trf(_abstract(model, shape), shape))


EXAMPLES = max(1, int(os.environ.get("RFJAX_HYPOTHESIS_EXAMPLES", "1000")) // 10)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(G.architectures())
def test_generated_summaries_follow_from_every_unit(arch):
    nd, in_sizes, nodes = arch
    t = rfjax.trf(G.build_fn(nd, nodes), (1,) + in_sizes + (1,))
    if (t.masks() == G.oracle(nd, in_sizes, nodes)).all() and all(
            np.isfinite(t._lo[a]).all() for a in range(nd)):
        _brute_force_check(t)


# ------------------------------------------------------------------ item 13: the batch axis


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Conv(4, (3, 3))(nn.relu(nn.Conv(4, (3, 3))(x)))


def test_missing_batch_axis_of_a_flax_conv_model_is_an_error():
    fn = _abstract(_Net(), (1, 16, 16, 3))
    with pytest.raises(rfjax.TRFError) as e:
        rfjax.trf(fn, (16, 16, 3))  # Flax convs accept the unbatched image
    msg = str(e.value)
    assert msg.startswith("fn mixes neighbouring entries of the batch axis (axis 0) the way a "
                          "convolution mixes a spatial axis: output 0 along axis 0 depends on "
                          "inputs 0..2 of axis 0, output 15 on 13..15. fn most likely treats "
                          "x of shape (16, 16, 3) as one unbatched input with 2 spatial axes")
    assert msg.endswith(describe_input((16, 16, 3)))
    assert "pass shape (1, 16, 16, 3) (x[None])" in msg
    t = rfjax.trf(fn, (1, 16, 16, 3))  # with the batch axis: the 2-D answer
    assert (t.size, t.stride, t.padding) == ((5, 5), (1, 1), (2, 2))


def test_describe_input_exact_text():
    assert describe_input((8, 8, 1)) == (
        "rfjax read the input of shape (8, 8, 1) as (N, *spatial, C): a batch of N=8, each a "
        "1-D signal of length 8 with C=1 channel. rfjax expects (N, *spatial, C): a leading "
        "batch axis, 1 to 3 spatial axes and channels last; if (8, 8, 1) is one input without "
        "a batch axis, pass shape (1, 8, 8, 1) (x[None]).")
    assert describe_input((2, 4, 6, 3)).startswith(
        "rfjax read the input of shape (2, 4, 6, 3) as (N, *spatial, C): a batch of N=2, each "
        "a 2-D image of 4x6 pixels with C=3 channels.")
    assert describe_input((1, 2, 3, 4, 5)) == (
        "rfjax read the input of shape (1, 2, 3, 4, 5) as (N, *spatial, C): a batch of N=1, "
        "each a 3-D volume of 2x3x4 voxels with C=5 channels. rfjax expects (N, *spatial, C): "
        "a leading batch axis, 1 to 3 spatial axes and channels last.")


def test_fn_failing_during_tracing_says_how_x_was_read():
    w = jnp.ones((3, 3, 1, 1))

    def conv2d(x):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    with pytest.raises(TypeError) as e:
        rfjax.trf(conv2d, jnp.ones((8, 8, 1)))
    cause = e.value.__cause__
    assert isinstance(cause, TypeError) and "ndim" in str(cause)
    assert str(e.value) == (f"{cause}\n\nfn raised TypeError while rfjax traced it. "
                            f"{describe_input((8, 8, 1))}")
    # a Flax error type that cannot be built from one message becomes a ValueError
    flax_fn = _abstract(_Net(), (1, 16, 16, 3))
    with pytest.raises(ValueError, match=r"a batch of N=8, each a 1-D signal") as e:
        rfjax.trf(flax_fn, (8, 8, 1))
    assert type(e.value.__cause__).__name__ == "ScopeParamShapeError"
    # rfjax's own errors are not rewrapped
    with pytest.raises(ValueError, match="output=") as e:
        rfjax.trf(lambda x: (x, x), (1, 8, 8, 1))
    assert "traced it" not in str(e.value)


def test_explain_trace_error_keeps_the_type_when_it_can():
    e = explain_trace_error(KeyError("k"), (1, 4, 1))  # str(KeyError(m)) != m: ValueError
    assert type(e) is ValueError and str(e).startswith("'k'\n\nfn raised KeyError while")
    e = explain_trace_error(RuntimeError("boom"), (1, 4, 1))
    assert type(e) is RuntimeError and str(e).startswith("boom\n\nfn raised RuntimeError")


# ------------------------------------------------------------------ the table


def test_every_named_layer_keeps_its_row():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(2, (3, 3), name="a")(x)
            x = nn.Conv(2, (1, 1), name="b")(x)  # same field as a: still a row
            return nn.Conv(2, (1, 1), name="c")(x)

    t = rfjax.trf(_abstract(Net(), (1, 8, 8, 1)), (1, 8, 8, 1))
    assert [(r.name, r.size) for r in t.layers] == [("Net/a", (3, 3)), ("Net/b", (3, 3)),
                                                    ("Net/c", (3, 3))]


def test_resnet50_table_has_every_conv_and_names_the_pool_by_the_users_line():
    model, shape = Z.examples()["resnet50"]
    fn = _abstract(model, shape)
    t = rfjax.trf(fn, shape)
    convs = {"ResNet/" + "/".join(k.key for k in path[1:-1])
             for path, leaf in jax.tree_util.tree_leaves_with_path(fn.args[0])
             if path[-1].key == "kernel" and len(leaf.shape) == 4}
    rows = [r.name for r in t.layers if r.primitive == "conv_general_dilated"]
    assert len(convs) == 53 and set(rows) == convs and len(rows) == 53
    assert "ResNet/layer1_0/conv1" in rows
    lines, first = inspect.getsourcelines(common.pool_nd)
    line = first + next(i for i, s in enumerate(lines) if "nn.max_pool(" in s)
    pool = [r for r in t.layers if r.primitive == "reduce_window_max"]
    assert [r.name for r in pool] == [f"ResNet @ common.py:{line} (pool_nd)"]
    assert pool[0].source.endswith(f"rfjax/models/zoo/common.py:{line} (pool_nd)")
    assert not any("/flax/" in r.source or "pooling.py" in r.name for r in t.layers)


def test_plain_function_rows_name_the_users_line():
    def f(x):
        return conv(conv(x))

    t = rfjax.trf(f, (1, 8, 8, 1))
    line = inspect.getsourcelines(conv)[1] + 5  # the lax.conv_general_dilated line
    assert [r.name for r in t.layers] == [f"test_summaries.py:{line} (conv)"] * 2
    assert [r.size for r in t.layers] == [(3, 3), (5, 5)]


@pytest.mark.parametrize("name", ["unet_bilinear", "vit_embed", "transposed"])
def test_misaligned_strides_print_as_dash_everywhere(name, capsys):
    model, shape = Z.examples()[name]
    t = rfjax.trf(_abstract(model, shape), shape)
    assert t.aligned_axes == (False, False) and t.stride_text == ("-", "-")
    assert "stride=('-', '-')" in str(t)
    assert t.as_dict()["stride"] == [None, None] and t.as_dict()["aligned_axes"] == [False] * 2
    out_row = t.table().splitlines()[-3].split()
    assert out_row[0] == "<output>" and out_row[-4:-2] == ["-", "-"]
    assert '"-": not aligned' in t.table()
    from rfjax.cli import main

    assert main(["trf", name]) == 0
    assert "stride=(-, -)" in capsys.readouterr().out


def test_trf_demo_prints_dash_for_misaligned_strides(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "trf_demo.py"
    spec = importlib.util.spec_from_file_location("trf_demo", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    demo.main(["--table", "vit_embed"])
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("vit_embed"))
    # columns: model 20, input 18, output 14, size 16, stride 12, padding 14, aligned 9
    assert line[68:80].strip() == "-,-" and line[94:103].strip() == "False"
    assert "<output>" in out and 'stride "-"' in out
