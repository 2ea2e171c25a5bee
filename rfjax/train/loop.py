"""The optimiser, the training state, the jitted step, evaluation, the loop and loading.

The training state is the dict ``{"step": int32 scalar, "params", "batch_stats",
"opt_state"}``. Step ``s`` trains on the batch ``rfjax.data.batch_indices(seed, s, n,
batch_size)`` augmented with the key ``fold_in(PRNGKey(seed + 1), s)``, so the state alone
determines the rest of the run: that is what makes a resumed run bit-identical. Everything
task-specific comes from :mod:`rfjax.train.tasks`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rfjax import data as rdata
from rfjax.progress import progress
from rfjax.train import checkpoint as ckpt
from rfjax.train.config import TrainConfig
from rfjax.train.tasks import Model, get_task, make_model

__all__ = ["make_optimizer", "init_state", "make_train_step", "evaluate", "train",
           "load_trained"]


def _schedule(config: TrainConfig) -> optax.Schedule:
    return optax.cosine_onecycle_schedule(config.steps, config.lr, pct_start=config.warmup)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """SGD, Nesterov momentum 0.9, L2 on kernels (ndim > 1), cosine one-cycle schedule."""
    decay_mask = functools.partial(jax.tree.map, lambda p: p.ndim > 1)
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
        optax.sgd(_schedule(config), momentum=0.9, nesterov=True),
    )


def init_state(config: TrainConfig) -> dict[str, Any]:
    """Fresh training state ``{"step", "params", "batch_stats", "opt_state"}`` (step 0)."""
    model = make_model(config)
    shape = get_task(config.task).input_shape(config)
    variables = model.init(jax.random.PRNGKey(config.seed), jnp.zeros(shape))
    params = variables["params"]
    return {
        "step": jnp.asarray(0, jnp.int32),
        "params": params,
        "batch_stats": variables.get("batch_stats", {}),
        "opt_state": make_optimizer(config).init(params),
    }


def make_train_step(config: TrainConfig, class_weights: np.ndarray | None = None) -> Callable:
    """The jitted, pure training step of ``config``.

    Returns ``train_step(state, images, labels, key) -> (state, metrics)`` where ``state`` is
    the dict of :func:`init_state`, ``images`` uint8 (B, H, W, 3), ``labels`` int32 (B,) or
    (B, H, W), ``key`` a PRNG key for the augmentation, and ``metrics`` ``{"loss", "lr"}``
    (float32 scalars; ``lr`` is the rate this step used). Model, optimiser and loss options
    are static; all arrays (including ``class_weights``, float (C,)) are arguments of the
    compiled function.
    """
    task = get_task(config.task)
    model = make_model(config)
    tx = make_optimizer(config)
    schedule = _schedule(config)
    weights = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)

    @jax.jit
    def step(state, images, labels, key, weights):
        x, y = task.augment(config, key, images, labels)

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state["batch_stats"]}, x, train=True,
                mutable=["batch_stats"])
            return task.loss(config, logits, y, weights), updates["batch_stats"]

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


def evaluate(model: Model, variables: dict, split: rdata.Split, batch_size: int = 100,
             downscale: int = 1) -> dict[str, Any]:
    """Evaluate in inference mode on a whole split (the task is ``split.name``).

    CIFAR-10: ``{"accuracy", "num_examples"}``. CamVid: :func:`segmentation_scores` of the
    confusion matrix summed over the split, at the split's own resolution (images padded to a
    multiple of 8, logits cropped back; void pixels ignored), plus ``"confusion"``. With
    ``downscale > 1`` the model sees the images box-filtered down by that factor and its logits
    are resized (bilinear) back to the labels' resolution, where the scores are computed.
    The last partial batch is padded (repeats of the first example) and the padding discarded,
    so every batch has one shape (one compilation).
    """
    return get_task(split.name).evaluate(model, variables, split, batch_size, downscale)


def _variables(state: dict) -> dict:
    return {"params": state["params"], "batch_stats": state["batch_stats"]}


def _brief(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if k != "confusion"}


def _progress(total: int, initial: int):
    return progress(total, None, initial=initial, unit="step", dynamic_ncols=True)


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
      ``{"step", "params_sha256", "test": {...}, "train_seconds_this_process"}`` (also in
      ``final.json``).
    """
    task = get_task(config.task)
    workdir = ckpt.absolute_workdir(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt.check_or_write_config(workdir, config)
    ckpt_dir = workdir / ckpt.CHECKPOINT_SUBDIR
    for path in ckpt.clean_stale_checkpoints(ckpt_dir):
        log(f"removed stale temporary checkpoint {path}")

    train_split = rdata.load(config.task, "train", data_dir=data_dir, prepared_dir=prepared_dir)
    test_split = rdata.load(config.task, "test", data_dir=data_dir, prepared_dir=prepared_dir)
    train_split = task.prepare(config, train_split)
    weights = task.class_weights(config, train_split)
    if weights is not None:
        log("class weights: " + " ".join(f"{x:.3f}" for x in weights))

    state = init_state(config)
    manager = ckpt.manager(ckpt_dir, config.max_to_keep)
    latest = manager.latest_step()
    if latest is not None:
        state = ckpt.restore(manager, latest, state)
        log(f"resumed from {ckpt_dir / str(latest)} (step {latest})")
        ckpt.append_metrics(workdir, {"event": "resume", "step": int(latest),
                                      "time": time.time()})
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
                ckpt.append_metrics(workdir, {"step": done, "split": "train", "loss": loss,
                                              "lr": float(metrics["lr"]), "images_per_s": rate,
                                              "time": time.time()})
                bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.0f}")
            bar.update(1)
            if done % config.checkpoint_every == 0 or done == config.steps:
                ckpt.save(manager, done, state)
            if config.eval_every and done % config.eval_every == 0 and done < config.steps:
                scores = evaluate(model, _variables(state), test_split,
                                  config.eval_batch_size, config.downscale)
                ckpt.append_metrics(workdir, {"step": done, "split": "test", **_brief(scores)})
                bar.write(f"step {done}: " + task.summary(scores))
            if step_delay:
                time.sleep(step_delay)
    finally:
        bar.close()
    train_seconds = time.perf_counter() - t_start
    if manager.latest_step() != config.steps:  # e.g. resumed a finished run: nothing to do
        ckpt.save(manager, config.steps, state)
    manager.close()

    scores = evaluate(model, _variables(state), test_split, config.eval_batch_size,
                      config.downscale)
    digest = ckpt.params_sha256(state["params"])
    result = {"step": config.steps, "params_sha256": digest, "test": scores,
              "train_seconds_this_process": train_seconds}
    ckpt.append_metrics(workdir, {"step": config.steps, "split": "test", "final": True,
                                  **_brief(scores), "params_sha256": digest})
    (workdir / "final.json").write_text(json.dumps(result, indent=1) + "\n")
    log(f"final test ({len(test_split)} examples): " + task.summary(scores))
    return result


def load_trained(
    workdir: str | os.PathLike, step: int | None = None
) -> tuple[Model, dict, TrainConfig]:
    """The model of a training run and its variables, for inference.

    Args:
      workdir: a run's folder (with ``config.json`` and ``checkpoints/``).
      step: checkpoint step; default the latest complete one.

    Returns:
      ``(model, variables, config)`` with ``variables = {"params", "batch_stats"}``, to use as
      ``model.apply(variables, x)`` (inference mode), exactly like an untrained
      ``model.init(...)``.
    """
    workdir = ckpt.absolute_workdir(workdir)
    config = ckpt.read_config(workdir)
    ckpt_dir = workdir / ckpt.CHECKPOINT_SUBDIR
    if not ckpt.checkpoint_steps(workdir):
        raise FileNotFoundError(f"no checkpoint in {ckpt_dir}")
    manager = ckpt.manager(ckpt_dir, read_only=True)
    steps = manager.all_steps()
    if step is None:
        step = manager.latest_step()
    if step is None or step not in steps:
        raise ValueError(f"no complete checkpoint for step {step} in {ckpt_dir}; "
                         f"available: {sorted(steps)}")
    state = ckpt.restore(manager, step, init_state(config))
    manager.close()
    return make_model(config), _variables(state), config
