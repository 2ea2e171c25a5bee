"""Closed-form receptive-field calculator over a list of layer specs (the textbook recurrences).

For a sequential network of convolutions and poolings, per spatial axis, starting from
``size = 1, jump = 1, padding = 0``::

    size    += (kernel - 1) * dilation * jump
    padding += pad_lo * jump
    jump    *= stride

so that unit ``u`` of the last layer sees input indices ``u*jump - padding`` to
``u*jump - padding + size - 1`` (inclusive, unclipped), the same convention as :func:`rfjax.trf`,
which it agrees with on sequential nets (tested).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["LayerSpec", "CalculatorResult", "receptive_field"]

IntOrTuple = int | Sequence[int]


def _per_axis(v: Any, k: int, name: str) -> tuple:
    if isinstance(v, int):
        return (v,) * k
    if isinstance(v, str):
        return (v,) * k
    t = tuple(v)
    if len(t) != k:
        raise ValueError(f"{name}={v!r} has {len(t)} entries; the layers have {k} spatial axes")
    return t


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One convolution or pooling layer.

    Args:
        kernel: window size per axis (an int for all axes, or a tuple).
        stride: stride per axis.
        padding: the padding before index 0 per axis (an int), a ``(lo, hi)`` pair per axis,
            or ``"SAME"`` / ``"VALID"`` (JAX's conventions; needs ``input_size`` in
            :func:`receptive_field`).
        dilation: kernel dilation (atrous rate) per axis.
        name: a label for the table.
    """

    kernel: IntOrTuple
    stride: IntOrTuple = 1
    padding: Any = 0
    dilation: IntOrTuple = 1
    name: str = ""


@dataclasses.dataclass(frozen=True)
class CalculatorResult:
    """Per axis ``size``, ``stride`` (jump), ``padding``; ``layers``: the same after each layer
    (``(name, size, stride, padding, feature_size)`` with ``feature_size`` None when no
    ``input_size`` was given)."""

    size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    layers: tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...], Any], ...]

    def table(self) -> str:
        lines = [f"{'layer':<16}{'size':<16}{'stride':<16}{'padding':<16}{'output':<16}"]
        for name, s, j, p, n in self.layers:
            lines.append(f"{name:<16}{s!s:<16}{j!s:<16}{p!s:<16}{n!s:<16}")
        return "\n".join(lines)


def _as_spec(layer: Any) -> LayerSpec:
    if isinstance(layer, LayerSpec):
        return layer
    if isinstance(layer, dict):
        return LayerSpec(**layer)
    if isinstance(layer, tuple | list):
        return LayerSpec(*layer)
    raise TypeError(f"a layer must be a LayerSpec, a dict or a tuple; got {type(layer).__name__}")


def receptive_field(layers: Iterable[Any], input_size: IntOrTuple | None = None,
                    ndim: int | None = None) -> CalculatorResult:
    """The receptive field of a sequential stack of layers, by the textbook recurrences.

    Args:
        layers: :class:`LayerSpec` objects (or dicts / tuples of their fields), input first.
        input_size: the input's spatial size (needed for ``"SAME"`` padding; also reports
            each layer's output size).
        ndim: the number of spatial axes (default: from ``input_size`` or the first tuple
            field, else 2).

    Returns:
        A :class:`CalculatorResult`.
    """
    specs = [_as_spec(layer) for layer in layers]
    if ndim is None:
        if input_size is not None and not isinstance(input_size, int):
            ndim = len(tuple(input_size))
        else:
            ndim = 2
            for s in specs:
                for v in (s.kernel, s.stride, s.dilation):
                    if not isinstance(v, int):
                        ndim = len(tuple(v))
                        break
    n = _per_axis(input_size, ndim, "input_size") if input_size is not None else None
    size, jump, pad = [1] * ndim, [1] * ndim, [0] * ndim
    rows = []
    for i, s in enumerate(specs):
        k = _per_axis(s.kernel, ndim, "kernel")
        st = _per_axis(s.stride, ndim, "stride")
        d = _per_axis(s.dilation, ndim, "dilation")
        if isinstance(s.padding, str):
            mode = s.padding.upper()
            if mode not in ("SAME", "VALID"):
                raise ValueError(f"padding={s.padding!r}; expected 'SAME', 'VALID' or ints")
            if mode == "SAME" and n is None:
                raise ValueError("'SAME' padding needs input_size")
            plo, phi = [], []
            for a in range(ndim):
                if mode == "VALID":
                    plo.append(0)
                    phi.append(0)
                else:
                    out = -(-n[a] // st[a])
                    total = max((out - 1) * st[a] + d[a] * (k[a] - 1) + 1 - n[a], 0)
                    plo.append(total // 2)
                    phi.append(total - total // 2)
        else:
            praw = s.padding
            if isinstance(praw, int):
                plo = [praw] * ndim
                phi = [praw] * ndim
            else:
                praw = tuple(praw)
                if len(praw) != ndim:
                    raise ValueError(f"padding={s.padding!r} does not have {ndim} entries")
                plo = [p if isinstance(p, int) else p[0] for p in praw]
                phi = [p if isinstance(p, int) else p[1] for p in praw]
        for a in range(ndim):
            if k[a] < 1 or st[a] < 1 or d[a] < 1:
                raise ValueError(f"layer {i}: kernel, stride and dilation must be >= 1")
            size[a] += (k[a] - 1) * d[a] * jump[a]
            pad[a] += plo[a] * jump[a]
            jump[a] *= st[a]
        if n is not None:
            n = tuple((n[a] + plo[a] + phi[a] - d[a] * (k[a] - 1) - 1) // st[a] + 1
                      for a in range(ndim))
        rows.append((s.name or f"layer{i}", tuple(size), tuple(jump), tuple(pad), n))
    return CalculatorResult(tuple(size), tuple(jump), tuple(pad), tuple(rows))
