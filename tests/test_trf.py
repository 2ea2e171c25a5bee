"""rfjax.trf: exact integer fields, masks against a float64 gradient-support oracle, errors."""

from __future__ import annotations

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import rfjax
from rfjax import LayerSpec as L
from rfjax.models import zoo as Z


def conv(x, k=3, s=1, pad="SAME", d=1, lhs_d=1, groups=1, cout=None):
    """A conv with ones weights; kernel k may be an int or a tuple."""
    nd = x.ndim - 2
    k = (k,) * nd if isinstance(k, int) else tuple(k)
    cin = x.shape[-1]
    cout = cout or cin
    w = jnp.ones(k + (cin // groups, cout), x.dtype)
    spec = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"),
            3: ("NDHWC", "DHWIO", "NDHWC")}[nd]
    return lax.conv_general_dilated(x, w, (s,) * nd, pad, lhs_dilation=(lhs_d,) * nd,
                                    rhs_dilation=(d,) * nd, dimension_numbers=spec,
                                    feature_group_count=groups)


# ------------------------------------------------------------------ exact integer answers


def test_two_3x3_convs_give_5x5():
    t = rfjax.trf(lambda x: conv(jax.nn.relu(conv(x))), jnp.zeros((1, 16, 16, 2)))
    assert t.size == (5, 5) and t.stride == (1, 1) and t.padding == (2, 2)
    assert t.aligned and t.is_global == (False, False)
    assert t.region((8, 8)) == ((6, 10), (6, 10))
    assert t.region((0, 0)) == ((-2, 2), (-2, 2))  # unclipped
    m = t.mask((0, 0))
    assert m.shape == (16, 16) and m[:3, :3].all() and m.sum() == 9  # clipped
    assert t.mask((8, 8)).sum() == 25 and t.mask((8, 8))[6:11, 6:11].all()


def test_first_layer_sees_3x3():
    t = rfjax.trf(lambda x: conv(x), (1, 8, 8, 1))
    assert t.size == (3, 3) and t.region((4, 4)) == ((3, 5), (3, 5))


def test_vgg16_pool5_is_212_32_90():
    model, shape = Z.examples()["vgg16"]
    params = _init(model, shape)
    t = rfjax.trf(functools.partial(model.apply, params), jax.ShapeDtypeStruct(shape,
                                                                              jnp.float32))
    assert (t.size, t.stride, t.padding) == ((212, 212), (32, 32), (90, 90))
    assert t.aligned and t.output_shape == (7, 7)
    # The per-layer table walks the classic VGG numbers, by Flax module path.
    sizes = [r.size[0] for r in t.layers if r.primitive in ("conv_general_dilated",
                                                            "reduce_window_max")]
    assert sizes[:6] == [3, 5, 6, 10, 14, 16] and sizes[-1] == 212
    assert any("Conv" in r.name or "conv" in r.name for r in t.layers)
    assert "212" in t.table()


def _calc(model_name):
    """Calculator layer lists for the sequential zoo models."""
    if model_name == "vgg16":
        layers = []
        for n in (2, 2, 3, 3, 3):
            layers += [L(3, 1, 1)] * n + [L(2, 2, 0)]
        return layers, 224
    if model_name == "alexnet":
        return [L(11, 4, 2), L(3, 2, 0), L(5, 1, 2), L(3, 2, 0), L(3, 1, 1), L(3, 1, 1),
                L(3, 1, 1), L(3, 2, 0)], 224
    if model_name == "dilated":
        return [L(3, 1, d, d) for d in (1, 2, 4, 8)], 40
    raise KeyError(model_name)


@pytest.mark.parametrize("name", ["vgg16", "alexnet", "dilated"])
def test_engine_equals_calculator_on_sequential_nets(name):
    model, shape = Z.examples()[name]
    params = _init(model, shape)
    t = rfjax.trf(functools.partial(model.apply, params), shape)
    layers, n = _calc(name)
    c = rfjax.receptive_field(layers, input_size=n)
    assert (t.size, t.stride, t.padding) == (c.size, c.stride, c.padding)
    assert t.output_shape == c.layers[-1][4]
    assert t.aligned


def test_alexnet_numbers():
    c = rfjax.receptive_field(_calc("alexnet")[0], input_size=224)
    assert (c.size, c.stride, c.padding) == ((195, 195), (32, 32), (66, 66))
    assert c.layers[-1][4] == (6, 6)


def test_dilated_stack_is_31():
    model, shape = Z.examples()["dilated"]
    params = _init(model, shape)
    t = rfjax.trf(functools.partial(model.apply, params), shape)
    assert t.size == (31, 31) and t.stride == (1, 1) and t.padding == (15, 15)


def test_resnet50_layer4_torchvision_layout():
    model, shape = Z.examples()["resnet50"]
    params = _init(model, shape)
    t = rfjax.trf(functools.partial(model.apply, params), shape)
    # Longest path (all 3x3 convs of the 16 bottlenecks, stride in the 3x3): the closed form.
    calc = [L(7, 2, 3), L(3, 2, 1)]
    for stage, n in enumerate((3, 4, 6, 3)):
        for b in range(n):
            s = 2 if (stage > 0 and b == 0) else 1
            calc += [L(1, 1, 0), L(3, s, 1), L(1, 1, 0)]
    c = rfjax.receptive_field(calc, input_size=224)
    assert (t.size, t.stride, t.padding) == (c.size, c.stride, c.padding) == (
        (427, 427), (32, 32), (213, 213))
    assert t.aligned and t.output_shape == (7, 7)


def test_nonsquare_and_1d_3d():
    f = lambda x: conv(conv(x, k=(3, 5)), k=(1, 7), s=2)  # noqa: E731
    t = rfjax.trf(f, (1, 20, 24, 1))
    assert t.size == (3, 11) and t.stride == (2, 2)
    t1 = rfjax.trf(lambda x: conv(conv(x, k=5, s=2), k=3, d=2), (1, 40, 2))
    c1 = rfjax.receptive_field([L(5, 2, "SAME"), L(3, 1, "SAME", 2)], input_size=(40,))
    assert (t1.size, t1.stride, t1.padding) == (c1.size, c1.stride, c1.padding)
    t3 = rfjax.trf(lambda x: conv(conv(x, k=(3, 3, 5), s=2), k=3), (1, 8, 12, 12, 1))
    c3 = rfjax.receptive_field([L((3, 3, 5), 2, "SAME"), L(3, 1, "SAME")],
                               input_size=(8, 12, 12))
    assert (t3.size, t3.stride, t3.padding) == (c3.size, c3.stride, c3.padding)
    assert t3.mask((2, 3, 3)).ndim == 3


@pytest.mark.parametrize("pad", ["SAME", "VALID", ((2, 1), (0, 3)), ((-1, 2), (1, -1))])
@pytest.mark.parametrize("s", [1, 2, 3])
def test_conv_paddings_match_calculator(pad, s):
    f = lambda x: conv(conv(x, k=3, s=s, pad=pad), k=2, s=1, pad=pad)  # noqa: E731
    t = rfjax.trf(f, (1, 17, 15, 1))
    calc = rfjax.receptive_field([L(3, s, pad), L(2, 1, pad)], input_size=(17, 15))
    assert (t.size, t.stride, t.padding) == (calc.size, calc.stride, calc.padding)
    assert t.aligned
    # closed form == region for every unit, and masks are the region clipped to the image
    for u in itertools.product(*[range(n) for n in t.output_shape]):
        r = t.region(u)
        for a in range(2):
            assert r[a][0] == u[a] * t.stride[a] - t.padding[a]
            assert r[a][1] - r[a][0] + 1 == t.size[a]
        box = np.zeros((17, 15), bool)
        (a0, a1), (b0, b1) = r
        box[max(a0, 0):a1 + 1, max(b0, 0):b1 + 1] = True
        m = t.mask(u)
        assert not (m & ~box).any()
        if a0 >= 0 and b0 >= 0 and a1 < 17 and b1 < 15:  # no padding read: the whole box
            assert (m == box).all()


def test_depthwise_and_transposed():
    f = lambda x: conv(conv(x, groups=4), k=1, cout=4)  # noqa: E731
    assert rfjax.trf(f, (1, 9, 9, 4)).size == (3, 3)
    up = lambda x: conv(x, k=3, s=1, lhs_d=2, pad=((1, 2), (1, 2)))  # noqa: E731
    t = rfjax.trf(up, (1, 8, 8, 1))
    assert t.output_shape == (16, 16)
    assert not t.aligned  # a fractional stride: regions are exact per unit instead
    assert float(t.stride[0]) == 0.5
    for u in range(16):
        m = t.mask((u, u))
        rows = np.where(m.any(axis=1))[0]
        # output u reads dilated positions u-1..u+1 of the 2x-dilated input: the real ones
        expect = [p // 2 for p in range(u - 1, u + 2) if p % 2 == 0 and 0 <= p // 2 < 8]
        assert list(rows) == sorted(set(expect))


def test_pooling_reduce_window_and_global():
    f = lambda x: nn.avg_pool(nn.max_pool(x, (2, 2), (2, 2)), (3, 3), (1, 1), "SAME")  # noqa
    t = rfjax.trf(f, (1, 16, 16, 1))
    assert t.size == (6, 6) and t.stride == (2, 2)
    g = rfjax.trf(lambda x: conv(x).mean(axis=(1, 2)), (1, 16, 16, 3))
    assert g.is_global == (True, True) and g.size == (16, 16) and g.output_shape == ()
    with pytest.raises(ValueError, match="no spatial axis"):
        g.mask(())
    with pytest.raises(ValueError, match="no spatial axis"):
        g.region((0,))


def test_dilation_holes_are_not_global():
    # a 3-tap kernel dilated by 4 on a 9-wide input (VALID): one unit sees 0, 4, 8 only
    t = rfjax.trf(lambda x: conv(x, k=3, d=4, pad="VALID"), (1, 9, 9, 1))
    assert t.output_shape == (1, 1) and t.is_global == (False, False)
    m = t.mask((0, 0))
    assert m.sum() == 9 and m[::4, ::4].all()


def test_relu_at_zero_does_not_shrink_the_field():
    # Activations are never inspected: relu(0) = 0 everywhere still depends on everything.
    # (The zero is a parameter: a literal `x * 0.0` is a program constant, a structural zero,
    # see tests/test_known_values.py.)
    def f(w, x):
        return conv(jax.nn.relu(conv(x * w)))

    t = rfjax.trf(functools.partial(f, jnp.zeros(())), (1, 8, 8, 1))
    assert t.mask((4, 4)).sum() == 25


def test_misaligned_two_branch_block_is_exact_per_unit():
    # Branch a: stride-2 conv; branch b: stride-4 conv followed by 2x nearest upsampling.
    def f(x):
        a = conv(x, k=3, s=2, pad=((1, 1), (1, 1)))
        b = conv(x, k=3, s=4, pad=((1, 1), (1, 1)))
        b = jnp.repeat(jnp.repeat(b, 2, axis=1), 2, axis=2)
        return a + b

    t = rfjax.trf(f, (1, 16, 16, 1))
    assert not t.aligned
    # oracle: the union of both branches' boxes, clipped
    for u in range(8):
        ra = (2 * u - 1, 2 * u + 1)
        rb = (4 * (u // 2) - 1, 4 * (u // 2) + 1)
        expect = np.zeros(16, bool)
        for lo, hi in (ra, rb):
            expect[max(lo, 0):hi + 1] = True
        m = t.mask((u, 3))
        assert (m.any(axis=1) == expect).all()
        assert t.region((u, 3))[0] == (min(ra[0], rb[0]), max(ra[1], rb[1]))
    assert t.size[0] == max(max(2 * u + 1, 4 * (u // 2) + 1) - min(2 * u - 1, 4 * (u // 2) - 1)
                            + 1 for u in range(8))


def test_vit_is_global_after_first_attention():
    model, shape = Z.examples()["vit_embed"]
    params = _init(model, shape)
    t0 = rfjax.trf(functools.partial(model.apply, params), shape)
    assert t0.output_shape == (16,) and t0.is_global == (False, False)
    assert t0.mask((5,)).sum() == 16 and t0.mask((5,))[4:8, 4:8].all()  # token 5 = patch (1,1)
    model, shape = Z.examples()["vit"]
    params = _init(model, shape)
    t = rfjax.trf(functools.partial(model.apply, params), shape)
    assert t.is_global == (True, True) and t.size == (16, 16)
    assert t.mask((0,)).all()


def test_batchnorm_training_mode_is_reported():
    class M(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.BatchNorm(use_running_average=False)(nn.Conv(2, (3, 3))(x))

    m = M()
    v = m.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)))
    f = lambda x: m.apply(v, x, mutable=["batch_stats"])[0]  # noqa: E731
    # (the warning also says what to do if the leading axis was not meant as a batch)
    with pytest.warns(rfjax.BatchCouplingWarning, match=r"If x of shape \(2, 8, 8, 1\) has no "
                      r"batch axis, add one"):
        t = rfjax.trf(f, (2, 8, 8, 1))
    assert t.batch_coupled and t.is_global == (True, True)
    mi = nn.BatchNorm(use_running_average=True)
    vi = mi.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)))
    ti = rfjax.trf(functools.partial(mi.apply, vi), (2, 8, 8, 1))
    assert not ti.batch_coupled and ti.size == (1, 1)


def test_resize_upsampling_is_exact():
    for method in ("nearest", "bilinear"):
        f = functools.partial(lambda x, m: jax.image.resize(x, (1, 16, 16, 1), m), m=method)
        t = rfjax.trf(f, (1, 8, 8, 1))
        assert t.output_shape == (16, 16)
        assert not t.is_global[0]
        m = t.mask((5, 5))
        assert 1 <= m.sum() <= 4  # nearest: 1 pixel; bilinear: a 2x2 neighbourhood


def test_control_flow_scan_while_cond_remat_custom_vjp():
    @jax.custom_vjp
    def cv(x):
        return x * 2

    cv.defvjp(lambda x: (cv(x), None), lambda _, g: (g * 2,))

    def f(x):
        x = jax.checkpoint(lambda z: conv(z))(x)
        x = cv(x)
        x = lax.fori_loop(0, 2, lambda i, z: conv(z), x)  # static trip count -> scan
        n = jnp.asarray(3) * 1  # not a Python constant: a while loop with a fixed count
        x = lax.fori_loop(0, n, lambda i, z: z + 1.0, x)
        x = lax.cond(True, lambda z: conv(z), lambda z: z, x)
        return x

    t = rfjax.trf(f, (1, 16, 16, 1))
    assert t.size == (9, 9) and t.aligned

    def g(x):  # scan over rows
        def body(c, row):
            return c + row, c
        _, ys = lax.scan(body, jnp.zeros_like(x[:, 0]), jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(ys, 0, 1)

    t = rfjax.trf(g, (1, 6, 5, 1))
    m = t.mask((3, 2))
    assert m[:3, 2].all() and m.sum() == 3  # output row 3 = sum of rows 0..2 (prefix)


def test_static_gather_and_dynamic_slice():
    idx = np.array([3, 1, 4, 1, 5])
    t = rfjax.trf(lambda x: x[:, idx], (1, 8, 4, 1))
    assert t.mask((2, 0))[4, 0] and t.mask((2, 0)).sum() == 1
    t = rfjax.trf(lambda x: lax.dynamic_slice_in_dim(x, 2, 4, axis=1), (1, 8, 4, 1))
    assert t.region((0, 0)) == ((2, 2), (0, 0))


def test_concatenate_and_inception():
    model, shape = Z.examples()["inception"]
    params = _init(model, shape)
    t = rfjax.trf(functools.partial(model.apply, params), shape)
    assert t.aligned


# ------------------------------------------------------------------ the gradient oracle


def _init(model, shape, positive=True):
    """Parameters without running Flax's init (eager init is slow for the bigger models):
    shapes from ``eval_shape``, values from NumPy; positive for the linear surrogate."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))
    rng = np.random.default_rng(0)

    def fill(s):
        if positive:
            return jnp.asarray(rng.uniform(0.1, 1.1, s.shape), s.dtype)
        return jnp.asarray(rng.normal(0.0, 0.3, s.shape), s.dtype)

    return jax.tree.map(fill, shapes)


ORACLE_MODELS = ["conv_stack", "conv_stack_strided", "vgg16", "alexnet", "resnet18",
                 "dilated", "nonsquare", "transposed", "transposed_k3", "misaligned",
                 "misaligned_gap", "inception", "unet", "unet_bilinear", "unet_nearest",
                 "vit_embed", "vit", "conv1d", "conv3d", "spatial_attention"]
ATTENTION = {"vit", "spatial_attention"}


@pytest.mark.parametrize("name", ORACLE_MODELS)
def test_masks_equal_float64_gradient_support(name):
    """Per-unit masks == support of d(unit)/dx of the positive linear surrogate (float64)."""
    with jax.enable_x64(True):
        if name in ATTENTION:
            # Softmax gradients can cancel or saturate on a positive surrogate: use the
            # model's own random weights (the gradient support is then generic).
            model, shape = Z.examples()[name]
            params = _init(model, shape, positive=False)
        else:
            model, shape = Z.examples(act=Z.identity, pool="avg")[name]
            params = _init(model, shape)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        fn = functools.partial(model.apply, params)
        x = jax.random.uniform(jax.random.key(1), shape, jnp.float64, 0.5, 1.5)
        t = rfjax.trf(fn, x)
        out_sp = t.output_shape
        units = set(itertools.product(*[sorted({0, n // 2, n - 1}) for n in out_sp]))
        units |= {tuple(min(n - 1, 1) for n in out_sp)}
        units = sorted(units)

        # One jitted, vmapped VJP: a one-hot cotangent per unit (all channels of image 0).
        y, vjp = jax.vjp(jax.jit(fn), x)
        cots = np.zeros((len(units),) + y.shape)
        for k, u in enumerate(units):
            cots[(k, 0) + u] = 1.0
        g = jax.jit(jax.vmap(lambda c: vjp(c)[0]))(jnp.asarray(cots))
        grads = list(np.asarray(jnp.abs(g[:, 0]).sum(axis=-1) > 0))
        masks = t.masks(units)
        for u, g, m in zip(units, grads, masks, strict=True):
            assert (g == m).all(), f"{name} unit {u}: engine {m.sum()} vs oracle {g.sum()}"
            if not any(t.is_global):
                r = t.region(u)
                idx = np.nonzero(m)
                for a in range(len(r)):  # the region contains the exact set
                    assert r[a][0] <= idx[a].min() and idx[a].max() <= r[a][1]


# ------------------------------------------------------------------ other frameworks


def test_nnx_and_plain_jnp_match_linen():
    from flax import nnx

    class Lin(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(4, (3, 3), strides=2, padding=((1, 1), (1, 1)))(x)
            return nn.Conv(4, (5, 5), kernel_dilation=2, padding="SAME")(nn.relu(x))

    class Nnx(nnx.Module):
        def __init__(self, rngs):
            self.c1 = nnx.Conv(3, 4, (3, 3), strides=2, padding=((1, 1), (1, 1)), rngs=rngs)
            self.c2 = nnx.Conv(4, 4, (5, 5), kernel_dilation=2, padding="SAME", rngs=rngs)

        def __call__(self, x):
            return self.c2(nnx.relu(self.c1(x)))

    def plain(x):
        x = conv(x, k=3, s=2, pad=((1, 1), (1, 1)))
        return conv(jax.nn.relu(x), k=5, d=2, pad="SAME")

    shape = (1, 32, 32, 3)
    lin = Lin()
    v = lin.init(jax.random.key(0), jnp.zeros(shape))
    ts = [rfjax.trf(functools.partial(lin.apply, v), shape),
          rfjax.trf(Nnx(nnx.Rngs(0)), shape), rfjax.trf(plain, shape)]
    for t in ts[1:]:
        assert (t.size, t.stride, t.padding, t.aligned) == (ts[0].size, ts[0].stride,
                                                            ts[0].padding, ts[0].aligned)
        for u in [(0, 0), (7, 9), (15, 15)]:
            assert (t.mask(u) == ts[0].mask(u)).all()
            assert t.region(u) == ts[0].region(u)


def test_equinox_module():
    eqx = pytest.importorskip("equinox")
    conv1 = eqx.nn.Conv2d(3, 4, 3, stride=2, padding=1, key=jax.random.key(0))
    conv2 = eqx.nn.Conv2d(4, 4, 3, padding=1, key=jax.random.key(1))
    model = eqx.nn.Sequential([conv1, eqx.nn.Lambda(jax.nn.relu), conv2])

    def fn(x):  # Equinox is single-example and channels-first: adapt and vmap
        return jnp.moveaxis(jax.vmap(model)(jnp.moveaxis(x, -1, 1)), 1, -1)

    t = rfjax.trf(fn, (2, 16, 16, 3))
    assert (t.size, t.stride, t.padding) == ((7, 7), (2, 2), (3, 3))


# ------------------------------------------------------------------ errors


def test_errors():
    with pytest.raises(TypeError, match="callable"):
        rfjax.trf(42, (1, 8, 8, 1))
    with pytest.raises(TypeError, match="array"):
        rfjax.trf(conv, "not an array")
    with pytest.raises(ValueError, match="rank"):
        rfjax.trf(conv, (8, 8))
    with pytest.raises(ValueError, match="rank"):
        rfjax.trf(lambda x: x, (1, 2, 3, 4, 5, 6))
    t = rfjax.trf(conv, (1, 8, 8, 1))
    with pytest.raises(ValueError, match="outside"):
        t.mask((8, 0))
    with pytest.raises(ValueError, match="outside"):
        t.region((-1, 0))
    with pytest.raises(ValueError, match="2 spatial axes"):
        t.mask((1,))
    logits = rfjax.trf(lambda x: conv(x).reshape(x.shape[0], -1)[:, :10], (1, 8, 8, 1))
    with pytest.raises(ValueError, match="no spatial axis"):
        logits.mask(())
    with pytest.raises(ValueError, match="output="):
        rfjax.trf(lambda x: (x, x), (1, 8, 8, 1))
    assert rfjax.trf(lambda x: (conv(x), x), (1, 8, 8, 1), output=0).size == (3, 3)


def test_unknown_primitive_names_primitive_and_line():
    p = jax.extend.core.Primitive("my_weird_op")
    p.def_abstract_eval(lambda x: jax.core.ShapedArray(x.shape, x.dtype))

    def f(x):
        return p.bind(x)  # this line must be named

    with pytest.raises(rfjax.UnsupportedPrimitiveError, match="my_weird_op") as e:
        rfjax.trf(f, (1, 8, 8, 1))
    assert "test_trf.py" in str(e.value)


def test_runtime_index_errors():
    def f(x):
        i = jnp.argmax(x[0, :, 0, 0])
        return lax.dynamic_slice_in_dim(x, i, 2, axis=1)

    with pytest.raises(rfjax.DynamicDependencyError, match="dynamic_slice") as e:
        rfjax.trf(f, (1, 8, 8, 1))
    assert "test_trf.py" in str(e.value)

    def g(x):
        return lax.while_loop(lambda c: c[1].sum() < 10, lambda c: (c[0] + 1, c[1] * 2),
                              (0, x))[1]

    with pytest.raises(rfjax.DynamicDependencyError, match="while"):
        rfjax.trf(g, (1, 8, 8, 1))


def test_calculator_errors_and_same():
    with pytest.raises(ValueError, match="SAME"):
        rfjax.receptive_field([L(3, 2, "SAME")])
    with pytest.raises(ValueError, match="padding"):
        rfjax.receptive_field([L(3, 2, "FULL")], input_size=8)
    with pytest.raises(TypeError):
        rfjax.receptive_field([object()])
    r = rfjax.receptive_field([L(3, 2, "SAME")], input_size=8)
    assert r.padding == (0, 0) and r.layers[-1][4] == (4, 4)  # JAX pads (0, 1) here
    assert "layer0" in r.table()


def test_paper_models_cifar_74_and_camvid():
    """The CIFAR-10 classifier's last feature map sees 74x74 (> the 32x32 input, the paper's
    setting); the CamVid U-Net's units see 156 or 164 pixels per axis, as documented."""
    from rfjax.models.camvid import CAMVID_TRF, CamVidNet
    from rfjax.models.cifar import CIFAR_TRF, CifarNet

    m = CifarNet()
    v = _init(m, (1, 32, 32, 3))
    t = rfjax.trf(functools.partial(m.apply, v, method=CifarNet.features), (2, 32, 32, 3))
    assert t.size == (74, 74) == (CIFAR_TRF, CIFAR_TRF) and t.stride == (8, 8) and t.aligned
    assert t.output_shape == (4, 4) and not any(t.is_global)
    assert t.masks().all()  # every unit's TRF covers the whole 32x32 image
    logits = rfjax.trf(functools.partial(m.apply, v), (2, 32, 32, 3))
    assert logits.is_global == (True, True) and not logits.batch_coupled
    c = CamVidNet()
    vc = _init(c, (1, 64, 64, 3))
    tc = rfjax.trf(functools.partial(c.apply, vc), (1, 184, 240, 3))
    assert tc.size == (CAMVID_TRF, CAMVID_TRF) == (164, 164) and not tc.aligned
    assert {tc.region((u, u))[0][1] - tc.region((u, u))[0][0] + 1 for u in range(80, 96)} == {
        156, 164}


def test_abstract_parameters_give_the_same_answer():
    model, shape = Z.examples()["misaligned"]
    real = _init(model, shape, positive=False)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
    t1 = rfjax.trf(functools.partial(model.apply, real), shape)
    t2 = rfjax.trf(functools.partial(model.apply, abstract), shape)
    assert (t1.size, t1.stride, t1.padding, t1.aligned) == (t2.size, t2.stride, t2.padding,
                                                            t2.aligned)
    assert (t1.masks() == t2.masks()).all()


def test_static_scatter_set_and_add_match_gradient_support():
    def f(x):
        y = x.at[:, 0].add(x[:, 5] * 2.0)  # row 0 = row 0 + row 5
        y = y.at[:, 1].set(y[:, 2] + y[:, 3])  # row 1 overwritten by rows 2, 3
        return conv(y, k=(1, 3))

    t = rfjax.trf(f, (1, 8, 8, 1))
    with jax.enable_x64(True):
        x = jnp.ones((1, 8, 8, 1), jnp.float64)
        for u in [(0, 4), (1, 0), (2, 7), (5, 3)]:
            g = jax.grad(lambda z, u=u: f(z)[(0,) + u].sum())(x)
            assert (np.asarray(g[0, ..., 0] != 0) == t.mask(u)).all()
    dup = lambda x: x.at[:, jnp.array([1, 1])].set(x[:, :2])  # noqa: E731
    with pytest.raises(rfjax.UnsupportedPrimitiveError, match="duplicate"):
        rfjax.trf(dup, (1, 8, 8, 1))
    dyn = lambda x: x.at[:, jnp.argmax(x[0, :, 0, 0])].set(0.0)  # noqa: E731
    with pytest.raises(rfjax.DynamicDependencyError, match="scatter"):
        rfjax.trf(dyn, (1, 8, 8, 1))
