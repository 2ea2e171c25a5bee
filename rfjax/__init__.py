"""rfjax: exact theoretical and effective receptive fields of any JAX function.

Public API (everything else is internal):
"""

__version__ = "0.1.0"

__all__: list[str] = []
