"""Indexing primitives evaluated on arrays of element indices: for each output element, the
flat index of the operand element it is read from. Used by the indexing rules (the fields) and
by known values (the value bounds), so both follow the same map."""

from __future__ import annotations

import numpy as np


def _clamped_starts(starts, shape, sizes) -> list[int]:
    """XLA's dynamic-slice semantics: each start is clamped to ``[0, n - size]``."""
    return [int(min(max(int(np.asarray(st)), 0), n - k))
            for st, n, k in zip(starts, shape, sizes, strict=True)]


def _np_dynamic_slice(x, *starts, slice_sizes):
    st = _clamped_starts(starts, x.shape, slice_sizes)
    return x[tuple(slice(a, a + k) for a, k in zip(st, slice_sizes, strict=True))]


def _np_dynamic_update_slice(x, update, *starts):
    st = _clamped_starts(starts, x.shape, update.shape)
    out = x.copy()
    out[tuple(slice(a, a + k) for a, k in zip(st, update.shape, strict=True))] = update
    return out


# Plain rearrangements evaluated on index arrays with NumPy (binding the primitive would
# compile an XLA program per shape). Returns ``None`` where a parameter is not covered.
_NUMPY_MOVES = {
    "split": lambda x, sizes, axis: np.split(x, np.cumsum(sizes)[:-1], axis=axis),
    "dynamic_slice": _np_dynamic_slice,
    "dynamic_update_slice": _np_dynamic_update_slice,
}


def sources(eqn, args) -> list[np.ndarray]:
    """The primitive applied to index arrays: where each output element comes from (an
    out-of-range read or a gather's fill value gives -1)."""
    name = eqn.primitive.name
    f = _NUMPY_MOVES.get(name)
    res = f(*args, **eqn.params) if f is not None else None
    if res is None:
        params = dict(eqn.params)
        if name == "gather" and "fill_value" in params:
            params["fill_value"] = -1
        res = eqn.primitive.bind(*args, **params)
    multiple = eqn.primitive.multiple_results
    return [np.asarray(r) for r in (res if multiple else [res])]
