"""ERF before and after training (the paper's Fig. 5): CIFAR-10 classifier, CamVid U-Net.

The models, data and training loop are the training issue's (:mod:`rfjax.train`). Either the
two models are trained here (``TrainingConfig.checkpoints is None``: a short run of
:func:`rfjax.train.train` in a temporary folder, or in ``workdir``), or they are loaded from a
folder holding the ``cifar10/`` and ``camvid/`` workdirs of ``scripts/train.py``. "Before" is
the same network at its initialisation (``rfjax.train.init_state`` of the run's own config:
the very parameters training started from).

ERFs: ``rfjax.erf`` with ``reduce="abs"`` over the first ``erf_images`` test images
(normalised with ``rfjax.data.normalize``). CIFAR-10: the centre unit ``(H/16, W/16)`` of the
last feature map (``features`` of the run's model: ``CifarNet``, 4x4 for 32x32 inputs, or
``CifarResNet``, 32x32, for a run trained with ``arch="resnet"``), whose TRF is 74x74. CamVid:
the centre pixel of the logits (summed over the 11 classes) on the centre ``camvid_crop`` of
each test image.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rfjax import data as rdata
from rfjax.effective import erf
from rfjax.experiments.common import NoProgress, Progress, make_result, size_of
from rfjax.theoretical import trf

__all__ = ["TrainingConfig", "run_training", "holds_training", "GROWTH", "erf_along_training"]

#: "Grows significantly": the trained ERF size must exceed this multiple of the initial one
#: (a 10% margin, well above the scatter of the 4-sigma reading between image samples).
GROWTH = 1.1


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """What to train (when no checkpoints are given) and how to measure.

    Each run is ``rfjax.train.TrainConfig``'s defaults for its task, replaced only where the
    figure deliberately differs (:func:`_train_config`):

    - CIFAR-10: ``cifar_batch`` 64, ``cifar_width`` 16, ``cifar_lr`` 0.05 (TrainConfig: 128,
      32, 0.1): a network that trains in minutes on a CPU, the learning rate halved with the
      batch; the figure needs the ERF's growth, not the README run's accuracy.
    - CamVid: ``camvid_batch`` 4, ``camvid_width`` 8 (TrainConfig: 8, 16), trained at half
      resolution (``camvid_downscale`` 2, TrainConfig: 1) on ``camvid_train_crop`` 64x96
      crops (TrainConfig: 128x160): the same reason. ``camvid_lr`` ``None`` keeps
      TrainConfig's (0.05).
    - Both: the experiment's ``seed``; one checkpoint, at the end (``checkpoint_every =
      steps``, TrainConfig: 200), since only the final parameters are read; ``log_every``
      ``min(50, steps)`` (TrainConfig: 10), fewer metrics lines. Neither changes the trained
      parameters.

    Attributes:
      cifar_steps, cifar_batch, cifar_width, cifar_lr: the CIFAR-10 run.
      camvid_steps, camvid_batch, camvid_width, camvid_lr: the CamVid run (training crops
        ``camvid_train_crop`` of the images box-filtered down by ``camvid_downscale``);
        ``camvid_lr`` ``None``: TrainConfig's.
      erf_images: test images averaged into each ERF.
      camvid_crop: the centre crop (multiples of 8) on which the CamVid ERF is measured, at
        the resolution the model was trained at (its run's ``downscale``); ``None``: the
        largest such crop of the image.
      data_dir: the CIFAR/CamVid source folder (``None``: ``rfjax.data``'s default).
      checkpoints: a folder with trained ``cifar10/`` and ``camvid/`` workdirs; ``None``
        trains here.
      workdir: where to train (``None``: a temporary folder, deleted afterwards).
    """

    cifar_steps: int = 1500
    cifar_batch: int = 64
    cifar_width: int = 16
    cifar_lr: float = 0.05
    camvid_steps: int = 500
    camvid_batch: int = 4
    camvid_width: int = 8
    camvid_lr: float | None = None
    camvid_train_crop: tuple[int, int] = (64, 96)
    camvid_downscale: int = 2
    erf_images: int = 64
    camvid_crop: tuple[int, int] | None = None
    data_dir: str | None = None
    checkpoints: str | None = None
    workdir: str | None = None

    @classmethod
    def tiny(cls, **kw: Any) -> TrainingConfig:
        return cls(cifar_steps=3, cifar_batch=8, cifar_width=2, camvid_steps=2, camvid_batch=2,
                   camvid_width=2, camvid_train_crop=(16, 16), camvid_downscale=1,
                   erf_images=2, camvid_crop=(16, 16), **kw)

    @classmethod
    def quick(cls, **kw: Any) -> TrainingConfig:
        return cls(cifar_steps=300, camvid_steps=120, erf_images=24, **kw)

    @classmethod
    def full(cls, **kw: Any) -> TrainingConfig:
        return cls(**kw)

    @property
    def work(self) -> int:
        trained = 0 if self.checkpoints else self.cifar_steps + self.camvid_steps
        return trained + 4 * 10


def holds_training(m: Mapping[str, Any]) -> bool:
    """The ERF grows significantly with training on both tasks (by more than
    :data:`GROWTH` times its size at initialisation), CIFAR's TRF is 74x74 (> 32x32), and the
    trained CIFAR ERF does not cover the image (its 4-sigma size is below that of a map
    spread evenly over the whole image)."""
    return (list(m["trf_cifar"]) == [74, 74]
            and m["trf_cifar"][0] > m["cifar_image_size"]
            and m["erf_cifar_after"] > GROWTH * m["erf_cifar_before"]
            and m["erf_camvid_after"] > GROWTH * m["erf_camvid_before"]
            and m["erf_cifar_after"] < m["cifar_flat_map_size"])


def _train_config(config: TrainingConfig, task: str, seed: int):
    """The figure's run of ``task``: ``TrainConfig``'s defaults, replaced only where the
    figure deliberately differs (listed in :class:`TrainingConfig`)."""
    from rfjax.train import TrainConfig

    if task == "cifar10":
        steps = config.cifar_steps
        # A CPU-sized network (see TrainingConfig).
        sized = dict(batch_size=config.cifar_batch, width=config.cifar_width,
                     lr=config.cifar_lr)
    else:
        steps = config.camvid_steps
        # A CPU-sized U-Net at half resolution (see TrainingConfig).
        sized = dict(batch_size=config.camvid_batch, width=config.camvid_width,
                     lr=config.camvid_lr, crop=tuple(config.camvid_train_crop),
                     downscale=config.camvid_downscale)
    sized = {k: v for k, v in sized.items() if v is not None}  # None: TrainConfig's
    return dataclasses.replace(
        TrainConfig(task=task, steps=steps), **sized,
        seed=seed,  # the experiment's seed
        checkpoint_every=steps,  # only the final parameters are read: save once, at the end
        log_every=max(1, min(50, steps)),  # fewer metrics lines; no effect on the parameters
    )


def _scores(workdir: Path, model, variables, test) -> dict[str, Any]:
    """The run's final test scores (its ``final.json``), or a fresh evaluation."""
    from rfjax.train import evaluate

    final = workdir / "final.json"
    if final.exists():
        scores = json.loads(final.read_text()).get("test", {})
        if scores:
            return scores
    return evaluate(model, variables, test)


def _models(config: TrainingConfig, seed: int, root: Path, progress: Progress):
    """``{task: (model, variables_before, variables_after, train_config, scores)}``."""
    from rfjax import train as rtrain

    out = {}
    for task in ("cifar10", "camvid"):
        workdir = root / task
        if config.checkpoints is None:
            tcfg = _train_config(config, task, seed)
            rtrain.train(tcfg, workdir, data_dir=config.data_dir, log=lambda s: None)
            progress.update(tcfg.steps)
        elif not (workdir / "config.json").exists() or not (workdir / "final.json").exists():
            raise FileNotFoundError(
                f"checkpoints {config.checkpoints}: no finished run {task}/ there (config.json "
                "and final.json); expected the workdirs of scripts/train.py (cifar10/ and "
                "camvid/)")
        model, after, tcfg = rtrain.load_trained(workdir)
        state0 = rtrain.init_state(tcfg)
        before = {"params": state0["params"], "batch_stats": state0["batch_stats"]}
        test = rdata.load(task, "test", data_dir=config.data_dir)
        scores = _scores(workdir, model, after, test)
        out[task] = (model, before, after, tcfg, scores, test)
    return out


def _centre_crop(images: np.ndarray, crop: tuple[int, int] | None) -> np.ndarray:
    h, w = images.shape[1:3]
    ch, cw = (h - h % 8, w - w % 8) if crop is None else crop
    if ch > h or cw > w or ch % 8 or cw % 8:
        raise ValueError(f"camvid_crop {crop} must be multiples of 8 within the images "
                         f"{(h, w)}")
    top, left = (h - ch) // 2, (w - cw) // 2
    return images[:, top:top + ch, left:left + cw]


def _probe(task: str, model, variables, tcfg, test, n: int, camvid_crop):
    """What the ERF of ``task`` is measured on: ``(fn, x, unit, image)``.

    ``fn(variables, x)`` is the output the unit belongs to (CIFAR-10: the last feature map
    ``type(model).features``; CamVid: the logits), ``x`` the first ``n`` normalised test
    images (CamVid: centre crops of the images at the run's resolution), ``unit`` the centre
    of ``fn``'s output and ``image`` the first input as uint8 pixels (for the figure).
    """
    if task == "cifar10":
        x = rdata.normalize(test.images[:n])
        fn = functools.partial(model.apply, method=type(model).features)
        image = np.asarray(test.images[0])
    else:
        from rfjax.train import downscale_images

        crops = _centre_crop(downscale_images(test.images[:n], tcfg.downscale), camvid_crop)
        x = rdata.normalize(crops)
        fn = model.apply
        image = np.asarray(crops[0])
    out_hw = jax.eval_shape(fn, variables, x[:1]).shape[1:3]  # shapes only, no forward pass
    return fn, x, (out_hw[0] // 2, out_hw[1] // 2), image


def _erf_map(fn, variables, x, unit) -> np.ndarray:
    return np.asarray(erf(functools.partial(fn, variables), x, unit=unit, progress=False).map)


def erf_along_training(workdir: str | Path, *, data_dir: str | None = None,
                       erf_images: int = 64, camvid_crop: tuple[int, int] | None = None,
                       progress: Progress | None = None) -> dict[str, Any]:
    """The ERF of a training run's unit at its initialisation and at every kept checkpoint.

    The unit and inputs are those of :func:`run_training` (CIFAR-10: the centre unit of the
    last feature map; CamVid: the centre pixel of the logits on centre crops). Step 0 is the
    run's own initialisation (``rfjax.train.init_state`` of its ``config.json``); the others
    are the complete checkpoints in ``WORKDIR/checkpoints`` (train with a larger
    ``--max-to-keep`` to keep more of them).

    Args:
      workdir: a folder written by ``scripts/train.py`` / :func:`rfjax.train.train`.
      data_dir: the source data folder (``None``: ``rfjax.data``'s default).
      erf_images: test images averaged into each ERF.
      camvid_crop: as in :class:`TrainingConfig`.
      progress: receives ``update(1)`` per measured step.

    Returns:
      ``{"task", "arch", "width", "steps": [0, ...], "size": [...], "size_hw": [[h, w], ...],
      "threshold_hw": [[h, w], ...], "maps": float32 (len(steps), H, W), "unit", "input_hw",
      "trf", "image", "final": the run's final.json or None}``. ``size`` is the figures' 4-sigma
      reading (:func:`rfjax.experiments.common.size_of`), ``size_hw`` the same per axis and
      ``threshold_hw`` the paper's literal threshold extents (``rfjax.metrics.threshold_size``).
    """
    from rfjax import metrics
    from rfjax import train as rtrain

    workdir = Path(workdir)
    progress = progress or NoProgress()
    steps = rtrain.checkpoint_steps(workdir)
    if not (workdir / "config.json").exists() or not steps:
        raise FileNotFoundError(f"{workdir}: not a training workdir with checkpoints "
                                "(config.json and checkpoints/<step>/ from scripts/train.py)")
    model, last, tcfg = rtrain.load_trained(workdir, steps[-1])
    test = rdata.load(tcfg.task, "test", data_dir=data_dir)
    fn, x, unit, image = _probe(tcfg.task, model, last, tcfg, test, erf_images, camvid_crop)
    state0 = rtrain.init_state(tcfg)
    maps, hw, thr = [], [], []
    for step in [0, *steps]:
        if step == 0:
            variables = {"params": state0["params"], "batch_stats": state0["batch_stats"]}
        elif step == steps[-1]:  # restored above
            variables = last
        else:
            variables = rtrain.load_trained(workdir, step)[1]
        m = _erf_map(fn, variables, x, unit)
        maps.append(m)
        hw.append([float(v) for v in np.asarray(metrics.erf_size(m).extent)])
        thr.append([float(v) for v in np.asarray(metrics.threshold_size(m).extent)])
        progress.update(1)
    final = workdir / "final.json"
    return {
        "task": tcfg.task, "arch": tcfg.arch, "width": int(tcfg.width),
        "steps": [0, *steps], "size": [float(np.mean(v)) for v in hw], "size_hw": hw,
        "threshold_hw": thr, "maps": np.stack(maps).astype(np.float32),
        "unit": [int(u) for u in unit], "input_hw": [int(v) for v in x.shape[1:3]],
        "trf": [int(v) for v in trf(functools.partial(fn, last), x[:1]).size],
        "image": image,
        "final": json.loads(final.read_text()) if final.exists() else None,
    }


def run_training(config: TrainingConfig = TrainingConfig(), seed: int = 0,
                 progress: Progress | None = None) -> dict[str, Any]:
    """ERF sizes before/after training of both models, CIFAR's TRF, test accuracy / mIoU."""
    progress = progress or NoProgress()
    with tempfile.TemporaryDirectory(prefix="rfjax-figures-") as tmp:
        if config.checkpoints is not None:
            root = Path(config.checkpoints)
        elif config.workdir is not None:
            root = Path(config.workdir)
        else:
            root = Path(tmp)
        models = _models(config, seed, root.resolve(), progress)
        maps, sizes = {}, {}
        # CIFAR-10: the centre unit of the last feature map
        model, before, after, tcfg_c, scores_c, test = models["cifar10"]
        fn, x, unit, cifar_image = _probe("cifar10", model, after, tcfg_c, test,
                                          config.erf_images, config.camvid_crop)
        t_c = trf(functools.partial(fn, after), x[:1])
        region_c = t_c.region(unit)
        for tag, variables in (("before", before), ("after", after)):
            maps[f"cifar_{tag}"] = _erf_map(fn, variables, x, unit)
            sizes[f"cifar_{tag}"] = size_of(maps[f"cifar_{tag}"])
            progress.update(10)
        # CamVid: the centre pixel of the logits
        model_v, before_v, after_v, tcfg_v, scores_v, test_v = models["camvid"]
        fn_v, xv, unit_v, camvid_image = _probe("camvid", model_v, after_v, tcfg_v, test_v,
                                                config.erf_images, config.camvid_crop)
        for tag, variables in (("before", before_v), ("after", after_v)):
            maps[f"camvid_{tag}"] = _erf_map(fn_v, variables, xv, unit_v)
            sizes[f"camvid_{tag}"] = size_of(maps[f"camvid_{tag}"])
            progress.update(10)
    measured = {
        "trf_cifar": [int(v) for v in t_c.size],
        "cifar_image_size": int(x.shape[1]),
        # what a map spread evenly over the whole image reads (a map that "covers" it)
        "cifar_flat_map_size": size_of(np.ones(x.shape[1:3])),
        "erf_cifar_before": sizes["cifar_before"],
        "erf_cifar_after": sizes["cifar_after"],
        "erf_camvid_before": sizes["camvid_before"],
        "erf_camvid_after": sizes["camvid_after"],
        "cifar_growth": sizes["cifar_after"] / sizes["cifar_before"],
        "camvid_growth": sizes["camvid_after"] / sizes["camvid_before"],
        "cifar_test_accuracy": float(scores_c["accuracy"]),
        "camvid_test_miou": float(scores_v["miou"]),
        "cifar_steps": int(tcfg_c.steps),
        "camvid_steps": int(tcfg_v.steps),
        "cifar_width": int(tcfg_c.width),
        "camvid_width": int(tcfg_v.width),
        "camvid_downscale": int(tcfg_v.downscale),
        "camvid_erf_input": [int(v) for v in xv.shape[1:3]],
        "from_checkpoints": config.checkpoints is not None,
        "erf_images": int(x.shape[0]),
    }
    claim = ("The ERF grows significantly with training (CIFAR-10 classification and CamVid "
             "segmentation). The CIFAR-10 network's TRF is 74x74, larger than the 32x32 "
             "input, yet its ERF does not cover the image.")
    criterion = ("ERF = mean |dy/dx| over test images; size = Gaussian 4-sigma reading of "
                 "rfjax.metrics.erf_size (mean over the two axes). Holds when rfjax.trf gives "
                 "[74, 74] for the CIFAR unit (larger than the 32x32 image), the ERF size after "
                 f"training exceeds {GROWTH}x the size at initialisation for both tasks, and "
                 "the trained "
                 "CIFAR ERF size is below that of a map spread evenly over the whole image "
                 "(cifar_flat_map_size, 36.9 for 32x32).")
    paper = {"trf_cifar": [74, 74], "erf_grows_with_training": True,
             "cifar_erf_covers_image": False}
    data = {**maps, "cifar_region": region_c, "cifar_unit": unit, "camvid_unit": unit_v,
            "cifar_image": cifar_image, "camvid_image": camvid_image,
            "cifar_accuracy": measured["cifar_test_accuracy"],
            "camvid_miou": measured["camvid_test_miou"]}
    return make_result("training", claim, criterion, measured, paper, holds_training, data)

