"""A training run's folder on disk: orbax checkpoints, ``config.json``, ``metrics.jsonl``.

``WORKDIR`` (always made absolute) holds ``config.json`` (:meth:`TrainConfig.to_json`),
``checkpoints/<step>/`` (orbax ``StandardSave`` of the state dict ``{"step", "params",
"batch_stats", "opt_state"}``, saved synchronously), ``metrics.jsonl`` (one JSON object per
line, appended) and ``final.json``. An interrupted save leaves a ``*.orbax-checkpoint-tmp*``
folder, which :func:`clean_stale_checkpoints` removes and :func:`checkpoint_steps` never lists.
:func:`params_sha256` is the fingerprint that compares two runs bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rfjax.train.config import NON_RESULT_FIELDS, TrainConfig

__all__ = ["CHECKPOINT_SUBDIR", "clean_stale_checkpoints", "checkpoint_steps", "params_sha256",
           "absolute_workdir", "read_config"]

CHECKPOINT_SUBDIR = "checkpoints"
_TMP_MARKER = ".orbax-checkpoint-tmp"


def params_sha256(params: Any) -> str:
    """SHA-256 (hex) of the leaves of ``params`` in tree order, as little-endian bytes."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        arr = np.asarray(leaf)
        digest.update(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


def absolute_workdir(workdir: str | os.PathLike) -> Path:
    """``workdir`` with ``~`` expanded, made absolute (against the current folder), resolved."""
    path = Path(workdir).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    return path.resolve()


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


def checkpoint_steps(workdir: str | os.PathLike) -> list[int]:
    """Steps of the complete checkpoints of a training run, ascending (``[]`` if none).

    ``--max-to-keep`` (``TrainConfig.max_to_keep``) decides how many a run keeps; keep more
    to follow a quantity along training (``rfjax.experiments.erf_along_training``).
    """
    ckpt_dir = absolute_workdir(workdir) / CHECKPOINT_SUBDIR
    if not ckpt_dir.is_dir():
        return []
    return sorted(int(p.name) for p in ckpt_dir.iterdir()
                  if p.name.isdigit() and _TMP_MARKER not in p.name)


def manager(directory: Path, max_to_keep: int | None = None, *, read_only: bool = False):
    """An orbax ``CheckpointManager`` on ``directory``: synchronous saves, every step allowed,
    at most ``max_to_keep`` kept; ``read_only`` for loading."""
    import orbax.checkpoint as ocp

    if read_only:
        options = ocp.CheckpointManagerOptions(read_only=True, enable_async_checkpointing=False)
    else:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=1, create=True,
            enable_async_checkpointing=False, cleanup_tmp_directories=True)
    return ocp.CheckpointManager(directory, options=options)


def restore(mgr, step: int, template: dict) -> dict:
    """The state saved at ``step``, with the tree structure, shapes and dtypes of ``template``
    (e.g. :func:`rfjax.train.init_state` of the run's config)."""
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    return mgr.restore(step, args=ocp.args.StandardRestore(abstract))


def save(mgr, step: int, state: dict) -> None:
    """Save ``state`` as checkpoint ``step`` and wait until it is complete on disk."""
    import orbax.checkpoint as ocp

    mgr.save(step, args=ocp.args.StandardSave(state), force=True)
    mgr.wait_until_finished()


# --------------------------------------------------------------------------- config, metrics


def config_path(workdir: Path) -> Path:
    return workdir / "config.json"


def read_config(workdir: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` of the run in ``workdir`` (its ``config.json``)."""
    workdir = absolute_workdir(workdir)
    path = config_path(workdir)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {workdir} is not a training workdir "
                                "(run scripts/train.py first)")
    return TrainConfig.from_json(json.loads(path.read_text()))


def check_or_write_config(workdir: Path, config: TrainConfig) -> None:
    """Write ``config.json``; if one exists, first check that it describes the same run (the
    fields in :data:`~rfjax.train.config.NON_RESULT_FIELDS` may differ)."""
    path = config_path(workdir)
    if path.exists():
        old = TrainConfig.from_json(json.loads(path.read_text()))
        diff = {
            f.name: (getattr(old, f.name), getattr(config, f.name))
            for f in dataclasses.fields(TrainConfig)
            if f.name not in NON_RESULT_FIELDS and getattr(old, f.name) != getattr(config, f.name)
        }
        if diff:
            raise ValueError(
                f"workdir {workdir} holds a run with a different configuration "
                f"(field: (saved, requested)) {diff}; use a new --workdir or the same options")
    path.write_text(json.dumps(config.to_json(), indent=1) + "\n")


def append_metrics(workdir: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``WORKDIR/metrics.jsonl``."""
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
