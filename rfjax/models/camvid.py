"""Fully convolutional CamVid segmentation network (11 classes): a small U-Net.

Encoder: three stages of two 3x3 convolutions (BatchNorm, ReLU) each followed by 2x2 max-pooling
(total subsampling 8), a bottleneck of two dilated 3x3 convolutions (dilations 2 and 4, for
context at little cost), and a decoder of three stages, each a 2x2 stride-2 transposed
convolution (upsampling; every output unit reads exactly one input unit), concatenation with the
encoder features of the same resolution (skip connection) and two 3x3 convolutions. A 1x1
convolution gives per-pixel logits for the 11 classes (void, label 11, has no logit).

Theoretical receptive field: the longest path is the full encoder-bottleneck-decoder chain
(``CAMVID_LAYERS``; the skip paths see less). The textbook recurrence ``r += (k-1)*d*j;
j *= s`` gives 36 after pool3 (jump 8) and 132 after the dilated bottleneck. The decoder's
upsamplings make the rest depend on the output position (two neighbouring fine units share one
coarse unit), so ``rfjax.calculator.receptive_interval`` runs the recurrence with exact
intervals per position: an output unit whose row (column) index is 2, 3, 4 or 5 modulo 8 sees
164 rows (columns), the others 156, so ``CAMVID_TRF == 164`` pixels (the maximum; for an
unbounded input - the 180x240 CamVid copy is smaller than that vertically).

Input size: H and W must be multiples of 8 (three poolings, then three exact 2x upsamplings, so
that the skip connections align). ``pad_to_multiple`` pads any image (reflect) and
``segment`` pads, applies and crops back, so any H, W work for inference.

Normalisation: BatchNorm, batch statistics in training (``train=True``,
``mutable=["batch_stats"]``), running averages in inference (default), so images do not interact
at inference. Inputs: float32 NHWC normalised images (``rfjax.data.normalize``). Output: float32
(N, H, W, 11) logits.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rfjax.calculator import LayerSpec, receptive_size

NUM_CAMVID_CLASSES = 11
#: The network's total subsampling: H and W must be multiples of this.
CAMVID_MULTIPLE = 8


def _conv_pair(prefix: str, dilations: tuple[int, int] = (1, 1)) -> tuple[LayerSpec, ...]:
    return tuple(LayerSpec(3, 1, "SAME", d, name=f"{prefix}_{i + 1}")
                 for i, d in enumerate(dilations))


CAMVID_LAYERS: tuple[LayerSpec, ...] = (
    *_conv_pair("enc1"), LayerSpec(2, 2, "VALID", name="pool1"),
    *_conv_pair("enc2"), LayerSpec(2, 2, "VALID", name="pool2"),
    *_conv_pair("enc3"), LayerSpec(2, 2, "VALID", name="pool3"),
    *_conv_pair("mid", (2, 4)),
    LayerSpec(name="up3", upsample=2), *_conv_pair("dec3"),
    LayerSpec(name="up2", upsample=2), *_conv_pair("dec2"),
    LayerSpec(name="up1", upsample=2), *_conv_pair("dec1"),
    LayerSpec(1, 1, "VALID", name="head"),
)

#: Theoretical receptive field (pixels) of an output unit, by the recurrence (longest path; the
#: widest over output positions; square layers: one axis).
CAMVID_TRF: int = receptive_size(CAMVID_LAYERS, ndim=1)[0]


class _ConvBN(nn.Module):
    features: int
    dilation: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.Conv(self.features, (3, 3), padding="SAME", kernel_dilation=self.dilation,
                    use_bias=False)(x)
        x = nn.BatchNorm(momentum=0.9, use_running_average=not train)(x)
        return nn.relu(x)


class CamVidNet(nn.Module):
    """Small U-Net for CamVid (see the module docstring). TRF 164x164 (position-dependent).

    Attributes:
      width: channels of the first stage; stages have ``width * (1, 2, 4)``, the bottleneck
        ``8 * width``.
      num_classes: logits per pixel (11 for CamVid).
    """

    width: int = 16
    num_classes: int = NUM_CAMVID_CLASSES

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Per-pixel logits.

        Args:
          x: float32 (N, H, W, 3) normalised images, H and W multiples of 8.
          train: batch statistics (True) or running averages (False) in BatchNorm.

        Returns:
          float32 (N, H, W, num_classes).
        """
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"CamVidNet: expected NHWC images with 3 channels, got shape "
                             f"{tuple(x.shape)}")
        h, w = x.shape[1:3]
        if h % CAMVID_MULTIPLE or w % CAMVID_MULTIPLE:
            raise ValueError(f"CamVidNet: H and W must be multiples of {CAMVID_MULTIPLE}, got "
                             f"{h}x{w}; use rfjax.models.camvid.pad_to_multiple or segment()")
        c = self.width
        skips = []
        for s, mult in enumerate((1, 2, 4), start=1):
            x = _ConvBN(c * mult, name=f"enc{s}_1")(x, train)
            x = _ConvBN(c * mult, name=f"enc{s}_2")(x, train)
            skips.append(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = _ConvBN(8 * c, dilation=2, name="mid_1")(x, train)
        x = _ConvBN(8 * c, dilation=4, name="mid_2")(x, train)
        for s, mult in ((3, 4), (2, 2), (1, 1)):
            x = nn.ConvTranspose(c * mult, (2, 2), strides=(2, 2), padding="VALID",
                                 name=f"up{s}")(x)
            x = jnp.concatenate([x, skips[s - 1]], axis=-1)
            x = _ConvBN(c * mult, name=f"dec{s}_1")(x, train)
            x = _ConvBN(c * mult, name=f"dec{s}_2")(x, train)
        return nn.Conv(self.num_classes, (1, 1), name="head")(x)


def pad_to_multiple(images: jax.Array, multiple: int = CAMVID_MULTIPLE,
                    ) -> tuple[jax.Array, tuple[int, int]]:
    """Reflect-pad (N, H, W, C) images at the bottom/right up to multiples of ``multiple``.

    Returns:
      The padded images (N, H', W', C) and the original ``(H, W)``, to crop outputs back with
      ``out[:, :H, :W]``.
    """
    if images.ndim != 4:
        raise ValueError(f"pad_to_multiple: expected (N, H, W, C), got shape "
                         f"{tuple(images.shape)}")
    if multiple < 1:
        raise ValueError(f"pad_to_multiple: multiple must be >= 1, got {multiple}")
    h, w = images.shape[1:3]
    ph, pw = -h % multiple, -w % multiple
    if ph >= h or pw >= w:
        raise ValueError(f"pad_to_multiple: image {h}x{w} too small to reflect-pad to a "
                         f"multiple of {multiple}")
    padded = jnp.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")
    return padded, (h, w)


def segment(model: CamVidNet, variables, images: jax.Array) -> jax.Array:
    """Inference logits for images of any size: pad to a multiple of 8, apply, crop back.

    Args:
      model: the network.
      variables: its ``{"params", "batch_stats"}``.
      images: float32 (N, H, W, 3) normalised images.

    Returns:
      float32 (N, H, W, num_classes) logits.
    """
    padded, (h, w) = pad_to_multiple(images)
    return model.apply(variables, padded, train=False)[:, :h, :w]
