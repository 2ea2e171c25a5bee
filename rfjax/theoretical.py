"""The theoretical receptive field (TRF) of any JAX function, exact for every output unit.

``rfjax.trf(fn, x)`` traces ``fn`` to a jaxpr and propagates, primitive by primitive, which input
positions each output position can depend on (see :mod:`rfjax.engine`). The answer is
structural: it depends on the architecture (kernels, strides, dilations, padding, the graph),
never on weight values or activations.

Conventions
-----------
* Arrays are channels-last with a leading batch axis: the input is ``(N, *spatial, C)`` with 1, 2
  or 3 spatial axes; the output is ``(N, *spatial_out, C)`` (a transformer's ``(N, tokens, C)``
  is accepted, its token axis need not correspond to any input axis; ``(N, C)`` logits have no
  spatial axis).
* A *unit* is a tuple of output spatial indices (all output channels of that position, image 0).
* Regions are per input spatial axis ``(start, stop)``, **inclusive** and **unclipped**: unit
  ``u`` of an aligned network sees input indices ``u*stride - padding`` to
  ``u*stride - padding + size - 1``, which may reach past the image (into zero padding).
  Masks are exact and clipped: ``mask(unit)[i, j]`` is True iff input pixel ``(i, j)`` (any
  channel) has a path to the unit.
* The summaries (``size``, ``stride``, ``padding``, ``aligned``, ``is_global``) follow from
  every unit: from the per-unit interval arrays of the whole output, and for ``is_global``
  from the exact masks of every unit (see :class:`TRF`); nothing is sampled.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import os
import re
import sys
import sysconfig
import warnings
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import jax
import numpy as np
from jax.extend import core as jcore

from rfjax import adapters, callables
from rfjax.engine import (
    Context,
    DynamicDependencyError,
    Info,
    Row,
    TRFError,
    UnsupportedPrimitiveError,
    backward,
    bshape,
    empty_info,
    forward,
)
from rfjax.engine.errors import source_line
from rfjax.engine.fields import estimate_slopes
from rfjax.selection import check_unit, describe_input, explain_trace_error, select_output

__all__ = ["TRF", "LayerRF", "trf", "TRFError", "UnsupportedPrimitiveError",
           "DynamicDependencyError", "BatchCouplingWarning"]

_MASK_CHUNK = 256
#: What the printed forms (``table()``, ``str()``, the CLI) show for the stride of an axis on
#: which no single closed form fits every unit.
MISALIGNED = "-"


class BatchCouplingWarning(UserWarning):
    """The function mixes images of a batch (e.g. BatchNorm in training mode)."""


Number = int | Fraction


def _num(x: float) -> Number:
    f = Fraction(float(x)).limit_denominator(16)
    return int(f) if f.denominator == 1 else f


def _json_num(x: Number) -> int | float:
    return int(x) if isinstance(x, int) or x.denominator == 1 else float(x)


def _strides(stride: Sequence[Number], aligned: Sequence[bool]) -> list[str]:
    """The strides as printed: ``-`` on an axis that is not aligned."""
    return [str(s) if ok else MISALIGNED for s, ok in zip(stride, _flags(aligned, stride),
                                                          strict=True)]


def _json_strides(stride: Sequence[Number], aligned: Sequence[bool]) -> list[Any]:
    """The strides as JSON: ``None`` on an axis that is not aligned."""
    return [_json_num(s) if ok else None for s, ok in zip(stride, _flags(aligned, stride),
                                                          strict=True)]


def _flags(aligned: Sequence[bool], stride: Sequence[Number]) -> tuple[bool, ...]:
    """Per-axis alignment flags; none given (a hand-built record) reads as aligned."""
    return tuple(aligned) if aligned else (True,) * len(stride)


@dataclasses.dataclass(frozen=True)
class LayerRF:
    """One row of the per-layer table: the field of a layer's output.

    ``size``, ``stride`` and ``padding`` are per input spatial axis, in the same convention as
    :class:`TRF`, read off the layer's interval arrays (a position of the layer is all its
    channels): ``stride`` is the jump between adjacent positions of this layer, ``size`` the
    largest extent, ``aligned[a]`` whether one closed form fits every position on axis ``a``
    (else ``stride`` is a least-squares summary, printed ``-``). ``is_global[a]``: every
    position's interval covers the whole axis and does not move (then ``size`` is the input
    extent and ``stride`` 0); unlike :attr:`TRF.is_global` this is not checked on masks, so
    dilation holes inside a layer's interval are not seen here. ``source`` is the user's line
    that created the layer (the first frame outside JAX, Flax, Equinox and Haiku).
    """

    name: str
    source: str
    primitive: str
    shape: tuple[int, ...]
    size: tuple[int, ...]
    stride: tuple[Number, ...]
    padding: tuple[int, ...]
    is_global: tuple[bool, ...]
    aligned: tuple[bool, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; the stride of an axis that is not aligned is ``None``."""
        return {"name": self.name, "source": self.source, "primitive": self.primitive,
                "shape": list(self.shape), "size": list(self.size),
                "stride": _json_strides(self.stride, self.aligned),
                "padding": list(self.padding), "is_global": list(self.is_global),
                "aligned": list(_flags(self.aligned, self.stride))}


@dataclasses.dataclass(frozen=True, eq=False)
class TRF:
    """The theoretical receptive field of ``fn`` at an example input (see :func:`trf`).

    Every summary follows from every output unit: ``size``, ``stride``, ``padding`` and
    ``aligned`` from the per-unit interval arrays of the whole output, ``is_global`` from the
    exact mask of every unit.

    Attributes (tuples have one entry per input spatial axis):
        input_shape: the input's spatial shape.
        output_shape: the output's spatial shape (``()`` when the output has no spatial axis).
        size: the field's extent per axis: the largest per-unit extent ``stop - start + 1``
            of :meth:`region` (exact; for a global axis, the input's extent).
        stride: the jump between adjacent output units, in input pixels (an ``int``, ``0`` on
            a global axis or where the field does not move). On an axis that is not aligned
            (``aligned_axes[a]`` False) no single jump exists: ``stride`` is then the
            least-squares jump of the units' starts (a ``Fraction`` such as ``13/15`` after
            upsampling), a summary only, and the printed forms (:meth:`table`, ``str()``,
            ``rfjax trf``) show it as ``-``; :meth:`as_dict` gives ``None``.
        padding: how far unit 0's field starts before input index 0 (``-start`` of unit 0).
        aligned: True when ONE closed form fits every unit: every unit ``u`` has
            ``region(u)[a] == (u_j*stride[a] - padding[a], u_j*stride[a] - padding[a] +
            size[a] - 1)`` on every axis ``a`` (``u_j`` the output index the axis follows; a
            global axis fits with stride 0). False for U-Nets, transposed convolutions,
            cumulative sums (a field that grows with the unit), token axes mixing rows and
            columns: use :meth:`region` and :meth:`mask`, which are exact per unit.
        aligned_axes: ``aligned`` per axis (``aligned == all(aligned_axes)``).
        is_global: per axis, True when every unit's field covers the whole axis (the exact
            mask of every unit, projected onto the axis, holds every index: dilation holes
            count) and the field does not move with the unit; then ``size`` is the input's
            extent, ``stride`` 0, ``padding`` 0 and :meth:`region` gives ``(0, n - 1)``.
            Attention, global pooling, an SE gate or image pooling added to a convolution
            (ASPP) make an axis global. A field that moves with an exact nonzero stride is
            not global even where it overhangs the whole input (CIFAR's 74-pixel field on
            32x32 images keeps size 74, stride 8).
        batch_coupled: True when an output unit depends on other images of the batch
            (BatchNorm in training mode); masks then include those images' pixels.
        layers: the per-layer table (see :class:`LayerRF`, :meth:`table`).
    """

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    size: tuple[int, ...]
    stride: tuple[Number, ...]
    padding: tuple[int, ...]
    aligned: bool
    is_global: tuple[bool, ...]
    batch_coupled: bool
    layers: tuple[LayerRF, ...]
    _jaxpr: Any = dataclasses.field(repr=False)
    _tape: Any = dataclasses.field(repr=False)
    _out_shape_full: tuple[int, ...] = dataclasses.field(repr=False)
    _lo: tuple[np.ndarray, ...] = dataclasses.field(repr=False)
    _hi: tuple[np.ndarray, ...] = dataclasses.field(repr=False)
    aligned_axes: tuple[bool, ...] = ()

    # ---------------------------------------------------------------- per unit

    def _check_unit(self, unit: Sequence[int]) -> tuple[int, ...]:
        return check_unit(unit, self.output_shape)

    def region(self, unit: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """Per input spatial axis ``(start, stop)``, inclusive and unclipped.

        On a global axis the region is ``(0, n - 1)``. The region is the smallest box holding
        the unit's field with padding counted as virtual positions; :meth:`mask` gives the
        exact set of real pixels.
        """
        unit = self._check_unit(unit)
        out = []
        for a in range(len(self.input_shape)):
            if self.is_global[a]:
                out.append((0, self.input_shape[a] - 1))
                continue
            lo, hi = self._lo[a][unit], self._hi[a][unit]
            if not np.isfinite(lo):
                raise ValueError(f"unit {unit} depends on no input position")
            out.append((int(lo), int(hi)))
        return tuple(out)

    def mask(self, unit: Sequence[int]) -> np.ndarray:
        """Boolean array of the input's spatial shape: exactly the unit's dependency set."""
        unit = self._check_unit(unit)
        return self._masks([unit])[0]

    def masks(self, units: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """Masks of several units: ``(len(units), *input_shape)``; for ``units=None``, every
        unit: ``(*output_shape, *input_shape)``."""
        if units is None:
            self._check_unit((0,) * len(self.output_shape))
            all_units = list(itertools.product(*[range(n) for n in self.output_shape]))
            return self._masks(all_units).reshape(self.output_shape + self.input_shape)
        return self._masks([self._check_unit(u) for u in units])

    def _masks(self, units: list[tuple[int, ...]]) -> np.ndarray:
        res = []
        shape = self._out_shape_full
        for start in range(0, len(units), _MASK_CHUNK):
            chunk = units[start:start + _MASK_CHUNK]
            m = np.zeros((len(chunk),) + shape, dtype=bool)
            for q, u in enumerate(chunk):
                # image 0, every channel (trailing axis); a scalar output is its own unit
                m[(q, 0) + u if shape else (q,)] = True
            inm = _backward_queries(self._tape, self._jaxpr, m)
            if inm is None:
                res.append(np.zeros((len(chunk),) + self.input_shape, dtype=bool))
            else:
                res.append(inm.any(axis=(1, inm.ndim - 1)))
        return np.concatenate(res, axis=0)

    def _covering_axes(self, axes: Sequence[int], order: np.ndarray) -> set[int]:
        """The axes of ``axes`` on which the mask of EVERY unit, projected onto the axis, holds
        every input index (units in ``order``, flat indices: likely failures first)."""
        ok = set(axes)
        k = len(self.input_shape)
        units = ([tuple(int(i) for i in np.unravel_index(f, self.output_shape)) for f in order]
                 if self.output_shape else [()])
        for start in range(0, max(len(units), 1), _MASK_CHUNK):
            ms = self._masks(units[start:start + _MASK_CHUNK])
            for a in sorted(ok):
                other = tuple(1 + b for b in range(k) if b != a)
                proj = ms.any(axis=other) if other else ms
                if not proj.all():
                    ok.discard(a)
            if not ok:
                break
        return ok

    # ---------------------------------------------------------------- reporting

    @property
    def stride_text(self) -> tuple[str, ...]:
        """The strides as every printed form shows them (:meth:`table`, ``str()``, ``rfjax
        trf``, ``scripts/trf_demo.py``): ``str(stride)``, or ``-`` on an axis that is not
        aligned (where ``stride`` is only a least-squares summary)."""
        return tuple(_strides(self.stride, self.aligned_axes))

    def table(self) -> str:
        """The per-layer table as text (like the classic receptive-field calculators).

        ``all`` marks a global axis; a stride ``-`` an axis that is not aligned (no single
        jump fits every position, see :class:`TRF`); the last row is the output, from
        every unit's exact mask.
        """
        k = len(self.input_shape)
        head = ["layer", "op", "output shape"] + [f"size[{a}]" for a in range(k)] + [
            f"stride[{a}]" for a in range(k)] + [f"pad[{a}]" for a in range(k)]

        def cells(size, stride, padding, glob, aligned):
            return ([("all" if g else str(s)) for s, g in zip(size, glob, strict=True)]
                    + _strides(stride, aligned) + [str(p) for p in padding])

        rows = [[r.name or r.source, r.primitive, "x".join(map(str, r.shape))]
                + cells(r.size, r.stride, r.padding, r.is_global, r.aligned)
                for r in self.layers]
        rows.append(["<output>", "", "x".join(map(str, self._out_shape_full))]
                    + cells(self.size, self.stride, self.padding, self.is_global,
                            self.aligned_axes))
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths])]
        lines += [fmt.format(*r).rstrip() for r in rows]
        lines.append(f"aligned={self.aligned}  is_global={self.is_global}  "
                     f"batch_coupled={self.batch_coupled}")
        lines.append('("all": a global axis; stride "-": not aligned, no single stride fits '
                     "every position: see region(unit) / mask(unit))")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The numbers as JSON-ready data (the stride of an axis that is not aligned is
        ``None``, as it is printed ``-``)."""
        return {"input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
                "size": list(self.size),
                "stride": _json_strides(self.stride, self.aligned_axes),
                "padding": list(self.padding), "aligned": self.aligned,
                "aligned_axes": list(_flags(self.aligned_axes, self.stride)),
                "is_global": list(self.is_global), "batch_coupled": self.batch_coupled,
                "layers": [r.as_dict() for r in self.layers]}

    def __str__(self) -> str:
        return (f"TRF(size={self.size}, stride={self.stride_text}, "
                f"padding={self.padding}, aligned={self.aligned}, "
                f"is_global={self.is_global}, input_shape={self.input_shape}, "
                f"output_shape={self.output_shape})")


# -------------------------------------------------------------------------------- entry point


def _call(f: Callable, shape: tuple[int, ...], *args, **kwargs):
    """``f(*args, **kwargs)``; an error of ``f`` is re-raised with rfjax's reading of x."""
    try:
        return f(*args, **kwargs)
    except Exception as e:
        raise explain_trace_error(e, shape) from e


def _abstract_arguments(res: callables.Resolved, output: Any, shape: tuple[int, ...]):
    """Trace ``fn`` with its arrays as abstract jaxpr inputs: the parameters of
    ``functools.partial(apply, params)``, the weights of an NNX or Equinox module
    (:func:`rfjax.callables.resolve`). They are parameters, not architecture: a zero weight
    does not cut a path (values fixed by the program, closed over by ``fn``, are architecture;
    see :mod:`rfjax.engine.known`). Parameters may be ``jax.ShapeDtypeStruct`` (e.g. from
    ``jax.eval_shape(model.init, ...)``), and no weight is embedded in the jaxpr."""
    leaves, tree = jax.tree_util.tree_flatten(res.dyn)
    specs = [jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype) for leaf in leaves]

    def g(inp, *arrays):
        f = res.rebuild(jax.tree_util.tree_unflatten(tree, list(arrays)))
        return select_output(_call(f, shape, inp), output)

    return g, specs


def trf(fn: Callable[[Any], Any], x: Any, *, output: Any = None,
        channel_axis: int | None = None, grid: Sequence[int] | None = None,
        prefix_tokens: int = 0, layer: str | None = None) -> TRF:
    """The theoretical receptive field of ``fn`` at inputs shaped like ``x``.

    Args:
        fn: a model or function of one batch: a plain JAX function,
            ``functools.partial(module.apply, params)`` of a Flax linen module, a Flax NNX
            module, a ``torch.nn.Module``, a Keras 3 model (JAX backend), a Haiku pair
            ``(transformed, params[, state])``, an Equinox module (single-example: rfjax
            vmaps it). See :mod:`rfjax.adapters`.
        x: an example input with a leading batch axis and 1-3 spatial axes (an array, a torch
            tensor, a ``jax.ShapeDtypeStruct`` or a shape tuple) in the model's layout; only
            its shape and dtype are used.
        output: when ``fn`` returns several arrays (``(out, intermediates)``), which one:
            an index, a ``"/"``-separated path of keys, or a callable (see
            :func:`rfjax.selection.select_output`; the same convention as :func:`rfjax.erf`).
        channel_axis: the channel axis of ``x`` (default: the framework's; 1 for torch and
            Equinox, -1 otherwise). Masks and regions are over the spatial axes either way,
            and outputs of the input's rank are read in the same layout.
        grid, prefix_tokens: read token outputs ``(N, T, C)`` as ``(N, *grid, C)`` after
            dropping ``prefix_tokens`` leading tokens (a ViT's class token).
        layer: a torch submodule path or a Keras layer name: analyse that layer's output.

    Returns:
        A :class:`TRF`: the closed form (``size``, ``stride``, ``padding``), ``aligned``,
        ``is_global``, ``region(unit)``, ``mask(unit)`` and the per-layer table.

    Raises:
        TypeError: ``fn`` is not callable, or ``x`` is not array-like.
        ValueError: ``x`` is not ``(N, *spatial, C)`` with 1-3 spatial axes.
        TRFError: ``fn`` mixes neighbouring entries of the batch axis the way a convolution
            mixes a spatial axis: ``x`` most likely lacks its batch axis (a Flax model given
            ``(H, W, C)`` treats it as one unbatched image); the message names the shapes.
        UnsupportedPrimitiveError: a primitive on the input-output path has no rule (the
            message names it and the source line).
        DynamicDependencyError: an index map depends on runtime values (data-dependent
            gather, a loop whose trip count depends on the input).
        Exception: an error ``fn`` itself raises while it is traced is re-raised (same type
            where possible, chained ``from`` it) with rfjax's reading of ``x``: batch,
            spatial axes and channels (:func:`rfjax.selection.describe_input`).
    """
    if not callable(fn) and not isinstance(fn, tuple):
        raise TypeError(f"fn must be callable (a function of one array); got "
                        f"{type(fn).__name__}")
    spec = adapters.example_spec(x)
    if len(spec.shape) not in (3, 4, 5):
        raise ValueError(
            f"x has shape {spec.shape} (rank {len(spec.shape)}); expected (N, *spatial, C) "
            "with a leading batch axis, 1 to 3 spatial axes and trailing channels, "
            "i.e. rank 3, 4 or 5")
    if any(d <= 0 for d in spec.shape):
        raise ValueError(f"x has shape {spec.shape}; every axis must be non-empty")

    prep = adapters.prepare(fn, spec.shape, channel_axis=channel_axis, grid=grid,
                            prefix_tokens=prefix_tokens, layer=layer)
    spec = jax.ShapeDtypeStruct(prep.shape, spec.dtype)
    g, extra = _abstract_arguments(prep.resolved, output, tuple(spec.shape))
    closed = jax.make_jaxpr(g)(spec, *extra)
    jaxpr = closed.jaxpr
    if len(jaxpr.outvars) != 1:
        raise ValueError("fn must return a single array (or pass output=...)")
    k = len(spec.shape) - 2
    nd = len(spec.shape)
    lo, hi, slope = [], [], []
    for a in range(k + 1):  # 0 = batch, 1..k spatial
        shp = [1] * nd
        shp[a] = spec.shape[a]
        ar = np.arange(spec.shape[a], dtype=float).reshape(shp)
        lo.append(ar)
        hi.append(ar.copy())
        s = np.zeros(nd)
        s[a] = 1.0
        slope.append(s)
    rows: list[Row] = []
    ctx = Context(k + 1, rows)
    n_extra = len(extra)
    out_infos, _, _, tape = forward(jaxpr, closed.consts,
                                      [Info(lo, hi, slope)] + [None] * n_extra,
                                      [None] * (1 + n_extra), [False] * (1 + n_extra), ctx)
    out_shape = tuple(getattr(jaxpr.outvars[0].aval, "shape", ()))
    info = out_infos[0]
    in_sp = tuple(spec.shape[1:-1])
    if info is None:
        info = empty_info(k + 1, len(out_shape))
    sp_out = tuple(out_shape[1:-1]) if len(out_shape) >= 2 else ()
    # Unit arrays: image 0, min/max over the channel axis -> shape sp_out.
    Lu, Hu = [], []
    for a in range(k + 1):
        L = np.broadcast_to(bshape(info.lo[a], len(out_shape)), out_shape)
        H = np.broadcast_to(bshape(info.hi[a], len(out_shape)), out_shape)
        if len(out_shape) >= 2:
            L, H = L[0].min(axis=-1), H[0].max(axis=-1)
        elif len(out_shape) == 1:
            L, H = L.min(), H.max()
        Lu.append(np.asarray(L, dtype=float))
        Hu.append(np.asarray(H, dtype=float))
    batch_coupled = _batch_coupling(info, tuple(spec.shape), out_shape, Lu[0], Hu[0])
    out_slope = [np.asarray(s) for s in info.slope]
    sp_slopes = [(s[1:-1] if len(out_shape) >= 2 else np.zeros(0)) for s in out_slope]
    forms = [_axis_form(Lu[a], Hu[a], sp_slopes[a]) for a in range(1, k + 1)]
    trf_obj = TRF(input_shape=in_sp, output_shape=sp_out, size=(), stride=(), padding=(),
                  aligned=False, is_global=(False,) * k, batch_coupled=batch_coupled,
                  layers=(), _jaxpr=jaxpr, _tape=tape, _out_shape_full=out_shape,
                  _lo=tuple(Lu[1:]), _hi=tuple(Hu[1:]))
    # An axis may be global only where every unit's interval covers it and the field does not
    # move with an exact nonzero stride; then every unit's mask decides (dilation holes).
    cands = [a for a in range(k) if _covers(Lu[a + 1], Hu[a + 1], in_sp[a])
             and not (forms[a][3] and forms[a][1] != 0)]
    glob = set()
    if cands:
        glob = trf_obj._covering_axes(cands, _likely_partial_first(Lu, Hu, in_sp, cands))
    for a in glob:
        forms[a] = (in_sp[a], 0, 0, True)
    return dataclasses.replace(
        trf_obj, size=tuple(f[0] for f in forms), stride=tuple(f[1] for f in forms),
        padding=tuple(f[2] for f in forms), is_global=tuple(a in glob for a in range(k)),
        aligned=all(f[3] for f in forms), aligned_axes=tuple(f[3] for f in forms),
        layers=tuple(_layer_rows(rows, in_sp, jaxpr, prep.channel_axis)))


# -------------------------------------------------------------------------------- the batch axis


def _batch_coupling(info: Info, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                    L0: np.ndarray, H0: np.ndarray) -> bool:
    """Whether output units depend on other images of the batch (warns); raises where the
    batch axis is mixed like a spatial axis (``x`` most likely lacks its batch axis)."""
    N = in_shape[0]
    if len(out_shape) >= 1:
        # per index of the output's leading axis: the input batch indices it depends on
        Lb = np.broadcast_to(bshape(info.lo[0], len(out_shape)), out_shape)
        Hb = np.broadcast_to(bshape(info.hi[0], len(out_shape)), out_shape)
        rest = tuple(range(1, len(out_shape)))
        lo = np.where(np.isfinite(Lb), Lb, np.inf).min(axis=rest) if rest else Lb
        hi = np.where(np.isfinite(Hb), Hb, -np.inf).max(axis=rest) if rest else Hb
        fin = np.isfinite(lo) & np.isfinite(hi)
        mixes = bool(np.any(hi[fin] > lo[fin]))
        moves = fin.sum() >= 2 and (np.ptp(lo[fin]) > 0 or np.ptp(hi[fin]) > 0)
        if mixes and moves and len(in_shape) <= 4:
            ends = [int(i) for i in np.flatnonzero(fin)[[0, -1]]]
            seen = [f"{int(max(lo[i], 0))}..{int(min(hi[i], N - 1))}" for i in ends]
            raise TRFError(
                f"fn mixes neighbouring entries of the batch axis (axis 0) the way a "
                f"convolution mixes a spatial axis: output {ends[0]} along axis 0 depends on "
                f"inputs {seen[0]} of axis 0, output {ends[1]} on {seen[1]}. "
                f"fn most likely treats x of shape {in_shape} as one unbatched input with "
                f"{len(in_shape) - 1} spatial axes (Flax convolutions accept unbatched "
                f"inputs), so the output {out_shape} has no batch axis. "
                f"{describe_input(in_shape)}")
    has_batch = len(out_shape) >= 1 and out_shape[0] == N
    coupled = False
    if has_batch:
        Lb = np.broadcast_to(bshape(info.lo[0], len(out_shape)), out_shape)
        Hb = np.broadcast_to(bshape(info.hi[0], len(out_shape)), out_shape)
        idx = np.arange(N).reshape((N,) + (1,) * (len(out_shape) - 1))
        fin = np.isfinite(Lb)
        coupled = bool(np.any(fin & ((Lb != idx) | (Hb != idx))))
    elif len(out_shape) <= 1 and N > 1:
        coupled = bool(np.isfinite(L0).any() and (H0 > L0).any())
    if coupled:
        warnings.warn(
            f"fn mixes the images of a batch (e.g. BatchNorm in training mode): each output "
            "depends on every image, so per-image receptive fields are not defined; masks "
            "include the other images' pixels. Use inference mode "
            "(use_running_average=True) for per-image fields. If x of shape "
            f"{in_shape} has no batch axis, add one: {describe_input(in_shape)}",
            BatchCouplingWarning, stacklevel=3)
    return coupled


# -------------------------------------------------------------------------------- summaries


def _axis_form(L: np.ndarray, H: np.ndarray, slopes: np.ndarray):
    """``(size, stride, padding, aligned)`` of one input axis from every unit's interval.

    ``L``, ``H``: per unit (any number of output axes), the first and last input index
    (unclipped; ``inf``/``-inf`` for a unit that depends on nothing on this axis).
    ``slopes``: the jump per output axis from the rules (for output axes of length 1, where
    the arrays cannot show it). ``aligned``: every unit is finite, every extent equals
    ``size`` and ``L`` is ``L[0] + u_j * stride`` along one output axis ``j`` (or constant).
    Otherwise ``stride`` is the least-squares jump of ``L`` along the output axis it moves
    most with (a summary).
    """
    L = np.asarray(L, dtype=float)
    H = np.asarray(H, dtype=float)
    fin = np.isfinite(L) & np.isfinite(H)
    if not fin.any():
        return 0, 0, 0, False
    ext = H - L + 1
    size = int(ext[fin].max())
    complete = bool(fin.all())
    same_extent = bool(np.all(ext[fin] == size))
    zero = (0,) * L.ndim
    origin = float(L[zero]) if fin[zero] else float(L[fin].min())
    padding = int(-origin)
    Lz = np.where(fin, L, 0.0)
    moves = [j for j in range(L.ndim) if L.shape[j] >= 2
             and np.any(np.diff(Lz, axis=j)[_both(fin, j)] != 0)]
    if not moves:
        # L is constant: the stride is the rules' jump along an output axis of length 1
        ones = [j for j in range(L.ndim) if L.shape[j] == 1 and j < len(slopes)
                and slopes[j] != 0]
        stride = _num(slopes[max(ones, key=lambda j: abs(slopes[j]))]) if ones else 0
        return size, stride, padding, complete and same_extent
    if len(moves) == 1 and complete and same_extent:
        j = moves[0]
        step = float(np.take(L, 1, axis=j)[(0,) * (L.ndim - 1)] - L[zero])
        u = np.arange(L.shape[j]).reshape([-1 if d == j else 1 for d in range(L.ndim)])
        if step == int(step) and bool(np.all(L == origin + u * step)):
            return size, int(step), padding, True

    def jump(j):
        if j < len(slopes) and slopes[j] != 0:
            return float(slopes[j])
        return float(estimate_slopes(np.where(fin, L, np.inf), L.shape)[j])

    j = max(moves, key=lambda jj: abs(jump(jj)))
    return size, _num(jump(j)), padding, False


def _covers(L: np.ndarray, H: np.ndarray, n: int) -> bool:
    """Every unit's interval holds ``0 .. n - 1`` (necessary for a global axis)."""
    return bool(np.all(np.isfinite(L) & np.isfinite(H)) and np.all(L <= 0)
                and np.all(H >= n - 1))


def _likely_partial_first(Lu, Hu, in_sp, cands) -> np.ndarray:
    """Flat unit indices, those whose intervals cover the candidate axes by the smallest
    margin first (where a hole is likeliest): the exact check then stops early."""
    margin = None
    for a in cands:
        m = np.minimum(-Lu[a + 1], Hu[a + 1] - (in_sp[a] - 1))
        margin = m if margin is None else np.minimum(margin, m)
    return np.argsort(np.ravel(margin), kind="stable")


def _backward_queries(tape, jaxpr: jcore.Jaxpr, seeds: np.ndarray) -> np.ndarray | None:
    """The backward pass (:func:`rfjax.engine.backward`) for a batch of queries, exact, with
    duplicate queries merged on the way.

    ``seeds``: ``(Q, *output_shape)`` one mask per query. Queries whose live masks become
    identical (e.g. once an attention layer or a global pooling has spread every query over
    the whole feature map) give identical answers from there on, so they are carried once:
    for a global network the cost of Q queries falls to about that of one. Returns the
    input's ``(Q, *input_shape)`` mask, or ``None`` when the output does not depend on it.
    """
    state = {"index": np.arange(seeds.shape[0]), "rows": seeds.shape[0], "gap": 4, "next": 4}

    def merge(step: int, masks: dict) -> dict:
        if state["rows"] > 1 and step >= state["next"]:
            keep, inverse = _distinct_rows(list(masks.values()))
            if len(keep) < state["rows"]:
                masks = {v: m[keep] for v, m in masks.items()}
                state["index"] = inverse[state["index"]]  # query -> its row in the masks
                state["rows"] = len(keep)
                state["gap"] = 4
            else:
                state["gap"] = min(2 * state["gap"], 16)  # nothing merged: check less often
            state["next"] = step + state["gap"]
        return masks

    m = backward(tape, jaxpr, [seeds], after_step=merge)[0]
    return None if m is None else m[state["index"]]


def _distinct_rows(arrays: list[np.ndarray]):
    """Rows (queries) whose masks agree in every array: ``(keep, inverse)`` with
    ``arrays[i][keep][inverse] == arrays[i]``."""
    q = arrays[0].shape[0]
    packed = np.concatenate([np.packbits(a.reshape(q, -1), axis=1) for a in arrays], axis=1)
    seen: dict[bytes, int] = {}
    keep, inverse = [], np.empty(q, dtype=np.intp)
    for i in range(q):
        key = packed[i].tobytes()
        if key not in seen:
            seen[key] = len(keep)
            keep.append(i)
        inverse[i] = seen[key]
    return np.asarray(keep, dtype=np.intp), inverse


# -------------------------------------------------------------------------------- the table


def _layer_rows(rows: list[Row], in_sp: tuple[int, ...], jaxpr,
                channel_axis: int | None = None) -> list[LayerRF]:
    """One :class:`LayerRF` per recorded row. A row is dropped only when the previous row has
    the same layer name, shape and field (e.g. a softmax's reductions inside one attention
    module): every named layer keeps its row, whatever its field. ``channel_axis``: the
    channel axis of the model's own layout, for rows of the input's rank (NCHW feature maps
    of a torch model); other rows have their channels last."""
    out: list[LayerRF] = []
    prev = None
    sources = _user_sources(rows, jaxpr)
    for r, source in zip(rows, sources, strict=True):
        cax = channel_axis if (channel_axis is not None
                               and len(r.shape) == len(in_sp) + 2) else None
        forms = [_var_summary(r.info, a, r.shape, in_sp[a - 1], cax)
                 for a in range(1, len(in_sp) + 1)]
        name = r.name
        if "/" not in name:  # not inside a submodule (e.g. a pooling call): say where
            where = _short(source)
            name = f"{name} @ {where}" if name else where
        key = (name, r.shape, tuple(forms))
        if key == prev:
            continue
        prev = key
        out.append(LayerRF(name=name, source=source, primitive=r.primitive, shape=r.shape,
                           size=tuple(f[0] for f in forms), stride=tuple(f[1] for f in forms),
                           padding=tuple(f[2] for f in forms),
                           is_global=tuple(f[4] for f in forms),
                           aligned=tuple(f[3] for f in forms)))
    return out


def _var_summary(info: Info, a: int, shape, n: int, channel_axis: int | None = None):
    """``(size, stride, padding, aligned, is_global)`` of one layer's output on input axis
    ``a``: :func:`_axis_form` over its positions (a position = all channels, the last axis or
    ``channel_axis``); global when every position's interval covers the axis and does not
    move."""
    nd = len(shape)
    L = bshape(np.asarray(info.lo[a], dtype=float), nd)
    H = bshape(np.asarray(info.hi[a], dtype=float), nd)
    slopes = np.asarray(info.slope[a], dtype=float)
    if nd >= 2:  # compact arrays: size 1 along the axes they do not vary on
        c = nd - 1 if channel_axis is None else channel_axis
        L, H = L.min(axis=c), H.max(axis=c)
        slopes = np.delete(slopes, c) if slopes.size == nd else np.zeros(nd - 1)
    L, H = np.broadcast_arrays(L, H)
    size, stride, padding, aligned = _axis_form(L, H, slopes)
    if aligned and stride == 0 and _covers(L, H, n):
        return n, 0, 0, True, True
    return size, stride, padding, aligned, False


def _library_dirs() -> tuple[str, ...]:
    dirs = []
    for name in ("jax", "jaxlib", "flax", "equinox", "haiku"):
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            dirs.append(os.path.dirname(os.path.abspath(path)) + os.sep)
    return tuple(dirs)


@functools.lru_cache(maxsize=1)
def _stdlib() -> str:
    path = sysconfig.get_paths().get("stdlib", "")
    return os.path.abspath(path) + os.sep if path else ""


def _is_library(path: str, dirs: tuple[str, ...]) -> bool:
    if path.startswith(dirs):
        return True
    stdlib = _stdlib()
    return bool(stdlib) and path.startswith(stdlib) and not any(
        p in path for p in ("site-packages", "dist-packages"))


def _user_frame(eqn, dirs: tuple[str, ...]) -> str | None:
    """The innermost frame of an equation's traceback outside JAX, Flax, Equinox, Haiku
    and the standard library: the user's line (``file:line (function)``)."""
    tb = getattr(getattr(eqn, "source_info", None), "traceback", None)
    for frame in getattr(tb, "frames", ()) or ():
        if not _is_library(frame.file_name, dirs):
            return f"{frame.file_name}:{frame.line_num} ({frame.function_name})"
    return None


def _walk(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jcore.jaxprs_in_params(eqn.params):
            yield from _walk(sub)


def _user_sources(rows: list[Row], jaxpr) -> list[str]:
    """Per row, the user's line: a row whose recorded source is inside a library (e.g.
    ``flax/linen/pooling.py`` for ``nn.max_pool``) gets the first frame outside it. Rows are
    matched to their equations by (source, primitive, shape), in the order of the program."""
    dirs = _library_dirs()
    need = {(r.source, r.primitive) for r in rows if _is_library(r.source, dirs)}
    if not need:
        return [_no_column(r.source) for r in rows]
    prims = {p for _, p in need}
    frames: dict = collections.defaultdict(list)
    for eqn in _walk(jaxpr):
        if eqn.primitive.name not in prims:
            continue
        src = source_line(eqn)
        if (src, eqn.primitive.name) not in need:
            continue
        user = _user_frame(eqn, dirs) or src
        for o in eqn.outvars:
            frames[(src, eqn.primitive.name, tuple(getattr(o.aval, "shape", ())))].append(user)
    seen: collections.Counter = collections.Counter()
    out = []
    for r in rows:
        key = (r.source, r.primitive, r.shape)
        found = frames.get(key)
        if not found:
            out.append(_no_column(r.source))
            continue
        out.append(found[seen[key] % len(found)])
        seen[key] += 1
    return out


def _no_column(source: str) -> str:
    """``file:line (function)`` from JAX's ``file:line:column (function)``."""
    match = re.fullmatch(r"(.*:\d+):\d+( \(.*\))", source)
    return match.group(1) + match.group(2) if match else source


def _short(source: str) -> str:
    """``file.py:line (function)`` of a source line (the directory dropped)."""
    return source.rsplit("/", 1)[-1]


def _both(fin: np.ndarray, j: int) -> np.ndarray:
    """Pairs of neighbours along axis j that are both finite."""
    n = fin.shape[j]
    return np.take(fin, range(n - 1), axis=j) & np.take(fin, range(1, n), axis=j)
