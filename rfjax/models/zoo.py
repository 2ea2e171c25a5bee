"""Reference architectures (Flax linen) for the receptive-field engines and the paper figures.

Conventions shared by every model here:

- Inputs are channels-last with a leading batch axis, ``(N, *spatial, C)``; ``model.apply(
  variables, x)`` returns one array (a tuple only for ``ViT(all_layers=True)``).
- Paddings are explicit pairs matching the reference implementations (torchvision's
  ``padding=p`` is ``((p, p), ...)``), never ``'SAME'``, which JAX pads asymmetrically for
  strided layers.
- ``act``: the nonlinearity (``identity`` for none). ``pool``: ``"max"`` or ``"avg"``, used
  wherever the original network max-pools (average pooling includes the zero padding, so it
  has the same support). ``act=identity, pool="avg"`` with positive weights gives the
  "positive linear surrogate" whose gradient support is the exact theoretical receptive field.
- ``width``: the channel count of the first stage (small by default: the receptive field does
  not depend on it). Full torchvision width is 64 for ``VGG16``, ``AlexNet`` and ``ResNet``.
- BatchNorm (``ResNet`` only) runs in inference mode (running averages) unless ``train=True``;
  in training mode it uses batch statistics, which couples the images of a batch, and
  ``apply`` must be called with ``mutable=["batch_stats"]`` (it then returns ``(y, updates)``).

The expected theoretical receptive fields (by the textbook recurrence) are recorded in
``tests/test_zoo.py``; ``examples()`` lists one small instance of each model with an example input
shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

Act = Callable[[Array], Array]
#: Explicit padding: an int (same on both sides of every axis), one int per axis, or one
#: ``(low, high)`` pair per axis.
Padding = int | Sequence[int] | Sequence[tuple[int, int]]

__all__ = [
    "AlexNet",
    "BasicBlock",
    "Bottleneck",
    "Conv1DNet",
    "Conv3DNet",
    "ConvStack",
    "DilatedStack",
    "GAPClassifier",
    "InceptionNet",
    "MisalignedBlock",
    "NonSquareNet",
    "ResNet",
    "SpatialAttentionNet",
    "TransformerBlock",
    "TransposedConvNet",
    "UNet",
    "VGG16",
    "ViT",
    "identity",
    "init_variables",
    "pool_nd",
    "examples",
]


def identity(x: Array) -> Array:
    """The identity activation (``act=identity`` drops the nonlinearities)."""
    return x


def _pairs(padding: Padding, nd: int, where: str) -> tuple[tuple[int, int], ...]:
    """Normalise an explicit padding to one ``(low, high)`` pair per spatial axis."""
    if isinstance(padding, str):
        raise TypeError(f"{where}: padding must be explicit (int, ints or (low, high) pairs), "
                        f"got the string {padding!r}")
    if isinstance(padding, int):
        return ((padding, padding),) * nd
    padding = tuple(padding)
    if len(padding) != nd:
        raise ValueError(f"{where}: padding needs one entry per spatial axis ({nd}), "
                         f"got {padding!r}")
    out = []
    for p in padding:
        if isinstance(p, int):
            out.append((p, p))
        else:
            lo, hi = p
            out.append((int(lo), int(hi)))
    return tuple(out)


def _tuple(v: int | Sequence[int], nd: int, where: str) -> tuple[int, ...]:
    """Normalise a size (kernel, stride, dilation) to one int per spatial axis."""
    if isinstance(v, int):
        return (v,) * nd
    v = tuple(int(a) for a in v)
    if len(v) != nd:
        raise ValueError(f"{where}: expected one value per spatial axis ({nd}), got {v!r}")
    return v


def _check_pool(pool: str, where: str) -> None:
    if pool not in ("max", "avg"):
        raise ValueError(f"{where}: pool must be 'max' or 'avg', got {pool!r}")


def _spatial(x: Array, where: str, nd: int | None = None) -> int:
    """Number of spatial axes of an ``(N, *spatial, C)`` input, checked."""
    if x.ndim < 3 or x.ndim > 5:
        raise ValueError(f"{where}: expected an input (N, *spatial, C) with 1 to 3 spatial "
                         f"axes, got shape {x.shape}")
    if nd is not None and x.ndim != nd + 2:
        raise ValueError(f"{where}: expected an input with {nd} spatial axes (rank {nd + 2}), "
                         f"got shape {x.shape}")
    return x.ndim - 2


def pool_nd(
    x: Array,
    kind: str,
    window: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: Padding = 0,
) -> Array:
    """Max or average pooling of ``(N, *spatial, C)`` with explicit padding.

    ``kind="max"`` pads with -inf (``reduce_window_max``); ``kind="avg"`` pads with zeros and
    divides by the full window size (``count_include_pad=True``, ``reduce_window_sum``), so the
    two have the same structural support. ``strides`` defaults to ``window``.
    """
    nd = _spatial(x, "pool_nd")
    _check_pool(kind, "pool_nd")
    window = _tuple(window, nd, "pool_nd window")
    strides = window if strides is None else _tuple(strides, nd, "pool_nd strides")
    pads = _pairs(padding, nd, "pool_nd")
    if kind == "max":
        return nn.max_pool(x, window, strides, pads)
    return nn.avg_pool(x, window, strides, pads, count_include_pad=True)


def _conv(
    features: int,
    kernel: Sequence[int],
    strides: Sequence[int] | int = 1,
    padding: Padding = 0,
    dilation: Sequence[int] | int = 1,
    use_bias: bool = True,
    name: str | None = None,
    **kw: Any,
) -> nn.Conv:
    nd = len(kernel)
    return nn.Conv(
        features,
        tuple(kernel),
        strides=_tuple(strides, nd, "conv strides"),
        padding=_pairs(padding, nd, "conv"),
        kernel_dilation=_tuple(dilation, nd, "conv dilation"),
        use_bias=use_bias,
        name=name,
        **kw,
    )


def _same_pad(kernel: Sequence[int], dilation: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Centred padding ``d*(k-1)`` split low-first (``'SAME'`` for stride 1)."""
    out = []
    for k, d in zip(kernel, dilation, strict=True):
        total = d * (k - 1)
        out.append((total // 2, total - total // 2))
    return tuple(out)


_INITS: dict[str, Callable[..., Any]] = {
    # All weights 1 (the paper's "Uniform" net); outputs grow like (k^d C)^n.
    "uniform": nn.initializers.ones,
    "random": nn.initializers.variance_scaling(2.0, "fan_in", "normal"),  # He, zero-mean
    "he": nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
    "lecun": nn.initializers.variance_scaling(1.0, "fan_in", "normal"),
}


def _uniform_normalized(key: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    """All weights ``1 / fan_in``: the "Uniform" net without growth of the activations."""
    del key
    fan_in = 1
    for s in shape[:-1]:
        fan_in *= s
    return jnp.full(shape, 1.0 / fan_in, dtype)


def _positive(key: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    """Positive He-scaled weights ``|N(0, 2/fan_in)| + 1e-3/fan_in`` (no cancellation)."""
    fan_in = 1
    for s in shape[:-1]:
        fan_in *= s
    w = jnp.abs(jax.random.normal(key, shape, dtype)) * jnp.sqrt(2.0 / fan_in)
    return w + jnp.asarray(1e-3 / fan_in, dtype)


_INITS["uniform_normalized"] = _uniform_normalized
_INITS["positive"] = _positive


def _kernel_init(init: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(init):
        return init
    if init not in _INITS:
        raise ValueError(f"kernel_init must be one of {sorted(_INITS)} or an initializer "
                         f"callable, got {init!r}")
    return _INITS[init]


# ----------------------------------------------------------------------------------------------
# Generic sequential stacks


class ConvStack(nn.Module):
    """``n`` convolutions in sequence, each followed by ``act`` (the paper-figure network).

    Works for 1, 2 or 3 spatial axes (taken from the input). Per layer ``i``: kernel ``kernel``
    (int: square/cubic; tuple: per axis), stride ``strides[i]``, dilation ``dilations[i]``.

    Attributes:
      n: number of convolution layers (>= 1).
      kernel: kernel size, an int or one int per spatial axis.
      features: output channels, an int for every layer or one per layer.
      strides: per-layer strides (ints or per-axis tuples); default all 1 (no subsampling).
      dilations: per-layer kernel dilations; default all 1.
      padding: ``"same"`` (centred: ``d*(k-1)`` split low-first, so the field of unit ``u``
        is centred on ``u*stride`` for odd kernels), ``"valid"`` (none), or an explicit
        padding applied to every layer.
      use_bias: add a bias (initialised to zero).
      kernel_init: ``"uniform"`` (all ones), ``"uniform_normalized"`` (all ``1/fan_in``),
        ``"random"`` / ``"he"`` (zero-mean Gaussian, variance ``2/fan_in``), ``"lecun"``
        (variance ``1/fan_in``), ``"positive"`` (``|He|``), or an initializer callable.
      act: nonlinearity after each layer (``identity`` for a linear net).
      act_on_last: whether ``act`` also follows the last layer.
      pool: unused (no pooling); kept so every zoo model takes the same fields.
    """

    n: int = 4
    kernel: int | Sequence[int] = 3
    features: int | Sequence[int] = 4
    strides: Sequence[int | Sequence[int]] | None = None
    dilations: Sequence[int | Sequence[int]] | None = None
    padding: str | Padding = "same"
    use_bias: bool = False
    kernel_init: str | Callable[..., Any] = "random"
    act: Act = nn.relu
    act_on_last: bool = True
    pool: str = "max"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``x``: ``(N, *spatial, C)`` -> ``(N, *spatial', features[-1])``."""
        nd = _spatial(x, "ConvStack")
        if self.n < 1:
            raise ValueError(f"ConvStack: n must be >= 1, got {self.n}")
        feats = ([self.features] * self.n if isinstance(self.features, int)
                 else list(self.features))
        strides = [1] * self.n if self.strides is None else list(self.strides)
        dils = [1] * self.n if self.dilations is None else list(self.dilations)
        for nm, lst in (("features", feats), ("strides", strides), ("dilations", dils)):
            if len(lst) != self.n:
                raise ValueError(f"ConvStack: {nm} must have n={self.n} entries, got {lst!r}")
        kernel = _tuple(self.kernel, nd, "ConvStack kernel")
        init = _kernel_init(self.kernel_init)
        for i in range(self.n):
            d = _tuple(dils[i], nd, "ConvStack dilations")
            if self.padding == "same":
                pad: Padding = _same_pad(kernel, d)
            elif self.padding == "valid":
                pad = 0
            elif isinstance(self.padding, str):
                raise ValueError(f"ConvStack: padding must be 'same', 'valid' or explicit, "
                                 f"got {self.padding!r}")
            else:
                pad = self.padding
            x = _conv(feats[i], kernel, strides[i], pad, d, self.use_bias,
                      name=f"conv{i + 1}", kernel_init=init)(x)
            if i < self.n - 1 or self.act_on_last:
                x = self.act(x)
        return x


class DilatedStack(nn.Module):
    """3x3 convolutions with dilations ``(1, 2, 4, 8)`` (padding = dilation): TRF 31.

    Output has the input's spatial shape. Any number of spatial axes.
    """

    dilations: Sequence[int] = (1, 2, 4, 8)
    kernel: int = 3
    features: int = 4
    act: Act = nn.relu
    pool: str = "max"  # unused

    @nn.compact
    def __call__(self, x: Array) -> Array:
        nd = _spatial(x, "DilatedStack")
        for i, d in enumerate(self.dilations):
            pad = d * (self.kernel - 1) // 2
            x = self.act(_conv(self.features, (self.kernel,) * nd, 1, pad, d,
                               name=f"conv{i + 1}")(x))
        return x


class NonSquareNet(nn.Module):
    """Non-square kernels and pooling, 2-D.

    Layers: conv 3x5 pad (1, 2); conv 1x7 pad (0, 3); conv 7x1 stride (2, 1) pad (3, 0);
    pool 3x2 stride (1, 2) pad (1, 0). TRF (H / W): size 13 / 12, stride 2 / 2,
    padding 6 / 5. Output ``(N, ceil(H/2), floor(W/2), features)``.
    """

    features: int = 4
    act: Act = nn.relu
    pool: str = "max"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "NonSquareNet", 2)
        _check_pool(self.pool, "NonSquareNet")
        x = self.act(_conv(self.features, (3, 5), 1, ((1, 1), (2, 2)), name="conv3x5")(x))
        x = self.act(_conv(self.features, (1, 7), 1, ((0, 0), (3, 3)), name="conv1x7")(x))
        x = self.act(_conv(self.features, (7, 1), (2, 1), ((3, 3), (0, 0)), name="conv7x1")(x))
        return pool_nd(x, self.pool, (3, 2), (1, 2), ((1, 1), (0, 0)))


class Conv1DNet(nn.Module):
    """1-D net on ``(N, L, C)``: conv k5 s2 p2; conv k3 dil 2 p2; pool 2 s2; conv k3 p1.

    TRF: size 23, stride 4, padding 10. Output ``(N, L//4, features)`` for ``L % 4 == 0``.
    """

    features: int = 4
    act: Act = nn.relu
    pool: str = "max"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "Conv1DNet", 1)
        _check_pool(self.pool, "Conv1DNet")
        x = self.act(_conv(self.features, (5,), 2, 2, name="conv1")(x))
        x = self.act(_conv(self.features, (3,), 1, 2, 2, name="conv2")(x))
        x = pool_nd(x, self.pool, 2, 2)
        return self.act(_conv(self.features, (3,), 1, 1, name="conv3")(x))


class Conv3DNet(nn.Module):
    """3-D net on ``(N, D, H, W, C)`` with anisotropic strides and dilations.

    Layers: conv 3x3x3 p1; conv 1x3x3 stride (1, 2, 2) pad (0, 1, 1); pool 2x2x2 s2;
    conv 3x3x3 dilation (2, 1, 1) pad (2, 1, 1). TRF (D / H / W): size 12 / 15 / 15,
    stride 2 / 4 / 4, padding 5 / 6 / 6.
    """

    features: int = 4
    act: Act = nn.relu
    pool: str = "max"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "Conv3DNet", 3)
        _check_pool(self.pool, "Conv3DNet")
        x = self.act(_conv(self.features, (3, 3, 3), 1, 1, name="conv1")(x))
        x = self.act(_conv(self.features, (1, 3, 3), (1, 2, 2), (0, 1, 1), name="conv2")(x))
        x = pool_nd(x, self.pool, 2, 2)
        return self.act(_conv(self.features, (3, 3, 3), 1, (2, 1, 1), (2, 1, 1),
                              name="conv3")(x))


# ----------------------------------------------------------------------------------------------
# Classic ImageNet feature extractors (torchvision layouts)


class VGG16(nn.Module):
    """VGG-16 features (torchvision layout) up to ``pool{upto}``.

    Blocks of 3x3 convolutions (padding 1, bias) with ``width * (1, 2, 4, 8, 8)`` channels,
    each block followed by a 2x2 stride-2 pool. At 224x224 the pool5 output is 7x7 and its TRF
    is size 212, stride 32, padding 90. ``width=64`` is torchvision's VGG-16 (14,714,688
    parameters).

    Attributes:
      width: channels of block 1.
      upto: number of blocks (1..len(blocks)); the output is that block's pooled map.
      blocks: convolutions per block (VGG-16: (2, 2, 3, 3, 3)).
    """

    width: int = 8
    upto: int = 5
    blocks: Sequence[int] = (2, 2, 3, 3, 3)
    act: Act = nn.relu
    pool: str = "max"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "VGG16", 2)
        _check_pool(self.pool, "VGG16")
        if not 1 <= self.upto <= len(self.blocks):
            raise ValueError(f"VGG16: upto must be in 1..{len(self.blocks)}, got {self.upto}")
        mult = (1, 2, 4, 8, 8, 8, 8, 8)
        for b in range(self.upto):
            for c in range(self.blocks[b]):
                x = _conv(self.width * mult[b], (3, 3), 1, 1, name=f"conv{b + 1}_{c + 1}")(x)
                x = self.act(x)
            x = pool_nd(x, self.pool, 2, 2)
        return x


class AlexNet(nn.Module):
    """AlexNet features (torchvision layout) up to the last pool.

    conv 11x11 s4 p2; pool 3 s2; conv 5x5 p2; pool 3 s2; 3x conv 3x3 p1; pool 3 s2, with
    ``width * (1, 3, 6, 4, 4)`` channels. At 224x224 the output is 6x6; TRF size 195,
    stride 32, padding 66. ``width=64`` is torchvision's (2,469,696 parameters).
    """

    width: int = 8
    act: Act = nn.relu
    pool: str = "max"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "AlexNet", 2)
        _check_pool(self.pool, "AlexNet")
        w = self.width
        x = self.act(_conv(w, (11, 11), 4, 2, name="conv1")(x))
        x = pool_nd(x, self.pool, 3, 2)
        x = self.act(_conv(3 * w, (5, 5), 1, 2, name="conv2")(x))
        x = pool_nd(x, self.pool, 3, 2)
        x = self.act(_conv(6 * w, (3, 3), 1, 1, name="conv3")(x))
        x = self.act(_conv(4 * w, (3, 3), 1, 1, name="conv4")(x))
        x = self.act(_conv(4 * w, (3, 3), 1, 1, name="conv5")(x))
        return pool_nd(x, self.pool, 3, 2)


def _bn(train: bool, name: str) -> nn.BatchNorm:
    # torchvision: momentum 0.1 (flax 0.9), eps 1e-5.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1, 3x3 (carries the stride, pad 1), 1x1 (x4), + shortcut.

    The shortcut is a 1x1 strided projection + BN when ``project`` (first block of a stage).
    """

    features: int
    stride: int = 1
    project: bool = False
    act: Act = nn.relu
    train: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        f = self.features
        y = self.act(_bn(self.train, "bn1")(_conv(f, (1, 1), 1, 0, use_bias=False,
                                                  name="conv1")(x)))
        y = self.act(_bn(self.train, "bn2")(_conv(f, (3, 3), self.stride, 1, use_bias=False,
                                                  name="conv2")(y)))
        y = _bn(self.train, "bn3")(_conv(4 * f, (1, 1), 1, 0, use_bias=False, name="conv3")(y))
        if self.project:
            x = _bn(self.train, "downsample_bn")(
                _conv(4 * f, (1, 1), self.stride, 0, use_bias=False, name="downsample")(x))
        return self.act(x + y)


class BasicBlock(nn.Module):
    """ResNet-18/34 basic block: two 3x3 (pad 1, stride in the first), + shortcut."""

    features: int
    stride: int = 1
    project: bool = False
    act: Act = nn.relu
    train: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        f = self.features
        y = self.act(_bn(self.train, "bn1")(_conv(f, (3, 3), self.stride, 1, use_bias=False,
                                                  name="conv1")(x)))
        y = _bn(self.train, "bn2")(_conv(f, (3, 3), 1, 1, use_bias=False, name="conv2")(y))
        if self.project:
            x = _bn(self.train, "downsample_bn")(
                _conv(f, (1, 1), self.stride, 0, use_bias=False, name="downsample")(x))
        return self.act(x + y)


class ResNet(nn.Module):
    """ResNet (torchvision layout, v1.5) features: output of ``layer{stages}``.

    Stem: conv 7x7 s2 p3, BN, act, pool 3 s2 p1. Stages 1..4 with ``blocks`` blocks and
    ``width * (1, 2, 4, 8)`` bottleneck widths (outputs x4); stages 2..4 downsample by 2 in the
    first block's 3x3 conv and project the shortcut by a 1x1 stride-2 conv + BN. ResNet-50 is
    ``blocks=(3, 4, 6, 3)``: at 224x224 layer4 is 7x7, TRF size 427, stride 32, padding 213;
    ``width=64`` gives torchvision's ResNet-50 without ``fc`` (23,508,032 parameters).
    ``bottleneck=False`` with ``blocks=(2, 2, 2, 2)`` is ResNet-18.

    BatchNorm is in inference mode unless ``train=True`` (then call ``apply(...,
    mutable=["batch_stats"])``; batch statistics couple the images of a batch).
    """

    blocks: Sequence[int] = (3, 4, 6, 3)
    width: int = 8
    bottleneck: bool = True
    stages: int = 4
    act: Act = nn.relu
    pool: str = "max"
    train: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "ResNet", 2)
        _check_pool(self.pool, "ResNet")
        if not 0 <= self.stages <= len(self.blocks):
            raise ValueError(f"ResNet: stages must be in 0..{len(self.blocks)}, "
                             f"got {self.stages}")
        x = _conv(self.width, (7, 7), 2, 3, use_bias=False, name="conv1")(x)
        x = self.act(_bn(self.train, "bn1")(x))
        x = pool_nd(x, self.pool, 3, 2, 1)
        block = Bottleneck if self.bottleneck else BasicBlock
        expansion = 4 if self.bottleneck else 1
        in_ch = self.width
        for s in range(self.stages):
            f = self.width * 2**s
            for b in range(self.blocks[s]):
                stride = 2 if (b == 0 and s > 0) else 1
                project = b == 0 and (stride != 1 or in_ch != f * expansion)
                x = block(f, stride, project, self.act, self.train,
                          name=f"layer{s + 1}_{b}")(x)
                in_ch = f * expansion
        return x


# ----------------------------------------------------------------------------------------------
# Graphs: transposed convolutions, misaligned branches, Inception, U-Net


class TransposedConvNet(nn.Module):
    """Down then up: conv 3x3 s2 p1; transposed conv; conv 3x3 p1.

    The transposed convolution (``nn.ConvTranspose``, a ``conv_general_dilated`` with
    ``lhs_dilation=up_stride``) uses explicit padding on the dilated input: torchvision's
    ``ConvTranspose2d(k, s, padding=p, output_padding=q)`` is ``up_padding=((k-1-p,
    k-1-p+q),) * 2``. Default ``k=4, s=2, p=1``: output ``(N, H, W, features)`` for even H, W;
    every output unit sees 7 input pixels per axis, ``[u-3, u+3]`` for even ``u`` and
    ``[u-4, u+2]`` for odd ``u`` (not one uniform stride/padding). ``up_kernel=3,
    up_padding=((1, 2), (1, 2))`` gives per-unit sizes 7 (even ``u``) and 5 (odd ``u``).
    """

    features: int = 4
    up_kernel: int = 4
    up_stride: int = 2
    up_padding: Padding = ((2, 2), (2, 2))
    act: Act = nn.relu
    pool: str = "max"  # unused

    @nn.compact
    def __call__(self, x: Array) -> Array:
        nd = _spatial(x, "TransposedConvNet")
        x = self.act(_conv(self.features, (3,) * nd, 2, 1, name="down")(x))
        x = nn.ConvTranspose(self.features, (self.up_kernel,) * nd,
                             strides=(self.up_stride,) * nd,
                             padding=_pairs(self.up_padding, nd, "TransposedConvNet"),
                             name="up")(x)
        x = self.act(x)
        return self.act(_conv(self.features, (3,) * nd, 1, 1, name="conv")(x))


class MisalignedBlock(nn.Module):
    """Two strided branches joined by ``add``, whose per-unit fields are not centred alike.

    Branch A: conv ``kernel_a`` stride ``stride`` padding ``padding_a``; branch B: conv
    ``kernel_b`` stride ``stride`` padding ``padding_b`` (negative padding crops). Then
    ``tail`` 3x3 pad-1 convolutions. Default (2-D, stride 2): A is 3x3 pad ((0, 1), (0, 1)),
    seeing ``[2u, 2u+2]``; B is 1x1 pad 0, seeing ``{2u}``. With ``kernel_b=1, kernel_a=1,
    padding_b=((-2, 2), (-2, 2))`` the union is ``{2u, 2u+2}``: a field with holes.
    Both branches must give the same output shape (else ``ValueError``; use even sizes).
    """

    kernel_a: int = 3
    padding_a: Padding = ((0, 1), (0, 1))
    kernel_b: int = 1
    padding_b: Padding = ((0, 0), (0, 0))
    stride: int = 2
    tail: int = 0
    features: int = 4
    act: Act = nn.relu
    pool: str = "max"  # unused

    @nn.compact
    def __call__(self, x: Array) -> Array:
        nd = _spatial(x, "MisalignedBlock")
        a = _conv(self.features, (self.kernel_a,) * nd, self.stride,
                  _pairs(self.padding_a, nd, "MisalignedBlock padding_a"), name="branch_a")(x)
        b = _conv(self.features, (self.kernel_b,) * nd, self.stride,
                  _pairs(self.padding_b, nd, "MisalignedBlock padding_b"), name="branch_b")(x)
        if a.shape != b.shape:
            raise ValueError(f"MisalignedBlock: branch outputs differ in shape ({a.shape} vs "
                             f"{b.shape}) for input {x.shape}; adjust paddings or input size")
        x = self.act(a + b)
        for i in range(self.tail):
            x = self.act(_conv(self.features, (3,) * nd, 1, 1, name=f"tail{i + 1}")(x))
        return x


class InceptionNet(nn.Module):
    """Stem conv 3x3 p1, then one Inception block of parallel branches, concatenated.

    Branches (all stride 1, centred): 1x1; 1x1 -> 3x3 p1; 1x1 -> 5x5 p2; pool 3 s1 p1 -> 1x1;
    and, if ``cross``, 1x7 p(0, 3) and 7x1 p(3, 0) as two separate branches. With ``cross``
    the field of a unit is not a box: 7x7 ∪ 3x9 ∪ 9x3 (centred; extent 9); without, 7x7.
    Output ``(N, H, W, features * (4 + 2 * cross))``.
    """

    features: int = 4
    cross: bool = True
    act: Act = nn.relu
    pool: str = "max"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "InceptionNet", 2)
        _check_pool(self.pool, "InceptionNet")
        f = self.features
        x = self.act(_conv(f, (3, 3), 1, 1, name="stem")(x))
        b1 = self.act(_conv(f, (1, 1), name="b1x1")(x))
        b3 = self.act(_conv(f, (3, 3), 1, 1, name="b3x3")(
            self.act(_conv(f, (1, 1), name="b3x3_reduce")(x))))
        b5 = self.act(_conv(f, (5, 5), 1, 2, name="b5x5")(
            self.act(_conv(f, (1, 1), name="b5x5_reduce")(x))))
        bp = self.act(_conv(f, (1, 1), name="bpool_proj")(pool_nd(x, self.pool, 3, 1, 1)))
        branches = [b1, b3, b5, bp]
        if self.cross:
            branches.append(self.act(_conv(f, (1, 7), 1, ((0, 0), (3, 3)), name="b1x7")(x)))
            branches.append(self.act(_conv(f, (7, 1), 1, ((3, 3), (0, 0)), name="b7x1")(x)))
        return jnp.concatenate(branches, axis=-1)


class UNet(nn.Module):
    """Small 2-D U-Net: two max-pool downsamplings, two upsamplings, skip concatenations.

    enc1: 2x conv 3x3 p1 (``f``); pool 2 s2; enc2: 2x conv (``2f``); pool 2 s2; bottleneck:
    2x conv (``4f``); up (x2) -> concat enc2 -> 2x conv (``2f``); up (x2) -> concat enc1 ->
    2x conv (``f``); conv 1x1 (``out_features``). ``upsample``: ``"transpose"``
    (``nn.ConvTranspose`` k2 s2, each output reads one input), ``"bilinear"`` or
    ``"nearest"`` (``jax.image.resize`` then a 1x1 conv). H and W must be multiples of 4.
    Output ``(N, H, W, out_features)``.
    """

    features: int = 4
    out_features: int = 3
    upsample: str = "transpose"
    act: Act = nn.relu
    pool: str = "max"

    def _double(self, x: Array, f: int, name: str) -> Array:
        x = self.act(_conv(f, (3, 3), 1, 1, name=f"{name}_a")(x))
        return self.act(_conv(f, (3, 3), 1, 1, name=f"{name}_b")(x))

    def _up(self, x: Array, f: int, name: str) -> Array:
        if self.upsample == "transpose":
            return nn.ConvTranspose(f, (2, 2), strides=(2, 2), padding=((1, 1), (1, 1)),
                                    name=name)(x)
        n, h, w, c = x.shape
        x = jax.image.resize(x, (n, 2 * h, 2 * w, c), self.upsample)
        return _conv(f, (1, 1), name=name)(x)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "UNet", 2)
        _check_pool(self.pool, "UNet")
        if self.upsample not in ("transpose", "bilinear", "nearest"):
            raise ValueError(f"UNet: upsample must be 'transpose', 'bilinear' or 'nearest', "
                             f"got {self.upsample!r}")
        if x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(f"UNet: H and W must be multiples of 4, got shape {x.shape}")
        f = self.features
        e1 = self._double(x, f, "enc1")
        e2 = self._double(pool_nd(e1, self.pool, 2, 2), 2 * f, "enc2")
        bott = self._double(pool_nd(e2, self.pool, 2, 2), 4 * f, "bottleneck")
        d2 = self._double(jnp.concatenate([self._up(bott, 2 * f, "up2"), e2], -1), 2 * f,
                          "dec2")
        d1 = self._double(jnp.concatenate([self._up(d2, f, "up1"), e1], -1), f, "dec1")
        return _conv(self.out_features, (1, 1), name="head")(d1)


# ----------------------------------------------------------------------------------------------
# Global fields: dense head, attention


class GAPClassifier(nn.Module):
    """conv 3x3 s2 p1; pool 2 s2; conv 3x3 p1; global average pool; dense -> ``(N, classes)``.

    The output has no spatial axis: every logit depends on the whole image.
    """

    features: int = 4
    num_classes: int = 10
    act: Act = nn.relu
    pool: str = "max"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "GAPClassifier", 2)
        _check_pool(self.pool, "GAPClassifier")
        x = self.act(_conv(self.features, (3, 3), 2, 1, name="conv1")(x))
        x = pool_nd(x, self.pool, 2, 2)
        x = self.act(_conv(2 * self.features, (3, 3), 1, 1, name="conv2")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


class SpatialAttentionNet(nn.Module):
    """Two conv 3x3 s2 p1, then self-attention over the ``h*w`` positions, conv 1x1.

    Output ``(N, ceil(H/4), ceil(W/4), features)``: spatial, but every unit is global after
    the attention.
    """

    features: int = 8
    heads: int = 2
    act: Act = nn.relu
    pool: str = "max"  # unused

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "SpatialAttentionNet", 2)
        x = self.act(_conv(self.features, (3, 3), 2, 1, name="conv1")(x))
        x = self.act(_conv(self.features, (3, 3), 2, 1, name="conv2")(x))
        n, h, w, c = x.shape
        t = x.reshape(n, h * w, c)
        t = t + nn.MultiHeadDotProductAttention(self.heads, name="attn")(t, t)
        x = t.reshape(n, h, w, c)
        return _conv(self.features, (1, 1), name="proj")(x)


class TransformerBlock(nn.Module):
    """Pre-LN transformer block on ``(N, T, D)``: x + MHSA(LN(x)); x + MLP(LN(x))."""

    heads: int = 2
    mlp_ratio: int = 2
    act: Act = nn.gelu

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = x.shape[-1]
        y = nn.LayerNorm(name="ln1")(x)
        x = x + nn.MultiHeadDotProductAttention(self.heads, name="attn")(y, y)
        y = nn.LayerNorm(name="ln2")(x)
        y = nn.Dense(d, name="mlp_out")(self.act(nn.Dense(self.mlp_ratio * d, name="mlp_in")(y)))
        return x + y


class ViT(nn.Module):
    """Small ViT: patch embedding, position embedding, ``depth`` transformer blocks.

    Patch embedding is a conv with kernel = stride = ``patch`` (pad 0); tokens ``(N, T, D)``
    with ``T = (H/patch) * (W/patch)`` in row-major order, plus a learned position embedding
    ``(1, T, D)``. Output: the tokens after block ``upto`` (default ``depth``; 0 = after the
    embedding, where token ``t`` sees one ``patch x patch`` patch), ``(N, T, dim)``; with
    ``all_layers=True``, a tuple of ``depth + 1`` such arrays (embedding, block 1, ...).
    Every token is global after the first attention. H, W must be multiples of ``patch``.
    """

    patch: int = 4
    dim: int = 16
    depth: int = 2
    heads: int = 2
    mlp_ratio: int = 2
    upto: int | None = None
    all_layers: bool = False
    act: Act = nn.gelu
    pool: str = "max"  # unused

    @nn.compact
    def __call__(self, x: Array) -> Array | tuple[Array, ...]:
        _spatial(x, "ViT", 2)
        n, h, w, _ = x.shape
        if h % self.patch or w % self.patch:
            raise ValueError(f"ViT: H and W must be multiples of patch={self.patch}, "
                             f"got shape {x.shape}")
        upto = self.depth if self.upto is None else self.upto
        if not 0 <= upto <= self.depth:
            raise ValueError(f"ViT: upto must be in 0..{self.depth}, got {self.upto}")
        x = _conv(self.dim, (self.patch, self.patch), self.patch, 0, name="patch_embed")(x)
        t = x.reshape(n, -1, self.dim)
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (1,) + t.shape[1:])
        t = t + pos
        outs = [t]
        for i in range(upto if not self.all_layers else self.depth):
            t = TransformerBlock(self.heads, self.mlp_ratio, self.act, name=f"block{i + 1}")(t)
            outs.append(t)
        return tuple(outs) if self.all_layers else t


# ----------------------------------------------------------------------------------------------
# Registry


def init_variables(model: nn.Module, shape: Sequence[int], seed: int = 0) -> Any:
    """``model.init`` on zeros of ``shape`` (float32); returns the variables dict."""
    return model.init(jax.random.key(seed), jnp.zeros(tuple(shape), jnp.float32))


def examples(
    act: Act | None = None, pool: str = "max"
) -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """One small instance of every model with an example input shape ``(N, *spatial, C)``.

    ``act=None`` keeps each model's own default (ReLU; GELU for the ViT); ``act=identity,
    pool="avg"`` builds the linear surrogates. The expected fields at these shapes are in
    ``tests/test_zoo.py``.
    """
    _check_pool(pool, "zoo")
    kw: dict[str, Any] = {"pool": pool}
    if act is not None:
        kw["act"] = act
    return {
        "conv_stack": (ConvStack(n=4, **kw), (1, 16, 16, 2)),
        "conv_stack_strided": (ConvStack(n=3, strides=(2, 1, 2), dilations=(1, 2, 1), **kw),
                               (1, 32, 32, 2)),
        "vgg16": (VGG16(width=2, **kw), (1, 224, 224, 3)),
        "alexnet": (AlexNet(width=2, **kw), (1, 224, 224, 3)),
        "resnet50": (ResNet(width=2, **kw), (1, 224, 224, 3)),
        "resnet18": (ResNet(blocks=(2, 2, 2, 2), bottleneck=False, width=2, **kw),
                     (1, 224, 224, 3)),
        "dilated": (DilatedStack(**kw), (1, 40, 40, 2)),
        "nonsquare": (NonSquareNet(**kw), (1, 20, 24, 2)),
        "transposed": (TransposedConvNet(**kw), (1, 16, 16, 2)),
        "transposed_k3": (TransposedConvNet(up_kernel=3, up_padding=((1, 2), (1, 2)), **kw),
                          (1, 16, 16, 2)),
        "misaligned": (MisalignedBlock(tail=1, **kw), (1, 16, 16, 2)),
        "misaligned_gap": (MisalignedBlock(kernel_a=1, padding_a=0, kernel_b=1,
                                           padding_b=((-2, 2), (-2, 2)), tail=1, **kw),
                           (1, 16, 16, 2)),
        "inception": (InceptionNet(**kw), (1, 16, 16, 2)),
        "unet": (UNet(**kw), (1, 32, 32, 2)),
        "unet_bilinear": (UNet(upsample="bilinear", **kw), (1, 32, 32, 2)),
        "unet_nearest": (UNet(upsample="nearest", **kw), (1, 32, 32, 2)),
        "vit": (ViT(**kw), (1, 16, 16, 3)),
        "vit_embed": (ViT(upto=0, **kw), (1, 16, 16, 3)),
        "conv1d": (Conv1DNet(**kw), (1, 32, 2)),
        "conv3d": (Conv3DNet(**kw), (1, 12, 16, 16, 2)),
        "gap_classifier": (GAPClassifier(**kw), (1, 16, 16, 3)),
        "spatial_attention": (SpatialAttentionNet(**kw), (1, 16, 16, 3)),
    }
