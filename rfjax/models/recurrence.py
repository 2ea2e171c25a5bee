"""Theoretical receptive field (TRF) of a chain of layers, by the textbook recurrence.

For a chain of convolutions / poolings, each with kernel size ``k``, stride ``s`` and dilation
``d``, the receptive field ``r`` and the jump ``j`` (input pixels between adjacent units) follow

    r <- r + (k - 1) * d * j,    j <- j * s,    starting from r = 1, j = 1,

and ``r`` is the same for every output unit. Upsampling layers (``upsample=u``: each output
unit ``q`` reads the single input unit ``floor(q / u)``, as a ``u x u`` stride-``u`` transposed
convolution or nearest-neighbour upsampling does) make the TRF depend on the output position:
two neighbouring fine units share one coarse unit, so a 3x3 convolution after an upsampling
reads 2 coarse units for some positions and 3 for others. :func:`receptive_interval` therefore
runs the same recurrence backwards with exact integer intervals for one output position, and
:func:`trf_by_recurrence` returns the maximum width over all positions (one period of the
alignment suffices). Without upsampling both agree with the forward formula above.

Conventions (those of ``flax.linen`` with the padding used by the models): stride-1 layers use
SAME padding, i.e. output unit ``q`` reads inputs ``q - (ke - 1) // 2 ... q + ke // 2`` where
``ke = (k - 1) * d + 1``; strided layers (2x2 max-pooling) are VALID: ``s*q ... s*q + ke - 1``.
The input is unbounded (no clipping at image borders). One spatial axis; all layers here are
square. For networks with skip connections the TRF is the hull over paths; the models list
their longest path, which contains the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a chain: ``name``, kernel size, stride, dilation, upsampling factor."""

    name: str
    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    upsample: int = 1

    def __post_init__(self) -> None:
        for field in ("kernel", "stride", "dilation", "upsample"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LayerSpec {self.name!r}: {field} must be an int >= 1, "
                                 f"got {value!r}")
        if self.upsample > 1 and (self.kernel, self.stride, self.dilation) != (1, 1, 1):
            raise ValueError(f"LayerSpec {self.name!r}: an upsampling layer has kernel=stride="
                             "dilation=1 (it reads one input unit per output unit)")


def _check(layers) -> None:
    if len(layers) == 0:
        raise ValueError("trf_by_recurrence: the layer chain is empty")
    for layer in layers:
        if not isinstance(layer, LayerSpec):
            raise TypeError(f"trf_by_recurrence: expected LayerSpec, got {type(layer).__name__}")


def receptive_interval(layers: tuple[LayerSpec, ...] | list[LayerSpec],
                       position: int = 0) -> tuple[int, int]:
    """Input interval ``(lo, hi)`` (inclusive) read by output unit ``position`` of the chain.

    Args:
      layers: the chain, input side first.
      position: index of the output unit along the axis (any int; unbounded input).
    """
    _check(layers)
    lo = hi = int(position)
    for layer in reversed(layers):
        ke = (layer.kernel - 1) * layer.dilation + 1
        if layer.upsample > 1:
            lo, hi = lo // layer.upsample, hi // layer.upsample
        elif layer.stride > 1:
            lo, hi = layer.stride * lo, layer.stride * hi + ke - 1
        else:
            lo, hi = lo - (ke - 1) // 2, hi + ke // 2
    return lo, hi


def trf_by_recurrence(layers: tuple[LayerSpec, ...] | list[LayerSpec]) -> int:
    """Theoretical receptive field (pixels, one axis): the widest over output positions.

    Args:
      layers: the chain, input side first.

    Returns:
      ``max_q (hi - lo + 1)`` over the output positions ``q`` (for a chain without upsampling
      this is the forward recurrence ``r += (k-1)*d*j; j *= s``, the same for every ``q``).
    """
    _check(layers)
    period = math.prod(layer.upsample * layer.stride for layer in layers)
    widths = []
    for q in range(period):
        lo, hi = receptive_interval(layers, q)
        widths.append(hi - lo + 1)
    return max(widths)
