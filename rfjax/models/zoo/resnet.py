"""ResNet (torchvision layout, v1.5): basic and bottleneck blocks, BatchNorm in inference mode
unless ``train=True``. Inputs ``(N, H, W, C)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
from jax import Array

from rfjax.models.zoo.common import Act, _bn, _check_pool, _conv, _spatial, pool_nd


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
