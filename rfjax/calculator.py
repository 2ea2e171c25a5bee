"""The receptive-field calculator of sequential layer chains (the textbook recurrences).

One :class:`LayerSpec` per layer (convolution, pooling or upsampling), input side first, every
field per spatial axis (an int for all axes, or a tuple with one entry per axis). Three views of
the same recurrence, which agree wherever they all apply (tested):

* :func:`receptive_field`, the forward closed form. Per axis, from ``size = 1, jump = 1,
  padding = 0``::

      size    += (kernel - 1) * dilation * jump
      padding += pad_lo * jump
      jump    *= stride

  so that unit ``u`` of the last layer sees input indices ``u*jump - padding`` to
  ``u*jump - padding + size - 1``, the same for every unit (:meth:`CalculatorResult.region`).
  The per-layer ``jump`` before each layer, ``J_l = s_1 ... s_{l-1}``, is
  :attr:`CalculatorResult.jumps` (what :mod:`rfjax.theory` upsamples taps by).
* :func:`receptive_interval`, the same recurrence run backwards with exact integers for one
  output position: output unit ``q`` of a layer reads its input units ``q*stride - pad_lo`` to
  ``q*stride - pad_lo + (kernel - 1) * dilation``, and of an upsampling layer (``upsample=u``)
  the single input unit ``floor(q / u)`` (a ``u x u`` stride-``u`` transposed convolution, or
  nearest-neighbour upsampling). With upsampling the region depends on the position: two
  neighbouring fine units share one coarse unit, so a 3x3 convolution after a 2x upsampling reads
  2 coarse units at some positions and 3 at others; there is no forward closed form then.
* :func:`receptive_size`, the widest region over all output positions, per axis (one period of
  the alignment, the product of the upsampling factors, suffices); without upsampling it is
  ``receptive_field(...).size``.

Conventions. Regions are inclusive index intervals ``(lo, hi)`` of the chain's input, unclipped:
the input is taken as unbounded, so ``lo`` may be negative and ``hi`` past the last pixel where
the region reaches into the padding (the convention of :func:`rfjax.trf`'s regions, which agrees
with this calculator on sequential nets). Padding is explicit in every spec and means what it
means in ``jax.lax.conv_general_dilated`` / ``flax.linen``: an int (the same before and after
index 0 on every axis), a tuple with one entry per axis, each an int or a ``(lo, hi)`` pair, or
``"SAME"`` / ``"VALID"`` (JAX's rules: SAME pads ``total = max((ceil(n/s) - 1) s + ke - n, 0)``
with ``lo = total // 2`` for an effective kernel ``ke = (k - 1) d + 1``, so for stride 1
``lo = (ke - 1) // 2`` whatever the input size; for a strided layer SAME depends on the input
size ``n`` and needs ``input_size``). Only ``pad_lo`` moves the region; ``pad_hi`` only changes
the output sizes reported with ``input_size``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "LayerSpec",
    "CalculatorResult",
    "receptive_field",
    "receptive_interval",
    "receptive_size",
]

IntOrTuple = int | Sequence[int]

_AXIS_FIELDS = ("kernel", "stride", "dilation", "upsample")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _label(spec: LayerSpec) -> str:
    return f"LayerSpec {spec.name!r}" if spec.name else "LayerSpec"


def _entries(spec: LayerSpec, field: str) -> list | None:
    """The per-axis entries of a tuple field, ``None`` for a scalar (every axis)."""
    v = getattr(spec, field)
    if field == "padding" and isinstance(v, str):
        return None
    if _is_int(v):
        return None
    return list(v)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One layer of a sequential chain: a convolution, a pooling window or an upsampling.

    Every field but ``name`` is per spatial axis: an int for all axes, or a tuple with one entry
    per axis (all tuple fields of one spec have the same length). Checked on construction.

    Args:
        kernel: window size, ints >= 1.
        stride: stride, ints >= 1.
        padding: the padding before index 0 (and after the last index): an int for all axes, a
            tuple with one entry per axis, each an int or a ``(lo, hi)`` pair, or ``"SAME"`` /
            ``"VALID"`` (JAX's conventions, see the module docstring; SAME of a strided layer
            needs ``input_size``). Negative values crop. Default 0 (VALID).
        dilation: kernel dilation (atrous rate), ints >= 1.
        name: a label for tables and error messages.
        upsample: keyword only; ``u > 1`` makes this an upsampling layer whose output unit ``q``
            reads the single input unit ``floor(q / u)`` (a ``u``-stride transposed convolution
            with a ``u``-tap kernel, or nearest-neighbour upsampling). On such an axis kernel,
            stride and dilation must be 1 and the padding 0.
    """

    kernel: IntOrTuple = 1
    stride: IntOrTuple = 1
    padding: Any = 0
    dilation: IntOrTuple = 1
    name: str = ""
    upsample: IntOrTuple = dataclasses.field(default=1, kw_only=True)

    def __post_init__(self) -> None:
        label = _label(self)
        if not isinstance(self.name, str):
            raise TypeError(f"LayerSpec: name must be a str, got {self.name!r}")
        lengths: dict[str, int] = {}
        for field in _AXIS_FIELDS:
            v = getattr(self, field)
            if _is_int(v):
                if v < 1:
                    raise ValueError(f"{label}: {field} must be an int >= 1 (or a tuple of "
                                     f"them, one per axis), got {v!r}")
                continue
            if isinstance(v, tuple | list) and v and all(_is_int(x) and x >= 1 for x in v):
                lengths[field] = len(v)
                continue
            raise ValueError(f"{label}: {field} must be an int >= 1 or a non-empty tuple of "
                             f"ints >= 1 (one per axis), got {v!r}")
        p = self.padding
        if isinstance(p, str):
            if p.upper() not in ("SAME", "VALID"):
                raise ValueError(f"{label}: padding={p!r}; expected 'SAME', 'VALID', an int or "
                                 "a per-axis tuple of ints / (lo, hi) pairs")
        elif not _is_int(p):
            ok = isinstance(p, tuple | list) and len(p) > 0 and all(
                _is_int(e) or (isinstance(e, tuple | list) and len(e) == 2
                               and all(_is_int(x) for x in e))
                for e in p)
            if not ok:
                raise ValueError(f"{label}: padding={p!r}; expected 'SAME', 'VALID', an int or "
                                 "a tuple with one entry per axis, each an int or a (lo, hi) "
                                 "pair of ints")
            lengths["padding"] = len(p)
        if len(set(lengths.values())) > 1:
            desc = ", ".join(f"{f} has {n}" for f, n in lengths.items())
            raise ValueError(f"{label}: per-axis fields disagree on the number of axes ({desc} "
                             "entries)")
        n_axes = next(iter(lengths.values()), 1)
        for a in range(n_axes):
            u = _axis_value(self.upsample, a)
            if u == 1:
                continue
            k, s, d = (_axis_value(getattr(self, f), a) for f in ("kernel", "stride", "dilation"))
            pad = self._pad_pair(a)
            if (k, s, d) != (1, 1, 1) or pad not in ((0, 0), "SAME", "VALID"):
                raise ValueError(
                    f"{label}: an upsampling layer (upsample={self.upsample!r}) reads one input "
                    "unit per output unit, so on its upsampled axes kernel, stride and dilation "
                    f"must be 1 and the padding 0; got kernel={self.kernel!r}, "
                    f"stride={self.stride!r}, dilation={self.dilation!r}, "
                    f"padding={self.padding!r} (put a convolution in a layer of its own)")

    def _pad_pair(self, a: int) -> tuple[int, int] | str:
        p = self.padding
        if isinstance(p, str):
            return p.upper()
        if _is_int(p):
            return (int(p), int(p))
        e = p[a]
        return (int(e), int(e)) if _is_int(e) else (int(e[0]), int(e[1]))


def _axis_value(v: Any, a: int) -> int:
    return int(v) if _is_int(v) else int(v[a])


@dataclasses.dataclass(frozen=True)
class CalculatorResult:
    """Per axis ``size``, ``stride`` (jump), ``padding``; ``layers``: the same after each layer
    (``(name, size, stride, padding, feature_size)`` with ``feature_size`` None when no
    ``input_size`` was given). Unit ``u`` of the last layer sees the input interval
    :meth:`region` ``(u)`` (inclusive, unclipped)."""

    size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    layers: tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...], Any], ...]

    @property
    def jumps(self) -> tuple[tuple[int, ...], ...]:
        """The jump of each layer's input grid (input pixels between neighbouring units of the
        layer below): ``J_1 = 1``, ``J_l = s_1 ... s_{l-1}``; one per-axis tuple per layer."""
        first = (1,) * len(self.size)
        return (first,) + tuple(row[2] for row in self.layers[:-1]) if self.layers else ()

    def region(self, unit: int | Sequence[int]) -> tuple[tuple[int, int], ...]:
        """Per axis the inclusive, unclipped input interval ``(lo, hi)`` of output unit
        ``unit`` (an int for every axis or one per axis): ``lo = unit*stride - padding``,
        ``hi = lo + size - 1``."""
        u = _position(unit, len(self.size))
        return tuple((q * j - p, q * j - p + s - 1)
                     for q, j, p, s in zip(u, self.stride, self.padding, self.size, strict=True))

    def table(self) -> str:
        lines = [f"{'layer':<16}{'size':<16}{'stride':<16}{'padding':<16}{'output':<16}"]
        for name, s, j, p, n in self.layers:
            lines.append(f"{name:<16}{s!s:<16}{j!s:<16}{p!s:<16}{n!s:<16}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# resolving a chain: per layer and axis (kernel, stride, dilation, upsample, pad_lo, pad_hi)
# --------------------------------------------------------------------------------------------


def _as_spec(layer: Any, i: int) -> LayerSpec:
    if isinstance(layer, LayerSpec):
        return layer
    if isinstance(layer, dict):
        return LayerSpec(**layer)
    if isinstance(layer, tuple | list):
        return LayerSpec(*layer)
    raise TypeError(f"layer {i}: a layer must be a LayerSpec, a dict or a tuple of LayerSpec "
                    f"fields; got {type(layer).__name__}")


def _where(i: int, spec: LayerSpec) -> str:
    return f"layer {i} ({spec.name!r})" if spec.name else f"layer {i}"


def _position(position: Any, ndim: int) -> tuple[int, ...]:
    if _is_int(position):
        return (int(position),) * ndim
    if isinstance(position, tuple | list) and len(position) == ndim and all(
            _is_int(q) for q in position):
        return tuple(int(q) for q in position)
    raise ValueError(f"position/unit must be an int or a tuple of {ndim} ints (one per axis), "
                     f"got {position!r}")


def _infer_ndim(specs: list[LayerSpec], input_size: Any, position: Any, ndim: Any) -> int:
    if ndim is not None:
        if not _is_int(ndim) or ndim < 1:
            raise ValueError(f"ndim must be an int >= 1, got {ndim!r}")
        return int(ndim)
    for v in (position, input_size):
        if v is not None and not _is_int(v) and isinstance(v, tuple | list):
            return len(v)
    for s in specs:
        for field in (*_AXIS_FIELDS, "padding"):
            e = _entries(s, field)
            if e is not None:
                return len(e)
    return 2


def _resolve(layers: Iterable[Any], input_size: Any, ndim: Any, position: Any = None):
    """``(specs, ndim, axes, sizes)``: ``axes[i][a] = (k, s, d, u, pad_lo, pad_hi)`` and
    ``sizes[i]`` the input size of layer ``i`` per axis (``sizes[-1]`` the output's), or Nones
    without ``input_size``."""
    if isinstance(layers, LayerSpec):
        raise TypeError("layers must be a sequence of LayerSpec (the chain), got one LayerSpec")
    specs = [_as_spec(layer, i) for i, layer in enumerate(layers)]
    if not specs:
        raise ValueError("the layer chain is empty: pass at least one LayerSpec")
    ndim = _infer_ndim(specs, input_size, position, ndim)
    if input_size is None:
        n = None
    elif _is_int(input_size) and input_size >= 1:
        n = (int(input_size),) * ndim
    elif (isinstance(input_size, tuple | list) and len(input_size) == ndim
          and all(_is_int(x) and x >= 1 for x in input_size)):
        n = tuple(int(x) for x in input_size)
    else:
        raise ValueError(f"input_size must be an int >= 1 or a tuple of {ndim} ints >= 1 (one "
                         f"per axis), got {input_size!r}")
    axes, sizes = [], [n]
    for i, s in enumerate(specs):
        where = _where(i, s)
        for field in (*_AXIS_FIELDS, "padding"):
            e = _entries(s, field)
            if e is not None and len(e) != ndim:
                raise ValueError(f"{where}: {field}={getattr(s, field)!r} has {len(e)} entries; "
                                 f"the chain has {ndim} spatial axes")
        row = []
        for a in range(ndim):
            k, st, d, u = (_axis_value(getattr(s, f), a) for f in _AXIS_FIELDS)
            ke = (k - 1) * d + 1
            pad = s._pad_pair(a)
            if pad == "VALID":
                pad = (0, 0)
            elif pad == "SAME":
                if st == 1:
                    pad = ((ke - 1) // 2, ke - 1 - (ke - 1) // 2)
                elif n is None:
                    raise ValueError(f"{where}: 'SAME' padding of a strided layer depends on the "
                                     "input size: pass input_size (or explicit padding)")
                else:
                    out = -(-n[a] // st)
                    total = max((out - 1) * st + ke - n[a], 0)
                    pad = (total // 2, total - total // 2)
            row.append((k, st, d, u, pad[0], pad[1]))
        axes.append(tuple(row))
        if n is not None:
            out = tuple(n[a] * u if u > 1 else (n[a] + lo + hi - ((k - 1) * d + 1)) // st + 1
                        for a, (k, st, d, u, lo, hi) in enumerate(row))
            for a in range(ndim):
                if out[a] < 1:
                    raise ValueError(f"{where}: the output would be empty on axis {a} (input "
                                     f"size {n[a]}, kernel {row[a][0]}, dilation {row[a][2]}, "
                                     f"padding {row[a][4:]}): the input_size is too small for "
                                     "this chain")
            n = out
        sizes.append(n)
    return specs, ndim, axes, sizes


# --------------------------------------------------------------------------------------------
# the three views
# --------------------------------------------------------------------------------------------


def receptive_field(layers: Iterable[Any], input_size: IntOrTuple | None = None,
                    ndim: int | None = None) -> CalculatorResult:
    """The receptive field of a sequential chain by the forward closed form (no upsampling).

    Args:
        layers: :class:`LayerSpec` objects (or dicts / tuples of their fields), input first.
        input_size: the input's spatial size (needed for ``"SAME"`` padding of strided layers;
            also reports each layer's output size).
        ndim: the number of spatial axes (default: from ``input_size`` or the first tuple
            field, else 2).

    Returns:
        A :class:`CalculatorResult`: unit ``u`` of the last layer sees input indices
        ``u*stride - padding`` to ``u*stride - padding + size - 1`` (inclusive, unclipped).

    Raises:
        ValueError: an empty chain, bad sizes, strided SAME padding without ``input_size``, an
            input too small for the chain, or an upsampling layer (its units see
            position-dependent regions: use :func:`receptive_interval` /
            :func:`receptive_size`).
        TypeError: a layer that is not a LayerSpec, dict or tuple.
    """
    specs, ndim, axes, sizes = _resolve(layers, input_size, ndim)
    size, jump, pad = [1] * ndim, [1] * ndim, [0] * ndim
    rows = []
    for i, (s, row) in enumerate(zip(specs, axes, strict=True)):
        if any(u > 1 for (_, _, _, u, _, _) in row):
            raise ValueError(f"{_where(i, s)} upsamples (upsample={s.upsample!r}): the units "
                             "after it see regions that depend on their position, so there is "
                             "no closed form; use receptive_interval() or receptive_size()")
        for a, (k, st, d, _, lo, _) in enumerate(row):
            size[a] += (k - 1) * d * jump[a]
            pad[a] += lo * jump[a]
            jump[a] *= st
        rows.append((s.name or f"layer{i}", tuple(size), tuple(jump), tuple(pad),
                     sizes[i + 1]))
    return CalculatorResult(tuple(size), tuple(jump), tuple(pad), tuple(rows))


def _interval(axes, a: int, q: int) -> tuple[int, int]:
    lo = hi = q
    for row in reversed(axes):
        k, st, d, u, plo, _ = row[a]
        if u > 1:
            lo, hi = lo // u, hi // u
        else:
            lo, hi = st * lo - plo, st * hi - plo + (k - 1) * d
    return lo, hi


def receptive_interval(layers: Iterable[Any], position: int | Sequence[int] = 0,
                       input_size: IntOrTuple | None = None,
                       ndim: int | None = None) -> tuple[tuple[int, int], ...]:
    """The input region of one output unit, by the recurrence run backwards in exact integers.

    Output unit ``q`` of a layer reads input units ``q*stride - pad_lo`` to
    ``q*stride - pad_lo + (kernel - 1) * dilation``; of an upsampling layer, ``floor(q / u)``.
    Exact for every chain, including upsampling ones, whose regions depend on the position.

    Args:
        layers: the chain, input side first (as in :func:`receptive_field`).
        position: the output unit's index, an int for every axis or one per axis; any ints
            (the input is unbounded, nothing is clipped).
        input_size: needed only for ``"SAME"`` padding of strided layers.
        ndim: the number of spatial axes (default: from ``position``, ``input_size`` or the
            first tuple field, else 2).

    Returns:
        Per axis the inclusive, unclipped input interval ``(lo, hi)``. Without upsampling it is
        ``receptive_field(...).region(position)``.
    """
    specs, ndim, axes, _ = _resolve(layers, input_size, ndim, position)
    q = _position(position, ndim)
    return tuple(_interval(axes, a, q[a]) for a in range(ndim))


def receptive_size(layers: Iterable[Any], input_size: IntOrTuple | None = None,
                   ndim: int | None = None) -> tuple[int, ...]:
    """The theoretical receptive field size per axis: the widest region over output positions.

    ``max_q (hi - lo + 1)`` of :func:`receptive_interval` over all positions ``q`` of an
    unbounded output; the widths repeat with period ``prod(upsample)`` along each axis, so one
    period is checked. Without upsampling every unit has the same width,
    ``receptive_field(...).size``.

    Args:
        layers, input_size, ndim: as in :func:`receptive_interval`.

    Returns:
        A tuple of ints, one per axis.
    """
    specs, ndim, axes, _ = _resolve(layers, input_size, ndim)
    out = []
    for a in range(ndim):
        period = math.prod(row[a][3] for row in axes)
        out.append(max(hi - lo + 1 for lo, hi in (_interval(axes, a, q) for q in range(period))))
    return tuple(out)
