"""Reference architectures (Flax linen) for the receptive-field engines and the paper figures.

Conventions shared by every model here:

- Inputs are channels-last with a leading batch axis, ``(N, *spatial, C)``; ``model.apply(
  variables, x)`` returns one array (a tuple only for ``ViT(all_layers=True)``).
- Paddings are explicit pairs matching the reference implementations (torchvision's
  ``padding=p`` is ``((p, p), ...)``), never ``'SAME'``, which JAX pads asymmetrically for
  strided layers.
- ``act``: the nonlinearity (``identity`` for none). ``pool``: ``"max"`` or ``"avg"``, used
  wherever the original network max-pools (average pooling includes the zero padding, so it
  has the same support); models that never pool have no ``pool`` field. ``act=identity,
  pool="avg"`` with positive weights gives the "positive linear surrogate" whose gradient
  support is the exact theoretical receptive field.
- ``width``: the channel count of the first stage (small by default: the receptive field does
  not depend on it). Full torchvision width is 64 for ``VGG16``, ``AlexNet`` and ``ResNet``.
  ``DenseNet`` (``growth``, ``init_features``, ``bn_size``) and ``SwinTransformer``
  (``embed_dim``, ``heads``) default to the full DenseNet-121 and Swin-T.
- BatchNorm (``ResNet`` and ``DenseNet``) runs in inference mode (running averages) unless
  ``train=True``; in training mode it uses batch statistics, which couples the images of a
  batch, and ``apply`` must be called with ``mutable=["batch_stats"]`` (it then returns
  ``(y, updates)``).

The expected theoretical receptive fields (by the textbook recurrence) are recorded in
``tests/test_zoo.py``; ``examples()`` lists one small instance of each model with an example input
shape.

Modules, by family (every public name is re-exported here): ``common`` (helpers: ``identity``,
``pool_nd``, ``init_variables``, paddings, initialisers), ``cnn`` (sequential stacks, VGG-16,
AlexNet, the GAP classifier), ``resnet``, ``branches`` (misaligned branches, Inception),
``unet`` (transposed convolutions, U-Net), ``transformer`` (attention, ViT), ``densenet``
(DenseNet-121), ``swin`` (Swin-T) and ``registry`` (``examples``).
"""

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
from rfjax.models.zoo.common import identity, init_variables, pool_nd
from rfjax.models.zoo.densenet import DenseLayer, DenseNet, Transition
from rfjax.models.zoo.registry import examples
from rfjax.models.zoo.resnet import BasicBlock, Bottleneck, ResNet
from rfjax.models.zoo.swin import PatchMerging, SwinBlock, SwinTransformer, WindowAttention
from rfjax.models.zoo.transformer import SpatialAttentionNet, TransformerBlock, ViT
from rfjax.models.zoo.unet import TransposedConvNet, UNet

__all__ = [
    "AlexNet",
    "BasicBlock",
    "Bottleneck",
    "Conv1DNet",
    "Conv3DNet",
    "ConvStack",
    "DenseLayer",
    "DenseNet",
    "DilatedStack",
    "GAPClassifier",
    "InceptionNet",
    "MisalignedBlock",
    "NonSquareNet",
    "PatchMerging",
    "ResNet",
    "SpatialAttentionNet",
    "SwinBlock",
    "SwinTransformer",
    "TransformerBlock",
    "Transition",
    "TransposedConvNet",
    "UNet",
    "VGG16",
    "ViT",
    "WindowAttention",
    "identity",
    "init_variables",
    "pool_nd",
    "examples",
]
