"""The training tasks as a table: everything that differs between CIFAR-10 and CamVid.

:data:`TASK_TABLE` maps a task name to its :class:`Task` record: the models it can train
(architecture name -> factory of the Flax module at a width; the first is the default), the
input shape used to initialise them, the training augmentation, the loss, the preparation of
the training split, the class weights, the evaluation on a test split and the one-line
summary of its scores. The training loop (:mod:`rfjax.train.loop`) only ever asks this table,
so adding a task is adding one record. :data:`TASKS` and :data:`ARCHS` are derived from it.

Conventions: images are uint8 ``(B, H, W, 3)`` (normalised to ``[-1, 1]`` by
:func:`rfjax.data.normalize` on the device); CIFAR-10 labels are int32 ``(B,)``, CamVid labels
int32 ``(B, H, W)`` with void (:data:`rfjax.data.CAMVID_VOID`) ignored by losses and scores.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from rfjax import data as rdata
from rfjax.models.camvid import CamVidNet, pad_to_multiple
from rfjax.models.cifar import CifarNet, CifarResNet
from rfjax.train.losses import (
    confusion_matrix,
    cross_entropy,
    median_frequency_weights,
    segmentation_scores,
)
from rfjax.train.preprocess import downscale_images, downscale_labels

if TYPE_CHECKING:
    from rfjax.train.config import TrainConfig

__all__ = ["Task", "TASK_TABLE", "TASKS", "ARCHS", "get_task", "make_model"]

Model = CifarNet | CifarResNet | CamVidNet


@dataclasses.dataclass(frozen=True)
class Task:
    """What one training task does differently.

    Attributes:
      name: the task (``TrainConfig.task``, and ``rfjax.data.Split.name`` of its data).
      models: architecture name -> ``factory(width) -> flax module``; the first is the default.
      input_shape: ``(config) -> (1, H, W, 3)``, the dummy input that initialises the model.
      augment: ``(config, key, images, labels) -> (x, y)``: the jittable training
        augmentation; ``x`` float normalised images, ``y`` the labels that go with them.
      loss: ``(config, logits, y, class_weights) -> scalar``, jittable; ``class_weights``
        float (C,) or ``None``.
      prepare: ``(config, train_split) -> train_split``, on the host before training (checks
        the config against the data, e.g. the crop against the image size).
      class_weights: ``(config, train_split) -> float32 (C,) | None``.
      evaluate: ``(model, variables, split, batch_size, downscale) -> scores`` in inference
        mode over a whole split (see :func:`rfjax.train.evaluate`).
      summary: ``(scores) -> str``, one line for the log.
      downscale: whether ``TrainConfig.downscale`` may be above 1.
    """

    name: str
    models: Mapping[str, Callable[[int], Model]]
    input_shape: Callable[[TrainConfig], tuple[int, int, int, int]]
    augment: Callable[..., tuple[Array, Array]]
    loss: Callable[..., Array]
    prepare: Callable[[TrainConfig, rdata.Split], rdata.Split]
    class_weights: Callable[[TrainConfig, rdata.Split], np.ndarray | None]
    evaluate: Callable[..., dict[str, Any]]
    summary: Callable[[dict[str, Any]], str]
    downscale: bool


def _padded_range(start: int, size: int, n: int) -> np.ndarray:
    """Indices ``start..start+size-1``, those ``>= n`` replaced by 0 (one batch shape)."""
    idx = np.arange(start, start + size)
    return np.where(idx < n, idx, 0)


# --------------------------------------------------------------------------- CIFAR-10


def _cifar_augment(config, key, images, labels):
    return rdata.augment_cifar(key, rdata.normalize(images)), labels


def _cifar_loss(config, logits, labels, class_weights):
    return cross_entropy(logits, labels, label_smoothing=config.label_smoothing)


@functools.partial(jax.jit, static_argnames=("model",))
def _predict_cifar(model, variables, images):
    return jnp.argmax(model.apply(variables, rdata.normalize(images)), axis=-1)


def _cifar_evaluate(model, variables, split, batch_size, downscale):
    """``{"accuracy", "num_examples"}``; ``downscale`` does not apply."""
    n = len(split)
    correct = 0
    for start in range(0, n, batch_size):
        idx = _padded_range(start, batch_size, n)
        pred = np.asarray(_predict_cifar(model, variables, split.images[idx]))
        real = min(batch_size, n - start)
        correct += int(np.sum(pred[:real] == split.labels[idx[:real]]))
    return {"accuracy": correct / n, "num_examples": n}


_CIFAR_CLASSES = rdata.NUM_CLASSES["cifar10"]

CIFAR10 = Task(
    name="cifar10",
    models={
        "vgg": lambda width: CifarNet(width=width, num_classes=_CIFAR_CLASSES),
        "resnet": lambda width: CifarResNet(width=width, num_classes=_CIFAR_CLASSES),
    },
    input_shape=lambda config: (1, 32, 32, 3),
    augment=_cifar_augment,
    loss=_cifar_loss,
    prepare=lambda config, split: split,
    class_weights=lambda config, split: None,
    evaluate=_cifar_evaluate,
    summary=lambda scores: f"accuracy={scores['accuracy']:.4f}",
    downscale=False,
)


# --------------------------------------------------------------------------- CamVid


def _camvid_augment(config, key, images, labels):
    x, y = rdata.augment_camvid(key, images, labels, config.crop)
    return rdata.normalize(x), y


def _camvid_loss(config, logits, labels, class_weights):
    return cross_entropy(logits, labels, ignore_index=rdata.CAMVID_VOID,
                         class_weights=class_weights)


def _camvid_prepare(config, split):
    """Downscale the training split by ``config.downscale``; the crop must fit in it."""
    split = dataclasses.replace(
        split, images=downscale_images(split.images, config.downscale),
        labels=downscale_labels(split.labels, config.downscale))
    h, w = split.images.shape[1:3]
    if config.crop[0] > h or config.crop[1] > w:
        raise ValueError(f"crop {config.crop} is larger than the CamVid images {(h, w)}")
    return split


def _camvid_class_weights(config, split):
    if config.class_weights != "median":
        return None
    return median_frequency_weights(split.labels, rdata.NUM_CLASSES["camvid"],
                                    rdata.CAMVID_VOID)


@functools.partial(jax.jit, static_argnames=("model",))
def _confusion_camvid(model, variables, images, labels):
    padded, (h, w) = pad_to_multiple(rdata.normalize(images))
    logits = model.apply(variables, padded)[:, :h, :w]
    if logits.shape[1:3] != labels.shape[1:]:  # downscaled input: back to label resolution
        logits = jax.image.resize(logits, (*labels.shape, logits.shape[-1]), "bilinear")
    pred = jnp.argmax(logits, axis=-1)
    return confusion_matrix(pred, labels, rdata.NUM_CLASSES["camvid"], ignore=rdata.CAMVID_VOID)


def _camvid_evaluate(model, variables, split, batch_size, downscale):
    """:func:`segmentation_scores` of the confusion matrix summed over the split, at the
    labels' resolution, plus ``confusion``, ``num_examples``, ``resolution`` and
    ``input_resolution``."""
    n = len(split)
    num_classes = rdata.NUM_CLASSES["camvid"]
    images, labels = downscale_images(split.images, downscale), split.labels
    total = np.zeros((num_classes, num_classes), np.int64)
    for start in range(0, n, batch_size):
        idx = _padded_range(start, batch_size, n)
        lab = labels[idx].copy()
        lab[min(batch_size, n - start):] = rdata.CAMVID_VOID  # padding counts for nothing
        total += np.asarray(_confusion_camvid(model, variables, images[idx], lab))
    return {**segmentation_scores(total), "confusion": total.tolist(), "num_examples": n,
            "resolution": list(labels.shape[1:3]), "input_resolution": list(images.shape[1:3])}


def _camvid_summary(scores):
    return (f"mIoU={scores['miou']:.4f} pixel_accuracy={scores['pixel_accuracy']:.4f} "
            f"mean_class_accuracy={scores['mean_class_accuracy']:.4f}")


CAMVID = Task(
    name="camvid",
    models={"unet": lambda width: CamVidNet(width=width,
                                            num_classes=rdata.NUM_CLASSES["camvid"])},
    input_shape=lambda config: (1, *config.crop, 3),
    augment=_camvid_augment,
    loss=_camvid_loss,
    prepare=_camvid_prepare,
    class_weights=_camvid_class_weights,
    evaluate=_camvid_evaluate,
    summary=_camvid_summary,
    downscale=True,
)


# --------------------------------------------------------------------------- the table

#: Task name -> :class:`Task`.
TASK_TABLE: dict[str, Task] = {t.name: t for t in (CIFAR10, CAMVID)}
#: The task names.
TASKS: tuple[str, ...] = tuple(TASK_TABLE)
#: Architectures per task; the first is the default.
ARCHS: dict[str, tuple[str, ...]] = {name: tuple(t.models) for name, t in TASK_TABLE.items()}


def get_task(name: str) -> Task:
    """The :class:`Task` record of ``name``; a ``ValueError`` naming the known tasks if none."""
    try:
        return TASK_TABLE[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def make_model(config: TrainConfig) -> Model:
    """The Flax module of ``config.task`` / ``config.arch`` at ``config.width``."""
    task = get_task(config.task)
    if config.arch not in task.models:
        raise ValueError(f"unknown arch {config.arch!r} for {task.name}; known: "
                         f"{', '.join(task.models)}")
    return task.models[config.arch](config.width)
