"""Sequential convolutional nets (1-D, 2-D, 3-D stacks; VGG-16 and AlexNet features in the
torchvision layouts) and a global-average-pooling classifier. Inputs ``(N, *spatial, C)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from rfjax.models.zoo.common import (
    Act,
    Padding,
    _check_pool,
    _conv,
    _kernel_init,
    _same_pad,
    _spatial,
    _tuple,
    pool_nd,
)

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
