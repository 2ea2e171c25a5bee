"""CIFAR-10 classifiers with a 74x74 theoretical receptive field on 32x32 inputs.

Two architectures, both fully convolutional up to a global average pooling and one dense layer:
``CifarNet`` (the default of the training runs) and ``CifarResNet`` (the paper's description of
its own network: a ResNet of 17 residual blocks without pooling or downsampling; see its
docstring).

``CifarNet`` is a VGG-style, fully convolutional network (3x3 convolutions, BatchNorm, ReLU,
2x2 max-pooling) followed by global average pooling and one dense layer. Layer chain
(``CIFAR_LAYERS``), with the textbook recurrence ``r += (k-1)*d*j; j *= s`` (see
``rfjax.calculator``):

=========  ======  ========  ====  ====  ==============
layer      kernel  stride    r     j     output (32x32)
=========  ======  ========  ====  ====  ==============
conv1_1    3       1         3     1     32x32 x w
pool1      2       2         4     2     16x16
conv2_1    3       1         8     2     16x16 x 2w
conv2_2    3       1         12    2
pool2      2       2         14    4     8x8
conv3_1    3       1         22    4     8x8 x 4w
conv3_2    3       1         30    4
conv3_3    3       1         38    4
pool3      2       2         42    8     4x4
conv4_1    3       1         58    8     4x4 x 8w
conv4_2    3       1         74    8     (last feature map)
=========  ======  ========  ====  ====  ==============

So a unit of the last feature map (4x4 for a 32x32 input) sees a 74x74 window, larger than the
image, as in the paper's CIFAR-10 experiment. Convolutions use SAME zero padding.

Normalisation: BatchNorm. In training (``train=True``) it uses batch statistics and updates the
``batch_stats`` collection (pass ``mutable=["batch_stats"]``); in inference (``train=False``,
the default) it uses the running averages, so it is a fixed per-channel affine map and images in
a batch do not interact: the ERF of an image does not depend on the other images. The apply
signature is the same for an untrained (freshly initialised) and a trained model::

    model = CifarNet()
    variables = model.init(key, jnp.zeros((1, 32, 32, 3)))
    logits = model.apply(variables, x)                          # (N, 10)
    feats = model.apply(variables, x, method=CifarNet.features)  # (N, H/8, W/8, 8w)

Inputs: float32 NHWC, normalised images (``rfjax.data.normalize``); any H, W (a multiple of 8
keeps the pooling exact; other sizes are floored by the pooling).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rfjax.calculator import LayerSpec, receptive_size

#: Per stage: (number of 3x3 convolutions, width multiplier); stages are separated by pooling.
_STAGES: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (3, 4), (2, 8))

CIFAR_LAYERS: tuple[LayerSpec, ...] = tuple(
    spec
    for s, (n_conv, _) in enumerate(_STAGES, start=1)
    for spec in (
        *(LayerSpec(3, 1, "SAME", name=f"conv{s}_{i}") for i in range(1, n_conv + 1)),
        *((LayerSpec(2, 2, "VALID", name=f"pool{s}"),) if s < len(_STAGES) else ()),
    )
)

#: Theoretical receptive field of a unit of the last feature map, by the recurrence (the layers
#: are square: one axis).
CIFAR_TRF: int = receptive_size(CIFAR_LAYERS, ndim=1)[0]


class CifarNet(nn.Module):
    """VGG-style CIFAR-10 classifier, TRF 74x74 (see the module docstring).

    Attributes:
      width: channels of the first stage; stages have ``width * (1, 2, 4, 8)`` channels.
      num_classes: size of the logits.
    """

    width: int = 32
    num_classes: int = 10

    def setup(self) -> None:
        if self.width < 1 or self.num_classes < 1:
            raise ValueError(f"CifarNet: width and num_classes must be >= 1, got "
                             f"width={self.width}, num_classes={self.num_classes}")
        convs = []
        norms = []
        for s, (n_conv, mult) in enumerate(_STAGES, start=1):
            for i in range(1, n_conv + 1):
                convs.append(nn.Conv(self.width * mult, (3, 3), padding="SAME",
                                     use_bias=False, name=f"conv{s}_{i}"))
                norms.append(nn.BatchNorm(momentum=0.9, name=f"bn{s}_{i}"))
        self.convs = convs
        self.norms = norms
        self.head = nn.Dense(self.num_classes, name="head")

    def features(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Last spatial feature map, after its ReLU.

        Args:
          x: float32 (N, H, W, 3) normalised images.
          train: batch statistics (True) or running averages (False) in BatchNorm.

        Returns:
          float32 (N, H // 8, W // 8, 8 * width).
        """
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"CifarNet: expected NHWC images with 3 channels, got shape "
                             f"{tuple(x.shape)}")
        layer = 0
        for s, (n_conv, _) in enumerate(_STAGES, start=1):
            for _ in range(n_conv):
                x = self.convs[layer](x)
                x = self.norms[layer](x, use_running_average=not train)
                x = nn.relu(x)
                layer += 1
            if s < len(_STAGES):
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return x

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits, float32 (N, num_classes), for float32 (N, H, W, 3) normalised images."""
        h = self.features(x, train)
        return self.head(jnp.mean(h, axis=(1, 2)))


#: The longest input-to-output path of ``CifarResNet`` (the stem and both convolutions of every
#: block; the identity shortcuts lie inside it): 1 + 5 + 17 * 2 * 2 = 74.
CIFAR_RESNET_LAYERS: tuple[LayerSpec, ...] = (
    LayerSpec(6, 1, "SAME", name="stem"),
    *(LayerSpec(3, 1, "SAME", name=f"block{b}_{i}") for b in range(1, 18) for i in (1, 2)),
)


class _ResidualBlock(nn.Module):
    """``relu(x + BN(conv(relu(BN(conv(x))))))``, 3x3 convolutions, constant width."""

    width: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        h = nn.Conv(self.width, (3, 3), padding="SAME", use_bias=False, name="conv1")(x)
        h = nn.relu(nn.BatchNorm(momentum=0.9, use_running_average=not train, name="bn1")(h))
        h = nn.Conv(self.width, (3, 3), padding="SAME", use_bias=False, name="conv2")(h)
        h = nn.BatchNorm(momentum=0.9, use_running_average=not train, name="bn2")(h)
        return nn.relu(x + h)


class CifarResNet(nn.Module):
    """The paper's CIFAR-10 network: a ResNet of 17 residual blocks, no pooling or downsampling.

    Luo et al. (NIPS 2016, Sec. 4.3) train "a ResNet with 17 residual blocks" on CIFAR-10
    "without pooling or downsampling" and state a TRF of 74x74. Seventeen blocks of two 3x3
    convolutions reach 1 + 68 = 69 with a 1x1 stem or 71 with a 3x3 one; stride-1 odd kernels
    can only give odd sizes, so the stem here is a 6x6 convolution (SAME padding: rows
    ``q - 2 ... q + 3``), which makes the TRF exactly 74 (``CIFAR_RESNET_LAYERS``; verified
    by ``rfjax.trf`` in the tests). Every feature map is ``H x W x width``; the classifier
    averages the last one globally.

    BatchNorm as in ``CifarNet``: batch statistics with ``train=True`` (pass
    ``mutable=["batch_stats"]``), running averages otherwise (images do not interact).

    Attributes:
      width: channels of every layer.
      num_classes: size of the logits.
      blocks: residual blocks (17 in the paper; the TRF is ``6 + 4 * blocks``).
    """

    width: int = 16
    num_classes: int = 10
    blocks: int = 17

    def features(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Last feature map, float32 (N, H, W, width), for float32 (N, H, W, 3) images."""
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"CifarResNet: expected NHWC images with 3 channels, got shape "
                             f"{tuple(x.shape)}")
        x = self.stem(x)
        x = nn.relu(self.stem_bn(x, use_running_average=not train))
        for block in self.body:
            x = block(x, train)
        return x

    def setup(self) -> None:
        if self.width < 1 or self.num_classes < 1 or self.blocks < 1:
            raise ValueError(f"CifarResNet: width, num_classes and blocks must be >= 1, got "
                             f"width={self.width}, num_classes={self.num_classes}, "
                             f"blocks={self.blocks}")
        self.stem = nn.Conv(self.width, (6, 6), padding="SAME", use_bias=False, name="stem")
        self.stem_bn = nn.BatchNorm(momentum=0.9, name="stem_bn")
        self.body = [_ResidualBlock(self.width, name=f"block{b}")
                     for b in range(1, self.blocks + 1)]
        self.head = nn.Dense(self.num_classes, name="head")

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits, float32 (N, num_classes), for float32 (N, H, W, 3) normalised images."""
        return self.head(jnp.mean(self.features(x, train), axis=(1, 2)))
