"""The configuration of a training run, and the one place where training defaults live.

:class:`TrainConfig`'s field defaults are the defaults of every caller: ``scripts/train.py``
derives its command-line defaults from them, and :mod:`rfjax.experiments.training` builds its
runs from them with ``dataclasses.replace``, changing only what it states. The three fields
whose default depends on the task (``batch_size``, ``lr``, ``width``) default to ``None``,
resolved at construction from :data:`TASK_DEFAULTS`; a constructed config always holds
concrete values (and ``config.json`` records them).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from rfjax.train.tasks import ARCHS, TASKS, get_task

__all__ = ["TrainConfig", "TASKS", "ARCHS", "TASK_DEFAULTS", "CLASS_WEIGHTS",
           "NON_RESULT_FIELDS"]

#: Defaults that depend on the task: the values of the runs recorded in the README.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar10": {"batch_size": 128, "lr": 0.1, "width": 32},
    "camvid": {"batch_size": 8, "lr": 0.05, "width": 16},
}

#: The values of ``TrainConfig.class_weights``: CamVid's loss weighting.
CLASS_WEIGHTS = ("none", "median")

#: Fields of TrainConfig that do not change the trained parameters (may differ on resume).
NON_RESULT_FIELDS = ("checkpoint_every", "eval_every", "log_every", "max_to_keep",
                     "eval_batch_size")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Attributes:
      task: one of :data:`TASKS` (``"cifar10"`` or ``"camvid"``).
      steps: number of optimiser steps.
      batch_size: training batch size; ``None``: the task's (:data:`TASK_DEFAULTS`).
      lr: peak learning rate of the one-cycle schedule; ``None``: the task's.
      seed: seeds the initialisation, the data order and the augmentation.
      checkpoint_every: save every this many steps (and always at the end).
      eval_every: evaluate on the test split every this many steps (0: only at the end).
      log_every: append training metrics to ``metrics.jsonl`` every this many steps.
      weight_decay: L2 coefficient on convolution / dense kernels.
      width: model width (channels of the first stage); ``None``: the task's.
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
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    checkpoint_every: int = 200
    eval_every: int = 0
    log_every: int = 10
    weight_decay: float = 5e-4
    width: int | None = None
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
        for name, value in TASK_DEFAULTS[self.task].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
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
        if self.class_weights not in CLASS_WEIGHTS:
            raise ValueError(f"class_weights must be 'none' or 'median', got "
                             f"{self.class_weights!r}")
        if isinstance(self.downscale, bool) or not isinstance(self.downscale, int) \
                or self.downscale < 1 or (not get_task(self.task).downscale
                                          and self.downscale != 1):
            raise ValueError(f"downscale must be an int >= 1 (1 for cifar10), got "
                             f"{self.downscale!r}")
        crop = tuple(self.crop)
        if len(crop) != 2 or any(not isinstance(c, int) or c < 8 or c % 8 for c in crop):
            raise ValueError(f"crop must be (height, width), multiples of 8, got {self.crop!r}")
        object.__setattr__(self, "crop", crop)

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``crop`` a list); what ``config.json`` holds."""
        return {**dataclasses.asdict(self), "crop": list(self.crop)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TrainConfig:
        """The config of :meth:`to_json`'s dict; fields it lacks take their defaults (a
        ``config.json`` written before a field existed)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(obj) - fields
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        crop = obj.get("crop", cls.__dataclass_fields__["crop"].default)
        return cls(**{**obj, "crop": tuple(crop)})

