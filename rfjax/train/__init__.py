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

Modules (one idea each; the names below are re-exported here):

- :mod:`rfjax.train.config`: :class:`TrainConfig` and every training default
  (:data:`TASK_DEFAULTS` for those that depend on the task);
- :mod:`rfjax.train.tasks`: the per-task table :data:`TASK_TABLE` (models, input shape,
  augmentation, loss, data preparation, class weights, evaluation), :func:`make_model`;
- :mod:`rfjax.train.losses`: cross-entropy, confusion matrix, segmentation scores, class weights;
- :mod:`rfjax.train.preprocess`: image / label downscaling;
- :mod:`rfjax.train.checkpoint`: the workdir on disk (orbax checkpoints, config, metrics) and
  the :func:`params_sha256` fingerprint;
- :mod:`rfjax.train.loop`: optimiser, state, jitted step, :func:`evaluate`, :func:`train`,
  :func:`load_trained`.
"""

from rfjax.train.checkpoint import (
    CHECKPOINT_SUBDIR,
    checkpoint_steps,
    clean_stale_checkpoints,
    params_sha256,
)
from rfjax.train.config import CLASS_WEIGHTS, NON_RESULT_FIELDS, TASK_DEFAULTS, TrainConfig
from rfjax.train.loop import (
    evaluate,
    init_state,
    load_trained,
    make_optimizer,
    make_train_step,
    train,
)
from rfjax.train.losses import (
    confusion_matrix,
    cross_entropy,
    median_frequency_weights,
    segmentation_scores,
)
from rfjax.train.preprocess import downscale_images, downscale_labels
from rfjax.train.tasks import ARCHS, TASK_TABLE, TASKS, Task, get_task, make_model

__all__ = [
    "ARCHS",
    "CHECKPOINT_SUBDIR",
    "CLASS_WEIGHTS",
    "NON_RESULT_FIELDS",
    "TASKS",
    "TASK_DEFAULTS",
    "TASK_TABLE",
    "Task",
    "TrainConfig",
    "checkpoint_steps",
    "clean_stale_checkpoints",
    "confusion_matrix",
    "cross_entropy",
    "downscale_images",
    "downscale_labels",
    "evaluate",
    "get_task",
    "init_state",
    "load_trained",
    "make_model",
    "make_optimizer",
    "make_train_step",
    "median_frequency_weights",
    "params_sha256",
    "segmentation_scores",
    "train",
]
