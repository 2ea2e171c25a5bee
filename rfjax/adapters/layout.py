"""Input layouts: channels-first models analysed without transposes, and token outputs mapped
back to their grid.

The engine works on channels-last inputs ``(N, *spatial, C)``. A model whose input has its
channels on another axis (PyTorch's ``NCHW``, a vmapped Equinox model) is wrapped: the wrapper
takes a channels-last array, moves the channels to ``channel_axis`` and calls the model; every
output array of the input's rank has its channels moved back to the last axis (feature maps
share the input's layout). So masks, regions and ERF maps are over the spatial axes whatever
the layout. A token output ``(N, T, C)`` with ``grid=(h, w)`` drops ``prefix_tokens`` leading
tokens (a class token) and becomes ``(N, h, w, C)``: the ERF of a ViT patch token is a map.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rfjax.callables import Resolved

__all__ = ["LayoutWarning", "check_layout", "normalize_axis", "to_channels_last", "wrap"]


class LayoutWarning(UserWarning):
    """The input looks channels-first but is read channels-last."""


def normalize_axis(channel_axis: int, ndim: int) -> int:
    """``channel_axis`` as a non-negative axis of a rank-``ndim`` input (not the batch axis)."""
    if not isinstance(channel_axis, (int, np.integer)) or isinstance(channel_axis, bool):
        raise TypeError(f"channel_axis must be an int, got {type(channel_axis).__name__}")
    a = int(channel_axis) + ndim if channel_axis < 0 else int(channel_axis)
    if not 1 <= a < ndim:
        raise ValueError(f"channel_axis={channel_axis} is not a non-batch axis of an input of "
                         f"rank {ndim} (valid: 1..{ndim - 1} or -1..{1 - ndim})")
    return a


def check_layout(shape: Sequence[int], channel_axis: int | None, framework: str) -> None:
    """Warn when a channels-last reading meets an input that looks channels-first: a last axis
    that looks spatial (as long as axis 2, more than 4) and an axis 1 that looks like channels
    (1, 3 or 4), with no ``channel_axis`` given."""
    if channel_axis is not None or len(shape) < 4:
        return
    if shape[1] in (1, 3, 4) and shape[-1] > 4 and shape[-1] == shape[2]:
        warnings.warn(
            f"rfjax: the input of shape {tuple(shape)} is read channels-last ({framework} "
            f"default): {shape[-1]} channels and spatial axes {tuple(shape[1:-1])}. It looks "
            "channels-first (N, C, H, W); if it is, pass channel_axis=1", LayoutWarning,
            stacklevel=4)


def to_channels_last(x: Any, channel_axis: int) -> Any:
    """``x`` with its channel axis moved last (NumPy stays NumPy)."""
    if channel_axis == x.ndim - 1:
        return x
    mod = np if isinstance(x, np.ndarray) else jnp
    return mod.moveaxis(x, channel_axis, -1)


def _outputs(out: Any, ndim: int, channel_axis: int, grid, prefix_tokens: int) -> Any:
    def fix(leaf):
        if not hasattr(leaf, "ndim"):
            return leaf
        if channel_axis != ndim - 1 and leaf.ndim == ndim:
            return jnp.moveaxis(leaf, channel_axis, -1)
        if grid is not None and leaf.ndim == 3:
            T = leaf.shape[1] - prefix_tokens
            if T != int(np.prod(grid)):
                raise ValueError(
                    f"an output of shape {tuple(leaf.shape)} has {leaf.shape[1]} tokens; with "
                    f"prefix_tokens={prefix_tokens} that leaves {T}, not the "
                    f"{int(np.prod(grid))} of grid={tuple(grid)}")
            return leaf[:, prefix_tokens:].reshape((leaf.shape[0], *grid, leaf.shape[-1]))
        return leaf

    return jax.tree_util.tree_map(fix, out)


def wrap(res: Resolved, ndim: int, channel_axis: int, grid: Sequence[int] | None = None,
         prefix_tokens: int = 0) -> Resolved:
    """``res`` as a channels-last callable (see the module docstring); the same arrays
    (``dyn``) and owner, so the cache and the jit arguments are unchanged."""
    if channel_axis == ndim - 1 and grid is None:
        return res
    grid = None if grid is None else tuple(int(g) for g in grid)
    if prefix_tokens < 0:
        raise ValueError(f"prefix_tokens must be >= 0, got {prefix_tokens}")

    def rebuild(dyn, _r=res.rebuild):
        f = _r(dyn)

        def channels_last(x, *args, **kwargs):
            if channel_axis != ndim - 1:
                x = jnp.moveaxis(x, -1, channel_axis)
            return _outputs(f(x, *args, **kwargs), ndim, channel_axis, grid, prefix_tokens)

        return channels_last

    return Resolved(res.owner, ("layout", channel_axis, ndim, grid, prefix_tokens, res.key),
                    rebuild, res.dyn)
