"""``examples()``: one small instance of every zoo model with an example input shape."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from rfjax.models.zoo.branches import InceptionNet, MisalignedBlock
from rfjax.models.zoo.cnn import (
    VGG16,
    AlexNet,
    Conv1DNet,
    Conv3DNet,
    ConvStack,
    DilatedStack,
    GAPClassifier,
    NonSquareNet,
)
from rfjax.models.zoo.common import Act, _check_pool
from rfjax.models.zoo.densenet import DenseNet
from rfjax.models.zoo.resnet import ResNet
from rfjax.models.zoo.swin import SwinTransformer
from rfjax.models.zoo.transformer import SpatialAttentionNet, ViT
from rfjax.models.zoo.unet import TransposedConvNet, UNet


def examples(
    act: Act | None = None, pool: str = "max"
) -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """One small instance of every model with an example input shape ``(N, *spatial, C)``.

    ``act=None`` keeps each model's own default (ReLU; GELU for the ViT and Swin); ``act=identity,
    pool="avg"`` builds the linear surrogates (``pool`` goes to the models that pool; the
    others take no ``pool`` field). The expected fields at these shapes are in
    ``tests/test_zoo.py``.
    """
    _check_pool(pool, "zoo")
    kw: dict[str, Any] = {} if act is None else {"act": act}  # every model
    pk: dict[str, Any] = {**kw, "pool": pool}  # the models that pool
    return {
        "conv_stack": (ConvStack(n=4, **kw), (1, 16, 16, 2)),
        "conv_stack_strided": (ConvStack(n=3, strides=(2, 1, 2), dilations=(1, 2, 1), **kw),
                               (1, 32, 32, 2)),
        "vgg16": (VGG16(width=2, **pk), (1, 224, 224, 3)),
        "alexnet": (AlexNet(width=2, **pk), (1, 224, 224, 3)),
        "resnet50": (ResNet(width=2, **pk), (1, 224, 224, 3)),
        "resnet18": (ResNet(blocks=(2, 2, 2, 2), bottleneck=False, width=2, **pk),
                     (1, 224, 224, 3)),
        "densenet121": (DenseNet(growth=2, init_features=4, bn_size=1, **pk), (1, 224, 224, 3)),
        "swin_t": (SwinTransformer(embed_dim=4, heads=(1, 1, 1, 1), **kw), (1, 224, 224, 3)),
        "dilated": (DilatedStack(**kw), (1, 40, 40, 2)),
        "nonsquare": (NonSquareNet(**pk), (1, 20, 24, 2)),
        "transposed": (TransposedConvNet(**kw), (1, 16, 16, 2)),
        "transposed_k3": (TransposedConvNet(up_kernel=3, up_padding=((1, 2), (1, 2)), **kw),
                          (1, 16, 16, 2)),
        "misaligned": (MisalignedBlock(tail=1, **kw), (1, 16, 16, 2)),
        "misaligned_gap": (MisalignedBlock(kernel_a=1, padding_a=0, kernel_b=1,
                                           padding_b=((-2, 2), (-2, 2)), tail=1, **kw),
                           (1, 16, 16, 2)),
        "inception": (InceptionNet(**pk), (1, 16, 16, 2)),
        "unet": (UNet(**pk), (1, 32, 32, 2)),
        "unet_bilinear": (UNet(upsample="bilinear", **pk), (1, 32, 32, 2)),
        "unet_nearest": (UNet(upsample="nearest", **pk), (1, 32, 32, 2)),
        "vit": (ViT(**kw), (1, 16, 16, 3)),
        "vit_embed": (ViT(upto=0, **kw), (1, 16, 16, 3)),
        "conv1d": (Conv1DNet(**pk), (1, 32, 2)),
        "conv3d": (Conv3DNet(**pk), (1, 12, 16, 16, 2)),
        "gap_classifier": (GAPClassifier(**pk), (1, 16, 16, 3)),
        "spatial_attention": (SpatialAttentionNet(**kw), (1, 16, 16, 3)),
    }
