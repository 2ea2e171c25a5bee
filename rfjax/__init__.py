"""rfjax: exact theoretical and effective receptive fields of any JAX function.

The public API is listed in ``__all__``; everything else is internal. ``rfjax.trf`` and
``rfjax.erf`` are the functions; their modules are ``rfjax.theoretical`` and
``rfjax.effective``. Submodules: ``rfjax.metrics`` (ERF size, Gaussian fit, ratios,
``summary``), ``rfjax.theory`` (the paper's closed forms), ``rfjax.calculator`` (the textbook
recurrences), ``rfjax.adapters`` (PyTorch, Keras, Haiku and Equinox models, input
layouts), ``rfjax.models`` (Flax reference models and the built-in registry;
``rfjax.models.external``: torchvision / timm / Keras models by name), ``rfjax.images``
(image files as model inputs),
``rfjax.data`` (CIFAR-10 / CamVid through TFDS, without TensorFlow), ``rfjax.train`` (optax
training with orbax checkpoints), ``rfjax.experiments`` and ``rfjax.plot`` (the paper's
figures). ``ARCHITECTURE.md`` says where each piece of code lives.
"""

from rfjax import metrics, theory
from rfjax.adapters import LayoutWarning, clear_cache, from_haiku, from_keras, from_torch
from rfjax.calculator import (
    CalculatorResult,
    LayerSpec,
    receptive_field,
    receptive_interval,
    receptive_size,
)
from rfjax.effective import (
    ERF,
    InputTypeError,
    NoiseMapWarning,
    erf,
    erf_intermediate,
    erf_merge,
    erf_weight_draws,
)
from rfjax.theoretical import (
    TRF,
    BatchCouplingWarning,
    DynamicDependencyError,
    LayerRF,
    TRFError,
    UnsupportedPrimitiveError,
    trf,
)

__version__ = "0.1.0"

__all__ = [
    "ERF",
    "TRF",
    "BatchCouplingWarning",
    "CalculatorResult",
    "DynamicDependencyError",
    "InputTypeError",
    "LayerRF",
    "LayoutWarning",
    "LayerSpec",
    "NoiseMapWarning",
    "TRFError",
    "UnsupportedPrimitiveError",
    "clear_cache",
    "erf",
    "erf_intermediate",
    "erf_merge",
    "erf_weight_draws",
    "from_haiku",
    "from_keras",
    "from_torch",
    "metrics",
    "receptive_field",
    "receptive_interval",
    "receptive_size",
    "theory",
    "trf",
]
