"""The paper comparisons (Luo et al., NIPS 2016) as functions that return data and verdicts.

Each experiment ``NAME`` is ``run_NAME(config, seed, progress) -> dict`` with a frozen config
dataclass offering ``tiny()`` (tests), ``quick()`` and ``full()``; the dict holds ``claim``,
``criterion``, ``measured``, ``paper``, ``holds`` (computed by ``holds_NAME(measured)``) and
``data`` (arrays for :func:`rfjax.plot.paper_figure`). ``scripts/make_figures.py`` runs them.

============================  =================================================================
``trf_example``               two 3x3 convs: the layer-2 unit sees 3x3 of layer 1, 5x5 of input
``cnn_vs_transformer``        TRF size per layer, CNN vs. ViT, and both ERFs
``trf_vs_erf``                TRF box vs. Gaussian ERF; per-input ERFs differ, TRF does not
``layers_and_init``           Fig. 1: depth x (Uniform, Random, Random + ReLU) vs. theory
``erf_growth``                Fig. 2: ERF size ~ sqrt(n), ERF/TRF ~ 1/sqrt(n), log-log fits
``nonlinearities``            Fig. 3: ReLU vs. Tanh vs. Sigmoid
``subsampling_dilation``      Fig. 4: plain vs. strided vs. dilated
``training``                  Fig. 5: ERF before/after training, CIFAR-10 and CamVid
============================  =================================================================

Beside them, :func:`erf_along_training` follows the same ERF through every kept checkpoint of
one training run (``scripts/erf_during_training.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from rfjax.experiments.architecture import (
    NonlinearitiesConfig,
    SubsamplingDilationConfig,
    holds_nonlinearities,
    holds_subsampling_dilation,
    run_nonlinearities,
    run_subsampling_dilation,
)
from rfjax.experiments.common import RESULT_KEYS, jsonable
from rfjax.experiments.depth import (
    ERFGrowthConfig,
    LayersInitConfig,
    holds_erf_growth,
    holds_layers_and_init,
    run_erf_growth,
    run_layers_and_init,
)
from rfjax.experiments.theoretical import (
    CNNvsTransformerConfig,
    TRFExampleConfig,
    TRFvsERFConfig,
    holds_cnn_vs_transformer,
    holds_trf_example,
    holds_trf_vs_erf,
    run_cnn_vs_transformer,
    run_trf_example,
    run_trf_vs_erf,
)
from rfjax.experiments.training import (
    TrainingConfig,
    erf_along_training,
    holds_training,
    run_training,
)

__all__ = ["Experiment", "EXPERIMENTS", "NAMES", "MODES", "make_config", "run_experiment",
           "result_entry", "merge_results", "RESULT_KEYS", "erf_along_training"]

MODES = ("tiny", "quick", "full")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One comparison: its runner, config class and criterion."""

    name: str
    run: Callable[..., dict[str, Any]]
    config: type
    holds: Callable[[Mapping[str, Any]], bool]


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e for e in (
        Experiment("trf_example", run_trf_example, TRFExampleConfig, holds_trf_example),
        Experiment("cnn_vs_transformer", run_cnn_vs_transformer, CNNvsTransformerConfig,
                   holds_cnn_vs_transformer),
        Experiment("trf_vs_erf", run_trf_vs_erf, TRFvsERFConfig, holds_trf_vs_erf),
        Experiment("layers_and_init", run_layers_and_init, LayersInitConfig,
                   holds_layers_and_init),
        Experiment("erf_growth", run_erf_growth, ERFGrowthConfig, holds_erf_growth),
        Experiment("nonlinearities", run_nonlinearities, NonlinearitiesConfig,
                   holds_nonlinearities),
        Experiment("subsampling_dilation", run_subsampling_dilation,
                   SubsamplingDilationConfig, holds_subsampling_dilation),
        Experiment("training", run_training, TrainingConfig, holds_training),
    )
}

#: The experiments in the order of the source notes.
NAMES: tuple[str, ...] = tuple(EXPERIMENTS)


def make_config(name: str, mode: str = "full", **overrides: Any) -> Any:
    """The ``mode`` (``"tiny"``, ``"quick"`` or ``"full"``) config of experiment ``name``,
    with ``overrides`` replaced (e.g. ``data_dir`` / ``checkpoints`` for ``training``)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(NAMES)}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    cfg = getattr(EXPERIMENTS[name].config, mode)()
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def run_experiment(name: str, config: Any = None, seed: int = 0, progress: Any = None
                   ) -> dict[str, Any]:
    """Run experiment ``name`` (``config`` default: its full config)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(NAMES)}")
    exp = EXPERIMENTS[name]
    return exp.run(config if config is not None else exp.config.full(), seed, progress)


def result_entry(result: Mapping[str, Any]) -> dict[str, Any]:
    """The ``results.json`` entry of a result: ``claim, measured, paper, criterion, holds``."""
    return jsonable({k: result[k] for k in RESULT_KEYS})


def merge_results(path: str | os.PathLike[str], results: Iterable[Mapping[str, Any]]
                  ) -> dict[str, Any]:
    """Write ``results.json`` at ``path``: the entries of ``results`` replace those of the
    same name in an existing file, other entries are kept; keys in :data:`NAMES` order.
    Returns the written mapping."""
    path = Path(path)
    old: dict[str, Any] = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); move it away or fix it") from e
        if not isinstance(old, dict):
            raise ValueError(f"{path} does not hold a JSON object")
    for r in results:
        old[r["name"]] = result_entry(r)
    ordered = {k: old[k] for k in NAMES if k in old}
    ordered.update({k: v for k, v in old.items() if k not in ordered})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ordered, indent=1, sort_keys=False, allow_nan=False) + "\n")
    return ordered
