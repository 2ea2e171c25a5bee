"""Tests of rfjax.models: shapes, the TRF recurrence, structure, per-image inference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rfjax.calculator import LayerSpec, receptive_interval, receptive_size
from rfjax.models.camvid import (
    CAMVID_LAYERS,
    CAMVID_TRF,
    CamVidNet,
    pad_to_multiple,
    segment,
)
from rfjax.models.cifar import (
    CIFAR_LAYERS,
    CIFAR_RESNET_LAYERS,
    CIFAR_TRF,
    CifarNet,
    CifarResNet,
)


def _interval(chain, q):
    """One axis: the (lo, hi) input interval of output unit q."""
    return receptive_interval(chain, q, ndim=1)[0]


def _size(chain):
    """One axis: the widest receptive field over output positions."""
    return receptive_size(chain, ndim=1)[0]


def _conv3(n):
    return [LayerSpec(3, 1, "SAME", name=f"c{i}") for i in range(n)]


def _pool():
    return LayerSpec(2, 2, "VALID", name="p")


def test_recurrence_textbook_vgg16():
    # VGG-16: conv5_3 has a 196x196 TRF, pool5 212x212 (Simonyan & Zisserman; standard tables).
    chain = []
    for n in (2, 2, 3, 3):
        chain += _conv3(n) + [_pool()]
    chain += _conv3(3)
    assert _size(chain) == 196
    assert _size(chain + [_pool()]) == 212


def test_recurrence_dilation_and_upsampling():
    assert _size([LayerSpec(3, 1, "SAME", 4, name="a")]) == 9
    # Stride 2, then upsampling by 2 restores the jump: a following 3x3 adds 2, not 4.
    chain = [LayerSpec(2, 2, "VALID", name="s"), LayerSpec(name="u", upsample=2),
             LayerSpec(3, 1, "SAME", name="c")]
    assert _size(chain) == 2 + 2
    # Hand-computed intervals: after a 2x upsampling, a 3x3 convolution at fine position q
    # reads fine q-1..q+1, i.e. coarse floor((q-1)/2)..floor((q+1)/2): 2 coarse units.
    up = [LayerSpec(name="u", upsample=2), LayerSpec(3, 1, "SAME", name="c")]
    assert _interval(up, 0) == (-1, 0)
    assert _interval(up, 1) == (0, 1)
    # Two 3x3 after the upsampling: fine q-2..q+2 -> 3 coarse units at every position.
    up2 = [*up, LayerSpec(3, 1, "SAME", name="c2")]
    assert [_interval(up2, q) for q in (0, 1)] == [(-1, 1), (-1, 1)]
    # Below a coarse 3x3 (jump 2 in fine units): widths 4 or 6 depending on the alignment.
    chain = [LayerSpec(2, 2, "VALID", name="p"), *up]
    assert [_interval(chain, q) for q in (0, 1)] == [(-2, 1), (0, 3)]
    assert _size(chain) == 4
    # SAME padding of an even kernel reads one more on the right (flax convention).
    assert _interval([LayerSpec(4, 1, "SAME", name="e")], 10) == (9, 12)


def test_recurrence_errors():
    with pytest.raises(ValueError, match="empty"):
        receptive_size([])
    with pytest.raises(ValueError, match="kernel must be an int >= 1"):
        LayerSpec(0, name="bad")
    with pytest.raises(ValueError, match="upsampling layer"):
        LayerSpec(3, name="bad", upsample=2)
    # tuples are LayerSpec fields (LayerSpec(*t)); anything else is refused
    with pytest.raises(TypeError, match="must be a LayerSpec"):
        receptive_size([object()])


def test_cifar_trf_is_74():
    assert CIFAR_TRF == 74
    assert receptive_size(CIFAR_LAYERS) == (74, 74)


def test_camvid_trf_stated():
    assert CAMVID_TRF == _size(CAMVID_LAYERS) == 164
    assert receptive_size(CAMVID_LAYERS) == (164, 164)
    widths = [np.subtract(*_interval(CAMVID_LAYERS, q)[::-1]) + 1 for q in range(16)]
    assert widths == [156, 156, 164, 164, 164, 164, 156, 156] * 2


def _conv_kernels(params):
    """{name: kernel spatial size} of the convolutions, by walking the params tree."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        keys = [getattr(k, "key", str(k)) for k in path]
        if keys[-1] == "kernel" and leaf.ndim == 4:
            out[keys[0]] = leaf.shape[0]
    return out


def test_cifar_layer_list_matches_module():
    model = CifarNet(width=2)
    # Shapes only: eval_shape avoids compiling anything.
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    kernels = _conv_kernels(variables["params"])
    convs = {s.name: s.kernel for s in CIFAR_LAYERS if s.name.startswith("conv")}
    assert kernels == convs
    assert np.prod([s.stride for s in CIFAR_LAYERS]) == 8


def test_camvid_layer_list_matches_module():
    model = CamVidNet(width=2)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    names = {k for k in variables["params"]}
    chain_names = {s.name for s in CAMVID_LAYERS if not s.name.startswith("pool")}
    assert chain_names == names
    # Dilations of the bottleneck as documented.
    mid = [s.dilation for s in CAMVID_LAYERS if s.name.startswith("mid")]
    assert mid == [2, 4]


def test_cifar_shapes_and_features():
    model = CifarNet(width=4)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    assert set(variables) == {"params", "batch_stats"}
    logits = model.apply(variables, x)
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32
    feats = model.apply(variables, x, method=CifarNet.features)
    assert feats.shape == (3, 4, 4, 32)
    # Logits are the dense head of the globally averaged features.
    head = variables["params"]["head"]
    expect = jnp.mean(feats, axis=(1, 2)) @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(logits, expect, rtol=1e-5, atol=1e-5)
    # Training mode returns updated batch statistics.
    logits_t, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits_t.shape == (3, 10) and "batch_stats" in upd


def test_inference_does_not_couple_images():
    model = CifarNet(width=4)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    # Make the running statistics non-trivial with a training pass.
    _, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
    variables = {**variables, **upd}
    alone = model.apply(variables, x[:1])
    together = model.apply(variables, x)
    np.testing.assert_allclose(alone[0], together[0], rtol=1e-5, atol=1e-6)


def test_model_input_errors():
    model = CifarNet(width=2)
    with pytest.raises(ValueError, match="3 channels"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
    with pytest.raises(ValueError, match="width and num_classes"):
        CifarNet(width=0).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    seg = CamVidNet(width=2)
    with pytest.raises(ValueError, match="multiples of 8"):
        seg.init(jax.random.PRNGKey(0), jnp.zeros((1, 20, 16, 3)))
    with pytest.raises(ValueError, match="3 channels"):
        seg.init(jax.random.PRNGKey(0), jnp.zeros((16, 16, 3)))


def _support_box(fn, shape):
    """Bounding box (row_lo, row_hi, col_lo, col_hi) of the union of input-gradient supports."""
    grad = jax.jit(jax.grad(fn))
    mask = np.zeros(shape[1:3], bool)
    for seed in range(4):
        x = jax.random.normal(jax.random.PRNGKey(seed), shape)
        mask |= np.any(np.asarray(grad(x))[0] != 0, axis=-1)
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return rows.min(), rows.max(), cols.min(), cols.max()


def test_cifar_gradient_support_is_the_trf():
    # The input gradient of one interior unit of the last feature map is nonzero exactly over
    # the interval the recurrence predicts (it cannot exceed it; the union over a few inputs
    # reaches its border).
    model = CifarNet(width=2)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 128, 128, 3)))

    def unit(x):
        return model.apply(variables, x, method=CifarNet.features)[0, 8, 5].sum()

    chain = [s for s in CIFAR_LAYERS]
    (lo_r, hi_r), (lo_c, hi_c) = receptive_interval(chain, (8, 5))
    assert hi_r - lo_r + 1 == CIFAR_TRF
    assert _support_box(unit, (1, 128, 128, 3)) == (lo_r, hi_r, lo_c, hi_c)


def test_camvid_gradient_support_is_the_trf():
    # Position-dependent TRF: row 100 (= 4 mod 8) sees 164 rows, column 97 (= 1 mod 8) 156.
    model = CamVidNet(width=2)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 200, 200, 3)))

    def unit(x):
        return jnp.sum(model.apply(variables, x)[0, 100, 97])

    (lo_r, hi_r), (lo_c, hi_c) = receptive_interval(CAMVID_LAYERS, (100, 97))
    assert (hi_r - lo_r + 1, hi_c - lo_c + 1) == (164, 156)
    assert _support_box(unit, (1, 200, 200, 3)) == (lo_r, hi_r, lo_c, hi_c)


def test_camvid_shapes_segment_and_padding():
    model = CamVidNet(width=2)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 24, 3)))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 18, 30, 3))
    out = segment(model, variables, x)
    assert out.shape == (2, 18, 30, 11) and out.dtype == jnp.float32
    padded, (h, w) = pad_to_multiple(x)
    assert padded.shape == (2, 24, 32, 3) and (h, w) == (18, 30)
    np.testing.assert_array_equal(padded[:, :18, :30], x)
    np.testing.assert_array_equal(padded[:, 18, :30], x[:, 16, :])  # reflect
    same, hw = pad_to_multiple(jnp.zeros((1, 16, 8, 3)))
    assert same.shape == (1, 16, 8, 3) and hw == (16, 8)
    with pytest.raises(ValueError, match="too small"):
        pad_to_multiple(jnp.zeros((1, 3, 16, 3)))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        pad_to_multiple(jnp.zeros((16, 16, 3)))


# --------------------------------------------------------------------------- CifarResNet


def test_cifar_resnet_trf_is_74_by_engine_and_recurrence():
    import functools

    import rfjax

    model = CifarResNet(width=2)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    t = rfjax.trf(functools.partial(model.apply, variables, method=CifarResNet.features),
                  (1, 32, 32, 3))
    assert t.size == (74, 74) and t.stride == (1, 1)
    assert receptive_size(CIFAR_RESNET_LAYERS) == (74, 74)
    # The chain lists the module's convolutions: the stem, then both of every block, in order.
    kernels = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"]):
        keys = [getattr(k, "key", str(k)) for k in path]
        if keys[-1] == "kernel" and leaf.ndim == 4:
            name = keys[0] if len(keys) == 2 else f"{keys[0]}_{keys[1][-1]}"
            kernels.append((name, leaf.shape[0]))
    order = {s.name: i for i, s in enumerate(CIFAR_RESNET_LAYERS)}
    assert sorted(kernels, key=lambda nk: order[nk[0]]) == \
        [(s.name, s.kernel) for s in CIFAR_RESNET_LAYERS]
    # Blocks set the depth: TRF 6 + 4 * blocks.
    small = CifarResNet(width=2, blocks=3)
    v3 = jax.eval_shape(small.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    t3 = rfjax.trf(functools.partial(small.apply, v3, method=CifarResNet.features),
                   (1, 32, 32, 3))
    assert t3.size == (18, 18)


def test_cifar_resnet_gradient_support_is_the_trf():
    # The 6x6 SAME stem reads rows q-2..q+3; the 34 3x3 convolutions add 34 either side.
    model = CifarResNet(width=2)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 96, 96, 3)))

    def unit(x):
        return model.apply(variables, x, method=CifarResNet.features)[0, 48, 40].sum()

    (lo_r, hi_r), (lo_c, hi_c) = receptive_interval(list(CIFAR_RESNET_LAYERS), (48, 40))
    assert (lo_r, hi_r) == (48 - 36, 48 + 37)
    assert _support_box(unit, (1, 96, 96, 3)) == (lo_r, hi_r, lo_c, hi_c)


def test_cifar_resnet_shapes_and_errors():
    model = CifarResNet(width=3, blocks=2)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    feats = model.apply(variables, x, method=CifarResNet.features)
    assert feats.shape == (2, 32, 32, 3)
    head = variables["params"]["head"]
    expect = jnp.mean(feats, axis=(1, 2)) @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(model.apply(variables, x), expect, rtol=1e-5, atol=1e-5)
    # Identity shortcut: zeroing a block's last BatchNorm scale and bias leaves relu(x).
    params = jax.tree_util.tree_map(lambda a: a, variables["params"])
    params["block2"]["bn2"] = jax.tree_util.tree_map(jnp.zeros_like, params["block2"]["bn2"])
    one = CifarResNet(width=3, blocks=1)
    one_vars = {"params": {k: v for k, v in params.items() if k != "block2"},
                "batch_stats": {k: v for k, v in variables["batch_stats"].items()
                                if k != "block2"}}
    np.testing.assert_allclose(
        model.apply({**variables, "params": params}, x, method=CifarResNet.features),
        one.apply(one_vars, x, method=CifarResNet.features), rtol=1e-6, atol=1e-6)
    _, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert "block1" in upd["batch_stats"]
    with pytest.raises(ValueError, match="3 channels"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
    with pytest.raises(ValueError, match="blocks must be >= 1"):
        CifarResNet(blocks=0).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
