"""Tests of the reference architectures in ``rfjax.models.zoo``: shapes, parameter counts,
emitted primitives, and the expected theoretical receptive fields (TRF) of each model.

Expected TRFs (for the TRF-engine tests to reuse)
-------------------------------------------------
``EXPECTED`` holds, per model and per input spatial axis, ``(size, stride, padding)``: unit
``u`` sees input indices ``u*stride - padding .. u*stride - padding + size - 1`` (inclusive,
unclipped). The numbers were computed BY HAND with the textbook recurrence
(``r += (k-1)*d*j; p += pad_lo*j; j *= s``) and are checked here twice: against the
recurrence run by ``_recurrence`` on the layer chains of ``CHAINS``, and against the float64
gradient support of the positive linear surrogate (identity activation, average pooling,
positive weights) of the model itself, at interior and corner units.

``UNIT_REGIONS`` holds per-unit regions (inclusive, unclipped) for networks whose field is not
one uniform ``u*stride - padding`` formula (transposed convolutions, U-Net), and
``_axis_set``/``_mask`` compute exact per-unit dependency sets (with holes) for the
multi-branch nets (misaligned branches, Inception cross). Models with global fields (ViT after
its first block, the attention net, the dense head) are listed in ``GLOBAL``.

DenseNet-121's field is its longest path (``_densenet_chain``), checked against ``rfjax.trf``
at every dense layer. Swin's windows are fixed by position (not one box moving with the unit):
``_swin_axis`` computes a stage's per-token fields by hand (regular then shifted windows,
cyclic wrap, padding), checked against the gradient oracle and ``rfjax.trf``.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rfjax
from rfjax.models import zoo as Z
from rfjax.models.zoo import swin as S

# ----------------------------------------------------------------------------------------------
# Layer chains (one list per spatial axis), input side first.
# ("conv", k, s, pad_lo, d, pad_hi): output u reads inputs u*s - pad_lo + d*t, t = 0..k-1
# (pools too). ("up", k, s, pad_lo, 1, pad_hi): transposed conv (lhs-dilated conv): output u
# reads input i whenever i*s == u - pad_lo + t for some t = 0..k-1.


def C(k: int, s: int = 1, p: int = 0, d: int = 1, ph: int | None = None) -> tuple:
    return ("conv", k, s, p, d, p if ph is None else ph)


def U(k: int, s: int, p: int, ph: int | None = None) -> tuple:
    return ("up", k, s, p, 1, p if ph is None else ph)


def _vgg_chain(blocks=(2, 2, 3, 3, 3)) -> list:
    out = []
    for n in blocks:
        out += [C(3, 1, 1)] * n + [C(2, 2, 0)]
    return out


def _resnet_chain(blocks, bottleneck: bool) -> list:
    """Longest path (through every 3x3); the shortcuts' fields are contained in it."""
    out = [C(7, 2, 3), C(3, 2, 1)]
    for s, n in enumerate(blocks):
        for b in range(n):
            stride = 2 if (b == 0 and s > 0) else 1
            if bottleneck:
                out += [C(1), C(3, stride, 1), C(1)]
            else:
                out += [C(3, stride, 1), C(3, 1, 1)]
    return out


def _densenet_chain(blocks, named: bool = False) -> list:
    """Longest path through a DenseNet (torchvision layout): stem conv 7 s2 p3, pool 3 s2 p1;
    per dense layer 1x1 then 3x3 p1 (the concatenation's other path skips both, and a centred
    3x3 only widens the field); per transition 1x1 then avg pool 2 s2 p0. With ``named``,
    ``(row name or None, layer)`` pairs, the name of each dense layer's 3x3 conv in the TRF
    table."""
    out = [(None, C(7, 2, 3)), (None, C(3, 2, 1))]
    for b, n in enumerate(blocks):
        for i in range(n):
            out += [(None, C(1)), (f"DenseNet/denseblock{b + 1}_layer{i + 1}/conv2", C(3, 1, 1))]
        if b < len(blocks) - 1:
            out += [(None, C(1)), (f"DenseNet/transition{b + 1}", C(2, 2, 0))]
    return out if named else [layer for _, layer in out]


ALEX = [C(11, 4, 2), C(3, 2, 0), C(5, 1, 2), C(3, 2, 0), C(3, 1, 1), C(3, 1, 1), C(3, 1, 1),
        C(3, 2, 0)]

#: Sequential chains per model (one per axis; a single list = same on every axis).
CHAINS: dict[str, list] = {
    "conv_stack": [C(3, 1, 1)] * 4,
    "conv_stack_strided": [C(3, 2, 1), C(3, 1, 2, 2), C(3, 2, 1)],
    "vgg16": _vgg_chain(),
    "alexnet": ALEX,
    "resnet50": _resnet_chain((3, 4, 6, 3), True),
    "resnet18": _resnet_chain((2, 2, 2, 2), False),
    "resnet_tiny": _resnet_chain((1, 1, 1, 1), True),
    "resnet_tiny_basic": _resnet_chain((1, 1, 1, 1), False),
    "densenet121": _densenet_chain((6, 12, 24, 16)),
    "densenet_tiny": _densenet_chain((1, 1, 1, 1)),
    "dilated": [C(3, 1, 1, 1), C(3, 1, 2, 2), C(3, 1, 4, 4), C(3, 1, 8, 8)],
    "nonsquare": ([C(3, 1, 1), C(1), C(7, 2, 3), C(3, 1, 1)],
                  [C(5, 1, 2), C(7, 1, 3), C(1), C(2, 2, 0)]),
    "conv1d": ([C(5, 2, 2), C(3, 1, 2, 2), C(2, 2, 0), C(3, 1, 1)],),
    "conv3d": ([C(3, 1, 1), C(1), C(2, 2, 0), C(3, 1, 2, 2)],
               [C(3, 1, 1), C(3, 2, 1), C(2, 2, 0), C(3, 1, 1)],
               [C(3, 1, 1), C(3, 2, 1), C(2, 2, 0), C(3, 1, 1)]),
    "misaligned": [C(3, 2, 0, ph=1), C(3, 1, 1)],  # branch A dominates branch B ({2u})
    "vit_embed": [C(4, 4, 0)],
}

#: Hand-computed (size, stride, padding) per input spatial axis.
EXPECTED: dict[str, tuple[tuple[int, int, int], ...]] = {
    "conv_stack": ((9, 1, 4),) * 2,
    "conv_stack_strided": ((15, 4, 7),) * 2,
    "vgg16": ((212, 32, 90),) * 2,  # pool5
    "alexnet": ((195, 32, 66),) * 2,  # last pool (6x6 at 224)
    "resnet50": ((427, 32, 213),) * 2,  # layer4, torchvision v1.5 layout
    "resnet18": ((435, 32, 217),) * 2,
    "resnet_tiny": ((75, 32, 37),) * 2,  # ResNet(blocks=(1, 1, 1, 1))
    "resnet_tiny_basic": ((195, 32, 97),) * 2,  # same, basic blocks
    # DenseNet-121 after norm5: stem 11/4/5; each dense layer adds 2*jump (its 3x3) and
    # jump/2 to the padding; each transition adds jump (its pool 2) and doubles the jump:
    # 11 + 6*8 + 4 + 12*16 + 8 + 24*32 + 16 + 16*64 = 2071; 5 + 6*4 + 12*8 + 24*16 + 16*32.
    "densenet121": ((2071, 32, 1021),) * 2,
    "densenet_tiny": ((159, 32, 65),) * 2,  # DenseNet(blocks=(1, 1, 1, 1))
    "dilated": ((31, 1, 15),) * 2,
    "nonsquare": ((13, 2, 6), (12, 2, 5)),
    "conv1d": ((23, 4, 10),),
    "conv3d": ((12, 2, 5), (15, 4, 6), (15, 4, 6)),
    "misaligned": ((7, 2, 2),) * 2,  # MisalignedBlock(tail=1): A [2u, 2u+2], B {2u}
    "vit_embed": ((4, 4, 0),) * 2,  # per patch-row/column; tokens are row-major
}

#: Per-unit regions (one axis; every axis alike), inclusive and unclipped, hand-computed.
UNIT_REGIONS: dict[str, dict[int, tuple[int, int]]] = {
    # conv 3x3 s2 p1; ConvTranspose k4 s2 pad (2, 2); conv 3x3 p1: 7 wide, centre alternates.
    "transposed": {0: (-3, 3), 1: (-3, 3), 2: (-1, 5), 5: (1, 7), 8: (5, 11), 15: (11, 17)},
    # ConvTranspose k3 s2 pad (1, 2): sizes alternate 7 (even u) and 5 (odd u).
    "transposed_k3": {0: (-3, 3), 1: (-1, 3), 2: (-1, 5), 7: (5, 9), 8: (5, 11)},
    # U-Net (transposed k2 s2 upsampling), longest path through the bottleneck: always 44
    # wide, but units 4m+2 .. 4m+5 share one region (a staircase, not a uniform formula).
    "unet": {0: (-22, 21), 1: (-22, 21), 2: (-18, 25), 3: (-18, 25), 5: (-18, 25),
             6: (-14, 29), 16: (-6, 37), 31: (10, 53)},
}

TRANSPOSED_CHAIN = [C(3, 2, 1), U(4, 2, 2), C(3, 1, 1)]
TRANSPOSED_K3_CHAIN = [C(3, 2, 1), U(3, 2, 1, ph=2), C(3, 1, 1)]
_DOUBLE = [C(3, 1, 1), C(3, 1, 1)]
UNET_CHAIN = (_DOUBLE + [C(2, 2, 0)] + _DOUBLE + [C(2, 2, 0)] + _DOUBLE + [U(2, 2, 1)] + _DOUBLE
              + [U(2, 2, 1)] + _DOUBLE + [C(1)])

#: Models whose every output unit depends on the whole input.
GLOBAL = ("vit", "gap_classifier", "spatial_attention")


def _recurrence(chain: list) -> tuple[int, int, int]:
    """Textbook recurrence on a conv/pool chain: (size, stride, padding)."""
    r, j, p = 1, 1, 0
    for kind, k, s, pad, d, _ in chain:
        assert kind == "conv"
        p += pad * j
        r += (k - 1) * d * j
        j *= s
    return r, j, p


def _sizes(chain: list, n: int) -> list[int]:
    """Extent along one axis of the input of every layer, and of the output (last)."""
    sizes = [n]
    for kind, k, s, lo, d, hi in chain:
        if kind == "conv":
            n = (n + lo + hi - d * (k - 1) - 1) // s + 1
        else:
            n = (n - 1) * s + 1 + lo + hi - k + 1
        sizes.append(n)
    return sizes


def _axis_set(chain: list, unit: int, n: int | None = None) -> set[int]:
    """Input indices one output unit depends on, along one axis.

    ``n=None``: unclipped (the closed-form region, padding positions included). With the input
    extent ``n``: the exact dependency set, dropping padding positions at EVERY layer (an
    intermediate padding zero connects to nothing, which matters for cropped branches).
    """
    sizes = _sizes(chain, n) if n is not None else None
    cur = {unit}
    for i, (kind, k, s, pad, d, _) in reversed(list(enumerate(chain))):
        if kind == "conv":
            cur = {u * s - pad + d * t for u in cur for t in range(k)}
        else:
            cur = {(u - pad + t) // s for u in cur for t in range(k) if (u - pad + t) % s == 0}
        if sizes is not None:
            cur = {u for u in cur if 0 <= u < sizes[i]}
    return cur


def _per_axis(name: str, nd: int) -> tuple[list, ...]:
    chains = CHAINS[name]
    if chains and isinstance(chains[0], list):
        return tuple(chains)
    return (chains,) * nd


def _mask(paths: list[tuple[list, ...]], unit: tuple[int, ...], shape: tuple[int, ...]):
    """Union over paths of the per-axis product sets, clipped to the input ``shape``."""
    mask = np.zeros(shape, bool)
    for chains in paths:
        sets = []
        for n, chain, u in zip(shape, chains, unit, strict=True):
            ax = np.zeros(n, bool)
            ax[sorted(_axis_set(chain, u, n))] = True
            sets.append(ax)
        mask |= functools.reduce(np.multiply.outer, sets)
    return mask


# ----------------------------------------------------------------------------------------------
# The oracle used to validate the numbers above against the models themselves.


def _positive_variables(model: nn.Module, shape: tuple[int, ...], seed: int = 0):
    """Positive weights in [0.5, 1.5] (float64); BatchNorm statistics mean 0, var 1."""
    abstract = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape,
                                                                                 jnp.float32))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        key = getattr(path[-1], "key", "")
        if key == "mean":
            return np.zeros(leaf.shape)
        if key == "var":
            return np.ones(leaf.shape)
        return rng.uniform(0.5, 1.5, leaf.shape)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def _gradient_masks(model: nn.Module, shape: tuple[int, ...], units: list[tuple[int, ...]],
                    generic: bool = False):
    """Float64 gradient support (over channels) of the surrogate's output units.

    ``generic``: random signed weights (the model's own init) and a random image instead of
    positive weights at zero input. Needed with attention, where the positive surrogate is
    not enough: at a constant input every value vector is equal and the softmax gradient
    cancels exactly, and large positive logits saturate the softmax to exact zeros.
    """
    with jax.enable_x64(True):
        if generic:
            x = jnp.asarray(np.random.default_rng(1).normal(size=shape))
            variables = jax.jit(model.init)(jax.random.key(2), x)
        else:
            variables = _positive_variables(model, shape)
            x = jnp.zeros(shape, jnp.float64)

        @jax.jit
        def grad(variables, x, weight):
            return jax.grad(lambda x: jnp.sum(model.apply(variables, x) * weight))(x)

        out_shape = jax.eval_shape(model.apply, variables, x).shape
        masks = []
        for unit in units:
            weight = np.zeros(out_shape)
            weight[(0, *unit)] = 1.0
            g = np.asarray(grad(variables, x, weight))
            assert g.dtype == np.float64
            masks.append(np.any(g[0] != 0, axis=-1))
        return masks


def _surrogate(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    extra = {
        "resnet_tiny": (Z.ResNet(blocks=(1, 1, 1, 1), width=1), (1, 224, 224, 3)),
        "resnet_tiny_basic": (Z.ResNet(blocks=(1, 1, 1, 1), bottleneck=False, width=1),
                              (1, 256, 256, 3)),
        "densenet_tiny": (Z.DenseNet(blocks=(1, 1, 1, 1), growth=2, init_features=2,
                                     bn_size=1), (1, 224, 224, 3)),
    }
    if name in extra:
        model, shape = extra[name]
        return model.clone(act=Z.identity, pool="avg"), shape
    return Z.examples(act=Z.identity, pool="avg")[name]


def _corner_units(out_spatial: tuple[int, ...]) -> list[tuple[int, ...]]:
    """First, last, and a middle unit on every axis (corners included)."""
    picks = [sorted({0, n // 2, n - 1}) for n in out_spatial]
    units = [()]
    for p in picks:
        units = [u + (i,) for u in units for i in p]
    return units


# ----------------------------------------------------------------------------------------------
# Tests of the expected numbers


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recurrence_matches_hand_computed(name):
    nd = len(EXPECTED[name])
    got = tuple(_recurrence(chain) for chain in _per_axis(name, nd))
    assert got == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_axis_sets_match_closed_form(name):
    nd = len(EXPECTED[name])
    for chain, (size, stride, pad) in zip(_per_axis(name, nd), EXPECTED[name], strict=True):
        for u in (0, 1, 5, 17):
            assert _axis_set(chain, u) == set(range(u * stride - pad, u * stride - pad + size))


@pytest.mark.parametrize(("name", "chain"), [("transposed", TRANSPOSED_CHAIN),
                                             ("transposed_k3", TRANSPOSED_K3_CHAIN),
                                             ("unet", UNET_CHAIN)])
def test_unit_regions_match_chain(name, chain):
    for u, (lo, hi) in UNIT_REGIONS[name].items():
        assert _axis_set(chain, u) == set(range(lo, hi + 1))


# Models checked against the gradient oracle (the big ones only where the field fits inside
# the image: VGG-16 and AlexNet at 224; ResNet and DenseNet via their 1-block-per-stage
# variants).
_ORACLE_SEQUENTIAL = ["conv_stack", "conv_stack_strided", "dilated", "nonsquare", "conv1d",
                      "conv3d", "misaligned", "vit_embed", "alexnet", "vgg16", "resnet_tiny",
                      "resnet_tiny_basic", "densenet_tiny"]


@pytest.mark.parametrize("name", _ORACLE_SEQUENTIAL)
def test_expected_trf_matches_gradient_support(name):
    model, shape = _surrogate(name)
    nd = len(shape) - 2
    out = jax.eval_shape(model.apply, _positive_variables(model, shape),
                         jax.ShapeDtypeStruct(shape, jnp.float32))
    if name == "vit_embed":
        # Tokens (N, T, D), row-major over the (H/4, W/4) patch grid.
        gh, gw = shape[1] // 4, shape[2] // 4
        tokens = [0, gw - 1, gh * gw // 2, gh * gw - 1]
        masks = _gradient_masks(model, shape, [(t,) for t in tokens])
        for t, m in zip(tokens, masks, strict=True):
            assert np.array_equal(m, _mask([_per_axis(name, 2)], (t // gw, t % gw), shape[1:3]))
        return
    units = _corner_units(out.shape[1:-1])
    # An interior unit whose field fits in the image gives the unclipped closed form exactly.
    inner = tuple(math.ceil(pad / stride) for size, stride, pad in EXPECTED[name])
    if all(i * st - p + sz <= n for i, (sz, st, p), n in zip(inner, EXPECTED[name],
                                                               shape[1:-1], strict=True)):
        units.append(inner)
    masks = _gradient_masks(model, shape, units)
    for unit, m in zip(units, masks, strict=True):
        assert np.array_equal(m, _mask([_per_axis(name, nd)], unit, shape[1:-1])), unit
    assert masks[-1].sum() > 0


def _gap_paths():
    a = [C(1, 2, 0), C(3, 1, 1)]
    b = [C(1, 2, -2, ph=2), C(3, 1, 1)]
    return [(a, a), (b, b)]


def _inception_paths():
    stem = [C(3, 1, 1)]
    box = lambda k: stem + [C(k, 1, k // 2)]  # noqa: E731
    return [(box(5), box(5)), (stem + [C(1)], box(7)), (box(7), stem + [C(1)])]


@pytest.mark.parametrize(("name", "paths"), [
    ("misaligned_gap", _gap_paths()),
    ("inception", _inception_paths()),
    ("transposed", [(TRANSPOSED_CHAIN, TRANSPOSED_CHAIN)]),
    ("transposed_k3", [(TRANSPOSED_K3_CHAIN, TRANSPOSED_K3_CHAIN)]),
    ("unet", [(UNET_CHAIN, UNET_CHAIN)]),
])
def test_multibranch_masks_match_gradient_support(name, paths):
    model, shape = _surrogate(name)
    out = jax.eval_shape(model.apply, _positive_variables(model, shape),
                         jax.ShapeDtypeStruct(shape, jnp.float32))
    units = _corner_units(out.shape[1:-1]) + [(3, 4), (5, 2)]
    masks = _gradient_masks(model, shape, units)
    for unit, m in zip(units, masks, strict=True):
        assert np.array_equal(m, _mask(paths, unit, shape[1:-1])), unit


def test_misaligned_gap_has_holes_and_inception_is_not_a_box():
    gap = _mask(_gap_paths(), (3, 3), (16, 16))
    # {4, 6, 8}^2 (branch A) union {6, 8, 10}^2 (branch B): 14 pixels, holes between.
    assert gap.sum() == 14 and np.array_equal(np.nonzero(gap.any(0))[0], [4, 6, 8, 10])
    assert gap[4, 4] and gap[10, 10] and not gap[4, 10] and not gap[5, 5]
    inc = _mask(_inception_paths(), (8, 8), (16, 16))
    assert inc.sum() == 7 * 7 + 2 * (2 * 3 * 1)  # 7x7 box + the arms of 3x9 and 9x3
    assert inc[8, 4] and not inc[4, 4]


@pytest.mark.parametrize("name", GLOBAL)
def test_global_models_depend_on_every_pixel(name):
    model, shape = _surrogate(name)
    out = jax.eval_shape(model.apply, _positive_variables(model, shape),
                         jax.ShapeDtypeStruct(shape, jnp.float32)).shape
    unit = tuple(0 for _ in out[1:-1])
    (m,) = _gradient_masks(model, shape, [unit], generic=True)
    assert m.all()


# ----------------------------------------------------------------------------------------------
# Shapes, parameter counts, primitives


def _abstract(model, shape):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    return variables, x


def _n_params(variables) -> int:
    return sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))


OUT_SHAPES = {
    "conv_stack": (1, 16, 16, 4),
    "conv_stack_strided": (1, 8, 8, 4),
    "vgg16": (1, 7, 7, 16),
    "alexnet": (1, 6, 6, 8),
    "resnet50": (1, 7, 7, 64),
    "resnet18": (1, 7, 7, 16),
    "dilated": (1, 40, 40, 4),
    "nonsquare": (1, 10, 12, 4),
    "transposed": (1, 16, 16, 4),
    "transposed_k3": (1, 16, 16, 4),
    "misaligned": (1, 8, 8, 4),
    "misaligned_gap": (1, 8, 8, 4),
    "inception": (1, 16, 16, 24),
    "unet": (1, 32, 32, 3),
    "unet_bilinear": (1, 32, 32, 3),
    "unet_nearest": (1, 32, 32, 3),
    "vit": (1, 16, 16),
    "vit_embed": (1, 16, 16),
    "conv1d": (1, 8, 4),
    "conv3d": (1, 6, 4, 4, 4),
    "gap_classifier": (1, 10),
    "spatial_attention": (1, 4, 4, 8),
    # 4 + 6*2 = 16 -> 8; 8 + 12*2 = 32 -> 16; 16 + 24*2 = 64 -> 32; 32 + 16*2 = 64.
    "densenet121": (1, 7, 7, 64),
    "swin_t": (1, 7, 7, 32),  # 8 * embed_dim
}


def test_zoo_lists_every_model_with_its_output_shape():
    models = Z.examples()
    assert set(models) == set(OUT_SHAPES)
    for name, (model, shape) in models.items():
        variables, x = _abstract(model, shape)
        assert jax.eval_shape(model.apply, variables, x).shape == OUT_SHAPES[name], name


@pytest.mark.parametrize(("model", "count"), [
    # torchvision feature extractors (no classifier / fc): independent published counts.
    (Z.VGG16(width=64), 14_714_688),
    (Z.AlexNet(width=64), 2_469_696),
    (Z.ResNet(width=64), 23_508_032),  # resnet50: 25,557,032 - fc 2,049,000
    (Z.ResNet(blocks=(2, 2, 2, 2), bottleneck=False, width=64), 11_176_512),  # resnet18
    (Z.DenseNet(), 6_953_856),  # densenet121: 7,978,856 - classifier 1,025,000
    (Z.SwinTransformer(), 27_519_354),  # swin_t: 28,288,354 - head 769,000
])
def test_full_width_parameter_counts_match_torchvision(model, count):
    variables, _ = _abstract(model, (1, 224, 224, 3))
    assert _n_params(variables) == count


def test_full_width_resnet50_shapes():
    model = Z.ResNet(width=64)
    variables, x = _abstract(model, (2, 224, 224, 3))
    assert jax.eval_shape(model.apply, variables, x).shape == (2, 7, 7, 2048)
    for s, (hw, ch) in enumerate([(56, 256), (28, 512), (14, 1024)], start=1):
        out = jax.eval_shape(model.clone(stages=s).apply, variables, x)
        assert out.shape == (2, hw, hw, ch)
    assert "batch_stats" in variables


def test_vgg_upto_and_vit_layers():
    vgg = Z.VGG16(width=2, upto=3)
    v, x = _abstract(vgg, (1, 224, 224, 3))
    assert jax.eval_shape(vgg.apply, v, x).shape == (1, 28, 28, 8)
    vit = Z.ViT(all_layers=True, depth=3)
    v, x = _abstract(vit, (2, 16, 24, 3))
    outs = jax.eval_shape(vit.apply, v, x)
    assert [o.shape for o in outs] == [(2, 24, 16)] * 4
    assert jax.eval_shape(Z.ViT(depth=3, upto=1).apply, v, x).shape == (2, 24, 16)


def _primitives(jaxpr, acc: set[str]) -> set[str]:
    for eqn in jaxpr.eqns:
        acc.add(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            _primitives(sub, acc)
    return acc


def _traced(model, shape, **apply_kw):
    variables, x = _abstract(model, shape)
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, **apply_kw))(variables, x)
    return closed.jaxpr


def test_transposed_conv_is_an_lhs_dilated_convolution():
    model, shape = Z.examples()["transposed"]
    convs = [e for e in _traced(model, shape).eqns if e.primitive.name == "conv_general_dilated"]
    assert [tuple(e.params["lhs_dilation"]) for e in convs] == [(1, 1), (2, 2), (1, 1)]
    assert tuple(convs[1].params["padding"]) == ((2, 2), (2, 2))
    assert tuple(convs[0].params["window_strides"]) == (2, 2)


def test_pool_choice_changes_the_primitive():
    model, shape = Z.examples()["vgg16"]
    assert "reduce_window_max" in _primitives(_traced(model, shape), set())
    avg = _primitives(_traced(model.clone(pool="avg", act=Z.identity), shape), set())
    assert "reduce_window_sum" in avg and "reduce_window_max" not in avg
    assert "custom_jvp_call" not in avg  # no ReLU left


def test_batchnorm_train_mode_reduces_over_the_batch():
    model = Z.ResNet(blocks=(1, 1, 1, 1), width=2, train=True)
    jaxpr = _traced(model, (2, 32, 32, 3), mutable=["batch_stats"])
    reductions = [e for e in jaxpr.eqns if e.primitive.name == "reduce_sum"]
    assert reductions and all(0 in e.params["axes"] for e in reductions)
    assert "reduce_sum" not in _primitives(_traced(model.clone(train=False), (2, 32, 32, 3)),
                                           set())


def test_attention_models_emit_dot_general_over_tokens():
    for name in ("vit", "spatial_attention"):
        model, shape = Z.examples()[name]
        assert "dot_general" in _primitives(_traced(model, shape), set())


# ----------------------------------------------------------------------------------------------
# ConvStack options and errors


def test_conv_stack_inits():
    x = jnp.ones((1, 9, 9, 2))
    uni = Z.ConvStack(n=2, kernel_init="uniform", act=Z.identity, features=3)
    v = uni.init(jax.random.key(0), x)
    # All-ones 3x3 kernels on ones: centre = (9*2) * (9*3).
    assert float(uni.apply(v, x)[0, 4, 4, 0]) == 18 * 27
    for init in ("random", "he", "lecun", "positive", "uniform_normalized"):
        k = Z.ConvStack(n=1, kernel_init=init).init(jax.random.key(1), x)["params"]["conv1"]
        k = np.asarray(k["kernel"])
        if init in ("positive", "uniform_normalized"):
            assert (k > 0).all()
        else:
            assert (k < 0).any() and (k > 0).any()
    assert np.allclose(Z.ConvStack(n=1, kernel_init="uniform_normalized").init(
        jax.random.key(0), x)["params"]["conv1"]["kernel"], 1 / 18)


def test_conv_stack_1d_3d_and_padding_modes():
    for shape, out in [((1, 20, 2), (1, 20, 4)), ((1, 6, 8, 8, 1), (1, 6, 8, 8, 4))]:
        m = Z.ConvStack(n=2)
        v, x = _abstract(m, shape)
        assert jax.eval_shape(m.apply, v, x).shape == out
    m = Z.ConvStack(n=2, padding="valid")
    v, x = _abstract(m, (1, 10, 10, 1))
    assert jax.eval_shape(m.apply, v, x).shape == (1, 6, 10 - 4, 4)
    m = Z.ConvStack(n=1, kernel=(1, 2), padding="same")
    v, x = _abstract(m, (1, 5, 5, 1))
    assert jax.eval_shape(m.apply, v, x).shape == (1, 5, 5, 4)


@pytest.mark.parametrize(("model", "shape", "match"), [
    (Z.ConvStack(n=0), (1, 8, 8, 1), "n must be"),
    (Z.ConvStack(n=2, strides=(1,)), (1, 8, 8, 1), "strides must have"),
    (Z.ConvStack(padding="SAME"), (1, 8, 8, 1), "padding must be"),
    (Z.ConvStack(kernel_init="glorot?"), (1, 8, 8, 1), "kernel_init"),
    (Z.ConvStack(), (8, 8), "1 to 3 spatial"),
    (Z.VGG16(pool="min"), (1, 32, 32, 3), "pool must be"),
    (Z.VGG16(upto=6), (1, 32, 32, 3), "upto"),
    (Z.ResNet(stages=5), (1, 32, 32, 3), "stages"),
    (Z.UNet(), (1, 30, 32, 1), "multiples of 4"),
    (Z.UNet(upsample="cubic"), (1, 32, 32, 1), "upsample"),
    (Z.ViT(), (1, 15, 16, 3), "multiples of patch"),
    (Z.ViT(upto=3), (1, 16, 16, 3), "upto"),
    (Z.MisalignedBlock(), (1, 15, 15, 1), "branch outputs differ"),
    (Z.Conv1DNet(), (1, 8, 8, 1), "1 spatial"),
    (Z.NonSquareNet(), (1, 8, 1), "2 spatial"),
    (Z.DenseNet(stages=5, growth=2, init_features=2), (1, 32, 32, 3), "stages"),
    (Z.DenseNet(pool="min"), (1, 32, 32, 3), "pool must be"),
    (Z.SwinTransformer(depths=(2,)), (1, 32, 32, 3), "one entry per stage"),
    (Z.SwinTransformer(stages=5), (1, 32, 32, 3), "stages"),
    (Z.SwinTransformer(window=0), (1, 32, 32, 3), "window"),
    (Z.SwinTransformer(embed_dim=4, heads=(3, 6, 12, 24)), (1, 32, 32, 3), "divisible"),
])
def test_bad_configuration_raises(model, shape, match):
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def test_explicit_padding_string_is_a_type_error():
    with pytest.raises(TypeError, match="explicit"):
        Z.pool_nd(jnp.zeros((1, 4, 4, 1)), "max", 2, 2, "SAME")


@pytest.mark.parametrize("cls", [Z.ConvStack, Z.DilatedStack, Z.TransposedConvNet,
                                 Z.MisalignedBlock, Z.SpatialAttentionNet, Z.ViT])
def test_models_without_pooling_take_no_pool_field(cls):
    with pytest.raises(TypeError, match="pool"):
        cls(pool="max")


# ----------------------------------------------------------------------------------------------
# DenseNet-121 and Swin-T


def test_full_width_densenet121_and_swin_t_shapes():
    """Full width at 224x224, abstractly (eval_shape only): every stage's map."""
    dense = Z.DenseNet()
    variables, x = _abstract(dense, (2, 224, 224, 3))
    assert "batch_stats" in variables
    for s, out in enumerate([(56, 64), (56, 256), (28, 512), (14, 1024), (7, 1024)]):
        got = jax.eval_shape(dense.clone(stages=s).apply, variables, x).shape
        assert got == (2, out[0], out[0], out[1]), s
    swin = Z.SwinTransformer()
    variables, x = _abstract(swin, (2, 224, 224, 3))
    for s, out in enumerate([(56, 96), (56, 96), (28, 192), (14, 384), (7, 768)]):
        got = jax.eval_shape(swin.clone(stages=s).apply, variables, x).shape
        assert got == (2, out[0], out[0], out[1]), s
    # Padding to the window and to even sizes: 100x60 -> 25x15 tokens -> ... -> 4x2.
    x = jax.ShapeDtypeStruct((1, 100, 60, 3), jnp.float32)
    assert jax.eval_shape(swin.apply, variables, x).shape == (1, 4, 2, 768)


def _trf(model: nn.Module, shape: tuple[int, ...]):
    """``rfjax.trf`` of ``model.apply`` with positive float32 weights (from the abstract
    variables: an eager ``model.init`` of a deep net is slow)."""
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32),
                             _positive_variables(model, shape))
    return rfjax.trf(functools.partial(model.apply, variables), shape)


@pytest.mark.slow  # the whole 121-layer graph through rfjax.trf
def test_densenet121_trf_matches_the_recurrence_at_every_dense_layer():
    """DenseNet-121 (small width; channels do not change the field) at 64x64, where the
    closed form still holds (2x2 output): the output's field and, in the per-layer table, the
    field of every dense layer's 3x3 conv and every transition's pool, by the hand recurrence
    on the longest path."""
    model, _ = Z.examples()["densenet121"]
    t = _trf(model, (1, 64, 64, 3))
    expected = tuple(zip(*EXPECTED["densenet121"], strict=True))
    assert (t.size, t.stride, t.padding) == expected == ((2071,) * 2, (32,) * 2, (1021,) * 2)
    assert t.aligned and t.output_shape == (2, 2) and t.is_global == (False, False)
    rows = {r.name: r for r in t.layers
            if r.primitive in ("conv_general_dilated", "reduce_window_sum")}
    named = _densenet_chain((6, 12, 24, 16), named=True)
    checked = 0
    for i, (name, _) in enumerate(named):
        if name is None:
            continue
        size, stride, pad = _recurrence([layer for _, layer in named[:i + 1]])
        r = rows[name]
        assert (r.size, r.stride, r.padding) == ((size,) * 2, (stride,) * 2, (pad,) * 2), name
        checked += 1
    assert checked == 6 + 12 + 24 + 16 + 3
    # Per stage (dense block outputs): 59/4/29, 255/8/125, 1031/16/509, 2071/32/1021.
    ends = [rows[f"DenseNet/denseblock{b + 1}_layer{n}/conv2"]
            for b, n in enumerate((6, 12, 24, 16))]
    assert [(r.size[0], r.stride[0], r.padding[0]) for r in ends] == [
        (59, 4, 29), (255, 8, 125), (1031, 16, 509), (2071, 32, 1021)]


def _swin_axis(u: int, n: int, window: int, depth: int, patch: int = 4) -> set[int]:
    """Input pixels along one axis that token ``u`` of a Swin stage depends on.

    ``n`` tokens on the axis, ``depth`` blocks alternating regular and shifted windows (shift
    ``window // 2``). Where ``n <= window`` the window is ``n`` and nothing shifts; else the
    axis is padded (bottom/right, constants) to a multiple of the window. Block by block from
    the output: the rolled map ``y[r] = x[(r + s) % n_pad]`` puts token ``t`` at ``(t - s) %
    n_pad``; its window there is ``[r // w * w, +w)``, i.e. tokens ``(q + s) % n_pad`` of the
    unrolled map; padding tokens (``>= n``) depend on nothing. Then each token is one
    ``patch``-pixel patch.
    """
    win = min(window, n)
    shift = window // 2 if n > window else 0
    n_pad = -(-n // win) * win
    cur = {u}
    for b in reversed(range(depth)):
        s = shift if b % 2 else 0
        nxt: set[int] = set()
        for t in cur:
            start = (t - s) % n_pad // win * win
            nxt |= {(q + s) % n_pad for q in range(start, start + win)}
        cur = {t for t in nxt if t < n}
    return {patch * t + a for t in cur for a in range(patch)}


def _swin_mask(unit, tokens, window, depth, patch=4):
    """Windows are products of row and column ranges, so the field is the product set."""
    sets = []
    for u, n in zip(unit, tokens, strict=True):
        ax = np.zeros(n * patch, bool)
        ax[sorted(_swin_axis(u, n, window, depth, patch))] = True
        sets.append(ax)
    return np.multiply.outer(*sets)


def test_swin_axis_sets_by_hand():
    # 16 tokens, window 4, shift 2, after a regular then a shifted block (patch 1):
    # token 8 -> rolled 6 -> shifted window {6, 7, 8, 9} -> regular windows [4, 12);
    # token 0 -> rolled 14 -> {14, 15, 0, 1} -> [12, 16) and [0, 4): the cyclic shift joins
    # the two ends, a field with a hole.
    assert _swin_axis(8, 16, 4, 2, patch=1) == set(range(4, 12))
    assert _swin_axis(5, 16, 4, 2, patch=1) == set(range(0, 8))
    assert _swin_axis(0, 16, 4, 2, patch=1) == set(range(0, 4)) | set(range(12, 16))
    assert _swin_axis(0, 16, 4, 1, patch=1) == set(range(0, 4))  # regular windows only
    assert _swin_axis(2, 3, 4, 2, patch=1) == {0, 1, 2}  # map smaller than the window
    # 18 tokens padded to 20: token 17 -> rolled 15 -> {14..17} (18, 19 are padding).
    assert _swin_axis(17, 18, 4, 2, patch=1) == set(range(12, 18))


def test_swin_window_geometry_and_shift_mask():
    # Not larger than the window: one window of the map's size, no shift, no padding.
    assert S._window_geometry(7, 7, 7, 3) == ((7, 7), (0, 0), (0, 0))
    assert S._window_geometry(5, 9, 7, 3) == ((5, 7), (0, 3), (0, 5))
    assert S._window_geometry(56, 56, 7, 3) == ((7, 7), (3, 3), (0, 0))
    mask = S._shift_mask((8, 8), (4, 4), (2, 2))
    # After rolling by -2, windows 0..3 (row-major) hold 1, 2, 2 and 4 regions of the
    # unrolled map; -100 between tokens of different regions.
    assert mask.shape == (4, 16, 16) and set(np.unique(mask)) <= {0.0, -100.0}
    assert [int((m != 0).sum()) for m in mask] == [0, 256 - 2 * 64, 256 - 2 * 64, 256 - 4 * 16]
    index = S._relative_position_index((2, 2), 7)
    # token (0, 0) vs (1, 1): offset (-1, -1) -> (5, 5) in the 13x13 table.
    assert index.shape == (4, 4) and index[0, 3] == 5 * 13 + 5 and index[3, 0] == 7 * 13 + 7
    attn = S.WindowAttention(heads=1, window=7, shift=3)
    for hw, rolled in ((7, False), (14, True)):
        jaxpr = _traced(attn, (1, hw, hw, 4))
        assert ("concatenate" in _primitives(jaxpr, set())) == rolled, hw


def _swin_small():
    """One Swin stage (regular then shifted block), window 4, on 64x72 pixels: 16x18 tokens,
    the 18 padded to 20 for the windows. ``stages=1`` of two, so no final LayerNorm: its
    output summed over the channels is constant at initialisation (scale 1, bias 0), which
    would zero the oracle's gradient."""
    return (Z.SwinTransformer(embed_dim=4, depths=(2, 2), heads=(1, 1), window=4, stages=1),
            (1, 64, 72, 3))


def test_swin_stage_masks_match_gradient_support_and_trf():
    model, shape = _swin_small()
    tokens = (16, 18)
    units = _corner_units(tokens) + [(8, 8), (5, 13), (3, 17), (15, 1)]
    oracle = _gradient_masks(model, shape, units, generic=True)
    t = _trf(model, shape)
    assert t.output_shape == tokens and t.is_global == (False, False)
    assert not t.aligned  # windows are fixed by position, not one box moving with the unit
    engine = t.masks(units)
    for unit, g, m in zip(units, oracle, engine, strict=True):
        hand = _swin_mask(unit, tokens, 4, 2)
        assert np.array_equal(g, hand), unit
        assert np.array_equal(m, hand), unit
    # Interior unit: two regular windows per axis (8 tokens, 32 pixels); a corner unit's field
    # has a hole (the cyclic shift joins the first and last windows).
    assert engine[units.index((8, 8))].sum() == 32 * 32
    # (rows: 16 tokens, the last window wraps onto the first; columns: 18 tokens padded to 20,
    # the wrap lands on padding, so no hole).
    corner = engine[units.index((0, 0))]
    assert corner[0, 0] and corner[63, 0] and not corner[32, 0] and not corner[0, 71]
    assert corner.sum() == (16 + 16) * 16


@pytest.mark.slow  # two traces of Swin-T through rfjax.trf
def test_swin_t_stage1_masks_at_224_and_global_stages():
    """Swin-T (small width) at 224: stage 1 (56x56 tokens, window 7, shift 3) masks by hand;
    stages 3 and 4 are global (14x14 tokens: a shifted window meets both regular windows of
    each axis; 7x7: one window), stages 1 and 2 are not."""
    model, shape = Z.examples()["swin_t"]
    stage1 = _trf(model.clone(stages=1), shape)
    units = [(0, 0), (55, 55), (28, 28), (3, 52), (10, 30)]
    for unit, m in zip(units, stage1.masks(units), strict=True):
        assert np.array_equal(m, _swin_mask(unit, (56, 56), 7, 2)), unit
    assert stage1.is_global == (False, False) and not stage1.aligned
    t = _trf(model, shape)
    assert t.output_shape == (7, 7) and t.is_global == (True, True)
    ends = {r.name: r for r in t.layers if r.primitive == "dot_general"}
    glob = [ends[f"SwinTransformer/stage{s + 1}_block{d}/mlp_fc2"].is_global
            for s, d in enumerate((2, 2, 6, 2))]
    assert glob == [(False, False), (False, False), (True, True), (True, True)]
