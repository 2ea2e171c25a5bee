"""ERFs of deep 3x3 stacks against depth and initialisation (the paper's Figs. 1 and 2).

Networks: :class:`rfjax.models.zoo.ConvStack`, 3x3 kernels, stride 1, 'same' padding, no
bias, ``channels`` channels everywhere (input included). Settings:

* Uniform: every weight ``1 / fan_in`` (the paper's all-ones kernels rescaled so that
  activations stay finite at depth 40; the gradient map's *shape* is the same), no
  nonlinearity. Theory: the exact n-fold convolution of the 3x3 box
  (:func:`rfjax.theory.uniform_erf`).
* Random: He-normal weights (zero mean, variance ``2 / fan_in``), no nonlinearity. Theory:
  ``E[g^2]`` over weight draws (:func:`rfjax.theory.expected_squared_gradient`), which is what
  the ERF with ``reduce="square"`` averaged over draws estimates; the paper's ``reduce="abs"``
  map has no closed form (for Gaussian ``g``, ``E|g|`` is about ``sqrt(E[g^2])``, sigma
  ``sqrt(2)`` times larger).
* Random + ReLU: He-normal weights, ReLU after every layer.

The canvas of depth ``n`` is the unit's TRF (``2n + 1``) plus ``margin`` pixels each side, and
the unit is its centre, so no path to the unit touches the zero padding (every path stays in
the TRF box). Linear networks' gradients do not depend on the input (one image per draw);
ReLU networks average ``images`` random images per draw.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from rfjax import metrics, theory
from rfjax.experiments.common import (
    NoProgress,
    Progress,
    erf_over_draws,
    loglog_fit,
    make_result,
    size_of,
)
from rfjax.models.zoo import ConvStack, identity

__all__ = ["LayersInitConfig", "run_layers_and_init", "holds_layers_and_init",
           "ERFGrowthConfig", "run_erf_growth", "holds_erf_growth", "draw_maps",
           "SETTINGS"]

#: name -> (kernel_init, act) of the three settings of the paper's Fig. 1.
SETTINGS: dict[str, tuple[str, Callable]] = {
    "uniform": ("uniform_normalized", identity),
    "random": ("random", identity),
    "random_relu": ("random", nn.relu),
}


def _canvas(depth: int, margin: int) -> int:
    return 2 * depth + 1 + 2 * margin


def draw_maps(setting: str, depth: int, size: int, channels: int, key: jax.Array, draws: int,
              images: int, reduces: tuple[str, ...] = ("abs",),
              progress: Progress | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ERF of the centre unit of a ``depth``-layer 3x3 stack of ``setting`` (a key of
    :data:`SETTINGS`) on a ``size`` x ``size`` canvas, over weight draws: see
    :func:`rfjax.experiments.common.erf_over_draws` (``uniform`` has one network, one draw;
    linear settings use one image: their gradient is input-independent)."""
    init, act = SETTINGS[setting]
    net = ConvStack(n=depth, features=channels, kernel_init=init, act=act)
    n_draws = 1 if setting == "uniform" else draws
    n_img = 1 if act is identity else images
    return erf_over_draws(net, (size, size), channels, key, n_draws, n_img, reduces,
                          progress=progress)


def _embed(t: np.ndarray, size: int) -> np.ndarray:
    """Centre a theory map (over the TRF window) on a ``size`` x ``size`` canvas."""
    out = np.zeros((size, size))
    o0, o1 = (size - t.shape[0]) // 2, (size - t.shape[1]) // 2
    out[o0:o0 + t.shape[0], o1:o1 + t.shape[1]] = t
    return out


def _rel_error(m: np.ndarray, t: np.ndarray) -> float:
    """``||m/sum(m) - t/sum(t)|| / ||t/sum(t)||``: shape error of a map against a theory map."""
    pm, pt = m / m.sum(), t / t.sum()
    return float(np.linalg.norm(pm - pt) / np.linalg.norm(pt))


# --------------------------------------------------------------------------- layers_and_init


@dataclasses.dataclass(frozen=True)
class LayersInitConfig:
    """``depths``; ``channels``; ``draws`` weight draws (random settings); ``images`` per draw
    for ReLU; ``margin`` pixels around each TRF."""

    depths: tuple[int, ...] = (5, 10, 20, 40)
    channels: int = 8
    draws: int = 96
    images: int = 2
    margin: int = 4

    @classmethod
    def tiny(cls) -> LayersInitConfig:
        return cls(depths=(2, 4), channels=4, draws=8, images=1, margin=2)

    @classmethod
    def quick(cls) -> LayersInitConfig:
        return cls(draws=96)

    @classmethod
    def full(cls) -> LayersInitConfig:
        return cls(draws=400, images=4)

    @property
    def work(self) -> int:
        return len(self.depths) * (1 + 2 * self.draws)


def holds_layers_and_init(m: Mapping[str, Any]) -> bool:
    """Uniform: the measured map is the n-fold box convolution (relative error < 1e-3);
    Random: the squared-gradient map matches E[g^2] (relative error < 0.25); in all three
    settings the ERF/TRF ratio shrinks with every doubling of depth."""
    ok = max(m["uniform_rel_error"]) < 1e-3 and max(m["random_rel_error"]) < 0.25
    for s in SETTINGS:
        r = m[f"ratio_{s}"]
        ok = ok and all(b < a for a, b in zip(r, r[1:], strict=False))
    return bool(ok)


def run_layers_and_init(config: LayersInitConfig = LayersInitConfig(), seed: int = 0,
                        progress: Progress | None = None) -> dict[str, Any]:
    """ERF maps for each depth under Uniform, Random and Random + ReLU, each beside the
    theory's prediction where one exists. Uniform uses ``reduce="abs"`` (the weights are
    positive, so it equals the signed gradient); the random settings use ``reduce="square"``
    averaged over weight draws (what the E[g^2] closed form predicts)."""
    progress = progress or NoProgress()
    c = config
    if any(d < 1 for d in c.depths) or sorted(c.depths) != list(c.depths):
        raise ValueError(f"layers_and_init: depths must be increasing ints >= 1, got "
                         f"{c.depths}")
    key = jax.random.key(seed)
    maps: dict[str, list[np.ndarray]] = {s: [] for s in SETTINGS}
    theo: dict[str, list[np.ndarray]] = {"uniform": [], "random": []}
    measured: dict[str, Any] = {"depths": list(c.depths),
                                "trf_size": [2 * d + 1 for d in c.depths],
                                "uniform_rel_error": [], "random_rel_error": [],
                                "channels": c.channels, "draws": c.draws}
    for s in SETTINGS:
        measured[f"erf_size_{s}"] = []
        measured[f"ratio_{s}"] = []
        measured[f"gaussian_r2_{s}"] = []
    measured["theory_size"] = []
    for i, depth in enumerate(c.depths):
        size = _canvas(depth, c.margin)
        t_uni = _embed(theory.uniform_erf(3, depth, normalize=True), size)
        var = np.full((3, 3), 2.0 / (9 * c.channels))
        t_rand = _embed(theory.expected_squared_gradient(
            [var] * depth, channels=[c.channels] * (depth + 1)), size)
        theo["uniform"].append(t_uni)
        theo["random"].append(t_rand)
        measured["theory_size"].append(size_of(t_uni))
        for j, s in enumerate(SETTINGS):
            reduce = "abs" if s == "uniform" else "square"
            k = jax.random.fold_in(key, 100 * i + j)
            m, _ = draw_maps(s, depth, size, c.channels, k, c.draws, c.images, (reduce,),
                             progress)[reduce]
            maps[s].append(m)
            sz = size_of(m)
            measured[f"erf_size_{s}"].append(sz)
            measured[f"ratio_{s}"].append(sz / (2 * depth + 1))
            measured[f"gaussian_r2_{s}"].append(float(metrics.fit_gaussian(m).r2))
        measured["uniform_rel_error"].append(_rel_error(maps["uniform"][-1], t_uni))
        measured["random_rel_error"].append(_rel_error(maps["random"][-1], t_rand))
    claim = ("ERFs of 3x3 stacks are Gaussian-like and fill a shrinking fraction of the TRF "
             "as depth grows (5, 10, 20, 40 layers). Uniform weights: the ERF is exactly the "
             "n-fold convolution of the 3x3 box; Random weights: E[g^2] over weight draws "
             "matches the closed form; Random + ReLU: still Gaussian-like, less smooth.")
    criterion = ("Relative L2 error of the unit-mass maps against theory: Uniform "
                 "(reduce='abs') < 1e-3 at every depth, Random (reduce='square', mean over "
                 "weight draws, compared with E[g^2]) < 0.25 at every depth; and for all "
                 "three settings the ERF/TRF ratio (size = Gaussian 4-sigma reading of "
                 "rfjax.metrics.erf_size; TRF = 2n+1) decreases with depth.")
    paper = {"depths": [5, 10, 20, 40], "kernel": 3, "settings": list(SETTINGS),
             "erf_shape": "Gaussian; ReLU less so"}
    data = {"maps": maps, "theory": theo, "depths": list(c.depths), "margin": c.margin}
    return make_result("layers_and_init", claim, criterion, measured, paper,
                       holds_layers_and_init, data)


# ------------------------------------------------------------------------------- erf_growth


@dataclasses.dataclass(frozen=True)
class ERFGrowthConfig:
    """Depths fitted on log-log axes; the headline setting is ``headline``; ``draws`` weight
    draws and ``images`` random images per draw; ``reduce`` the ERF reduction (the paper's
    ``"abs"``)."""

    depths: tuple[int, ...] = (8, 16, 32, 64)
    channels: int = 8
    draws: int = 48
    images: int = 2
    margin: int = 4
    headline: str = "random_relu"
    reduce: str = "abs"

    @classmethod
    def tiny(cls) -> ERFGrowthConfig:
        return cls(depths=(2, 4, 8), channels=4, draws=8, images=1, margin=2)

    @classmethod
    def quick(cls) -> ERFGrowthConfig:
        return cls(draws=32)

    @classmethod
    def full(cls) -> ERFGrowthConfig:
        return cls(draws=160, images=4)

    @property
    def work(self) -> int:
        return len(self.depths) * (1 + 2 * self.draws)


def holds_erf_growth(m: Mapping[str, Any]) -> bool:
    """``exponent_size`` within 0.1 of 0.5 and ``exponent_ratio`` within 0.1 of -0.5."""
    return abs(m["exponent_size"] - 0.5) <= 0.1 and abs(m["exponent_ratio"] + 0.5) <= 0.1


def run_erf_growth(config: ERFGrowthConfig = ERFGrowthConfig(), seed: int = 0,
                   progress: Progress | None = None) -> dict[str, Any]:
    """ERF size and ERF/TRF ratio against depth for the three settings, log-log fits.

    Two readings of the size of a random network's ERF: ``mean_map`` (the size of the map
    averaged over weight draws, the paper's protocol; ``exponent_size``) and ``per_network``
    (the mean over draws of each network's own map size): each network's map is centred
    somewhere near the unit and the mean map adds that wander of the centre to its width.
    """
    progress = progress or NoProgress()
    c = config
    if c.headline not in SETTINGS:
        raise ValueError(f"erf_growth: headline must be one of {list(SETTINGS)}")
    if len(c.depths) < 2:
        raise ValueError("erf_growth: need at least two depths to fit a line")
    key = jax.random.key(seed + 1)
    depths = np.asarray(c.depths)
    trf = 2 * depths + 1
    sizes: dict[str, list[float]] = {}
    per_net: dict[str, list[float]] = {}
    dead: dict[str, list[int]] = {}
    for j, s in enumerate(SETTINGS):
        sizes[s], per_net[s], dead[s] = [], [], []
        for i, depth in enumerate(c.depths):
            k = jax.random.fold_in(key, 100 * i + j)
            m, per = draw_maps(s, depth, _canvas(depth, c.margin), c.channels, k, c.draws,
                               c.images, (c.reduce,), progress)[c.reduce]
            sizes[s].append(size_of(m))
            # a network whose unit is dead (ReLU: zero output for every image) has no ERF
            alive = [p for p in per if np.any(p > 0)]
            per_net[s].append(float(np.mean([size_of(p) for p in alive])))
            dead[s].append(len(per) - len(alive))
    measured: dict[str, Any] = {"depths": list(c.depths), "trf_size": trf.tolist(),
                                "headline": c.headline, "reduce": c.reduce}
    fits = {}
    for s in SETTINGS:
        es, _ = loglog_fit(depths, sizes[s])
        er, _ = loglog_fit(depths, np.asarray(sizes[s]) / trf)
        ep, _ = loglog_fit(depths, per_net[s])
        fits[s] = (es, er, ep)
        measured[f"erf_size_{s}"] = sizes[s]
        measured[f"erf_size_per_network_{s}"] = per_net[s]
        measured[f"dead_networks_{s}"] = dead[s]
        measured[f"exponent_size_{s}"] = es
        measured[f"exponent_ratio_{s}"] = er
        measured[f"exponent_size_per_network_{s}"] = ep
    es, er, ep = fits[c.headline]
    measured["exponent_size"] = es
    measured["exponent_size_reading"] = "mean_map"
    measured["exponent_size_per_network"] = ep
    measured["exponent_ratio"] = er
    theory_sizes = theory.depth_scaling(3, depths).erf_size
    measured["theory_uniform_size"] = theory_sizes.tolist()
    claim = ("The ERF size grows like sqrt(n) with depth n while the TRF grows like n, so the "
             "ERF/TRF ratio shrinks like 1/sqrt(n).")
    criterion = (f"Least-squares slopes on log-log axes over depths {list(c.depths)}, "
                 f"{c.headline.replace('_', ' + ')} network (3x3, He init, reduce='{c.reduce}'"
                 f", {c.draws} weight draws): exponent_size = slope of the Gaussian 4-sigma size "
                 "(rfjax.metrics.erf_size) of the mean map over weight draws, exponent_ratio = "
                 "slope of that size / TRF (2n+1). Holds when |exponent_size - 0.5| <= 0.1 and "
                 "|exponent_ratio + 0.5| <= 0.1. exponent_size_per_network is the slope of the "
                 "mean of per-network sizes (networks with a dead unit, all-zero map, "
                 "left out; reported, not judged).")
    paper = {"exponent_size": 0.56, "exponent_ratio": -0.43, "theory_exponent_size": 0.5,
             "theory_exponent_ratio": -0.5}
    data = {"depths": depths, "trf": trf, "sizes": sizes, "per_network": per_net,
            "fits": fits, "theory_uniform": theory_sizes}
    return make_result("erf_growth", claim, criterion, measured, paper, holds_erf_growth, data)

