"""DenseNet (torchvision layout; DenseNet-121 by default) features. Inputs ``(N, H, W, C)``."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from rfjax.models.zoo.common import Act, _bn, _check_pool, _conv, _spatial, pool_nd


class DenseLayer(nn.Module):
    """One dense layer: BN-act-conv 1x1 (``bn_size * growth``) - BN-act-conv 3x3 p1 (``growth``),
    its ``growth`` new channels concatenated after its input: ``(N, H, W, C)`` ->
    ``(N, H, W, C + growth)``. Convolutions without bias, as in torchvision."""

    growth: int
    bn_size: int = 4
    act: Act = nn.relu
    train: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        y = self.act(_bn(self.train, "norm1")(x))
        y = _conv(self.bn_size * self.growth, (1, 1), 1, 0, use_bias=False, name="conv1")(y)
        y = self.act(_bn(self.train, "norm2")(y))
        y = _conv(self.growth, (3, 3), 1, 1, use_bias=False, name="conv2")(y)
        return jnp.concatenate([x, y], axis=-1)


class Transition(nn.Module):
    """BN-act-conv 1x1 (``features`` channels, no bias) - average pool 2 stride 2 (pad 0).

    The average pooling is the original network's (never a max pool), so ``pool`` does not
    apply to it. ``(N, H, W, C)`` -> ``(N, H // 2, W // 2, features)``.
    """

    features: int
    act: Act = nn.relu
    train: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = self.act(_bn(self.train, "norm")(x))
        x = _conv(self.features, (1, 1), 1, 0, use_bias=False, name="conv")(x)
        return pool_nd(x, "avg", 2, 2)


class DenseNet(nn.Module):
    """DenseNet features (torchvision's ``densenet121().features`` by default).

    Stem: conv 7x7 stride 2 pad 3 (``init_features`` channels, no bias), BN, act, pool 3
    stride 2 pad 1 (max in the original; ``pool="avg"`` for the linear surrogate). Then dense
    blocks of ``blocks`` layers (see :class:`DenseLayer`: BN-act-conv 1x1 to ``bn_size *
    growth`` channels, BN-act-conv 3x3 pad 1 to ``growth`` channels, concatenated to the
    input), each block but the last followed by a :class:`Transition` (BN-act-conv 1x1 halving
    the channels, average pool 2 stride 2), and a final BN (``norm5``; torchvision applies
    the ReLU after ``features``, so the output here has none).

    Output ``(N, H/32, W/32, C)`` (floored at every halving) with ``C = c_3 + blocks[3] *
    growth`` where ``c_3`` are the channels after the third transition; DenseNet-121 at 224x224
    gives ``(N, 7, 7, 1024)`` and has 6,953,856 parameters (torchvision's 7,978,856 less the
    1,025,000 of its classifier). With ``stages=s < len(blocks)`` the output is dense block
    ``s``'s (before its transition; ``s=0``: the stem's pooled map).

    Theoretical receptive field of the output (the longest path, through every 3x3 conv; each
    3x3 pad 1 is centred, so the shorter paths' fields are inside it): stem 11 / 4 / 5, each
    dense layer adds ``2 * jump``, each transition ``jump`` (its pool) and doubles the jump.
    DenseNet-121: size 2071, stride 32, padding 1021.

    Attributes:
      growth: channels added by each dense layer (32 for DenseNet-121).
      blocks: dense layers per block ((6, 12, 24, 16) for DenseNet-121).
      init_features: channels of the stem convolution (64).
      bn_size: bottleneck factor: the 1x1 conv outputs ``bn_size * growth`` channels (4).
      stages: number of dense blocks to run (default all); see above.
      act: the nonlinearity (``identity`` for the linear surrogate).
      pool: ``"max"`` (the original) or ``"avg"`` for the stem pooling.
      train: BatchNorm with batch statistics (then ``apply(..., mutable=["batch_stats"])``);
        inference mode (running averages) by default.

    ``growth``, ``init_features`` and ``bn_size`` are the width knobs (the receptive field does
    not depend on them): ``DenseNet(growth=2, init_features=4, bn_size=1)`` is a tiny
    DenseNet-121 with the same field.
    """

    growth: int = 32
    blocks: Sequence[int] = (6, 12, 24, 16)
    init_features: int = 64
    bn_size: int = 4
    stages: int | None = None
    act: Act = nn.relu
    pool: str = "max"
    train: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        _spatial(x, "DenseNet", 2)
        _check_pool(self.pool, "DenseNet")
        stages = len(self.blocks) if self.stages is None else self.stages
        if not 0 <= stages <= len(self.blocks):
            raise ValueError(f"DenseNet: stages must be in 0..{len(self.blocks)}, "
                             f"got {self.stages}")
        x = _conv(self.init_features, (7, 7), 2, 3, use_bias=False, name="conv0")(x)
        x = self.act(_bn(self.train, "norm0")(x))
        x = pool_nd(x, self.pool, 3, 2, 1)
        ch = self.init_features
        for b in range(stages):
            for i in range(self.blocks[b]):
                x = DenseLayer(self.growth, self.bn_size, self.act, self.train,
                               name=f"denseblock{b + 1}_layer{i + 1}")(x)
            ch += self.blocks[b] * self.growth
            if b < len(self.blocks) - 1:
                if b < stages - 1:
                    ch //= 2
                    x = Transition(ch, self.act, self.train, name=f"transition{b + 1}")(x)
            else:
                x = _bn(self.train, "norm5")(x)
        return x
