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
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import warnings
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import jax
import numpy as np

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
from rfjax.engine.fields import estimate_slopes
from rfjax.selection import check_unit, select_output

__all__ = ["TRF", "LayerRF", "trf", "TRFError", "UnsupportedPrimitiveError",
           "DynamicDependencyError", "BatchCouplingWarning"]

_MASK_CHUNK = 256


class BatchCouplingWarning(UserWarning):
    """The function mixes images of a batch (e.g. BatchNorm in training mode)."""


Number = int | Fraction


def _num(x: float) -> Number:
    f = Fraction(float(x)).limit_denominator(16)
    return int(f) if f.denominator == 1 else f


@dataclasses.dataclass(frozen=True)
class LayerRF:
    """One row of the per-layer table: the field of a layer's output.

    ``size``, ``stride`` and ``padding`` are per input spatial axis, in the same convention as
    :class:`TRF` (``stride`` is the jump between adjacent units of this layer; ``size`` the
    largest extent; a global axis has ``stride`` 0 and ``size`` the input extent).
    """

    name: str
    source: str
    primitive: str
    shape: tuple[int, ...]
    size: tuple[int, ...]
    stride: tuple[Number, ...]
    padding: tuple[int, ...]
    is_global: tuple[bool, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "primitive": self.primitive,
                "shape": list(self.shape), "size": list(self.size),
                "stride": [_json_num(s) for s in self.stride], "padding": list(self.padding),
                "is_global": list(self.is_global)}


def _json_num(x: Number) -> int | float:
    return int(x) if isinstance(x, int) or x.denominator == 1 else float(x)


@dataclasses.dataclass(frozen=True, eq=False)
class TRF:
    """The theoretical receptive field of ``fn`` at an example input (see :func:`trf`).

    Attributes (tuples have one entry per input spatial axis):
        input_shape: the input's spatial shape.
        output_shape: the output's spatial shape (``()`` when the output has no spatial axis).
        size: the field's extent per axis (for a misaligned net, the largest per-unit extent;
            for a global axis, the input's extent).
        stride: the jump between adjacent output units, in input pixels (an ``int``, or a
            ``Fraction`` after upsampling; ``0`` on a global axis).
        padding: how far unit 0's field starts before input index 0 (``-start`` of unit 0).
        aligned: True when every unit ``u`` sees exactly ``u*stride - padding`` to
            ``u*stride - padding + size - 1`` (the closed form holds for every unit). When
            False (U-Nets, transposed convolutions, token axes mixing rows and columns),
            ``size`` is the largest per-unit extent, ``stride`` the least-squares jump and
            ``padding`` minus unit 0's start: summaries; use :meth:`region` and :meth:`mask`,
            which are exact per unit.
        is_global: per axis, True when every unit depends on the whole axis and the field does
            not move with the unit (attention, global pooling, dense layers over space).
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
            inm = backward(self._tape, self._jaxpr, [m])[0]
            if inm is None:
                res.append(np.zeros((len(chunk),) + self.input_shape, dtype=bool))
            else:
                res.append(inm.any(axis=(1, inm.ndim - 1)))
        return np.concatenate(res, axis=0)

    # ---------------------------------------------------------------- reporting

    def table(self) -> str:
        """The per-layer table as text (like the classic receptive-field calculators)."""
        k = len(self.input_shape)
        head = ["layer", "op", "output shape"] + [f"size[{a}]" for a in range(k)] + [
            f"stride[{a}]" for a in range(k)] + [f"pad[{a}]" for a in range(k)]
        rows = []
        for r in self.layers:
            rows.append([r.name or r.source, r.primitive, "x".join(map(str, r.shape))]
                        + [("all" if g else str(s)) for s, g in zip(r.size, r.is_global,
                                                                    strict=True)]
                        + [str(s) for s in r.stride] + [str(p) for p in r.padding])
        rows.append(["<output>", "", "x".join(map(str, self._out_shape_full))]
                    + [("all" if g else str(s)) for s, g in zip(self.size, self.is_global,
                                                                strict=True)]
                    + [str(s) for s in self.stride] + [str(p) for p in self.padding])
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths])]
        lines += [fmt.format(*r) for r in rows]
        lines.append(f"aligned={self.aligned}  is_global={self.is_global}  "
                     f"batch_coupled={self.batch_coupled}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The numbers as JSON-ready data."""
        return {"input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
                "size": list(self.size), "stride": [_json_num(s) for s in self.stride],
                "padding": list(self.padding), "aligned": self.aligned,
                "is_global": list(self.is_global), "batch_coupled": self.batch_coupled,
                "layers": [r.as_dict() for r in self.layers]}

    def __str__(self) -> str:
        return (f"TRF(size={self.size}, stride={tuple(map(str, self.stride))}, "
                f"padding={self.padding}, aligned={self.aligned}, is_global={self.is_global}, "
                f"input_shape={self.input_shape}, output_shape={self.output_shape})")


# -------------------------------------------------------------------------------- entry point


def _example_spec(x: Any) -> jax.ShapeDtypeStruct:
    if isinstance(x, tuple | list) and all(isinstance(d, int | np.integer) for d in x):
        return jax.ShapeDtypeStruct(tuple(int(d) for d in x), np.float32)
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(
            f"x must be an array (or jax.ShapeDtypeStruct, or a shape tuple) of shape "
            f"(N, *spatial, C); got {type(x).__name__}")
    return jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)


def _is_arraylike(leaf: Any) -> bool:
    return hasattr(leaf, "shape") and hasattr(leaf, "dtype")


def _abstract_arguments(fn: Callable, output: Any):
    """Trace ``functools.partial(f, params, ...)`` with its array arguments as abstract jaxpr
    inputs: no weights are embedded as constants (faster for big models), and parameters may
    be given as ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape(model.init, ...)``)."""
    if isinstance(fn, functools.partial):
        leaves, tree = jax.tree_util.tree_flatten((fn.args, fn.keywords))
        which = [i for i, leaf in enumerate(leaves) if _is_arraylike(leaf)]
        if which:
            specs = [jax.ShapeDtypeStruct(tuple(leaves[i].shape), leaves[i].dtype)
                     for i in which]

            def g(inp, *arrays):
                full = list(leaves)
                for i, a in zip(which, arrays, strict=True):
                    full[i] = a
                args, kwargs = jax.tree_util.tree_unflatten(tree, full)
                return select_output(fn.func(*args, inp, **kwargs), output)

            return g, specs

    def g1(inp):
        return select_output(fn(inp), output)

    return g1, []


def trf(fn: Callable[[Any], Any], x: Any, *, output: Any = None) -> TRF:
    """The theoretical receptive field of ``fn`` at inputs shaped like ``x``.

    Args:
        fn: any JAX callable of one array: a plain function,
            ``functools.partial(module.apply, params)`` of a Flax linen module, a Flax nnx
            module, an Equinox module wrapped for a batch (``jax.vmap(model)``).
        x: an example input ``(N, *spatial, C)`` with 1-3 spatial axes (an array, a
            ``jax.ShapeDtypeStruct`` or a shape tuple); only its shape and dtype are used.
        output: when ``fn`` returns several arrays (``(out, intermediates)``), which one:
            an index, a ``"/"``-separated path of keys, or a callable (see
            :func:`rfjax.selection.select_output`; the same convention as :func:`rfjax.erf`).

    Returns:
        A :class:`TRF`: the closed form (``size``, ``stride``, ``padding``), ``aligned``,
        ``is_global``, ``region(unit)``, ``mask(unit)`` and the per-layer table.

    Raises:
        TypeError: ``fn`` is not callable, or ``x`` is not array-like.
        ValueError: ``x`` is not ``(N, *spatial, C)`` with 1-3 spatial axes.
        UnsupportedPrimitiveError: a primitive on the input-output path has no rule (the
            message names it and the source line).
        DynamicDependencyError: an index map depends on runtime values (data-dependent
            gather, a loop whose trip count depends on the input).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable (a function of one array); got "
                        f"{type(fn).__name__}")
    spec = _example_spec(x)
    if len(spec.shape) not in (3, 4, 5):
        raise ValueError(
            f"x has shape {spec.shape} (rank {len(spec.shape)}); expected (N, *spatial, C) "
            "with a leading batch axis, 1 to 3 spatial axes and trailing channels, "
            "i.e. rank 3, 4 or 5")
    if any(d <= 0 for d in spec.shape):
        raise ValueError(f"x has shape {spec.shape}; every axis must be non-empty")

    g, extra = _abstract_arguments(fn, output)
    closed = jax.make_jaxpr(g)(spec, *extra)
    jaxpr = closed.jaxpr
    if len(jaxpr.outvars) != 1:
        raise ValueError("fn must return a single array (or pass output=...)")
    k = len(spec.shape) - 2
    N = spec.shape[0]
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
    out_aval = jaxpr.outvars[0].aval
    out_shape = tuple(getattr(out_aval, "shape", ()))
    info = out_infos[0]
    in_sp = tuple(spec.shape[1:-1])
    if info is None:
        info = empty_info(k + 1, len(out_shape))
    has_batch = len(out_shape) >= 1 and out_shape[0] == N
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
    batch_coupled = False
    if has_batch:
        L0 = np.broadcast_to(bshape(info.lo[0], len(out_shape)), out_shape)
        H0 = np.broadcast_to(bshape(info.hi[0], len(out_shape)), out_shape)
        idx = np.arange(N).reshape((N,) + (1,) * (len(out_shape) - 1))
        fin = np.isfinite(L0)
        batch_coupled = bool(np.any(fin & ((L0 != idx) | (H0 != idx))))
    elif len(out_shape) <= 1 and N > 1:
        batch_coupled = bool(np.isfinite(Lu[0]).any() and (Hu[0] > Lu[0]).any())
    if batch_coupled:
        warnings.warn(
            "fn mixes the images of a batch (e.g. BatchNorm in training mode): each output "
            "depends on every image, so per-image receptive fields are not defined; masks "
            "include the other images' pixels. Use inference mode "
            "(use_running_average=True) for per-image fields.", BatchCouplingWarning,
            stacklevel=2)
    out_slope = [np.asarray(s) for s in info.slope]
    sp_slopes = [(s[1:-1] if len(out_shape) >= 2 else np.zeros(0)) for s in out_slope]
    per_axis = [_closed_form(Lu[a], Hu[a], sp_slopes[a], in_sp[a - 1]) for a in range(1, k + 1)]
    trf_obj = TRF(input_shape=in_sp, output_shape=sp_out, size=(), stride=(), padding=(),
                  aligned=False, is_global=(), batch_coupled=batch_coupled, layers=(),
                  _jaxpr=jaxpr, _tape=tape, _out_shape_full=out_shape,
                  _lo=tuple(Lu[1:]), _hi=tuple(Hu[1:]))
    if any(r[3] for r in per_axis):
        # Confirm global axes on real masks: dilation holes would break "the whole axis".
        if sp_out:
            probe = list(itertools.product(*[sorted({0, n // 2, n - 1}) for n in sp_out]))
            ms = trf_obj._masks(probe)
        else:
            ms = trf_obj._masks([()])
        for a in range(k):
            if per_axis[a][3]:
                other = tuple(1 + b for b in range(k) if b != a)
                proj = ms.any(axis=other) if other else ms
                if not proj.all():
                    per_axis[a] = _closed_form(Lu[a + 1], Hu[a + 1], sp_slopes[a + 1],
                                               in_sp[a], allow_global=False)
    trf_obj = dataclasses.replace(
        trf_obj, size=tuple(r[0] for r in per_axis), stride=tuple(r[1] for r in per_axis),
        padding=tuple(r[2] for r in per_axis), is_global=tuple(r[3] for r in per_axis),
        aligned=all(r[4] for r in per_axis), layers=tuple(_layer_rows(rows, in_sp)))
    return trf_obj


def _closed_form(L: np.ndarray, H: np.ndarray, slopes: np.ndarray, n: int,
                 allow_global: bool = True):
    """(size, stride, padding, is_global, aligned) of one input axis from the unit arrays."""
    L = np.asarray(L, dtype=float)
    H = np.asarray(H, dtype=float)
    fin = np.isfinite(L) & np.isfinite(H)
    if not fin.any():
        return 0, 0, 0, False, False
    ext = (H - L + 1)[fin]
    size = int(ext.max())
    const = bool(np.all(L[fin] == L[fin].flat[0]) and np.all(H[fin] == H[fin].flat[0]))
    Lz = np.where(fin, L, 0.0)
    moves = [j for j in range(L.ndim) if L.shape[j] >= 2 and np.any(np.diff(Lz, axis=j)
                                                                    [_both(fin, j)] != 0)]
    moves += [j for j in range(L.ndim) if L.shape[j] == 1 and j < len(slopes)
              and slopes[j] != 0]
    if allow_global and const and not moves and L.flat[0] <= 0 and H.flat[0] >= n - 1:
        return n, 0, 0, True, True
    if not moves:
        return size, 0, int(-L[fin].flat[0]), False, bool(fin.all())
    # The output axis that follows this input axis: the one with the largest jump.
    def jump(j):
        if j < len(slopes) and slopes[j] != 0:
            return float(slopes[j])
        if L.shape[j] >= 2:
            return float(estimate_slopes(np.where(fin, L, np.inf), L.shape)[j])
        return float(slopes[j])

    j = max(moves, key=lambda jj: abs(jump(jj)))
    stride = _num(jump(j))
    origin = L[(0,) * L.ndim] if np.isfinite(L[(0,) * L.ndim]) else L[fin].min()
    padding = int(-origin)
    aligned = bool(fin.all())
    if aligned:
        u = np.arange(L.shape[j]).reshape([-1 if d == j else 1 for d in range(L.ndim)])
        pred = origin + u * float(stride)
        aligned = bool(np.all(L == pred) and np.all(H - L + 1 == size))
    return size, stride, padding, False, aligned


def _layer_rows(rows: list[Row], in_sp: tuple[int, ...]) -> list[LayerRF]:
    out = []
    prev = None
    for r in rows:
        shape = r.shape
        size, stride, padding, glob = [], [], [], []
        for a in range(1, len(in_sp) + 1):
            s, st, p, g = _var_summary(r.info, a, shape, in_sp[a - 1])
            size.append(s)
            stride.append(st)
            padding.append(p)
            glob.append(g)
        key = (tuple(size), tuple(stride), tuple(padding), tuple(glob), shape)
        if key == prev:
            continue
        prev = key
        name = r.name
        if "/" not in name:  # not inside a submodule (e.g. a pooling call): say where
            src = r.source.rsplit("/", 1)[-1]
            name = f"{name} @ {src}" if name else src
        out.append(LayerRF(name=name, source=r.source, primitive=r.primitive, shape=shape,
                           size=tuple(size), stride=tuple(stride), padding=tuple(padding),
                           is_global=tuple(glob)))
    return out


def _var_summary(info: Info, a: int, shape, n: int):
    L = bshape(info.lo[a], len(shape))
    H = bshape(info.hi[a], len(shape))
    ext = H - L + 1
    fin = np.isfinite(ext)
    if not fin.any():
        return 0, 0, 0, False
    size = int(ext[fin].max())
    sl = np.asarray(info.slope[a])
    j = int(np.argmax(np.abs(sl))) if sl.size else 0
    if sl.size == 0 or sl[j] == 0:
        lo_min, hi_max = float(L[np.isfinite(L)].min()), float(H[np.isfinite(H)].max())
        if lo_min <= 0 and hi_max >= n - 1 and np.all(L[np.isfinite(L)] == lo_min):
            return n, 0, 0, True
        return size, 0, int(-lo_min), False
    first = np.take(L, 0, axis=j) if L.shape[j] > 1 else L
    first = first[np.isfinite(first)]
    padding = int(-first.min()) if first.size else 0
    return size, _num(sl[j]), padding, False


def _both(fin: np.ndarray, j: int) -> np.ndarray:
    """Pairs of neighbours along axis j that are both finite."""
    n = fin.shape[j]
    return np.take(fin, range(n - 1), axis=j) & np.take(fin, range(1, n), axis=j)
