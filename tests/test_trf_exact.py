"""Exact means exact: top-k on any axis, scatter-apply, constants evaluated as XLA computes
them (one compiled program per jaxpr), fixed random keys, key-typed values, effects, source
lines inside jnp's own jits, and sorts by fixed keys. Masks are compared with the gradient
support of the function (d(sum over channels of the unit's output)/dx != 0, union over three
random inputs, float64 inputs with x64 enabled unless a test says otherwise)."""

from __future__ import annotations

import functools
import inspect
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import rfjax
from rfjax.engine import constants


def _units(out_sp):
    return sorted(set(itertools.product(*[sorted({0, 1 % n, n // 2, n - 1}) for n in out_sp])))


def grad_support(fn, x_shape, units, dtype=jnp.float64, seeds=(0, 1, 2)):
    """Per unit, the input spatial positions with a nonzero gradient (any channel, image 0),
    union over ``seeds``; call with x64 enabled for float64."""
    out = np.zeros((len(units),) + tuple(x_shape[1:-1]), dtype=bool)
    for s in seeds:
        x = jax.random.uniform(jax.random.key(s), x_shape, dtype, 0.5, 1.5)
        for k, u in enumerate(units):
            g = jax.grad(lambda z, u=u: jnp.sum(fn(z)[(0,) + tuple(u)]).real)(x)
            out[k] |= np.asarray(jnp.abs(g[0]).sum(axis=-1) != 0)
    return out


def assert_exact(fn, x_shape, dtype=jnp.float64, units=None):
    """rfjax.trf's masks equal the gradient support (float64 by default, x64 enabled)."""
    with jax.enable_x64(dtype == jnp.float64):
        t = rfjax.trf(fn, jax.ShapeDtypeStruct(x_shape, dtype))
        units = units if units is not None else _units(t.output_shape)
        want = grad_support(fn, x_shape, units, dtype)
    got = t.masks(units)
    for u, g, m in zip(units, want, got, strict=True):
        assert (g == m).all(), f"unit {u}: engine {np.argwhere(m).tolist()} vs oracle " \
                               f"{np.argwhere(g).tolist()}"
    return t


# ------------------------------------------------------------------ 1. top_k on any axis


@pytest.mark.parametrize("k, axis", [(12, 1), (3, 1), (5, 2), (2, -1), (1, 1)])
def test_top_k_on_any_axis(k, axis):
    """Each of the k largest along ``axis`` may be any element of it: a unit sees its whole
    line along ``axis`` (the gradient, which picks one element per input, is a subset)."""
    f = functools.partial(lambda x, k, axis: lax.top_k(x, k, axis=axis)[0], k=k, axis=axis)
    shape = (1, 12, 10, 2)
    t = rfjax.trf(f, shape)
    ax = axis % 4
    units = _units(t.output_shape)
    for u, m in zip(units, t.masks(units), strict=True):
        want = np.zeros(shape[1:3], dtype=bool)
        if ax == 3:  # over channels: the unit's own pixel
            want[u] = True
        else:  # the other spatial axis stays at the unit's index
            line = [slice(None)] * 2
            line[2 - ax] = u[2 - ax]
            want[tuple(line)] = True
        assert (m == want).all(), (u, np.argwhere(m).tolist())
    with jax.enable_x64(True):
        g = grad_support(f, shape, units, seeds=range(8))
    assert not (g & ~t.masks(units)).any()
    if (k, axis) == (12, 1):  # unit (3, 5) sees the whole of column 5
        m = t.mask((3, 5))
        assert m[:, 5].all() and m.sum() == 12


def test_top_k_indices_output():
    t = rfjax.trf(lambda x: lax.top_k(x, 3, axis=1)[1].astype(x.dtype), (1, 12, 12, 2))
    m = t.mask((1, 4))
    assert m[:, 4].all() and m.sum() == 12


# ------------------------------------------------------------------ 2. scatter's update_jaxpr


def test_scatter_apply_keeps_the_operand():
    """``x.at[i].apply(f)`` has no JVP: compare with the same function written with ``set``
    (whose masks are checked against the gradient support)."""
    units = [(3, 1), (0, 0), (2, 11), (4, 4), (5, 4)]
    t = rfjax.trf(lambda x: x.at[:, 2:5].apply(jnp.sin), (1, 12, 12, 2))
    ref = assert_exact(lambda x: x.at[:, 2:5].set(jnp.sin(x[:, 2:5])), (1, 12, 12, 2),
                       units=units)
    assert (t.masks(units) == ref.masks(units)).all()
    m = t.mask((3, 1))
    assert m[3, 1] and m.sum() == 1


def test_scatter_update_jaxpr_reading_both_or_neither():
    def f(x):
        y = x.at[:, 1].max(x[:, 6])  # reads both
        y = y.at[:, 3].apply(lambda v: v * 2.0 + 1.0)  # reads the old value
        y = y.at[:, 5].apply(lambda v: 1.0)  # reads neither: a constant row
        return y.at[:, 4].set(y[:, 7])  # overwrites

    def g(x):  # the same, differentiable
        y = x.at[:, 1].max(x[:, 6])
        y = y.at[:, 3].set(y[:, 3] * 2.0 + 1.0)
        y = y.at[:, 5].set(1.0)
        return y.at[:, 4].set(y[:, 7])

    units = [(r, 2) for r in range(8)]
    ref = assert_exact(g, (1, 8, 4, 1), units=units)
    t = rfjax.trf(f, (1, 8, 4, 1))
    assert (t.masks(units) == ref.masks(units)).all()
    assert not t.mask((5, 2)).any() and t.mask((1, 2))[[1, 6], 2].all()


@pytest.mark.parametrize("mode", ["add", "drop", "clip"])
def test_combining_scatter_with_duplicate_indices(mode):
    """Several updates landing on one element: a combining scatter reads all of them (and
    the operand); updates out of bounds are dropped or clipped as XLA does. ``max`` reads
    what ``add`` reads (its gradient picks one element, so it is compared with ``add``)."""
    idx = jnp.array([1, 1, 4]) if mode == "add" else jnp.array([-20, 3, 30])

    def f(x):
        return x.at[:, idx].add(x[:, 5:8] * 2.0, mode=None if mode == "add" else mode)

    units = [(u,) for u in range(12)]
    t = assert_exact(f, (1, 12, 2), units=units)
    if mode == "add":
        assert np.nonzero(t.mask((1,)))[0].tolist() == [1, 5, 6]
        t_max = rfjax.trf(lambda x: x.at[:, idx].max(x[:, 5:8] * 2.0), (1, 12, 2))
        assert (t_max.masks(units) == t.masks(units)).all()
    if mode == "clip":  # -20 -> 0, 30 -> 11
        assert np.nonzero(t.mask((11,)))[0].tolist() == [7, 11]


def test_overwriting_scatter_with_duplicate_indices_is_refused():
    with pytest.raises(rfjax.UnsupportedPrimitiveError, match="duplicate .* unspecified"):
        rfjax.trf(lambda x: x.at[:, jnp.array([1, 1])].set(x[:, :2]), (1, 8, 1))


# ------------------------------------------------------------------ 3. constants as XLA does


def test_float32_index_arithmetic_as_xla():
    def f(x):  # float32 throughout, x64 or not
        i = jnp.floor(jnp.arange(12, dtype=jnp.float32) * jnp.float32(13 / 11))
        return x[:, jnp.clip(i.astype(jnp.int32), 0, 12)]

    def weak(x):  # a weakly typed literal: float32 without x64 (float64 with it)
        return x[:, jnp.floor(jnp.arange(12) * (13 / 11)).astype(jnp.int32)]

    i32 = np.floor(np.arange(12, dtype=np.float32) * np.float32(13 / 11)).astype(np.int32)
    i64 = np.floor(np.arange(12) * (13 / 11)).astype(np.int32)
    assert (i32 != i64).any()  # float64 arithmetic would pick another row
    units = [(u, 1) for u in range(12)]
    for fn, dtype in ((f, jnp.float64), (weak, jnp.float32)):
        t = assert_exact(fn, (1, 14, 3, 1), dtype=dtype, units=units)
        assert [int(np.argwhere(t.mask(u))[0, 0]) for u in units] == i32.tolist()
    with jax.enable_x64(True):
        t = rfjax.trf(weak, jax.ShapeDtypeStruct((1, 14, 3, 1), jnp.float64))
    assert [int(np.argwhere(t.mask(u))[0, 0]) for u in units] == i64.tolist()


def test_round_away_from_zero_and_saturating_casts():
    def rounded(x):
        v = jnp.arange(8, dtype=jnp.float32) + 0.5  # 0.5, 1.5, ... ties everywhere
        return x[:, jnp.clip(lax.round(v, lax.RoundingMethod.AWAY_FROM_ZERO).astype(int), 0, 8)]

    t = assert_exact(rounded, (1, 9, 2, 1), units=[(u, 0) for u in range(8)])
    assert [int(np.argwhere(t.mask((u, 0)))[0, 0]) for u in range(8)] == list(range(1, 9))

    def even(x):
        v = jnp.arange(8, dtype=jnp.float32) + 0.5
        return x[:, lax.round(v, lax.RoundingMethod.TO_NEAREST_EVEN).astype(int)]

    t = assert_exact(even, (1, 9, 2, 1), units=[(u, 0) for u in range(8)])
    assert [int(np.argwhere(t.mask((u, 0)))[0, 0]) for u in range(8)] == [0, 2, 2, 4, 4, 6,
                                                                           6, 8]

    def cast(x):
        i = jnp.array([-1.5, 2.0, 3.7], jnp.float32).astype(jnp.uint32)  # XLA: 0, 2, 3
        return x[:, i]

    t = assert_exact(cast, (1, 6, 2, 1), units=[(u, 0) for u in range(3)])
    assert [int(np.argwhere(t.mask((u, 0)))[0, 0]) for u in range(3)] == [0, 2, 3]


@pytest.mark.parametrize("n, o, method, dtype", [
    (3, 21, "cubic", jnp.float32), (3, 19, "cubic", jnp.float32),
    (3, 37, "cubic", jnp.float32), (6, 22, "cubic", jnp.float32),
    (6, 34, "cubic", jnp.float32), (5, 23, "lanczos3", jnp.float32),
    (4, 29, "lanczos5", jnp.float64), (3, 21, "cubic", jnp.float64)])
def test_resize_weights_as_xla_computes_them(n, o, method, dtype):
    """Every unit: the interpolation matrix's zeros are XLA's (weights of ~1e-14 count)."""
    f = functools.partial(lambda x, o, m: jax.image.resize(x, (1, o, 1), m), o=o, m=method)
    with jax.enable_x64(dtype == jnp.float64):
        x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, (1, n, 1)), dtype)
        t = rfjax.trf(f, x)
        jac = np.asarray(jax.jit(jax.jacrev(f))(x))[0, :, 0, 0, :, 0] != 0
    assert (t.masks() == jac).all()


def test_one_compiled_program_per_jaxpr():
    """Constants are evaluated by one XLA program per jaxpr (cached by its text): the top
    level, the resize's jit and the loop body each compile once, whatever the trip count."""
    seen = []
    listener = lambda name, *a, **k: seen.append(name)  # noqa: E731

    def f(x):
        i = jnp.floor(jnp.arange(6, dtype=jnp.float32) * jnp.float32(1.5)).astype(jnp.int32)
        y = x[:, jnp.minimum(i, 7)]  # top level: iota, mul, floor, convert, min
        y = jax.image.resize(y, (1, 12, 8, 1), "cubic")  # its own jit: one program

        def body(j, z):  # a loop: one program for the body, run at each iteration
            return z + jnp.roll(z, j + 1, axis=1)

        return lax.fori_loop(0, 3, body, y)

    constants.clear_cache()
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with constants.counting() as c:
            t = rfjax.trf(f, (1, 8, 8, 1))
        compiles = seen.count("/jax/core/compile/backend_compile_duration")
        seen.clear()
        with constants.counting() as c2:
            rfjax.trf(f, (1, 8, 8, 1))  # traced again: same programs, no compilation
        compiles2 = seen.count("/jax/core/compile/backend_compile_duration")
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    # top level, _resize, the scan body, jnp.roll's jit inside it
    assert c["programs"] == 4 and c["runs"] == 1 + 1 + 3 + 3, dict(c)
    assert compiles == c["programs"] + 1  # and the gather rule's jitted move of indices
    assert c2["programs"] == 0 and compiles2 == 0 and c2["runs"] == c["runs"]
    assert t.output_shape == (12, 8)


# ------------------------------------------------------------------ 4. fixed keys, coordinates


def test_fixed_random_permutation_and_randint():
    def perm(x):
        return x[:, jax.random.permutation(jax.random.key(0), 8)]

    def rint(x):
        return x[:, jax.random.randint(jax.random.key(3), (8,), 0, 8)]

    for f in (perm, rint):
        assert_exact(f, (1, 8, 3, 1), units=[(u, 1) for u in range(8)])


def test_map_coordinates_with_static_coordinates():
    from jax.scipy import ndimage

    coords = np.stack(np.meshgrid(np.linspace(0.3, 6.6, 5), np.linspace(0.2, 6.9, 4),
                                  indexing="ij")).astype(np.float32)  # a constant of fn
    # (no integer coordinate: a zero interpolation weight would need known-value propagation)

    def f(x):
        out = ndimage.map_coordinates(x[0, :, :, 0], [coords[0], coords[1]], order=1)
        return out[None, :, :, None]

    t = assert_exact(f, (1, 8, 8, 1))
    assert 1 <= t.mask((1, 1)).sum() <= 4


def test_map_coordinates_with_integer_coordinates():
    # integer coordinates give interpolation weights that are exactly 0 (known values)
    from jax.scipy import ndimage

    coords = np.stack(np.meshgrid(np.arange(1.0, 6.0), np.arange(0.0, 7.0, 2.0),
                                  indexing="ij")).astype(np.float32)

    def f(x):
        out = ndimage.map_coordinates(x[0, :, :, 0], [coords[0], coords[1]], order=1)
        return out[None, :, :, None]

    t = assert_exact(f, (1, 8, 8, 1))
    assert t.mask((1, 1)).sum() == 1


# ------------------------------------------------------------------ 5. key-typed values


def _dropout(x, key):
    keep = jax.random.bernoulli(jax.random.split(key)[1], 0.5, x.shape)
    return jnp.where(keep, x / 0.5, 0.0)


def test_dropout_with_a_key_argument_keeps_every_dependency():
    f = functools.partial(_dropout, key=jax.random.key(0))  # the key is an argument
    t = rfjax.trf(f, (1, 8, 8, 2))
    assert (t.masks() == rfjax.trf(lambda x: x, (1, 8, 8, 2)).masks()).all()


def test_dropout_with_a_constant_key_is_exact():
    key = jax.random.key(0)
    t = assert_exact(lambda x: _dropout(x, key), (1, 8, 8, 2))
    assert not t.masks().all()  # some positions are dropped, in both channels
    assert_exact(lambda x: _dropout(x, jax.random.key(5)), (1, 6, 6, 1))


def test_dropout_as_a_multiplication_with_a_constant_key_is_exact():
    key = jax.random.key(3)
    t = assert_exact(lambda x: x * jax.random.bernoulli(key, 0.5, x.shape) / 0.5, (1, 8, 8, 2))
    assert 0 < t.masks().sum() < t.masks().size


def test_dropout_in_a_scan_over_split_keys():
    def f(x):
        def body(c, k):
            return jnp.where(jax.random.bernoulli(k, 0.7, c.shape), c, 0.0) + c[:, ::-1], None

        return lax.scan(body, x, jax.random.split(jax.random.key(0), 3))[0]

    assert_exact(f, (1, 6, 5, 1))


def test_flax_dropout_with_an_rng():
    class M(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dropout(0.5, deterministic=False)(nn.Conv(2, (3, 3))(x))

    m = M()
    v = m.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
               jnp.zeros((1, 8, 8, 1)))
    key = jax.random.key(2)
    ref = rfjax.trf(_conv3, (1, 8, 8, 1))  # the same conv, no dropout
    t = rfjax.trf(functools.partial(m.apply, v, rngs={"dropout": key}), (1, 8, 8, 1))
    assert (t.masks() == ref.masks()).all()  # an unknown key drops nothing
    with jax.enable_x64(True):
        v64 = jax.tree.map(lambda p: p.astype(jnp.float64) + 0.5, v)
        fc = lambda x: m.apply(v64, x, rngs={"dropout": key})  # noqa: E731 - a fixed key
        t = rfjax.trf(fc, jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float64))
        units = _units(t.output_shape)
        want = grad_support(fc, (1, 8, 8, 1), units)
    assert (t.masks(units) == want).all()


def _conv3(x):
    w = jnp.ones((3, 3, 1, 2), x.dtype)
    return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


# ------------------------------------------------------------------ 6. effects


def test_debug_print_and_callbacks_are_ignored(capsys):
    def f(x):
        jax.debug.print("sum {}", x.sum())
        y = _conv3(x)
        jax.debug.callback(lambda v: None, y)
        return y

    t = rfjax.trf(f, (1, 8, 8, 1))
    assert t.size == (3, 3) and t.aligned
    assert "sum" not in capsys.readouterr().out

    @jax.jit
    def inner(i):
        jax.debug.print("i {}", i)  # a call with effects, fixed by the program
        return i + 2

    t = rfjax.trf(lambda x: x[:, inner(jnp.arange(4))], (1, 8, 2, 1))
    assert [int(np.argwhere(t.mask((u, 0)))[0, 0]) for u in range(4)] == [2, 3, 4, 5]
    assert "i " not in capsys.readouterr().out


# ------------------------------------------------------------------ 7. source lines


def test_unsupported_primitive_inside_jnp_jit_names_the_users_line():
    def f(x):
        return jnp.linalg.det(x[..., 0])[:, None, None, None] * x

    src, first = inspect.getsourcelines(f)
    line = next(k for k, s in enumerate(src) if "det" in s)
    where = f"{__file__}:{first + line}:{src[line].index('jnp.linalg.det')} ({f.__qualname__})"
    with pytest.raises(rfjax.UnsupportedPrimitiveError) as e:
        rfjax.trf(f, (1, 8, 8, 1))
    assert str(e.value) == (
        f"rfjax.trf has no rule for the primitive 'lu' at {where}, which lies on the path "
        "from the input to the output. Open an issue with this primitive, or express the "
        "operation with supported primitives (convolutions, pooling, elementwise ops, "
        "dot_general, reshapes, static gathers).")


def test_dynamic_gather_inside_jnp_jit_names_the_users_line():
    def f(x):
        i = jnp.argsort(x, axis=1)
        return jnp.take_along_axis(x, i, axis=1)

    src, first = inspect.getsourcelines(f)
    line = next(k for k, s in enumerate(src) if "take_along_axis" in s)
    where = f"{__file__}:{first + line}:{src[line].index('jnp.take_along_axis')} ({f.__qualname__})"
    with pytest.raises(rfjax.DynamicDependencyError) as e:
        rfjax.trf(f, (1, 8, 8, 1))
    assert str(e.value).startswith(f"'gather' at {where} uses indices that depend on the "
                                   "input")


@pytest.mark.parametrize("fft", [
    lambda x: jnp.abs(jnp.fft.fft(x, axis=1)),
    lambda x: jnp.fft.rfft(x, axis=2).real,
    lambda x: jnp.abs(jnp.fft.fft2(x, axes=(1, 2))),
    lambda x: jnp.fft.irfft(x[..., 0], n=9, axis=1)[..., None] ** 2,
], ids=["fft_rows", "rfft_columns", "fft2", "irfft_resized"])
def test_fft_mixes_its_axes_only(fft):
    """A Fourier transform mixes the whole signal along its axes (every coefficient reads
    every sample) and nothing across the others; ``irfft(n=9)`` reads the first 9 // 2 + 1
    coefficients of the 7 it is given."""
    t = assert_exact(fft, (1, 7, 6, 2))
    if t.output_shape[0] == 9:
        assert np.nonzero(t.mask((4, 2)).any(axis=1))[0].tolist() == [0, 1, 2, 3, 4]


def test_collectives_under_vmap_generic_reduce_and_approx_top_k():
    """``lax.pmean`` under ``jax.vmap(axis_name=)`` is a mean over the mapped axis;
    ``lax.reduce`` with a computation of its own reads every element it reduces;
    ``approx_max_k`` may select any element of its axis, like ``top_k``."""
    centred = jax.vmap(lambda r: r - lax.pmean(r, "i"), in_axes=2, out_axes=2, axis_name="i")
    t = assert_exact(lambda x: centred(x) ** 2, (1, 5, 6, 2))
    assert t.is_global == (False, True)
    t = assert_exact(lambda x: lax.reduce(x, 0.0, lambda a, b: a + 2.0 * b, (1,))[:, None]
                     * jnp.ones_like(x), (1, 6, 3, 2))
    assert t.is_global == (True, False)
    t_approx = rfjax.trf(lambda x: lax.approx_max_k(x, 2, reduction_dimension=1)[0],
                         (1, 6, 3, 2))
    t_top = rfjax.trf(lambda x: lax.top_k(jnp.swapaxes(x, 1, -1), 2)[0].swapaxes(1, -1),
                      (1, 6, 3, 2))
    assert (t_approx.masks() == t_top.masks()).all() and t_approx.is_global == (True, False)


@pytest.mark.parametrize("mode", ["edge", "mean", "linear_ramp", "wrap", "symmetric"])
def test_pad_modes_with_zero_size_intermediates(mode):
    """``jnp.pad``'s edge and statistic modes build zero-size arrays on the way: they hold no
    element and depend on nothing."""
    assert_exact(lambda x: jnp.pad(x, ((0, 0), (3, 2), (0, 1), (0, 0)), mode=mode),
                 (1, 7, 5, 2))


# ------------------------------------------------------------------ 8. sort by fixed keys


def test_sort_by_fixed_keys_is_a_permutation():
    order = np.array([3, 1, 2, 0, 7, 6, 5, 4])

    def f(x):
        keys = jnp.broadcast_to(jnp.asarray(order)[None, :, None, None], x.shape)
        return lax.sort((keys, x), dimension=1, num_keys=1)[1]

    t = assert_exact(f, (1, 8, 3, 1), units=[(u, 2) for u in range(8)])
    assert [int(np.argwhere(t.mask((u, 2)))[0, 0]) for u in range(8)] == np.argsort(
        order).tolist()

    def g(x):  # two keys, along the last spatial axis, payload of several channels
        k1 = jnp.asarray([1, 0, 1, 0, 1, 0])[None, None, :, None] * jnp.ones(x.shape, int)
        k2 = jnp.asarray([5, 4, 3, 2, 1, 0])[None, None, :, None] * jnp.ones(x.shape, int)
        return lax.sort((k1, k2, x), dimension=2, num_keys=2)[2]

    assert_exact(g, (1, 4, 6, 2))


def test_unstable_sort_with_ties_covers_every_order():
    keys = np.array([2, 0, 2, 1, 0, 2], np.int32)

    def f(x):
        k = jnp.broadcast_to(jnp.asarray(keys)[None, :, None, None], x.shape)
        return lax.sort((k, x), dimension=1, num_keys=1, is_stable=False)[1]

    t = rfjax.trf(f, (1, 6, 2, 1))
    # output rows 0-1 hold the keys 0 (rows 1, 4), row 2 the key 1 (row 3), rows 3-5 the 2s
    assert [sorted(np.argwhere(t.mask((u, 0)))[:, 0].tolist()) for u in range(6)] == [
        [1, 4], [1, 4], [3], [0, 2, 5], [0, 2, 5], [0, 2, 5]]
    stable = rfjax.trf(lambda x: lax.sort((jnp.broadcast_to(
        jnp.asarray(keys)[None, :, None, None], x.shape), x), dimension=1, num_keys=1)[1],
        (1, 6, 2, 1))
    assert [int(np.argwhere(stable.mask((u, 0)))[0, 0]) for u in range(6)] == [1, 4, 3, 0,
                                                                               2, 5]


def test_argsort_of_fixed_keys_then_gather():
    keys = np.array([0.3, -1.0, 2.5, 0.0, 7.0, -0.5, 1.0, 4.0], np.float32)

    def f(x):
        return jnp.take_along_axis(x, jnp.argsort(jnp.asarray(keys))[None, :, None, None],
                                   axis=1)

    assert_exact(f, (1, 8, 2, 1))


def test_programs_differing_only_in_nested_constants_are_not_confused():
    def make(v):
        idx = np.array(v, np.int32)

        @jax.jit
        def shift(i):
            return i + idx  # a constant of the inner jit's jaxpr (not in its text)

        return lambda x: x[:, shift(jnp.arange(3))]

    for v in ([1, 2, 3], [4, 0, 2]):
        t = rfjax.trf(make(v), (1, 8, 2, 1))
        assert [int(np.argwhere(t.mask((u, 0)))[0, 0]) for u in range(3)] == [
            u + w for u, w in enumerate(v)]


def test_a_constant_that_cannot_be_evaluated_is_reported_with_its_line():
    boom = jax.extend.core.Primitive("boom_index_op")
    boom.def_abstract_eval(lambda i: jax.core.ShapedArray(i.shape, i.dtype))

    def impl(i):
        raise RuntimeError("no value here")

    boom.def_impl(impl)  # no lowering: the program fails, then this equation alone

    def f(x):
        i = jnp.arange(3) + 1
        return x[:, boom.bind(i)] + x[:, i]  # the second gather's indices are fine

    with constants.counting() as c, pytest.raises(rfjax.DynamicDependencyError) as e:
        rfjax.trf(f, (1, 8, 2, 1))
    msg = str(e.value)
    assert "uses indices computed from runtime values" in msg
    assert "cannot evaluate 'boom_index_op' at " in msg and "test_trf_exact.py" in msg
    assert "no value here" in msg and c["single"] >= 2
