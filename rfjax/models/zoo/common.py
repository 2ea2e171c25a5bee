"""Shared helpers of the model zoo: explicit paddings, pooling, convolutions, initialisers,
BatchNorm in the torchvision configuration, and ``init_variables``.

Everything here follows the zoo's conventions (see :mod:`rfjax.models.zoo`): channels-last
``(N, *spatial, C)`` arrays and explicit ``(low, high)`` paddings, never ``'SAME'``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

Act = Callable[[Array], Array]
#: Explicit padding: an int (same on both sides of every axis), one int per axis, or one
#: ``(low, high)`` pair per axis.
Padding = int | Sequence[int] | Sequence[tuple[int, int]]


def identity(x: Array) -> Array:
    """The identity activation (``act=identity`` drops the nonlinearities)."""
    return x


def _pairs(padding: Padding, nd: int, where: str) -> tuple[tuple[int, int], ...]:
    """Normalise an explicit padding to one ``(low, high)`` pair per spatial axis."""
    if isinstance(padding, str):
        raise TypeError(f"{where}: padding must be explicit (int, ints or (low, high) pairs), "
                        f"got the string {padding!r}")
    if isinstance(padding, int):
        return ((padding, padding),) * nd
    padding = tuple(padding)
    if len(padding) != nd:
        raise ValueError(f"{where}: padding needs one entry per spatial axis ({nd}), "
                         f"got {padding!r}")
    out = []
    for p in padding:
        if isinstance(p, int):
            out.append((p, p))
        else:
            lo, hi = p
            out.append((int(lo), int(hi)))
    return tuple(out)


def _tuple(v: int | Sequence[int], nd: int, where: str) -> tuple[int, ...]:
    """Normalise a size (kernel, stride, dilation) to one int per spatial axis."""
    if isinstance(v, int):
        return (v,) * nd
    v = tuple(int(a) for a in v)
    if len(v) != nd:
        raise ValueError(f"{where}: expected one value per spatial axis ({nd}), got {v!r}")
    return v


def _check_pool(pool: str, where: str) -> None:
    if pool not in ("max", "avg"):
        raise ValueError(f"{where}: pool must be 'max' or 'avg', got {pool!r}")


def _spatial(x: Array, where: str, nd: int | None = None) -> int:
    """Number of spatial axes of an ``(N, *spatial, C)`` input, checked."""
    if x.ndim < 3 or x.ndim > 5:
        raise ValueError(f"{where}: expected an input (N, *spatial, C) with 1 to 3 spatial "
                         f"axes, got shape {x.shape}")
    if nd is not None and x.ndim != nd + 2:
        raise ValueError(f"{where}: expected an input with {nd} spatial axes (rank {nd + 2}), "
                         f"got shape {x.shape}")
    return x.ndim - 2


def pool_nd(
    x: Array,
    kind: str,
    window: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: Padding = 0,
) -> Array:
    """Max or average pooling of ``(N, *spatial, C)`` with explicit padding.

    ``kind="max"`` pads with -inf (``reduce_window_max``); ``kind="avg"`` pads with zeros and
    divides by the full window size (``count_include_pad=True``, ``reduce_window_sum``), so the
    two have the same structural support. ``strides`` defaults to ``window``.
    """
    nd = _spatial(x, "pool_nd")
    _check_pool(kind, "pool_nd")
    window = _tuple(window, nd, "pool_nd window")
    strides = window if strides is None else _tuple(strides, nd, "pool_nd strides")
    pads = _pairs(padding, nd, "pool_nd")
    if kind == "max":
        return nn.max_pool(x, window, strides, pads)
    return nn.avg_pool(x, window, strides, pads, count_include_pad=True)


def _conv(
    features: int,
    kernel: Sequence[int],
    strides: Sequence[int] | int = 1,
    padding: Padding = 0,
    dilation: Sequence[int] | int = 1,
    use_bias: bool = True,
    name: str | None = None,
    **kw: Any,
) -> nn.Conv:
    nd = len(kernel)
    return nn.Conv(
        features,
        tuple(kernel),
        strides=_tuple(strides, nd, "conv strides"),
        padding=_pairs(padding, nd, "conv"),
        kernel_dilation=_tuple(dilation, nd, "conv dilation"),
        use_bias=use_bias,
        name=name,
        **kw,
    )


def _same_pad(kernel: Sequence[int], dilation: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Centred padding ``d*(k-1)`` split low-first (``'SAME'`` for stride 1)."""
    out = []
    for k, d in zip(kernel, dilation, strict=True):
        total = d * (k - 1)
        out.append((total // 2, total - total // 2))
    return tuple(out)


_INITS: dict[str, Callable[..., Any]] = {
    # All weights 1 (the paper's "Uniform" net); outputs grow like (k^d C)^n.
    "uniform": nn.initializers.ones,
    "random": nn.initializers.variance_scaling(2.0, "fan_in", "normal"),  # He, zero-mean
    "he": nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
    "lecun": nn.initializers.variance_scaling(1.0, "fan_in", "normal"),
}


def _uniform_normalized(key: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    """All weights ``1 / fan_in``: the "Uniform" net without growth of the activations."""
    del key
    fan_in = 1
    for s in shape[:-1]:
        fan_in *= s
    return jnp.full(shape, 1.0 / fan_in, dtype)


def _positive(key: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    """Positive He-scaled weights ``|N(0, 2/fan_in)| + 1e-3/fan_in`` (no cancellation)."""
    fan_in = 1
    for s in shape[:-1]:
        fan_in *= s
    w = jnp.abs(jax.random.normal(key, shape, dtype)) * jnp.sqrt(2.0 / fan_in)
    return w + jnp.asarray(1e-3 / fan_in, dtype)


_INITS["uniform_normalized"] = _uniform_normalized
_INITS["positive"] = _positive


def _kernel_init(init: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(init):
        return init
    if init not in _INITS:
        raise ValueError(f"kernel_init must be one of {sorted(_INITS)} or an initializer "
                         f"callable, got {init!r}")
    return _INITS[init]


def _bn(train: bool, name: str) -> nn.BatchNorm:
    # torchvision: momentum 0.1 (flax 0.9), eps 1e-5.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


def init_variables(model: nn.Module, shape: Sequence[int], seed: int = 0) -> Any:
    """``model.init`` on zeros of ``shape`` (float32); returns the variables dict."""
    return model.init(jax.random.key(seed), jnp.zeros(tuple(shape), jnp.float32))
