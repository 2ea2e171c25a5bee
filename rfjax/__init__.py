"""rfjax: exact theoretical and effective receptive fields of any JAX function.

The public API is listed in ``__all__``; everything else is internal.
"""

from rfjax.calculator import CalculatorResult, LayerSpec, receptive_field
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
    "TRF",
    "BatchCouplingWarning",
    "CalculatorResult",
    "DynamicDependencyError",
    "LayerRF",
    "LayerSpec",
    "TRFError",
    "UnsupportedPrimitiveError",
    "receptive_field",
    "trf",
]
