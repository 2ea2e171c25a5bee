"""Input batches for :func:`rfjax.erf`: arrays, dicts and iterables of them, in fixed-shape chunks.

``x`` is one float array ``(N, *spatial, C)`` or an iterable (a generator, a TFDS/grain
iterator) of arrays or dicts holding the image under ``image_key`` (or a callable that returns
it). :func:`chunks` cuts them into chunks of one shape, so that one compilation serves them
all: the last chunk is padded with copies of its last image (finite) and its true size is
returned so that the padding can be masked out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rfjax.callables import InputTypeError

__all__ = ["as_batch", "batches", "check_batch", "chunks"]


def as_batch(b: Any, image_key: str | Callable[[Any], Any]) -> Any:
    """The image array of one batch: ``image_key(b)`` when callable, ``b[image_key]`` for a
    dict, else ``b`` (as a NumPy array when it is not array-like)."""
    if callable(image_key):  # e.g. lambda b: b["image"].astype(np.float32) / 255
        b = image_key(b)
    elif isinstance(b, Mapping):
        if image_key not in b:
            raise ValueError(
                f"batch is a dict without the image key {image_key!r} (keys: {sorted(b)}); "
                "pass image_key="
            )
        b = b[image_key]
    if not hasattr(b, "shape") or not hasattr(b, "dtype"):
        b = np.asarray(b)
    return b


def check_batch(b: Any, where: str) -> None:
    """Raise on a batch that is not a non-empty float ``(N, *spatial, C)``, 1-3 spatial axes
    (``where`` names it in the message)."""
    if b.ndim < 3 or b.ndim > 5:
        raise ValueError(
            f"{where}: expected a batch (N, *spatial, C) with 1 to 3 spatial axes, got shape "
            f"{tuple(b.shape)} (rank {b.ndim}); is the batch axis missing?"
        )
    if not jnp.issubdtype(b.dtype, jnp.floating):
        raise InputTypeError(
            f"{where}: the input must be floating point (gradients of integer images are "
            f"undefined), got dtype {b.dtype}; convert it, e.g. x.astype(np.float32)"
        )
    if b.shape[0] == 0:
        raise ValueError(f"{where}: the batch is empty (N = 0)")


def batches(x: Any, image_key: str | Callable[[Any], Any]):
    """Yield the batches of ``x`` (one array, or an iterable of arrays or dicts)."""
    if isinstance(x, (jax.Array, np.ndarray, Mapping)) or (
        hasattr(x, "shape") and hasattr(x, "dtype")
    ):
        yield as_batch(x, image_key)
        return
    if not isinstance(x, Iterable):
        raise InputTypeError(
            f"x must be an array (N, *spatial, C) or an iterable of them, got {type(x)}"
        )
    yield from (as_batch(b, image_key) for b in x)


def chunks(batches, batch_size: int | None, multiple: int):
    """Yield ``(chunk, n_valid)`` with a constant chunk shape (last one edge-padded)."""
    first_shape = None
    bs = None
    for i, b in enumerate(batches):
        check_batch(b, f"batch {i}")
        if first_shape is None:
            first_shape = tuple(b.shape[1:])
            bs = batch_size or b.shape[0]
            bs = -(-bs // multiple) * multiple
        elif tuple(b.shape[1:]) != first_shape:
            raise ValueError(
                f"batch {i} has image shape {tuple(b.shape[1:])}, but the first batch has "
                f"{first_shape}; all batches must share one image shape"
            )
        xp = jnp if isinstance(b, jax.Array) else np
        for s in range(0, b.shape[0], bs):
            c = b[s : s + bs]
            n = c.shape[0]
            if n < bs:  # pad with copies of the last image: finite, and masked out
                c = xp.concatenate([c, xp.repeat(c[-1:], bs - n, axis=0)], axis=0)
            yield c, n
    if first_shape is None:
        raise ValueError("x is an empty iterable: no batches to average over")
