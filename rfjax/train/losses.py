"""Losses and scores of the training tasks: cross-entropy, confusion matrix, segmentation scores.

Conventions: logits are float ``(..., C)`` with the classes last; labels are int ``(...)`` with
values in ``0..C-1``, or an ignored value (CamVid's void, :data:`rfjax.data.CAMVID_VOID` = 11)
that contributes nothing. A confusion matrix is ``M[true, predicted]``. The jnp functions are
pure and jittable; :func:`segmentation_scores` and :func:`median_frequency_weights` run in NumPy
on the host.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike

__all__ = ["cross_entropy", "confusion_matrix", "segmentation_scores",
           "median_frequency_weights"]


def cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    ignore_index: int | None = None,
    class_weights: ArrayLike | None = None,
    label_smoothing: float = 0.0,
) -> Array:
    """Mean softmax cross-entropy over the labelled positions.

    Args:
      logits: float (..., C).
      labels: int (...), values in ``0..C-1`` or ``ignore_index``.
      ignore_index: label whose positions contribute nothing (CamVid void, 11).
      class_weights: optional float (C,); each position is weighted by the weight of its label,
        and the mean is the weighted mean (``sum w_i l_i / sum w_i``).
      label_smoothing: mass spread uniformly over the C classes.

    Returns:
      float32 scalar; 0.0 when every position is ignored.
    """
    logits = jnp.asarray(logits, jnp.float32)
    labels = jnp.asarray(labels)
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"cross_entropy: logits {logits.shape} and labels {labels.shape} "
                         "disagree (expected logits = labels.shape + (C,))")
    num_classes = logits.shape[-1]
    valid = jnp.ones(labels.shape, bool) if ignore_index is None else labels != ignore_index
    safe = jnp.where(valid, labels, 0)
    targets = jax.nn.one_hot(safe, num_classes)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    losses = optax.softmax_cross_entropy(logits, targets)
    weights = valid.astype(jnp.float32)
    if class_weights is not None:
        weights = weights * jnp.asarray(class_weights, jnp.float32)[safe]
    return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


def confusion_matrix(
    pred: ArrayLike, label: ArrayLike, num_classes: int, ignore: int | None = None
) -> Array:
    """Confusion matrix ``M[true, predicted]``: int32 (num_classes, num_classes).

    Args:
      pred: int predictions, any shape.
      label: int labels, same shape.
      num_classes: C.
      ignore: label value whose positions are not counted (CamVid void, 11). Positions whose
        label or prediction lies outside ``0..C-1`` are not counted either.

    Pure and jittable (``num_classes`` and ``ignore`` static).
    """
    pred = jnp.asarray(pred)
    label = jnp.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f"confusion_matrix: pred {pred.shape} and label {label.shape} differ")
    if num_classes < 1:
        raise ValueError(f"confusion_matrix: num_classes must be >= 1, got {num_classes}")
    valid = (label >= 0) & (label < num_classes) & (pred >= 0) & (pred < num_classes)
    if ignore is not None:
        valid = valid & (label != ignore)
    index = jnp.where(valid, label * num_classes + pred, 0).ravel()
    counts = jnp.bincount(index, weights=valid.ravel().astype(jnp.int32),
                          length=num_classes * num_classes)
    return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def segmentation_scores(confusion: ArrayLike) -> dict[str, Any]:
    """Scores from a confusion matrix ``M[true, predicted]`` (numpy, float64).

    Returns a dict with ``iou`` (per class ``M_cc / (row_c + col_c - M_cc)``, NaN for a class
    that appears in neither labels nor predictions), ``miou`` (mean over the classes whose IoU
    is defined), ``pixel_accuracy`` (``trace / sum``) and ``class_accuracy`` (per-class recall,
    NaN for absent classes) with its mean ``mean_class_accuracy``.
    """
    m = np.asarray(confusion, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"segmentation_scores: expected a square matrix, got {m.shape}")
    tp = np.diag(m)
    rows, cols = m.sum(axis=1), m.sum(axis=0)
    union = rows + cols - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        recall = np.where(rows > 0, tp / rows, np.nan)
    total = m.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "iou": iou.tolist(),
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "class_accuracy": recall.tolist(),
        "mean_class_accuracy": float(np.nanmean(recall)) if np.any(rows > 0) else float("nan"),
    }


def median_frequency_weights(labels: np.ndarray, num_classes: int, ignore: int) -> np.ndarray:
    """Median frequency balancing (Eigen & Fergus 2015, as in SegNet): float32 (C,).

    ``labels`` is int (N, H, W). ``freq_c`` = pixels of class c / pixels of the images that
    contain c (``ignore`` pixels not counted); ``w_c = median(freq) / freq_c``; classes absent
    from ``labels`` get weight 0.
    """
    labels = np.asarray(labels)
    counts = np.zeros(num_classes)
    present_pixels = np.zeros(num_classes)
    per_image = labels.reshape(labels.shape[0], -1)
    for row in per_image:
        row = row[row != ignore]
        c = np.bincount(row, minlength=num_classes)[:num_classes]
        counts += c
        present_pixels += (c > 0) * row.size
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = np.where(present_pixels > 0, counts / present_pixels, np.nan)
    med = np.nanmedian(freq)
    return np.where(np.isnan(freq), 0.0, med / freq).astype(np.float32)
