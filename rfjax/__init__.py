"""rfjax: exact theoretical and effective receptive fields of any JAX function.

The public API is listed in ``__all__``; everything else is internal. Submodules:
``rfjax.metrics`` (ERF size, Gaussian fit, ratios), ``rfjax.theory`` (the paper's closed forms),
``rfjax.models`` (Flax reference models), ``rfjax.data`` (CIFAR-10 / CamVid through TFDS,
without TensorFlow), ``rfjax.train`` (optax training with orbax checkpoints),
``rfjax.experiments`` and ``rfjax.plot`` (the paper's figures).
"""

from rfjax import metrics, theory
from rfjax.calculator import (
    CalculatorResult,
    LayerSpec,
    receptive_field,
    receptive_interval,
    receptive_size,
)
from rfjax.callables import clear_cache
from rfjax.erf import ERF, InputTypeError, erf, erf_intermediate, erf_merge, erf_weight_draws
from rfjax.trf import (
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
    "LayerSpec",
    "TRFError",
    "UnsupportedPrimitiveError",
    "clear_cache",
    "erf",
    "erf_intermediate",
    "erf_merge",
    "erf_weight_draws",
    "metrics",
    "receptive_field",
    "receptive_interval",
    "receptive_size",
    "theory",
    "trf",
]
