"""Flax linen models: the reference architectures (``zoo``) and the paper's data models
(``cifar.CifarNet``, VGG-style, and ``cifar.CifarResNet``, the paper's 17-block ResNet, both
with a TRF of 74x74 on CIFAR-10; ``camvid.CamVidNet``, a U-Net for CamVid); ``registry``: the
built-in models by name (``builtin_models``, ``model_fn``), as ``rfjax models`` lists them;
``external``: ``torchvision:<name>``, ``timm:<name>`` and ``keras:<Name>`` models by name
(``external.load``; the framework is imported only then)."""

from rfjax.models.camvid import CamVidNet
from rfjax.models.cifar import CifarNet, CifarResNet
from rfjax.models.registry import BuiltinModel, builtin_models, get_model, model_fn
from rfjax.models.zoo import (
    VGG16,
    AlexNet,
    BasicBlock,
    Bottleneck,
    Conv1DNet,
    Conv3DNet,
    ConvStack,
    DenseNet,
    DilatedStack,
    GAPClassifier,
    InceptionNet,
    MisalignedBlock,
    NonSquareNet,
    ResNet,
    SpatialAttentionNet,
    SwinTransformer,
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
    "BuiltinModel",
    "CamVidNet",
    "CifarNet",
    "CifarResNet",
    "Conv1DNet",
    "Conv3DNet",
    "ConvStack",
    "DenseNet",
    "DilatedStack",
    "GAPClassifier",
    "InceptionNet",
    "MisalignedBlock",
    "NonSquareNet",
    "ResNet",
    "SpatialAttentionNet",
    "SwinTransformer",
    "TransformerBlock",
    "TransposedConvNet",
    "UNet",
    "ViT",
    "identity",
    "init_variables",
    "pool_nd",
    "examples",
    "builtin_models",
    "get_model",
    "model_fn",
]
