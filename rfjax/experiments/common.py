"""Shared pieces of the paper experiments: the result record, progress, fits and JSON.

Every experiment ``run_NAME(config, seed, progress)`` returns a dict::

    {"name": str, "claim": str, "criterion": str, "measured": {...}, "paper": {...},
     "holds": bool, "data": {...}}

``measured`` and ``paper`` are JSON-ready (numbers, lists, bools, strings); ``data`` holds the
NumPy arrays the figure is drawn from (never written to ``results.json``). ``holds`` is the
experiment's criterion function ``holds_NAME(measured)`` applied to ``measured``: a pure
function of the measurement, so a test can feed it a violating measurement.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from rfjax import metrics
from rfjax.effective import erf

__all__ = ["Progress", "NoProgress", "make_result", "jsonable", "loglog_fit", "size_of",
           "random_images", "erf_over_draws", "RESULT_KEYS"]

#: Canvases up to this side are differentiated uncropped (see :func:`erf_over_draws`).
SMALL_CANVAS = 40

#: The keys of one entry of ``results.json``.
RESULT_KEYS = ("claim", "measured", "paper", "criterion", "holds")


class Progress(Protocol):
    """What an experiment reports progress to (a ``tqdm`` bar satisfies it)."""

    def update(self, n: float = 1) -> Any: ...


class NoProgress:
    """A progress sink that ignores updates (the default)."""

    def update(self, n: float = 1) -> None:
        return None


def jsonable(obj: Any) -> Any:
    """``obj`` with NumPy / JAX scalars and arrays turned into Python numbers and lists.

    Non-finite floats become ``None`` (JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (jax.Array, np.ndarray)):
        return jsonable(np.asarray(obj).tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"cannot make {type(obj).__name__} JSON-ready")


def make_result(name: str, claim: str, criterion: str, measured: Mapping[str, Any],
                paper: Mapping[str, Any], holds_fn: Callable[[Mapping[str, Any]], bool],
                data: Mapping[str, Any]) -> dict[str, Any]:
    """Assemble an experiment's record; ``holds = holds_fn(measured)`` (after JSON conversion,
    so the verdict is computed from exactly what ``results.json`` shows)."""
    m = jsonable(measured)
    return {"name": name, "claim": claim, "criterion": criterion, "measured": m,
            "paper": jsonable(paper), "holds": bool(holds_fn(m)), "data": dict(data)}


def loglog_fit(x: Any, y: Any) -> tuple[float, float]:
    """Least-squares line ``log y = slope * log x + intercept``; returns ``(slope,
    intercept)`` (natural logs)."""
    lx, ly = np.log(np.asarray(x, np.float64)), np.log(np.asarray(y, np.float64))
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(intercept)


def size_of(m: Any) -> float:
    """The figures' ERF size of a nonnegative map: the Gaussian reading of
    :func:`rfjax.metrics.erf_size` (``4 sigma`` per axis, sigma from the moment fit), averaged
    over the axes, in pixels."""
    return float(np.mean(np.asarray(metrics.erf_size(np.asarray(m)).extent)))


def random_images(key: jax.Array, n: int, size: int | tuple[int, int], channels: int
                  ) -> jax.Array:
    """``n`` standard-normal images ``(n, H, W, channels)``, float32 (the paper's random
    inputs)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return jax.random.normal(key, (n, *hw, channels), jnp.float32)


def erf_over_draws(net: Any, size: tuple[int, int], channels: int, key: jax.Array, draws: int,
                   images: int, reduces: tuple[str, ...] = ("abs",),
                   unit: tuple[int, int] | None = None, verify: bool = False,
                   progress: Progress | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The ERF of one unit of a Flax module with random weights, over weight draws.

    The paper's protocol (as :func:`rfjax.erf.erf_weight_draws`): each draw's map is the mean
    over ``images`` standard-normal images ``(images, *size, channels)`` (the same images for
    every draw), the ERF the mean over draws. Each draw is one :func:`rfjax.erf.erf` call on
    ``partial(net.apply, params)``: its compiled, cone-cropped gradient is cached per module
    and reduction, so every draw after the first costs one small gradient.

    Args:
      net: a Flax linen module ``(N, H, W, channels) -> (N, H', W', C)``.
      size: the input's ``(H, W)``.
      key: PRNG key; weights and images derive from it.
      draws, images: counts (>= 1).
      reduces: ``rfjax.erf`` reductions computed from the same draws.
      unit: output unit (default: the output's centre).
      verify: let :func:`rfjax.erf.erf` check its crop against the uncropped gradient.

    Returns:
      ``{reduce: (mean, per_draw)}``: float64 ``(H, W)`` and ``(draws, H, W)``.
    """
    progress = progress or NoProgress()
    if draws < 1 or images < 1:
        raise ValueError(f"draws and images must be >= 1, got {draws} and {images}")
    k_w, k_x = jax.random.split(key)
    x = random_images(k_x, images, size, channels)
    # Convolution parameters do not depend on the spatial size: initialise eagerly on a small
    # input (compiling the init of a 64-layer stack costs more than a hundred eager inits).
    x_init = jnp.zeros((1, 8, 8, channels), jnp.float32)
    # The cone crop pays off on large canvases; on small ones one uncropped program compiles
    # faster than the crop plan. The crop of these stacks is exact (tests/test_cone.py checks
    # strided, dilated and padded stacks against the uncropped gradient), so it is not
    # re-verified here unless ``verify``.
    crop = "auto" if max(size) > SMALL_CANVAS else "none"
    per: dict[str, list[np.ndarray]] = {r: [] for r in reduces}
    for k in jax.random.split(k_w, draws):
        fn = functools.partial(net.apply, net.init(k, x_init))
        for r in reduces:
            per[r].append(np.asarray(erf(fn, x, unit=unit, reduce=r, crop=crop, verify=verify,
                                         progress=False).map, np.float64))
        progress.update(1)
    out = {}
    for r in reduces:
        stack = np.stack(per[r])
        out[r] = (stack.mean(axis=0), stack)
    return out
