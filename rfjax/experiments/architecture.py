"""Nonlinearities, subsampling and dilation against the ERF (the paper's Figs. 3 and 4).

* ``nonlinearities``: the same 3x3 stack (He-normal weights, same depth) with ReLU, Tanh and
  Sigmoid; ReLU's map is the least Gaussian (lowest R^2 of a Gaussian fit). The comparison is
  made on single-network, single-input maps (one weight draw, one image each), where ReLU's
  exact zeros show; averaged over many draws and inputs every map tends to a smooth Gaussian
  (the mean map's fit is reported too).
* ``subsampling_dilation``: a plain 3x3 ReLU stack against the same depth with two stride-2
  layers (subsampling) and with dilated kernels (dilation = the subsampled net's jump at that
  layer, so both have the same TRF): both enlarge the ERF.

ERFs: ``reduce="abs"`` (the paper's), averaged over weight draws and random images
(:func:`rfjax.experiments.common.erf_over_draws`); sizes are the Gaussian 4-sigma reading of
:func:`rfjax.metrics.erf_size`.
"""

from __future__ import annotations

import dataclasses
import functools
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
    make_result,
    size_of,
)
from rfjax.models.zoo import ConvStack
from rfjax.theoretical import trf

__all__ = ["NonlinearitiesConfig", "run_nonlinearities", "holds_nonlinearities", "ACTS",
           "SubsamplingDilationConfig", "run_subsampling_dilation",
           "holds_subsampling_dilation"]

#: The nonlinearities of the paper's Fig. 3.
ACTS: dict[str, Callable] = {"relu": nn.relu, "tanh": nn.tanh, "sigmoid": nn.sigmoid}


# ---------------------------------------------------------------------------- nonlinearities


@dataclasses.dataclass(frozen=True)
class NonlinearitiesConfig:
    """A ``depth``-layer 3x3 stack, ``channels`` wide, on a canvas of its TRF plus
    ``margin``; ``draws`` single-network single-input maps (one weight draw and one random
    image each)."""

    depth: int = 20
    channels: int = 4
    draws: int = 64
    margin: int = 4

    @classmethod
    def tiny(cls) -> NonlinearitiesConfig:
        return cls(depth=4, channels=4, draws=4, margin=2)

    @classmethod
    def quick(cls) -> NonlinearitiesConfig:
        return cls(draws=48)

    @classmethod
    def full(cls) -> NonlinearitiesConfig:
        return cls(draws=192)

    @property
    def work(self) -> int:
        return len(ACTS) * self.draws


def holds_nonlinearities(m: Mapping[str, Any]) -> bool:
    """ReLU's single-input maps have the lowest mean Gaussian-fit R^2 and the highest mean
    relative L2 fit error of the three nonlinearities."""
    r2, err = m["gaussian_r2_single"], m["gaussian_rel_l2_single"]
    others = [k for k in r2 if k != "relu"]
    return (all(r2["relu"] < r2[k] for k in others)
            and all(err["relu"] > err[k] for k in others))


def _fit_or_dead(p: np.ndarray) -> tuple[float, float]:
    """``(R^2, relative L2 error)`` of the moment Gaussian fit; an all-zero map (the unit's
    output is zero for that input, so no gradient reaches the input) fits no Gaussian:
    ``(0, 1)``."""
    if not np.any(p > 0):
        return 0.0, 1.0
    f = metrics.fit_gaussian(p)
    return float(f.r2), float(f.rel_l2)


def run_nonlinearities(config: NonlinearitiesConfig = NonlinearitiesConfig(), seed: int = 0,
                       progress: Progress | None = None) -> dict[str, Any]:
    """ERF of the centre unit with ReLU, Tanh, Sigmoid at the same depth, weights and images;
    Gaussian fit (moments, :func:`rfjax.metrics.fit_gaussian`) per nonlinearity."""
    progress = progress or NoProgress()
    c = config
    size = 2 * c.depth + 1 + 2 * c.margin
    key = jax.random.key(seed + 2)
    maps, singles, r2, err, r2_1, err_1, zeros, sizes = {}, {}, {}, {}, {}, {}, {}, {}
    dead: dict[str, float] = {}
    for name, act in ACTS.items():
        net = ConvStack(n=c.depth, features=c.channels, kernel_init="random", act=act)
        # the same key: the same weight draws and images for every nonlinearity
        m, per = erf_over_draws(net, (size, size), c.channels, key, c.draws, 1,
                                progress=progress)["abs"]
        fit = metrics.fit_gaussian(m)
        single = [_fit_or_dead(p) for p in per]
        maps[name], singles[name] = m, per[:3]
        r2[name], err[name] = float(fit.r2), float(fit.rel_l2)
        r2_1[name] = float(np.mean([f[0] for f in single]))
        err_1[name] = float(np.mean([f[1] for f in single]))
        dead[name] = float(np.mean([not np.any(p > 0) for p in per]))
        inside = per[:, c.margin:size - c.margin, c.margin:size - c.margin]
        zeros[name] = float(np.mean(inside == 0))
        sizes[name] = size_of(m)
    measured = {"depth": c.depth, "gaussian_r2_single": r2_1, "gaussian_rel_l2_single": err_1,
                "zero_fraction_single": zeros, "dead_fraction_single": dead,
                "gaussian_r2_mean_map": r2,
                "gaussian_rel_l2_mean_map": err, "erf_size": sizes,
                "trf_size": 2 * c.depth + 1, "maps_averaged": c.draws}
    claim = ("At the same depth, weights and inputs, the ERFs with Tanh and Sigmoid are close "
             "to Gaussian; ReLU makes the ERF less Gaussian (its units output exactly zero "
             "for half of their inputs).")
    criterion = ("Moment Gaussian fit (rfjax.metrics.fit_gaussian) of single-network, "
                 f"single-input |dy/dx| maps ({c.depth} layers, He-normal weights; {c.draws} "
                 "(weight draw, random image) pairs, the same for each nonlinearity): holds "
                 "when ReLU's mean R^2 is the lowest and its mean relative L2 fit error the "
                 "highest of the three. An all-zero map (the unit's output is exactly zero "
                 "for that input) counts as R^2 = 0, error 1. The fit of the mean map over "
                 "all pairs is reported (not judged): averaging makes every map Gaussian.")
    paper = {"depth": 20, "less_gaussian": "relu"}
    data = {"maps": maps, "singles": singles, "size": size, "depth": c.depth,
            "margin": c.margin}
    return make_result("nonlinearities", claim, criterion, measured, paper,
                       holds_nonlinearities, data)


# ---------------------------------------------------------------------- subsampling_dilation


@dataclasses.dataclass(frozen=True)
class SubsamplingDilationConfig:
    """``depth`` 3x3 ReLU layers on ``size`` x ``size`` inputs; the subsampled net has stride 2
    at the layers in ``stride_layers`` (1-based), the dilated net dilation = that net's jump;
    ``draws`` weight draws x ``images`` random images per map."""

    depth: int = 8
    size: int = 64
    channels: int = 8
    stride_layers: tuple[int, ...] = (2, 4)
    draws: int = 24
    images: int = 4

    @classmethod
    def tiny(cls) -> SubsamplingDilationConfig:
        return cls(depth=3, size=16, channels=2, stride_layers=(2,), draws=2, images=1)

    @classmethod
    def quick(cls) -> SubsamplingDilationConfig:
        return cls()

    @classmethod
    def full(cls) -> SubsamplingDilationConfig:
        return cls(draws=96)

    @property
    def work(self) -> int:
        return 3 * self.draws

    def nets(self) -> dict[str, ConvStack]:
        """The three networks: ``plain``, ``subsampled``, ``dilated``."""
        strides = [2 if i + 1 in self.stride_layers else 1 for i in range(self.depth)]
        jump, dil = 1, []
        for s in strides:
            dil.append(jump)
            jump *= s
        kw = {"n": self.depth, "features": self.channels, "kernel_init": "random"}
        return {"plain": ConvStack(**kw), "subsampled": ConvStack(strides=strides, **kw),
                "dilated": ConvStack(dilations=dil, **kw)}


def holds_subsampling_dilation(m: Mapping[str, Any]) -> bool:
    """Both the subsampled and the dilated net's ERF exceed the plain net's by > 20%."""
    e = m["erf_size"]
    return e["subsampled"] > 1.2 * e["plain"] and e["dilated"] > 1.2 * e["plain"]


def run_subsampling_dilation(config: SubsamplingDilationConfig = SubsamplingDilationConfig(),
                             seed: int = 0, progress: Progress | None = None
                             ) -> dict[str, Any]:
    """ERF and TRF of the centre unit of the plain, subsampled and dilated stacks."""
    progress = progress or NoProgress()
    c = config
    key = jax.random.key(seed + 3)
    shape = (1, c.size, c.size, c.channels)
    maps, sizes, trfs, regions, theo = {}, {}, {}, {}, {}
    for name, net in c.nets().items():
        variables = jax.jit(net.init)(key, np.zeros(shape, np.float32))
        fn = functools.partial(net.apply, variables)
        out = jax.eval_shape(fn, jax.ShapeDtypeStruct(shape, np.float32)).shape
        unit = (out[1] // 2, out[2] // 2)
        t = trf(fn, shape)
        regions[name] = t.region(unit)
        trfs[name] = [r1 - r0 + 1 for r0, r1 in regions[name]]
        m, _ = erf_over_draws(net, (c.size, c.size), c.channels, key, c.draws, c.images,
                              unit=unit, progress=progress)["abs"]
        maps[name] = m
        sizes[name] = size_of(m)
        strides = list(net.strides) if net.strides is not None else 1
        dils = list(net.dilations) if net.dilations is not None else 1
        # linear-stack prediction of the 4-sigma size for uniform 3x3 taps (same for E[g^2])
        theo[name] = float(4 * theory.stack_sigma([np.ones((3, 3))] * c.depth, strides,
                                                  dils)[0])
    measured = {"erf_size": sizes, "trf_size": trfs, "linear_theory_size": theo,
                "depth": c.depth, "stride_layers": list(c.stride_layers),
                "dilations": list(c.nets()["dilated"].dilations), "draws": c.draws,
                "images": c.images}
    claim = ("Subsampling (strided layers) and dilated convolutions both increase the ERF "
             "significantly compared with a plain stack of the same depth.")
    criterion = ("ERF = mean |dy/dx| of the centre unit over weight draws and random images "
                 f"({c.depth} 3x3 ReLU layers, He init); size = Gaussian 4-sigma reading of "
                 "rfjax.metrics.erf_size. Holds when the subsampled and the dilated nets' "
                 "sizes both exceed 1.2x the plain net's.")
    paper = {"subsampling_increases_erf": True, "dilation_increases_erf": True}
    data = {"maps": maps, "regions": regions, "size": c.size}
    return make_result("subsampling_dilation", claim, criterion, measured, paper,
                       holds_subsampling_dilation, data)
