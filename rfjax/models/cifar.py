"""CIFAR-10 classifier with a 74x74 theoretical receptive field on 32x32 inputs.

A VGG-style, fully convolutional network (3x3 convolutions, BatchNorm, ReLU, 2x2 max-pooling)
followed by global average pooling and one dense layer. Layer chain (``CIFAR_LAYERS``), with the
textbook recurrence ``r += (k-1)*d*j; j *= s`` (see ``rfjax.models.recurrence``):

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

from rfjax.models.recurrence import LayerSpec, trf_by_recurrence

#: Per stage: (number of 3x3 convolutions, width multiplier); stages are separated by pooling.
_STAGES: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (3, 4), (2, 8))

CIFAR_LAYERS: tuple[LayerSpec, ...] = tuple(
    spec
    for s, (n_conv, _) in enumerate(_STAGES, start=1)
    for spec in (
        *(LayerSpec(f"conv{s}_{i}", kernel=3) for i in range(1, n_conv + 1)),
        *((LayerSpec(f"pool{s}", kernel=2, stride=2),) if s < len(_STAGES) else ()),
    )
)

#: Theoretical receptive field of a unit of the last feature map, by the recurrence.
CIFAR_TRF: int = trf_by_recurrence(CIFAR_LAYERS)


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
