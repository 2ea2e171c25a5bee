"""Flax linen models: the reference architectures (``zoo``) and the data models.

Data models (``cifar``, ``camvid``) are imported from their own modules
(``rfjax.models.cifar`` ...); add them to this list once they are committed.
"""

from rfjax.models.zoo import (
    VGG16,
    AlexNet,
    BasicBlock,
    Bottleneck,
    Conv1DNet,
    Conv3DNet,
    ConvStack,
    DilatedStack,
    GAPClassifier,
    InceptionNet,
    MisalignedBlock,
    NonSquareNet,
    ResNet,
    SpatialAttentionNet,
    TransformerBlock,
    TransposedConvNet,
    UNet,
    ViT,
    examples,
    identity,
    init_variables,
    pool_nd,
)

__all__ = [
    "VGG16",
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
    "ViT",
    "identity",
    "init_variables",
    "pool_nd",
    "examples",
]
