"""Training and evaluation of the CIFAR-10 and CamVid models: reproducible and resumable.

Everything that determines the result is in a :class:`TrainConfig`, written to
``WORKDIR/config.json`` at the first start. The data order is ``rfjax.data.batch_indices(seed,
step, ...)`` and the augmentation key of step ``s`` is ``fold_in(PRNGKey(seed + 1), s)``, so the
whole training state is ``(params, batch_stats, opt_state, step)``: that is what the orbax
``CheckpointManager`` saves in ``WORKDIR/checkpoints`` (an absolute path) every
``checkpoint_every`` steps and at the end. A run killed at any moment and restarted with the same
command resumes from the latest complete checkpoint (stale ``*.orbax-checkpoint-tmp*`` folders
that a kill leaves are removed first) and ends bit-identical to an uninterrupted run; the
fingerprint to compare is :func:`params_sha256`, printed as the last line by ``scripts/train.py``.

Files in ``WORKDIR``: ``config.json``, ``checkpoints/<step>/``, ``metrics.jsonl`` (one JSON
object per line, appended: training loss / learning rate / throughput every ``log_every`` steps,
evaluations, resume events; after a resume the steps between the checkpoint and the kill appear
twice, with identical values) and ``final.json`` (the final evaluation and fingerprint).

Losses: softmax cross-entropy; for CIFAR-10 with label smoothing, for CamVid averaged over the
non-void pixels (label :data:`rfjax.data.CAMVID_VOID` is masked out), optionally with
median-frequency class weights. Optimiser: SGD with Nesterov momentum 0.9, decoupled-style L2
weight decay on kernels only, and a cosine one-cycle learning-rate schedule over ``steps``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike

from rfjax import data as rdata
from rfjax.models.camvid import CamVidNet, pad_to_multiple
from rfjax.models.cifar import CifarNet, CifarResNet

TASKS = ("cifar10", "camvid")
#: Architectures per task; the first is the default.
ARCHS = {"cifar10": ("vgg", "resnet"), "camvid": ("unet",)}
CHECKPOINT_SUBDIR = "checkpoints"
_TMP_MARKER = ".orbax-checkpoint-tmp"
#: Fields of TrainConfig that do not change the trained parameters (may differ on resume).
_NON_RESULT_FIELDS = ("checkpoint_every", "eval_every", "log_every", "max_to_keep",
                      "eval_batch_size")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Attributes:
      task: ``"cifar10"`` or ``"camvid"``.
      steps: number of optimiser steps.
      batch_size: training batch size.
      lr: peak learning rate of the one-cycle schedule.
      seed: seeds the initialisation, the data order and the augmentation.
      checkpoint_every: save every this many steps (and always at the end).
      eval_every: evaluate on the test split every this many steps (0: only at the end).
      log_every: append training metrics to ``metrics.jsonl`` every this many steps.
      weight_decay: L2 coefficient on convolution / dense kernels.
      width: model width (channels of the first stage).
      crop: CamVid training crop ``(height, width)`` (at the downscaled resolution); ignored
        for CIFAR-10.
      downscale: CamVid only: train and predict on images box-filtered down by this integer
        factor (labels by majority vote over each block for training). Evaluation stays at the
        labels' full resolution: logits are resized back (bilinear) before the argmax.
      label_smoothing: CIFAR-10 label smoothing.
      class_weights: CamVid loss weighting, ``"none"`` or ``"median"`` (median frequency
        balancing computed on the training labels).
      warmup: fraction of the steps spent increasing the learning rate.
      max_to_keep: checkpoints kept on disk.
      eval_batch_size: batch size of the evaluation.
      arch: the model, one of ``ARCHS[task]``; ``None`` (default) picks the task's first.
        CIFAR-10: ``"vgg"`` (``CifarNet``) or ``"resnet"`` (``CifarResNet``, the paper's
        description: 17 residual blocks, no downsampling; ``width`` is then every layer's
        width). CamVid: ``"unet"`` (``CamVidNet``).
    """

    task: str
    steps: int
    batch_size: int
    lr: float
    seed: int = 0
    checkpoint_every: int = 500
    eval_every: int = 0
    log_every: int = 10
    weight_decay: float = 5e-4
    width: int = 32
    crop: tuple[int, int] = (128, 160)
    downscale: int = 1
    label_smoothing: float = 0.1
    class_weights: str = "none"
    warmup: float = 0.25
    max_to_keep: int = 2
    eval_batch_size: int = 100
    arch: str | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.arch is None:
            object.__setattr__(self, "arch", ARCHS[self.task][0])
        if self.arch not in ARCHS[self.task]:
            raise ValueError(f"arch for {self.task} must be one of {ARCHS[self.task]}, got "
                             f"{self.arch!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "width",
                     "max_to_keep", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(f"eval_every must be an int >= 0, got {self.eval_every!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not 0 < self.warmup < 1:
            raise ValueError(f"warmup must be in (0, 1), got {self.warmup!r}")
        if self.class_weights not in ("none", "median"):
            raise ValueError(f"class_weights must be 'none' or 'median', got "
                             f"{self.class_weights!r}")
        if isinstance(self.downscale, bool) or not isinstance(self.downscale, int) \
                or self.downscale < 1 or (self.task == "cifar10" and self.downscale != 1):
            raise ValueError(f"downscale must be an int >= 1 (1 for cifar10), got "
                             f"{self.downscale!r}")
        crop = tuple(self.crop)
        if len(crop) != 2 or any(not isinstance(c, int) or c < 8 or c % 8 for c in crop):
            raise ValueError(f"crop must be (height, width), multiples of 8, got {self.crop!r}")
        object.__setattr__(self, "crop", crop)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "crop": list(self.crop)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TrainConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(obj) - fields
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**{**obj, "crop": tuple(obj.get("crop", (128, 160)))})


# --------------------------------------------------------------------------- models, optimiser


def make_model(config: TrainConfig) -> CifarNet | CifarResNet | CamVidNet:
    """The Flax module of ``config.task`` / ``config.arch`` at ``config.width``."""
    if config.arch == "resnet":
        return CifarResNet(width=config.width, num_classes=rdata.NUM_CLASSES["cifar10"])
    if config.task == "cifar10":
        return CifarNet(width=config.width, num_classes=rdata.NUM_CLASSES["cifar10"])
    return CamVidNet(width=config.width, num_classes=rdata.NUM_CLASSES["camvid"])


def _input_shape(config: TrainConfig) -> tuple[int, int, int, int]:
    return (1, 32, 32, 3) if config.task == "cifar10" else (1, *config.crop, 3)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """SGD, Nesterov momentum 0.9, L2 on kernels (ndim > 1), cosine one-cycle schedule."""
    schedule = optax.cosine_onecycle_schedule(config.steps, config.lr, pct_start=config.warmup)
    decay_mask = functools.partial(jax.tree.map, lambda p: p.ndim > 1)
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
        optax.sgd(schedule, momentum=0.9, nesterov=True),
    )


def init_state(config: TrainConfig) -> dict[str, Any]:
    """Fresh training state ``{"step", "params", "batch_stats", "opt_state"}`` (step 0)."""
    model = make_model(config)
    variables = model.init(jax.random.PRNGKey(config.seed), jnp.zeros(_input_shape(config)))
    params = variables["params"]
    return {
        "step": jnp.asarray(0, jnp.int32),
        "params": params,
        "batch_stats": variables.get("batch_stats", {}),
        "opt_state": make_optimizer(config).init(params),
    }


# --------------------------------------------------------------------------- losses, metrics


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

    ``freq_c`` = pixels of class c / pixels of the images that contain c; ``w_c =
    median(freq) / freq_c``; classes absent from ``labels`` get weight 0.
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


def downscale_images(images: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter (N, H, W, C) uint8 images down by ``factor``: uint8 (N, H/f, W/f, C), rounded.

    H and W must be multiples of ``factor``.
    """
    n, h, w, c = images.shape
    if h % factor or w % factor:
        raise ValueError(f"downscale: image size {h}x{w} is not a multiple of {factor}")
    if factor == 1:
        return images
    blocks = images.reshape(n, h // factor, factor, w // factor, factor, c)
    return np.rint(blocks.mean(axis=(2, 4), dtype=np.float64)).astype(np.uint8)


def downscale_labels(labels: np.ndarray, factor: int, num_labels: int = 12) -> np.ndarray:
    """Majority label of each ``factor x factor`` block: int32 (N, H/f, W/f).

    Ties go to the smallest label value; void (11) wins only where it is the strict majority
    over every class.
    """
    n, h, w = labels.shape
    if h % factor or w % factor:
        raise ValueError(f"downscale: label size {h}x{w} is not a multiple of {factor}")
    if factor == 1:
        return labels.astype(np.int32)
    out = np.empty((n, h // factor, w // factor), np.int32)
    for i in range(n):  # one image at a time keeps the one-hot small
        blocks = labels[i].reshape(h // factor, factor, w // factor, factor)
        counts = np.zeros((h // factor, w // factor, num_labels), np.int16)
        for a in range(factor):
            for b in range(factor):
                np.add.at(counts, (*np.indices(counts.shape[:2]), blocks[:, a, :, b]), 1)
        out[i] = np.argmax(counts, axis=-1)
    return out


def params_sha256(params: Any) -> str:
    """SHA-256 (hex) of the leaves of ``params`` in tree order, as little-endian bytes."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        arr = np.asarray(leaf)
        digest.update(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- jitted steps


def make_train_step(config: TrainConfig, class_weights: np.ndarray | None = None) -> Callable:
    """The jitted, pure training step of ``config``.

    Returns ``train_step(state, images, labels, key) -> (state, metrics)`` where ``state`` is
    the dict of :func:`init_state`, ``images`` uint8 (B, H, W, 3), ``labels`` int32 (B,) or
    (B, H, W), ``key`` a PRNG key for the augmentation, and ``metrics`` ``{"loss", "lr"}``.
    Model, optimiser and loss options are static; all arrays (including ``class_weights``)
    are arguments of the compiled function.
    """
    model = make_model(config)
    tx = make_optimizer(config)
    schedule = optax.cosine_onecycle_schedule(config.steps, config.lr, pct_start=config.warmup)
    weights = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)

    @jax.jit
    def step(state, images, labels, key, weights):
        if config.task == "cifar10":
            x = rdata.augment_cifar(key, rdata.normalize(images))
            y = labels
        else:
            x, y = rdata.augment_camvid(key, images, labels, config.crop)
            x = rdata.normalize(x)

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state["batch_stats"]}, x, train=True,
                mutable=["batch_stats"])
            if config.task == "cifar10":
                loss = cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            else:
                loss = cross_entropy(logits, y, ignore_index=rdata.CAMVID_VOID,
                                     class_weights=weights)
            return loss, updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new_state = {
            "step": state["step"] + 1,
            "params": optax.apply_updates(state["params"], updates),
            "batch_stats": batch_stats,
            "opt_state": opt_state,
        }
        return new_state, {"loss": loss, "lr": schedule(state["step"])}

    def train_step(state, images, labels, key):
        return step(state, images, labels, key, weights)

    return train_step


@functools.partial(jax.jit, static_argnames=("model",))
def _predict_cifar(model, variables, images):
    return jnp.argmax(model.apply(variables, rdata.normalize(images)), axis=-1)


@functools.partial(jax.jit, static_argnames=("model",))
def _confusion_camvid(model, variables, images, labels):
    padded, (h, w) = pad_to_multiple(rdata.normalize(images))
    logits = model.apply(variables, padded)[:, :h, :w]
    if logits.shape[1:3] != labels.shape[1:]:  # downscaled input: back to label resolution
        logits = jax.image.resize(logits, (*labels.shape, logits.shape[-1]), "bilinear")
    pred = jnp.argmax(logits, axis=-1)
    return confusion_matrix(pred, labels, rdata.NUM_CLASSES["camvid"], ignore=rdata.CAMVID_VOID)


def evaluate(model: CifarNet | CifarResNet | CamVidNet, variables: dict,
             split: rdata.Split, batch_size: int = 100, downscale: int = 1) -> dict[str, Any]:
    """Evaluate in inference mode on a whole split.

    CIFAR-10: ``{"accuracy", "num_examples"}``. CamVid: :func:`segmentation_scores` of the
    confusion matrix summed over the split, at the split's own resolution (images padded to a
    multiple of 8, logits cropped back; void pixels ignored), plus ``"confusion"``. With
    ``downscale > 1`` the model sees the images box-filtered down by that factor and its logits
    are resized (bilinear) back to the labels' resolution, where the scores are computed.
    The last partial batch is padded (repeats of the first example) and the padding discarded,
    so every batch has one shape (one compilation).
    """
    n = len(split)
    images, labels = split.images, split.labels
    if split.name == "cifar10":
        correct = 0
        for start in range(0, n, batch_size):
            idx = _padded_range(start, batch_size, n)
            pred = np.asarray(_predict_cifar(model, variables, images[idx]))
            real = min(batch_size, n - start)
            correct += int(np.sum(pred[:real] == labels[idx[:real]]))
        return {"accuracy": correct / n, "num_examples": n}
    num_classes = rdata.NUM_CLASSES["camvid"]
    images = downscale_images(images, downscale)
    total = np.zeros((num_classes, num_classes), np.int64)
    for start in range(0, n, batch_size):
        idx = _padded_range(start, batch_size, n)
        lab = labels[idx].copy()
        lab[min(batch_size, n - start):] = rdata.CAMVID_VOID  # padding counts for nothing
        total += np.asarray(_confusion_camvid(model, variables, images[idx], lab))
    return {**segmentation_scores(total), "confusion": total.tolist(), "num_examples": n,
            "resolution": list(labels.shape[1:3]), "input_resolution": list(images.shape[1:3])}


def _padded_range(start: int, size: int, n: int) -> np.ndarray:
    idx = np.arange(start, start + size)
    return np.where(idx < n, idx, 0)


# --------------------------------------------------------------------------- checkpoints


def clean_stale_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders that an interrupted orbax save leaves behind.

    Returns the removed paths. Complete checkpoints (``<step>/``) are kept.
    """
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if _TMP_MARKER in path.name:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed.append(path)
    return removed


def _manager(directory: Path, max_to_keep: int):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, save_interval_steps=1, create=True,
        enable_async_checkpointing=False, cleanup_tmp_directories=True)
    return ocp.CheckpointManager(directory, options=options)


def _restore(manager, step: int, template: dict) -> dict:
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def _save(manager, step: int, state: dict) -> None:
    import orbax.checkpoint as ocp

    manager.save(step, args=ocp.args.StandardSave(state), force=True)
    manager.wait_until_finished()


def _config_path(workdir: Path) -> Path:
    return workdir / "config.json"


def _check_or_write_config(workdir: Path, config: TrainConfig) -> None:
    path = _config_path(workdir)
    if path.exists():
        old = TrainConfig.from_json(json.loads(path.read_text()))
        diff = {
            f.name: (getattr(old, f.name), getattr(config, f.name))
            for f in dataclasses.fields(TrainConfig)
            if f.name not in _NON_RESULT_FIELDS and getattr(old, f.name) != getattr(config, f.name)
        }
        if diff:
            raise ValueError(
                f"workdir {workdir} holds a run with a different configuration "
                f"(field: (saved, requested)) {diff}; use a new --workdir or the same options")
    path.write_text(json.dumps(config.to_json(), indent=1) + "\n")


def _append_metrics(workdir: Path, record: dict[str, Any]) -> None:
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------- training loop


def _progress(total: int, initial: int):
    from tqdm.auto import tqdm

    disable = os.environ.get("RFJAX_NO_PROGRESS") == "1" or not sys.stderr.isatty()
    return tqdm(total=total, initial=initial, disable=disable, unit="step", dynamic_ncols=True)


def _absolute_workdir(workdir: str | os.PathLike) -> Path:
    path = Path(workdir).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    return path.resolve()


def train(
    config: TrainConfig,
    workdir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    prepared_dir: str | os.PathLike | None = None,
    step_delay: float = 0.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train (or resume) ``config`` in ``workdir``; returns the final evaluation.

    Args:
      config: the run.
      workdir: output folder (made absolute); created if needed. Restarting with the same
        config resumes from its latest complete checkpoint.
      data_dir, prepared_dir: source and prepared data folders (see :mod:`rfjax.data`).
      step_delay: seconds to sleep after each step (test hook, to kill a run mid-way).
      log: where to print human-readable lines.

    Returns:
      ``{"step", "params_sha256", "test": {...}, "train_seconds"}`` (also in ``final.json``).
    """
    workdir = _absolute_workdir(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _check_or_write_config(workdir, config)
    ckpt_dir = workdir / CHECKPOINT_SUBDIR
    for path in clean_stale_checkpoints(ckpt_dir):
        log(f"removed stale temporary checkpoint {path}")

    train_split = rdata.load(config.task, "train", data_dir=data_dir, prepared_dir=prepared_dir)
    test_split = rdata.load(config.task, "test", data_dir=data_dir, prepared_dir=prepared_dir)
    if config.task == "camvid":
        train_split = dataclasses.replace(
            train_split, images=downscale_images(train_split.images, config.downscale),
            labels=downscale_labels(train_split.labels, config.downscale))
        h, w = train_split.images.shape[1:3]
        if config.crop[0] > h or config.crop[1] > w:
            raise ValueError(f"crop {config.crop} is larger than the CamVid images {(h, w)}")
    weights = None
    if config.task == "camvid" and config.class_weights == "median":
        weights = median_frequency_weights(train_split.labels, rdata.NUM_CLASSES["camvid"],
                                           rdata.CAMVID_VOID)
        log("class weights: " + " ".join(f"{x:.3f}" for x in weights))

    state = init_state(config)
    manager = _manager(ckpt_dir, config.max_to_keep)
    latest = manager.latest_step()
    if latest is not None:
        state = _restore(manager, latest, state)
        log(f"resumed from {ckpt_dir / str(latest)} (step {latest})")
        _append_metrics(workdir, {"event": "resume", "step": int(latest), "time": time.time()})
    start = int(state["step"])
    if start > config.steps:
        raise ValueError(f"workdir {workdir} has a checkpoint at step {start} beyond "
                         f"--steps {config.steps}")

    train_step = make_train_step(config, weights)
    model = make_model(config)
    base_key = jax.random.PRNGKey(config.seed + 1)
    n_train = len(train_split)
    bar = _progress(config.steps, start)
    t_start = time.perf_counter()
    t_log, n_log = t_start, 0
    try:
        for step in range(start, config.steps):
            idx = rdata.batch_indices(config.seed, step, n_train, config.batch_size)
            state, metrics = train_step(state, train_split.images[idx],
                                        train_split.labels[idx],
                                        jax.random.fold_in(base_key, step))
            done = step + 1
            n_log += 1
            if done % config.log_every == 0 or done == config.steps:
                loss = float(metrics["loss"])
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss} at step {done}; lower --lr")
                now = time.perf_counter()
                rate = n_log * config.batch_size / max(now - t_log, 1e-9)
                t_log, n_log = now, 0
                _append_metrics(workdir, {"step": done, "split": "train", "loss": loss,
                                          "lr": float(metrics["lr"]), "images_per_s": rate,
                                          "time": time.time()})
                bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.0f}")
            bar.update(1)
            if done % config.checkpoint_every == 0 or done == config.steps:
                _save(manager, done, state)
            if config.eval_every and done % config.eval_every == 0 and done < config.steps:
                scores = evaluate(model, _variables(state), test_split,
                                  config.eval_batch_size, config.downscale)
                _append_metrics(workdir, {"step": done, "split": "test", **_brief(scores)})
                bar.write(f"step {done}: " + _summary(config.task, scores))
            if step_delay:
                time.sleep(step_delay)
    finally:
        bar.close()
    train_seconds = time.perf_counter() - t_start
    if manager.latest_step() != config.steps:  # e.g. resumed a finished run: nothing to do
        _save(manager, config.steps, state)
    manager.close()

    scores = evaluate(model, _variables(state), test_split, config.eval_batch_size,
                      config.downscale)
    digest = params_sha256(state["params"])
    result = {"step": config.steps, "params_sha256": digest, "test": scores,
              "train_seconds_this_process": train_seconds}
    _append_metrics(workdir, {"step": config.steps, "split": "test", "final": True,
                              **_brief(scores), "params_sha256": digest})
    (workdir / "final.json").write_text(json.dumps(result, indent=1) + "\n")
    log(f"final test ({len(test_split)} examples): " + _summary(config.task, scores))
    return result


def _variables(state: dict) -> dict:
    return {"params": state["params"], "batch_stats": state["batch_stats"]}


def _brief(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if k != "confusion"}


def _summary(task: str, scores: dict) -> str:
    if task == "cifar10":
        return f"accuracy={scores['accuracy']:.4f}"
    return (f"mIoU={scores['miou']:.4f} pixel_accuracy={scores['pixel_accuracy']:.4f} "
            f"mean_class_accuracy={scores['mean_class_accuracy']:.4f}")


# --------------------------------------------------------------------------- trained models


def checkpoint_steps(workdir: str | os.PathLike) -> list[int]:
    """Steps of the complete checkpoints of a training run, ascending (``[]`` if none).

    ``--max-to-keep`` (``TrainConfig.max_to_keep``) decides how many a run keeps; keep more
    to follow a quantity along training (``rfjax.experiments.erf_along_training``).
    """
    ckpt_dir = _absolute_workdir(workdir) / CHECKPOINT_SUBDIR
    if not ckpt_dir.is_dir():
        return []
    return sorted(int(p.name) for p in ckpt_dir.iterdir()
                  if p.name.isdigit() and _TMP_MARKER not in p.name)


def load_trained(
    workdir: str | os.PathLike, step: int | None = None
) -> tuple[CifarNet | CifarResNet | CamVidNet, dict, TrainConfig]:
    """The model of a training run and its variables, for inference.

    Args:
      workdir: a run's folder (with ``config.json`` and ``checkpoints/``).
      step: checkpoint step; default the latest complete one.

    Returns:
      ``(model, variables, config)`` with ``variables = {"params", "batch_stats"}``, to use as
      ``model.apply(variables, x)`` (inference mode), exactly like an untrained
      ``model.init(...)``.
    """
    workdir = _absolute_workdir(workdir)
    path = _config_path(workdir)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {workdir} is not a training workdir "
                                "(run scripts/train.py first)")
    config = TrainConfig.from_json(json.loads(path.read_text()))
    ckpt_dir = workdir / CHECKPOINT_SUBDIR
    if not checkpoint_steps(workdir):
        raise FileNotFoundError(f"no checkpoint in {ckpt_dir}")
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(
        read_only=True, enable_async_checkpointing=False))
    steps = manager.all_steps()
    if step is None:
        step = manager.latest_step()
    if step is None or step not in steps:
        raise ValueError(f"no complete checkpoint for step {step} in {ckpt_dir}; "
                         f"available: {sorted(steps)}")
    state = _restore(manager, step, init_state(config))
    manager.close()
    return make_model(config), _variables(state), config
