"""The theoretical receptive field against the effective one (the first three comparisons).

* ``trf_example``: two 3x3 convolutions; the layer-2 unit sees 3x3 of layer 1 and 5x5 of the
  input (masks from :func:`rfjax.trf`).
* ``cnn_vs_transformer``: TRF size against depth for a CNN (grows layer by layer) and a ViT
  (the whole input after one attention layer), beside the ERFs of both.
* ``trf_vs_erf``: the uniform TRF box against the ERF of the same unit, and ERFs of the same
  network for different single inputs (the ERF depends on the input, the TRF does not).

All networks are the zoo's Flax models; inputs are standard-normal images (NHWC, float32).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from rfjax import metrics
from rfjax.effective import erf
from rfjax.experiments.common import NoProgress, Progress, make_result, random_images, size_of
from rfjax.models.zoo import ConvStack, ViT, identity
from rfjax.theoretical import trf

__all__ = ["TRFExampleConfig", "run_trf_example", "holds_trf_example",
           "CNNvsTransformerConfig", "run_cnn_vs_transformer", "holds_cnn_vs_transformer",
           "TRFvsERFConfig", "run_trf_vs_erf", "holds_trf_vs_erf"]


# ------------------------------------------------------------------------------ trf_example


@dataclasses.dataclass(frozen=True)
class TRFExampleConfig:
    """``size``: side of the (square, single-channel) input; the unit is its centre."""

    size: int = 9

    @classmethod
    def tiny(cls) -> TRFExampleConfig:
        return cls(7)

    @classmethod
    def quick(cls) -> TRFExampleConfig:
        return cls(9)

    @classmethod
    def full(cls) -> TRFExampleConfig:
        return cls(9)

    @property
    def work(self) -> int:
        return 3


def holds_trf_example(m: Mapping[str, Any]) -> bool:
    """The layer-2 unit's field is a full 5x5 box of the input and a full 3x3 box of layer 1."""
    return (list(m["size"]) == [5, 5] and list(m["layer2_on_layer1_size"]) == [3, 3]
            and m["input_mask_area"] == 25 and m["layer1_mask_area"] == 9
            and list(m["layer1_size"]) == [3, 3])


def _box(mask: np.ndarray) -> list[int]:
    """Bounding-box extent of a boolean mask, per axis."""
    out = []
    for a in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(b for b in range(mask.ndim) if b != a)))
        out.append(int(hit[-1] - hit[0] + 1) if hit.size else 0)
    return out


def run_trf_example(config: TRFExampleConfig = TRFExampleConfig(), seed: int = 0,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Two stacked 3x3 convolutions ('same' padding, one channel): the masks of the centre unit
    of layer 2 on layer 1 and on the input, and of one layer-1 unit on the input."""
    progress = progress or NoProgress()
    s = config.size
    if s < 5:
        raise ValueError(f"trf_example: size must be >= 5 to hold a 5x5 field, got {s}")
    shape = (1, s, s, 1)
    net = ConvStack(n=2, features=1, act=identity, kernel_init="uniform")
    params = net.init(jax.random.key(seed), np.zeros(shape, np.float32))
    layer = ConvStack(n=1, features=1, act=identity, kernel_init="uniform")
    layer2 = {"params": {"conv1": params["params"]["conv2"]}}
    layer1 = {"params": {"conv1": params["params"]["conv1"]}}
    c = s // 2
    t_net = trf(functools.partial(net.apply, params), shape)
    progress.update(1)
    t_l2 = trf(functools.partial(layer.apply, layer2), shape)  # layer 1 -> layer 2
    progress.update(1)
    t_l1 = trf(functools.partial(layer.apply, layer1), shape)  # input -> layer 1
    progress.update(1)
    m_in = t_net.mask((c, c))
    m_l1 = t_l2.mask((c, c))
    # the layer-1 units the layer-2 unit sees, each with its own 3x3 field on the input
    corner = (c - 1, c - 1)
    m_corner = t_l1.mask(corner)
    measured = {
        "size": list(t_net.size),
        "layer2_on_layer1_size": _box(m_l1),
        "layer1_size": list(t_l1.size),
        "input_mask_area": int(m_in.sum()),
        "layer1_mask_area": int(m_l1.sum()),
        "unit": [c, c],
        "region": [list(r) for r in t_net.region((c, c))],
    }
    claim = ("With two 3x3 convolutions, a layer-2 unit sees a 3x3 window of layer 1 and a "
             "5x5 window of the input (its theoretical receptive field).")
    criterion = ("rfjax.trf: TRF size == [5, 5]; the exact masks of the centre unit are a full "
                 "3x3 box on layer 1 (9 units) and a full 5x5 box on the input (25 pixels); a "
                 "layer-1 unit's TRF is [3, 3].")
    data = {"mask_input": m_in, "mask_layer1": m_l1, "mask_corner": m_corner,
            "corner": corner, "unit": (c, c)}
    return make_result("trf_example", claim, criterion, measured, {"size": [5, 5]},
                       holds_trf_example, data)


# ------------------------------------------------------------------------ cnn_vs_transformer


@dataclasses.dataclass(frozen=True)
class CNNvsTransformerConfig:
    """``size``: input side; ``cnn_depth`` 3x3 conv layers; ``vit_depth`` attention blocks on
    ``patch``-sized patches; ``images``: random images averaged into each ERF."""

    size: int = 32
    cnn_depth: int = 8
    vit_depth: int = 4
    patch: int = 4
    channels: int = 16
    images: int = 32

    @classmethod
    def tiny(cls) -> CNNvsTransformerConfig:
        return cls(size=16, cnn_depth=2, vit_depth=1, channels=4, images=2)

    @classmethod
    def quick(cls) -> CNNvsTransformerConfig:
        return cls(images=16)

    @classmethod
    def full(cls) -> CNNvsTransformerConfig:
        return cls(images=64)

    @property
    def work(self) -> int:
        return self.cnn_depth + self.vit_depth + 1 + 2


def holds_cnn_vs_transformer(m: Mapping[str, Any]) -> bool:
    """CNN TRF = 2l + 1 after layer l; ViT TRF = the patch, then the whole input after every
    attention block; both ERFs concentrated: the CNN's ERF/TRF ratio < 1 and the ViT token
    puts more than ``4x`` its area share of the ERF's mass on its own patch."""
    cnn = m["cnn_trf_sizes"]
    vit = m["vit_trf_sizes"]
    size = m["input_size"]
    return (cnn == [2 * (i + 1) + 1 for i in range(len(cnn))]
            and vit[0] == m["patch"] and all(v == size for v in vit[1:])
            and all(m["vit_trf_global"][1:]) and not m["vit_trf_global"][0]
            and m["cnn_erf_trf_ratio"] < 1.0
            and m["vit_own_patch_mass"] > 4.0 * m["vit_own_patch_area_share"])


def run_cnn_vs_transformer(config: CNNvsTransformerConfig = CNNvsTransformerConfig(),
                           seed: int = 0, progress: Progress | None = None) -> dict[str, Any]:
    """TRF sizes per layer of a 3x3 CNN and a ViT (from :func:`rfjax.trf`), and the ERF of
    the centre unit / centre token of the deepest layer of each (random init, random
    images, ``reduce="abs"``)."""
    progress = progress or NoProgress()
    c = config
    if c.size % c.patch:
        raise ValueError(f"cnn_vs_transformer: size {c.size} must be a multiple of patch "
                         f"{c.patch}")
    shape = (1, c.size, c.size, 3)
    key = jax.random.key(seed)
    k_cnn, k_vit, k_img = jax.random.split(key, 3)
    cnn = ConvStack(n=c.cnn_depth, features=c.channels)
    cnn_vars = jax.jit(cnn.init)(k_cnn, np.zeros(shape, np.float32))
    cnn_sizes = []
    for depth in range(1, c.cnn_depth + 1):
        # the first `depth` layers of the same network
        sub = {"params": {f"conv{i}": cnn_vars["params"][f"conv{i}"]
                          for i in range(1, depth + 1)}}
        t = trf(functools.partial(ConvStack(n=depth, features=c.channels).apply, sub), shape)
        cnn_sizes.append(int(t.size[0]))
        progress.update(1)
    vit = ViT(patch=c.patch, dim=c.channels * 2, depth=c.vit_depth, heads=2, all_layers=True)
    vit_vars = jax.jit(vit.init)(k_vit, np.zeros(shape, np.float32))
    vit_fn = functools.partial(vit.apply, vit_vars)
    vit_sizes, vit_global = [], []
    for layer in range(c.vit_depth + 1):
        t = trf(vit_fn, shape, output=layer)
        vit_sizes.append(int(t.size[0]))
        vit_global.append(bool(all(t.is_global)))
        progress.update(1)
    x = random_images(k_img, c.images, c.size, 3)
    cnn_fn = functools.partial(cnn.apply, cnn_vars)
    ctr = c.size // 2
    e_cnn = np.asarray(erf(cnn_fn, x, unit=(ctr, ctr), progress=False).map)
    cnn_region = trf(cnn_fn, shape).region((ctr, ctr))
    progress.update(1)
    grid = c.size // c.patch
    token = (grid // 2) * grid + grid // 2
    e_vit = np.asarray(erf(vit_fn, x, unit=(token,), output=c.vit_depth, progress=False).map)
    progress.update(1)
    r0 = (grid // 2) * c.patch
    patch_region = ((r0, r0 + c.patch - 1), (r0, r0 + c.patch - 1))
    own = float(e_vit[r0:r0 + c.patch, r0:r0 + c.patch].sum() / e_vit.sum())
    cnn_erf = size_of(e_cnn)
    progress.update(1)
    measured = {
        "input_size": c.size,
        "patch": c.patch,
        "cnn_trf_sizes": cnn_sizes,
        "vit_trf_sizes": vit_sizes,
        "vit_trf_global": vit_global,
        "cnn_erf_size": cnn_erf,
        "cnn_erf_trf_ratio": cnn_erf / cnn_sizes[-1],
        "vit_erf_size": size_of(e_vit),
        "vit_own_patch_mass": own,
        "vit_own_patch_area_share": c.patch**2 / c.size**2,
        "images": c.images,
    }
    claim = ("In a CNN the TRF grows layer by layer (3, 5, 7, ... for 3x3 convolutions); in a "
             "ViT every token's TRF is the whole input after one attention layer. Both are "
             "only theoretical: the ERFs are concentrated (the CNN's ERF is a fraction of its "
             "TRF; the ViT token draws most of its gradient from its own patch).")
    criterion = ("rfjax.trf sizes: CNN == 2l+1 after layer l; ViT == patch after the "
                 "embedding and == input size (is_global) after every attention block; ERF "
                 "(reduce='abs', mean over random images, size = Gaussian 4-sigma reading of "
                 "rfjax.metrics.erf_size): CNN ERF/TRF < 1, and the ViT centre token's "
                 "ERF mass on its own patch > 4x the patch's share of the image area.")
    data = {"cnn_erf": e_cnn, "vit_erf": e_vit, "cnn_region": cnn_region,
            "patch_region": patch_region, "cnn_depth": c.cnn_depth, "vit_depth": c.vit_depth}
    paper = {"cnn_trf_growth_per_layer": 2, "vit_trf_after_one_layer": "whole input"}
    return make_result("cnn_vs_transformer", claim, criterion, measured, paper,
                       holds_cnn_vs_transformer, data)


# ------------------------------------------------------------------------------ trf_vs_erf


@dataclasses.dataclass(frozen=True)
class TRFvsERFConfig:
    """A ``depth``-layer 3x3 ReLU stack (He init, ``channels`` wide) on ``size``x``size``
    random images; ``images`` averaged into the ERF, the first ``shown`` drawn singly."""

    size: int = 32
    depth: int = 10
    channels: int = 16
    images: int = 64
    shown: int = 4

    @classmethod
    def tiny(cls) -> TRFvsERFConfig:
        return cls(size=12, depth=3, channels=4, images=3, shown=2)

    @classmethod
    def quick(cls) -> TRFvsERFConfig:
        return cls(images=32)

    @classmethod
    def full(cls) -> TRFvsERFConfig:
        return cls(images=128)

    @property
    def work(self) -> int:
        return 2 + self.shown


def holds_trf_vs_erf(m: Mapping[str, Any]) -> bool:
    """The ERF is a fraction of the TRF (area ratio < 0.5), close to Gaussian (R^2 > 0.9),
    the per-input ERFs differ (dissimilarity > 0.05) and the TRF masks are identical."""
    return (m["erf_trf_area_ratio"] < 0.5 and m["gaussian_r2"] > 0.9
            and m["per_input_dissimilarity"] > 0.05 and m["trf_masks_identical"])


def _tv_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance of two nonnegative maps read as distributions, in [0, 1]."""
    pa, pb = a / a.sum(), b / b.sum()
    return 0.5 * float(np.abs(pa - pb).sum())


def run_trf_vs_erf(config: TRFvsERFConfig = TRFvsERFConfig(), seed: int = 0,
                   progress: Progress | None = None) -> dict[str, Any]:
    """The TRF box of the centre unit against its ERF (mean over random images), and the ERFs
    of single inputs: total-variation dissimilarity between them, TRF masks per input."""
    progress = progress or NoProgress()
    c = config
    if c.shown < 2 or c.shown > c.images:
        raise ValueError(f"trf_vs_erf: need 2 <= shown <= images, got shown={c.shown}, "
                         f"images={c.images}")
    k_net, k_img = jax.random.split(jax.random.key(seed))
    shape = (1, c.size, c.size, 3)
    net = ConvStack(n=c.depth, features=c.channels)
    fn = functools.partial(net.apply, jax.jit(net.init)(k_net, np.zeros(shape, np.float32)))
    x = random_images(k_img, c.images, c.size, 3)
    ctr = c.size // 2
    res = erf(fn, x, unit=(ctr, ctr), per_image=True, progress=False)
    mean = np.asarray(res.map)
    per = np.asarray(res.per_image)
    progress.update(1)
    t = trf(fn, shape)
    region = t.region((ctr, ctr))
    trf_size = [r1 - r0 + 1 for r0, r1 in region]
    masks = []
    for i in range(c.shown):
        # trf() reads only the shape and dtype of its example input: a mask per input
        masks.append(trf(fn, x[i:i + 1]).mask((ctr, ctr)))
        progress.update(1)
    identical = all(np.array_equal(masks[0], mk) for mk in masks[1:])
    dis = [_tv_distance(per[i], per[j]) for i, j in itertools.combinations(range(c.shown), 2)]
    size = metrics.erf_size(mean)
    fit = metrics.fit_gaussian(mean)
    progress.update(1)
    measured = {
        "trf_size": trf_size,
        "erf_size": [float(v) for v in np.asarray(size.extent)],
        "erf_trf_area_ratio": float(size.area) / float(np.prod(trf_size)),
        "gaussian_r2": float(fit.r2),
        "per_input_dissimilarity": float(np.mean(dis)),
        "trf_masks_identical": bool(identical),
        "trf_mask_area": int(masks[0].sum()),
        "images": c.images,
    }
    claim = ("The ERF of a unit is roughly Gaussian and occupies only a fraction of its TRF; "
             "it depends on the input (different single inputs give different ERFs), while "
             "the TRF depends on the architecture only.")
    criterion = ("ERF = mean |d y / d x| over random images; size = Gaussian 4-sigma box "
                 "(rfjax.metrics.erf_size). Holds when ERF area / TRF area < 0.5, Gaussian "
                 "fit R^2 > 0.9, mean pairwise total-variation distance between single-input "
                 "ERFs > 0.05, and the rfjax.trf masks of the unit are identical for every "
                 "input.")
    data = {"mean": mean, "per_input": per[:c.shown], "inputs": np.asarray(x[:c.shown]),
            "trf_mask": masks[0], "region": region, "fit_mean": np.asarray(fit.mean),
            "fit_sigma": np.asarray(fit.sigma), "depth": c.depth}
    paper = {"erf_shape": "Gaussian", "erf_fraction_of_trf": "a fraction"}
    return make_result("trf_vs_erf", claim, criterion, measured, paper, holds_trf_vs_erf, data)
