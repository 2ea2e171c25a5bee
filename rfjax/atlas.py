"""The receptive-field atlas: the TRF and ERF of many published architectures, one record each.

:data:`ENTRIES` (:func:`entries`) is the table of architectures: torchvision, timm, Keras 3
applications and rfjax's own Flax zoo, each with a lazy constructor (its framework is
imported only when it is built), its native resolution and the names of its stage outputs
(``None``: found by :func:`stage_layers`). :func:`atlas_record` measures one entry and returns
a JSON-ready dict; a model that fails anywhere is recorded with the error's type and message,
never dropped. ``scripts/atlas.py`` runs the table and writes ``atlas/``; the figures are in
:mod:`rfjax.plot` (matplotlib stays there).

What a record holds, per stage output: the TRF ``size``/``stride``/``padding`` per axis,
``aligned``, ``is_global``, ``rectangular`` (the centre unit's exact mask equals its bounding
box) and the seconds :func:`rfjax.trf` took (the torch export of that layer included). For
the last stage: the ERF of its centre unit at initialisation (mean of the per-draw maps, each
normalised to sum 1, over ``weight_draws`` weight draws and ``erf_images`` random-normal
images), its Gaussian 4-sigma size per axis (:func:`rfjax.metrics.erf_size`) and ERF/TRF
ratio (:func:`rfjax.metrics.erf_trf_ratio`), with the channel remedy used when the channel sum
is noise (``channels=0``); and, for PyTorch models, the oracle check: the TRF mask of the
centre unit equals the float64 gradient support of the surrogate
(:func:`rfjax.adapters.oracle.grad_support`).

Weight draws: draw ``d`` is the constructor's initialisation under seed ``d``
(``torch.manual_seed(d)``, ``keras.utils.set_random_seed(d)``, the Flax ``init`` key ``d``),
loaded into the first model so that its exported program and compiled gradient are reused.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["ENTRIES", "GALLERY", "REFERENCE", "Entry", "atlas_record", "entries", "get_entry",
           "rectangular", "stage_layers", "versions"]

OUTPUT = "<output>"  #: the stage name of the model's own output


@dataclasses.dataclass(frozen=True)
class Entry:
    """One architecture of the atlas.

    Attributes:
      name: unique name (the record's file name).
      family: architecture family (the figures colour by it).
      framework: ``"torchvision"``, ``"timm"``, ``"keras"`` or ``"rfjax"``.
      ctor: builds the model with fresh random weights (imports its framework lazily).
      resolution: native input resolution (square).
      stages: stage-output names (torch module paths, Keras layer names, or ``"<output>"``);
        ``None``: found by :func:`stage_layers`.
      container: torch: the module whose children are searched for stage ends.
      output: torch: the key of the model's output to analyse (segmentation: ``"out"``).
      fixed_resolution: the model only accepts its native resolution.
    """

    name: str
    family: str
    framework: str
    ctor: Callable[[], Any] = dataclasses.field(repr=False, compare=False)
    resolution: int = 224
    stages: tuple[str, ...] | None = None
    container: str = ""
    output: Any = None
    fixed_resolution: bool = False


# --------------------------------------------------------------------------------------------
# Constructors (lazy imports)
# --------------------------------------------------------------------------------------------


def _tv(name: str, **kw) -> Any:
    import torchvision

    return getattr(torchvision.models, name)(weights=None, **kw)


def _tv_seg(name: str) -> Any:
    import torchvision

    return getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None,
                                                          num_classes=21, aux_loss=False)


def _timm(name: str) -> Any:
    import timm

    return timm.create_model(name, pretrained=False)


def _keras(name: str, resolution: int) -> Any:
    from rfjax.adapters.keras_models import _keras as keras_module

    keras = keras_module()
    return getattr(keras.applications, name)(weights=None, include_top=False,
                                             input_shape=(resolution, resolution, 3))


def _zoo(name: str) -> Any:
    from rfjax.models.registry import get_model

    return get_model(name)


def _resnet_stages(prefix: str = "") -> tuple[str, ...]:
    return tuple(f"{prefix}layer{i}" for i in range(1, 5))


def _build_entries() -> list[Entry]:
    E = Entry
    P = functools.partial
    out: list[Entry] = []

    def tv(name, family, res=224, stages=None, container="", fixed=False, **kw):
        out.append(E(name, family, "torchvision", P(_tv, name, **kw), res, stages, container,
                     fixed_resolution=fixed))

    for n in ("resnet18", "resnet34", "resnet50", "resnet101"):
        tv(n, "resnet", stages=_resnet_stages())
    tv("resnext50_32x4d", "resnet", stages=_resnet_stages())
    tv("wide_resnet50_2", "resnet", stages=_resnet_stages())
    for n in ("vgg11", "vgg11_bn", "vgg16", "vgg16_bn"):
        tv(n, "vgg", container="features")
    tv("alexnet", "alexnet", container="features")
    tv("squeezenet1_0", "squeezenet", container="features")
    tv("squeezenet1_1", "squeezenet", container="features")
    tv("densenet121", "densenet", container="features")
    tv("densenet169", "densenet", container="features")
    tv("inception_v3", "inception", res=299, init_weights=True, aux_logits=True)
    tv("googlenet", "inception", init_weights=True, aux_logits=False)
    tv("mobilenet_v2", "mobilenet", container="features")
    tv("mobilenet_v3_small", "mobilenet", container="features")
    tv("mobilenet_v3_large", "mobilenet", container="features")
    tv("mnasnet1_0", "mnasnet", container="layers")
    tv("mnasnet0_5", "mnasnet", container="layers")
    tv("shufflenet_v2_x1_0", "shufflenet")
    tv("shufflenet_v2_x0_5", "shufflenet")
    for n in ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
              "efficientnet_v2_s"):
        tv(n, "efficientnet", container="features")
    for n in ("regnet_x_400mf", "regnet_x_800mf", "regnet_y_400mf", "regnet_y_800mf"):
        tv(n, "regnet", container="trunk_output")
    tv("convnext_tiny", "convnext", container="features")
    tv("vit_b_16", "vit", fixed=True,
       stages=tuple(f"encoder.layers.encoder_layer_{i}" for i in (0, 3, 7, 11)) + ("encoder",))
    tv("swin_t", "swin", container="features", fixed=True)
    tv("maxvit_t", "maxvit", fixed=True, stages=("stem",) + tuple(f"blocks.{i}"
                                                                   for i in range(4)))
    for n in ("fcn_resnet50", "deeplabv3_resnet50"):
        out.append(E(n, "segmentation", "torchvision", P(_tv_seg, n), 224,
                     _resnet_stages("backbone.") + (OUTPUT,), output="out"))
    out.append(E("lraspp_mobilenet_v3_large", "segmentation", "torchvision",
                 P(_tv_seg, "lraspp_mobilenet_v3_large"), 224, None, "backbone",
                 output="out"))

    timm_models = [
        ("resnet18", "resnet"), ("resnet50", "resnet"), ("resnet18d", "resnet-d"),
        ("resnet50d", "resnet-d"), ("resnet26t", "resnet-d"), ("seresnet50", "resnet"),
        ("ecaresnet26t", "resnet-d"), ("resnetrs50", "resnet-d"), ("res2net50_26w_4s", "resnet"),
        ("resnest14d", "resnet-d"), ("skresnet18", "resnet"),
        ("regnetx_002", "regnet"), ("regnety_002", "regnet"), ("regnetz_b16", "regnet"),
        ("efficientnet_b0", "efficientnet"), ("efficientnet_lite0", "efficientnet"),
        ("tf_efficientnet_b0", "efficientnet"), ("efficientnetv2_rw_t", "efficientnet"),
        ("mobilenetv3_small_100", "mobilenet"), ("mobilenetv3_large_100", "mobilenet"),
        ("mobilenetv2_100", "mobilenet"), ("mobilenetv4_conv_small", "mobilenet"),
        ("mnasnet_100", "mnasnet"), ("fbnetc_100", "mobilenet"), ("lcnet_100", "mobilenet"),
        ("convnext_atto", "convnext"), ("convnextv2_atto", "convnext"),
        ("vit_tiny_patch16_224", "vit"), ("vit_small_patch16_224", "vit"),
        ("deit_tiny_patch16_224", "vit"), ("deit_small_patch16_224", "vit"),
        ("deit_tiny_distilled_patch16_224", "vit"),
        ("swin_tiny_patch4_window7_224", "swin"),
        ("coat_lite_tiny", "hybrid"), ("convit_tiny", "hybrid"), ("levit_128s", "hybrid"),
        ("pit_ti_224", "hybrid"), ("mobilevit_xxs", "hybrid"), ("edgenext_xx_small", "hybrid"),
        ("poolformer_s12", "metaformer"), ("fastvit_t8", "hybrid"),
        ("cspresnet50", "cspnet"), ("cspdarknet53", "cspnet"), ("darknet53", "cspnet"),
        ("dla34", "dla"), ("dla46_c", "dla"), ("dpn68", "dpn"),
        ("hrnet_w18_small", "hrnet"), ("repvgg_a0", "repvgg"), ("ghostnet_100", "ghostnet"),
        ("mixnet_s", "mixnet"), ("rexnet_100", "rexnet"), ("tresnet_m", "tresnet"),
        ("nfnet_l0", "nfnet"), ("inception_v3", "inception"), ("inception_v4", "inception"),
        ("inception_resnet_v2", "inception"), ("xception41", "xception"),
        ("densenet121", "densenet"), ("vgg16", "vgg"), ("selecsls42b", "selecsls"),
        ("gernet_s", "resnet"), ("ese_vovnet19b_dw", "vovnet"), ("hgnetv2_b0", "hgnet"),
        ("tinynet_a", "efficientnet"), ("spnasnet_100", "mnasnet"),
    ]
    native = {"inception_v3": 299, "inception_v4": 299, "inception_resnet_v2": 299,
              "xception41": 299, "tresnet_m": 224, "mobilevit_xxs": 256, "fastvit_t8": 256,
              "edgenext_xx_small": 256}
    fixed = {"vit", "swin", "hybrid"}
    for n, fam in timm_models:
        out.append(E(f"timm/{n}", fam, "timm", P(_timm, n), native.get(n, 224),
                     fixed_resolution=fam in fixed))

    keras_models = [
        ("ResNet50", "resnet", 224), ("ResNet50V2", "resnet", 224), ("VGG16", "vgg", 224),
        ("VGG19", "vgg", 224), ("MobileNet", "mobilenet", 224),
        ("MobileNetV2", "mobilenet", 224), ("MobileNetV3Small", "mobilenet", 224),
        ("DenseNet121", "densenet", 224), ("EfficientNetB0", "efficientnet", 224),
        ("EfficientNetV2B0", "efficientnet", 224), ("InceptionV3", "inception", 299),
        ("InceptionResNetV2", "inception", 299), ("Xception", "xception", 299),
        ("ConvNeXtTiny", "convnext", 224), ("NASNetMobile", "nasnet", 224),
    ]
    for n, fam, res in keras_models:
        out.append(E(f"keras/{n}", fam, "keras", P(_keras, n), res, None))

    for n, fam in (("cifar", "zoo"), ("camvid", "zoo"), ("resnet18_full", "zoo"),
                   ("vgg16_full", "zoo"), ("conv_stack_10x64", "zoo")):
        out.append(E(f"rfjax/{n}", fam, "rfjax", P(_zoo, n), 0, (OUTPUT,)))
    return out


@functools.cache
def _entries() -> tuple[Entry, ...]:
    es = tuple(_build_entries())
    names = [e.name for e in es]
    assert len(names) == len(set(names)), "atlas entry names must be unique"
    return es


def entries() -> list[Entry]:
    """Every atlas entry, in run order."""
    return list(_entries())


ENTRIES = entries  # the table (call it: constructing it imports nothing)


def get_entry(name: str) -> Entry:
    """The entry called ``name`` (``ValueError`` for an unknown name)."""
    for e in _entries():
        if e.name == name:
            return e
    raise ValueError(f"no atlas entry {name!r}")


#: Well-known models drawn in the gallery figure.
GALLERY = ("alexnet", "vgg16", "resnet18", "resnet50", "densenet121", "inception_v3",
           "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "vit_b_16", "swin_t",
           "fcn_resnet50", "keras/ResNet50", "keras/InceptionV3", "timm/deit_tiny_patch16_224")

#: google-research/receptive_field README (TF-Slim models, final end-point of the network,
#: resolution-independent reading): name of their model, RF size, effective stride, effective
#: padding. Keyed by the atlas entries that implement the same published architecture.
REFERENCE: dict[str, tuple[str, int, int, int]] = {
    "alexnet": ("alexnet_v2", 195, 32, 64),
    "vgg16": ("vgg_16", 212, 32, 90),
    "keras/VGG16": ("vgg_16", 212, 32, 90),
    "timm/vgg16": ("vgg_16", 212, 32, 90),
    "resnet50": ("resnet_v1_50", 483, 32, 239),
    "keras/ResNet50": ("resnet_v1_50", 483, 32, 239),
    "timm/resnet50": ("resnet_v1_50", 483, 32, 239),
    "resnet101": ("resnet_v1_101", 1027, 32, 511),
    "inception_v3": ("inception_v3", 1311, 32, 618),
    "keras/InceptionV3": ("inception_v3", 1311, 32, 618),
    "timm/inception_v3": ("inception_v3", 1311, 32, 618),
    "timm/inception_v4": ("inception_v4", 2071, 32, 998),
    "keras/InceptionResNetV2": ("inception_resnet_v2", 3039, 32, 1482),
    "timm/inception_resnet_v2": ("inception_resnet_v2", 3039, 32, 1482),
    "keras/MobileNet": ("mobilenet_v1", 315, 32, 126),
}


def versions() -> dict[str, str]:
    """The versions of rfjax and of every framework the atlas uses, and today's date (UTC)."""
    import importlib.metadata as md

    out = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    for pkg in ("rfjax", "jax", "torch", "torchvision", "timm", "keras", "flax"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    import rfjax

    out["rfjax"] = rfjax.__version__
    return out


# --------------------------------------------------------------------------------------------
# Stage outputs
# --------------------------------------------------------------------------------------------


def _stage_ends(items: Sequence[tuple[str, tuple[int, ...]]],
                input_spatial: tuple[int, ...]) -> list[str]:
    """For each distinct spatial size, the last item (in call order) of that size: the ends
    of the stages. Sizes equal to the input's (stride 1) and ``1 x 1`` (pooled) are skipped
    when others exist."""
    last: dict[tuple[int, ...], int] = {}
    for i, (_, sp) in enumerate(items):
        last[sp] = i
    keep = [i for sp, i in last.items()
            if sp != tuple(input_spatial) and math.prod(sp) > 1]
    if not keep:
        keep = list(last.values())
    return [items[i][0] for i in sorted(keep)]


def _torch_call_shapes(model, paths: Sequence[str], shape: tuple[int, ...]):
    """(path, output shape) of each module in ``paths`` that is called, in call order."""
    import torch

    mods = dict(model.named_modules())
    seen: list[tuple[str, tuple[int, ...]]] = []
    hooks = []

    def hook(path):
        def f(mod, i, o):
            if isinstance(o, torch.Tensor):
                seen.append((path, tuple(o.shape)))
        return f

    for p in paths:
        hooks.append(mods[p].register_forward_hook(hook(p)))
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            model(torch.zeros(shape))
            model.train(was)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _torch_spatial(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The spatial part of a torch output shape: NCHW, NHWC (Swin) or tokens (one axis)."""
    view = _torch_view(shape)
    if view["kind"] == "tokens":
        return tuple(view["grid"])
    if view["kind"] == "nhwc":
        return tuple(shape[1:3])
    return tuple(shape[2:])


def _torch_view(shape: tuple[int, ...], prefix: int | None = None) -> dict:
    """How to read a torch output: ``nchw``, ``nhwc`` (rank 4 with H == W in the middle, the
    last axis different) or ``tokens`` (rank 3: prefix tokens, then a square grid)."""
    if len(shape) == 4 and shape[1] == shape[2] and shape[2] != shape[3]:
        return {"kind": "nhwc"}
    if len(shape) == 3:
        t = shape[1]
        cands = [prefix] if prefix is not None else [0, 1, 2]
        for p in cands:
            g = math.isqrt(max(t - p, 0))
            if g > 0 and g * g == t - p:
                return {"kind": "tokens", "grid": (g, g), "prefix": p}
        return {"kind": "unknown"}
    return {"kind": "nchw"}


def _called_stages(model, mods: Sequence[str], resolution: int) -> dict[str, str]:
    """``mods`` that compute a tensor in ``model``'s forward pass: a ``ModuleList`` (never
    called itself) stands for its last child, an ``Identity`` for the module before it (the
    last child of its previous sibling); a module whose output is not one tensor (HRNet's
    branch lists) is dropped."""
    import torch

    named = dict(model.named_modules())
    paths: dict[str, str] = {}
    for orig in mods:
        m = orig
        mod = named.get(m)
        if isinstance(mod, torch.nn.ModuleList) and len(mod):
            m, mod = f"{m}.{len(mod) - 1}", mod[len(mod) - 1]
        if isinstance(mod, torch.nn.Identity):  # (RepVGG's final_conv) the module before it
            parent, _, leaf = m.rpartition(".")
            kids = [n for n, _ in (named[parent] if parent else model).named_children()]
            i = kids.index(leaf)
            if i == 0:
                continue
            m = f"{parent}.{kids[i - 1]}" if parent else kids[i - 1]
            sub = [n for n, _ in named[m].named_children()]
            m, mod = (f"{m}.{sub[-1]}", None) if sub else (m, None)
        if m in paths.values() or m not in named:
            continue
        paths[orig] = m
    seen = {p for p, _ in _torch_call_shapes(model, list(paths.values()),
                                             (1, 3, resolution, resolution))}
    return {o: p for o, p in paths.items() if p in seen}


def stage_layers(entry: Entry, model: Any, resolution: int) -> list[str]:
    """The stage outputs of ``model``: ``entry.stages`` when given; timm: the modules of
    ``model.feature_info`` (the last of each reduction; a few blocks when they share one);
    other torch models (and timm models whose feature modules return no single tensor): the
    last child of ``entry.container`` at each spatial size (call order); Keras: the last
    layer at each spatial size (topological order)."""
    if entry.stages is not None:
        return list(entry.stages)
    if entry.framework == "timm" and getattr(model, "feature_info", None):
        info = [d for d in model.feature_info if d.get("module")]
        called = _called_stages(model, [d["module"] for d in info], resolution)
        order = [called[d["module"]] for d in info if d["module"] in called]
        red = {called[d["module"]]: d.get("reduction") for d in info if d["module"] in called}
        last: dict[Any, str] = {}
        for p in order:
            last[red[p]] = p
        found = list(dict.fromkeys(last.values()))
        if len(found) == 1 and len(order) > 3:  # ViT-like: every block at one reduction
            idx = np.unique(np.linspace(0, len(order) - 1, 4).round().astype(int))
            found = [order[i] for i in idx]
        if found:
            return found
    if entry.framework in ("torchvision", "timm"):
        mods = dict(model.named_modules())
        cont = mods[entry.container] if entry.container else model
        prefix = f"{entry.container}." if entry.container else ""
        paths = [prefix + n for n, _ in cont.named_children()]
        seen = _torch_call_shapes(model, paths, (1, 3, resolution, resolution))
        first: dict[str, tuple[int, ...]] = {}
        for p, s in seen:
            first.setdefault(p, s)
        items = [(p, _torch_spatial(s)) for p, s in first.items() if len(s) in (3, 4)]
        return _stage_ends(items, (resolution, resolution))
    if entry.framework == "keras":
        items = []
        for lay in model.layers:
            cls = type(lay).__name__
            if cls in ("InputLayer", "ZeroPadding2D"):
                continue
            shp = getattr(lay, "output", None)
            shp = tuple(shp.shape) if shp is not None and hasattr(shp, "shape") else ()
            if len(shp) == 4:
                items.append((lay.name, tuple(int(d) for d in shp[1:3])))
        return _stage_ends(items, (resolution, resolution))
    return [OUTPUT]


# --------------------------------------------------------------------------------------------
# Measuring one entry
# --------------------------------------------------------------------------------------------


def rectangular(mask: np.ndarray) -> bool:
    """Whether a boolean mask equals its bounding box (an empty mask is not rectangular)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return False
    box = tuple(slice(int(np.flatnonzero(mask.any(axis=tuple(b for b in range(mask.ndim)
                                                                  if b != a))).min()),
                      int(np.flatnonzero(mask.any(axis=tuple(b for b in range(mask.ndim)
                                                                  if b != a))).max()) + 1)
                for a in range(mask.ndim))
    return bool(mask[box].all()) and int(mask.sum()) == int(mask[box].size)


def _error(e: BaseException) -> dict:
    msg = str(e).strip().splitlines()
    return {"type": type(e).__name__, "message": " ".join(msg)[:600],
            "where": traceback.extract_tb(e.__traceback__)[-1].name if e.__traceback__ else ""}


def _json(x: Any) -> Any:
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not np.isfinite(x) else round(float(x), 4)
    if isinstance(x, (tuple, list)):
        return [_json(v) for v in x]
    if hasattr(x, "numerator") and hasattr(x, "denominator"):  # Fraction
        return round(float(x), 4)
    if hasattr(x, "shape"):
        return _json(np.asarray(x).tolist())
    return x


def _nhwc_to_channels_last(y):
    """``output=`` for an NHWC torch output: rfjax read it as NCHW and moved axis 1 last."""
    import jax.numpy as jnp

    return jnp.transpose(y, (0, 3, 1, 2))


def _torch_nhwc(y):
    return y.permute(0, 3, 1, 2)


def _torch_tokens(prefix: int, grid: tuple[int, int]):
    def f(y):
        n, _, c = y.shape
        return y[:, prefix:].reshape(n, grid[0], grid[1], c).permute(0, 3, 1, 2)
    return f


class _Model:
    """One built entry: the model, how to call rfjax on a stage, how to redraw weights."""

    def __init__(self, entry: Entry, resolution: int):
        self.entry = entry
        self.res = resolution
        fw = entry.framework
        if fw in ("torchvision", "timm"):
            import torch

            torch.manual_seed(0)
            self.model = entry.ctor().eval()
            self.shape = (1, 3, resolution, resolution)
        elif fw == "keras":
            from rfjax.adapters.keras_models import _keras as keras_module

            keras_module().utils.set_random_seed(0)
            self.model = entry.ctor(resolution)
            self.shape = (1, resolution, resolution, 3)
        else:
            self.builtin = entry.ctor()
            shp = self.builtin.shape
            self.res = shp[1]
            self.shape = (1,) + tuple(shp[1:])
            self.model = self.builtin.fn(seed=0)
        self._views: dict[str, dict] = {}

    @property
    def torch(self) -> bool:
        return self.entry.framework in ("torchvision", "timm")

    def stages(self) -> list[str]:
        return stage_layers(self.entry, self.model, self.res)

    def view(self, stage: str) -> dict:
        """The torch output's reading at ``stage`` (nchw / nhwc / tokens)."""
        if not self.torch:
            return {"kind": "channels_last"}
        if stage not in self._views:
            import torch

            prefix = getattr(self.model, "num_prefix_tokens", None)
            if stage == OUTPUT:
                with torch.no_grad():
                    y = self.model(torch.zeros(self.shape))
                if self.entry.output is not None:
                    y = y[self.entry.output]
                shape = tuple(y.shape)
            else:
                seen = _torch_call_shapes(self.model, [stage], self.shape)
                if not seen:
                    raise ValueError(f"stage {stage!r} is never called")
                shape = seen[-1][1]
            self._views[stage] = _torch_view(shape, prefix)
        return self._views[stage]

    def rf_kwargs(self, stage: str) -> dict:
        """Keyword arguments of rfjax.trf / rfjax.erf for ``stage``."""
        kw: dict[str, Any] = {}
        if stage != OUTPUT:
            kw["layer"] = stage
        elif self.entry.output is not None:
            kw["output"] = self.entry.output
        v = self.view(stage)
        if v["kind"] == "nhwc":
            kw["output"] = _nhwc_to_channels_last
        elif v["kind"] == "tokens":
            kw["grid"] = v["grid"]
            kw["prefix_tokens"] = v["prefix"]
        return kw

    def oracle_kwargs(self, stage: str) -> dict:
        v = self.view(stage)
        kw: dict[str, Any] = {"layer": None if stage == OUTPUT else stage,
                              "output": self.entry.output if stage == OUTPUT else None}
        if v["kind"] == "nhwc":
            kw["output"] = _torch_nhwc
        elif v["kind"] == "tokens":
            kw["output"] = _torch_tokens(v["prefix"], v["grid"])
        if stage == OUTPUT and self.entry.output is not None and kw["output"] != \
                self.entry.output:
            inner, key = kw["output"], self.entry.output
            kw["output"] = lambda y: inner(y[key])
        return kw

    def fn(self, stage: str):
        return self.model

    def draw(self, d: int):
        """Load the weights of draw ``d`` into the model (draw 0: the first build)."""
        fw = self.entry.framework
        if fw in ("torchvision", "timm"):
            import torch

            torch.manual_seed(d)
            self.model.load_state_dict(self.entry.ctor().state_dict())
        elif fw == "keras":
            from rfjax.adapters.keras_models import _keras as keras_module

            keras_module().utils.set_random_seed(d)
            self.model.set_weights(self.entry.ctor(self.res).get_weights())
        else:
            self.model = self.builtin.fn(seed=d)

    def images(self, n: int) -> np.ndarray:
        rng = np.random.default_rng(0)
        return rng.standard_normal((n,) + tuple(self.shape[1:])).astype(np.float32)


def _trf_stage(m: _Model, stage: str) -> tuple[dict, Any]:
    import rfjax

    kw = m.rf_kwargs(stage)
    t0 = time.perf_counter()
    t = rfjax.trf(m.fn(stage), m.shape, **kw)
    dt = time.perf_counter() - t0
    centre = tuple(s // 2 for s in t.output_shape)
    mask = t.mask(centre)
    rec = {"layer": stage, "output_shape": _json(t.output_shape), "size": _json(t.size),
           "stride": [None if not a else _json(s) for s, a in zip(t.stride, t.aligned_axes,
                                                                  strict=True)],
           "padding": _json(t.padding), "aligned": bool(t.aligned),
           "is_global": _json(t.is_global), "rectangular": rectangular(mask),
           "trf_seconds": round(dt, 3)}
    return rec, (t, centre, mask)


def _erf(m: _Model, stage: str, images: int, draws: int, trf_result) -> tuple[dict, Any]:
    import rfjax
    from rfjax.effective import NoiseMapWarning

    t, centre, _ = trf_result
    kw = m.rf_kwargs(stage)
    x = m.images(images)
    channels = None
    remedy = None
    maps, sizes = [], []
    t0 = time.perf_counter()
    for d in range(draws):
        if d:
            m.draw(d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoiseMapWarning)
            e = rfjax.erf(m.fn(stage), x, unit=centre, channels=channels, progress=False, **kw)
            if e.noise and channels is None:  # the channel sum cancels (a final LayerNorm)
                channels, remedy = 0, "channels=0 (the channel sum's ERF is noise)"
                e = rfjax.erf(m.fn(stage), x, unit=centre, channels=0, progress=False, **kw)
        mp = np.asarray(e.map, np.float64)
        total = mp.sum()
        if not np.isfinite(total) or total <= 0:
            raise ValueError(f"the ERF map of draw {d} is zero or not finite")
        maps.append(mp / total)
        sizes.append(np.asarray(rfjax.metrics.erf_size(mp).extent, np.float64))
    dt = time.perf_counter() - t0
    mean = np.mean(maps, axis=0)
    size = rfjax.metrics.erf_size(mean)
    ratio = rfjax.metrics.erf_trf_ratio(size, t)
    rec = {"layer": stage, "unit": list(centre), "images": images,
           "images_kind": "random normal N(0, 1), seed 0", "weight_draws": draws,
           "channels": channels, "remedy": remedy,
           "size_4sigma": _json(np.asarray(size.extent)),
           "size_4sigma_per_draw": _json(np.asarray(sizes)),
           "size_4sigma_draw_std": _json(np.asarray(sizes).std(axis=0)),
           "erf_trf_ratio": _json(np.asarray(ratio.axis)),
           "erf_trf_area_ratio": _json(float(ratio.area)),
           "noise_after_remedy": bool(e.noise) if channels is not None else False,
           "erf_seconds": round(dt, 3)}
    return rec, mean


def _oracle(m: _Model, stage: str, trf_result, seeds=(0,)) -> dict:
    from rfjax.adapters.oracle import grad_support

    if not m.torch:
        return {"checked": False, "ok": None,
                "note": "the surrogate oracle is PyTorch autograd: torch models only"}
    m.draw(0)
    t, centre, mask = trf_result
    t0 = time.perf_counter()
    want = grad_support(m.model, m.shape, centre, seeds=seeds, **m.oracle_kwargs(stage))
    ok = bool(want.shape == mask.shape and (want == mask).all())
    rec = {"checked": True, "ok": ok, "layer": stage, "unit": list(centre),
           "trf_pixels": int(mask.sum()), "oracle_pixels": int(want.sum()),
           "oracle_seconds": round(time.perf_counter() - t0, 3)}
    if not ok and want.shape == mask.shape:
        rec["differ_pixels"] = int((want != mask).sum())
        rec["note"] = ("TRF mask is larger: a gradient the surrogate cannot cancel vanished "
                       "(a saturating activation kept?)" if (mask & ~want).any()
                       and not (want & ~mask).any() else "masks differ")
    return rec


def atlas_record(entry: Entry, *, erf_images: int = 8, weight_draws: int = 3,
                 check_oracle: bool = True, resolution: int | None = None,
                 keep_maps: bool = False, oracle_seeds: Sequence[int] = (0,)) -> dict:
    """Measure one atlas entry: a JSON-ready dict (see the module docstring).

    Args:
      entry: the architecture.
      erf_images: random-normal images per weight draw.
      weight_draws: weight initialisations averaged into the ERF (0: no ERF).
      check_oracle: compare the last stage's centre mask with the surrogate's gradient support
        (PyTorch models).
      resolution: the input resolution (default the entry's native one; a model with a fixed
        resolution keeps it).
      keep_maps: add ``"_maps"``: the centre unit's TRF mask and the mean ERF map (NumPy, not
        JSON: for the figures).
      oracle_seeds: the positive random inputs of the oracle (the surrogate cannot cancel a
        gradient, so one input is enough; more only guards against a zero by chance).

    Never raises for a failing model: the error's type and message are recorded
    (``status``: ``"ok"``, ``"partial"`` (some part failed) or ``"failed"``).
    """
    res = entry.resolution if resolution is None or entry.fixed_resolution else resolution
    rec: dict[str, Any] = {"name": entry.name, "family": entry.family,
                           "framework": entry.framework, "resolution": res, "stages": [],
                           "erf": None, "oracle": None, "errors": [], "status": "ok"}
    t_all = time.perf_counter()
    try:
        m = _Model(entry, res)
        rec["resolution"] = m.res
        names = m.stages()
    except Exception as e:  # construction or stage discovery
        rec["errors"].append({"phase": "build", **_error(e)})
        rec["status"] = "failed"
        rec["seconds"] = round(time.perf_counter() - t_all, 3)
        return rec
    rec["stage_names"] = names
    last = None
    for s in names:
        try:
            srec, tres = _trf_stage(m, s)
            rec["stages"].append(srec)
            last = (s, tres)
        except Exception as e:
            rec["stages"].append({"layer": s, "error": _error(e)})
            rec["errors"].append({"phase": f"trf {s}", **_error(e)})
            last = None
    if last is not None and last[0] == names[-1]:
        stage, tres = last
        maps: dict[str, Any] = {"trf_mask": tres[2]}
        if weight_draws > 0:
            try:
                rec["erf"], maps["erf_map"] = _erf(m, stage, erf_images, weight_draws, tres)
            except Exception as e:
                rec["errors"].append({"phase": "erf", **_error(e)})
        if check_oracle:
            try:
                rec["oracle"] = _oracle(m, stage, tres, tuple(oracle_seeds))
            except Exception as e:
                rec["errors"].append({"phase": "oracle", **_error(e)})
        if keep_maps:
            rec["_maps"] = maps
    elif names:
        rec["errors"].append({"phase": "erf", "type": "Skipped",
                              "message": "the last stage's TRF failed", "where": ""})
    if rec["errors"]:
        ok_stages = [s for s in rec["stages"] if "error" not in s]
        rec["status"] = "partial" if ok_stages else "failed"
    rec["seconds"] = round(time.perf_counter() - t_all, 3)
    try:
        import rfjax

        rfjax.clear_cache()
    except Exception:  # pragma: no cover - cache clearing is best effort
        pass
    return rec
