"""Models of other frameworks by name: ``torchvision:<name>``, ``timm:<name>`` and
``keras:<Name>`` (what ``rfjax trf`` / ``rfjax erf`` accept besides the built-ins).

>>> from rfjax.models import external
>>> m = external.load("torchvision:resnet18")   # imports torchvision, nothing built yet
>>> m.shape                                      # (1, 3, 224, 224): NCHW, native size
>>> net = m.model(seed=0)                        # get_model("resnet18", weights=None)
>>> m.feature_layer()                            # "layer4": its last feature map
>>> rfjax.trf(net, m.shape, layer="layer4").size   # (435, 435)

- ``torchvision:<name>``: ``torchvision.models.get_model(name, weights=None)``, input
  ``(1, 3, S, S)`` with S = 299 for ``inception_v3``, else 224; ImageNet mean/std.
- ``timm:<name>``: ``timm.create_model(name, pretrained=False)``, input ``(1, 3, S, S)`` from
  ``pretrained_cfg["input_size"]``; the preprocessing of ``timm.data.resolve_data_config``.
- ``keras:<Name>``: ``keras.applications.<Name>(weights=None)`` (JAX backend), input
  ``(1, *model.input_shape[1:])`` (``(1, S, S, 3)`` channels-last); built with
  ``input_shape=`` when another shape is asked for; the application's own ``preprocess_input``
  (ImageNet mean/std when it has none).

Every framework is imported only when a model of it is loaded; a missing one raises
:class:`MissingFrameworkError` naming the extra to install, an unknown name
:class:`UnknownModelError` listing the close matches. Weights are random (seeded), or loaded
from a file: a torch state dict (``torch.load(path, map_location="cpu", weights_only=True)``,
then ``load_state_dict``) or Keras weights (``model.load_weights``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SOURCES", "ExternalModel", "MissingFrameworkError", "Preprocessing",
           "UnknownModelError", "is_external", "load"]

#: The prefixes of an external model spec -> the framework its models belong to.
SOURCES = {"torchvision": "torch", "timm": "torch", "keras": "keras"}
_EXTRA = {"torch": "rfjax[torch]", "keras": "rfjax[keras]"}

#: ImageNet's channel mean and standard deviation (RGB, pixels scaled to [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UnknownModelError(ValueError):
    """A model name the framework does not have (the message lists close matches)."""


class MissingFrameworkError(ImportError):
    """The framework of a model spec is not installed (the message names the extra)."""


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes a model input (see :mod:`rfjax.images`).

    Attributes:
      mean, std: per channel, for pixels scaled to [0, 1]: ``(pixel / 255 - mean) / std``.
      crop_pct: the image is resized so that its shorter side is ``size / crop_pct``, then
        centre-cropped to the input size (0.875: torchvision's 256 -> 224).
      interpolation: ``"bilinear"``, ``"bicubic"``, ``"nearest"`` or ``"lanczos"``.
      transform: when given, replaces mean/std: ``transform(pixels)`` of float RGB pixels in
        [0, 255], channels-last ``(N, H, W, 3)`` (a Keras ``preprocess_input``).
      description: one line saying which preprocessing this is.
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    transform: Callable[[Any], Any] | None = None
    description: str = "ImageNet mean/std"


def is_external(spec: str) -> bool:
    """Whether ``spec`` names a model of another framework (``torchvision:``, ``timm:``,
    ``keras:``)."""
    prefix, sep, name = spec.partition(":")
    return bool(sep) and prefix in SOURCES


def _import(module: str, spec: str):
    framework = SOURCES[spec.partition(":")[0]]
    if framework == "keras" and "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "jax")  # rfjax runs Keras on JAX only
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise MissingFrameworkError(
            f"model {spec!r} needs {module}, which cannot be imported ({e}); install it with "
            f"pip install '{_EXTRA[framework]}'") from e
    if framework == "keras":
        backend = mod.backend.backend()
        if backend != "jax":
            raise RuntimeError(
                f"model {spec!r}: Keras runs on the {backend!r} backend here; rfjax needs JAX. "
                "Set KERAS_BACKEND=jax before anything imports keras")
    return mod


def _unknown(spec: str, name: str, known: list[str], what: str) -> UnknownModelError:
    lower = {k.lower(): k for k in known}
    near = difflib.get_close_matches(name.lower(), list(lower), n=5, cutoff=0.6)
    if name.lower() in lower and lower[name.lower()] != name:
        near = [name.lower()] + [n for n in near if n != name.lower()]
    hint = (f"; did you mean {', '.join(lower[n] for n in near)}?" if near
            else f"; {what} lists the names")
    return UnknownModelError(f"unknown model {spec!r}: {spec.partition(':')[0]} has no model "
                             f"{name!r}{hint}")


def _keras_apps(keras) -> list[str]:
    return sorted(n for n in dir(keras.applications)
                  if n[:1].isupper() and callable(getattr(keras.applications, n)))


def load(spec: str) -> ExternalModel:
    """``"torchvision:<name>"``, ``"timm:<name>"`` or ``"keras:<Name>"`` -> an
    :class:`ExternalModel` (the framework is imported, the name checked; nothing is built).

    Raises:
      ValueError: ``spec`` is not such a spec.
      MissingFrameworkError: the framework is not installed (an ``ImportError``).
      UnknownModelError: the framework has no such model (a ``ValueError``; close matches
        in the message).
      RuntimeError: Keras is imported on a backend other than JAX.
    """
    if not is_external(spec):
        raise ValueError(f"{spec!r} is not a model spec of the form "
                         f"{'|'.join(SOURCES)}:<name>")
    source, _, name = spec.partition(":")
    if not name:
        raise UnknownModelError(f"model {spec!r}: give a model name after {source}:")
    if source == "torchvision":
        tv = _import("torchvision", spec)
        names = tv.models.list_models()
        if name not in names:
            raise _unknown(spec, name, names, "torchvision.models.list_models()")
    elif source == "timm":
        timm = _import("timm", spec)
        if not timm.is_model(name):
            raise _unknown(spec, name, timm.list_models(), "timm.list_models()")
    else:
        keras = _import("keras", spec)
        names = _keras_apps(keras)
        if name not in names:
            raise _unknown(spec, name, names, "dir(keras.applications)")
    return ExternalModel(spec, source, name)


@dataclasses.dataclass(eq=False)
class ExternalModel:
    """A named model of torchvision, timm or Keras applications (see the module docstring).

    Attributes:
      spec: ``"<source>:<name>"``.
      source: ``"torchvision"``, ``"timm"`` or ``"keras"``.
      name: the model's name in that library.
    """

    spec: str
    source: str
    name: str
    _built: dict = dataclasses.field(default_factory=dict, repr=False)
    _shape: tuple[int, ...] | None = dataclasses.field(default=None, repr=False)
    _events: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def framework(self) -> str:
        """``"torch"`` or ``"keras"``."""
        return SOURCES[self.source]

    @property
    def channel_axis(self) -> int:
        """The channel axis of the model's input: 1 (``NCHW``) for torch; Keras's
        ``image_data_format`` (-1 unless configured ``channels_first``)."""
        if self.framework == "torch":
            return 1
        from rfjax.adapters.keras_models import default_channel_axis

        return default_channel_axis()

    @property
    def shape(self) -> tuple[int, ...]:
        """The default input shape, batch 1, in the model's layout: ``(1, 3, S, S)`` at the
        native resolution for torch; ``(1, *model.input_shape[1:])`` for Keras (which builds
        the model once, with seed 0)."""
        if self._shape is None:
            if self.source == "torchvision":
                s = 299 if self.name == "inception_v3" else 224
                self._shape = (1, 3, s, s)
            elif self.source == "timm":
                import timm

                size = tuple(timm.models.get_pretrained_cfg(self.name).input_size or ())
                self._shape = (1, *size) if len(size) == 3 else (1, 3, 224, 224)
            else:
                dims = tuple(self.model(0).input_shape[1:])
                self._shape = (1, *(224 if d is None else int(d) for d in dims))
        return self._shape

    # ----------------------------------------------------------------------------------------
    # Building
    # ----------------------------------------------------------------------------------------

    def model(self, seed: int = 0, shape: tuple[int, ...] | None = None,
              weights: str | os.PathLike | None = None):
        """The model (torch: in ``eval()`` mode), random weights from ``seed`` or the weights
        in the file ``weights``, for inputs of ``shape`` (default :attr:`shape`). Built once
        per (seed, shape, weights) where the shape changes the model (Keras; timm models of a
        fixed input size), else once per (seed, weights).

        Raises:
          FileNotFoundError: no file ``weights``.
          ValueError: the file does not fit the model (the message says how).
        """
        size = self._size_key(None if shape is None else tuple(int(d) for d in shape))
        key = (seed, size, None if weights is None else os.fspath(weights))
        if key not in self._built:
            model = self._make(seed, size)
            if weights is not None:
                self._load_weights(model, os.fspath(weights))
            self._built[key] = model
        return self._built[key]

    def _size_key(self, shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
        """``shape`` where it changes the built model, else ``None`` (the default build)."""
        if shape is None or self.source == "torchvision":
            return None
        shape = (1, *shape[1:])  # the batch size never changes the model
        if self.source == "keras":
            return None if shape == self._shape else shape
        import timm

        cfg = timm.models.get_pretrained_cfg(self.name)
        fixed = cfg is not None and getattr(cfg, "fixed_input_size", False)
        if fixed and len(shape) == 4 and tuple(shape[2:]) != tuple((cfg.input_size or ())[1:]):
            return shape
        return None

    def _make(self, seed: int, shape: tuple[int, ...] | None):
        if self.framework == "torch":
            import torch

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                if self.source == "torchvision":
                    import torchvision

                    model = torchvision.models.get_model(self.name, weights=None)
                else:
                    model = self._make_timm(shape)
            return model.eval()
        import keras

        keras.utils.set_random_seed(seed)
        fn = getattr(keras.applications, self.name)
        if shape is None:
            return fn(weights=None)
        return fn(weights=None, input_shape=tuple(shape[1:]))

    def _make_timm(self, shape: tuple[int, ...] | None):
        import timm

        # a fixed-size model (ViT-like) at another size: its position embedding's grid
        kw = {} if shape is None else {"img_size": tuple(shape[2:])}
        return timm.create_model(self.name, pretrained=False, **kw)

    def _load_weights(self, model, path: str) -> None:
        if not os.path.exists(path):
            raise FileNotFoundError(f"weights file {path!r} does not exist")
        if self.framework == "keras":
            try:
                model.load_weights(path)
            except Exception as e:
                raise ValueError(f"{self.spec}: cannot load the Keras weights {path!r}: "
                                 f"{_first_line(e)}") from e
            return
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{self.spec}: {path!r} is not a torch state dict "
                             f"(torch.load(..., weights_only=True) failed: {_first_line(e)})"
                             ) from e
        if isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor)
                                                  for v in state.values()):
            for k in ("state_dict", "model", "model_state_dict"):  # a training checkpoint
                if isinstance(state.get(k), Mapping):
                    state = state[k]
                    break
        if not isinstance(state, Mapping):
            raise ValueError(f"{self.spec}: {path!r} holds a {type(state).__name__}, not a "
                             "state dict (save one with torch.save(model.state_dict(), path))")
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches
            lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
            raise ValueError(f"{self.spec}: the state dict {path!r} does not fit the model: "
                             f"{lines[0] if lines else _first_line(e)}"
                             + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")
                             ) from e
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing key(s) ({', '.join(missing[:3])}"
                             + (", ..." if len(missing) > 3 else "") + ")")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected key(s) ("
                             f"{', '.join(unexpected[:3])}"
                             + (", ..." if len(unexpected) > 3 else "") + ")")
            raise ValueError(f"{self.spec}: the state dict {path!r} does not fit the model: "
                             + "; ".join(parts))

    # ----------------------------------------------------------------------------------------
    # Layers and preprocessing
    # ----------------------------------------------------------------------------------------

    def layers(self, shape: tuple[int, ...] | None = None, seed: int = 0) -> dict[str, tuple]:
        """Name -> output shape (in the model's layout) of every submodule (torch, in the
        order they first run, from one forward pass on zeros) or layer (Keras) whose output is
        one array: the names ``layer=`` takes. The model's final output is under ``""``."""
        return {e[0]: e[1] for e in _layer_events(self, shape, seed)[0]}

    def feature_layer(self, shape: tuple[int, ...] | None = None, seed: int = 0) -> str | None:
        """For a classifier (a final output with fewer axes than the input), the layer whose
        output is its last feature map: the input of the last global pooling module (torch
        ``AdaptiveAvgPool2d`` and kin, timm ``SelectAdaptivePool2d``, Keras
        ``Global*Pooling``; an ``nn.Identity`` passing it on is skipped), else the last layer
        of the input's rank before an ``(N, C)`` head. ``None`` when the final output already
        has the input's rank, or when the layers end in tokens (a ViT: ``rfjax.trf(...,
        grid=...)`` reads those)."""
        events, ndim, out_ndim = _layer_events(self, shape, seed)
        if out_ndim == ndim:
            return None
        pools = [i for i, e in enumerate(events) if e[2] is not None]
        if pools:  # the producer of the last global pool's input (hooks run inner first)
            i = pools[-1]
            inside = events[i][0] + "."
            for name, shp, pin, identity in reversed(events[:i]):
                if (shp == events[i][2] and not identity and pin is None
                        and not name.startswith(inside)):
                    return name
        for name, shp, _, _ in reversed(events):
            if len(shp) == ndim:
                return name
            if len(shp) > 2:  # tokens (N, T, C) before the head
                return None
        return None

    def preprocessing(self, seed: int = 0) -> Preprocessing:
        """How image files become this model's inputs (see :class:`Preprocessing`)."""
        if self.source == "timm":
            import timm

            cfg = timm.data.resolve_data_config({}, model=self.model(seed))
            return Preprocessing(tuple(cfg["mean"]), tuple(cfg["std"]),
                                 float(cfg.get("crop_pct") or 0.875),
                                 str(cfg.get("interpolation") or "bicubic"), None,
                                 "timm.data.resolve_data_config: mean "
                                 f"{_fmt(cfg['mean'])}, std {_fmt(cfg['std'])}, crop_pct "
                                 f"{cfg.get('crop_pct')}, {cfg.get('interpolation')}")
        if self.source == "keras":
            import keras

            module = sys.modules.get(getattr(getattr(keras.applications, self.name),
                                             "__module__", ""))
            fn = getattr(module, "preprocess_input", None)
            if fn is not None:
                if "data_format" in inspect.signature(fn).parameters:  # rfjax.images: NHWC
                    fn = functools.partial(fn, data_format="channels_last")
                return Preprocessing(crop_pct=0.875, transform=fn,
                                     description=f"keras {module.__name__.rsplit('.', 1)[-1]}"
                                     ".preprocess_input")
        return Preprocessing(description="ImageNet mean (0.485, 0.456, 0.406), std (0.229, "
                             "0.224, 0.225); resize to size/0.875, centre crop")


def _fmt(v) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in v) + ")"


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


_POOLS = ("AdaptiveAvgPool", "AdaptiveMaxPool", "SelectAdaptivePool", "GlobalAverage",
          "GlobalMax", "GlobalAvg")


def _layer_events(m: ExternalModel, shape, seed):
    """``([(name, output shape, input shape of a global pool or None, is an identity)], input
    rank, final output rank)`` in execution order (torch: the first call of each module, inner
    modules before the ones holding them; Keras: ``model.layers``)."""
    shape = m.shape if shape is None else (1, *tuple(shape)[1:])
    if shape in m._events:
        return m._events[shape]
    model = m.model(seed, shape)
    events: list[tuple[str, tuple, tuple | None, bool]] = []

    def pool_input(layer, x):
        return (tuple(x.shape) if type(layer).__name__.startswith(_POOLS) and hasattr(x, "shape")
                else None)

    if m.framework == "keras":
        out_ndim = len(model.output.shape) if hasattr(model.output, "shape") else -1
        for lay in model.layers[1:]:
            out = getattr(lay, "output", None)
            if hasattr(out, "shape"):
                pin = pool_input(lay, getattr(lay, "input", None))
                events.append((lay.name, (1, *tuple(out.shape)[1:]),
                               None if pin is None else (1, *pin[1:]), False))
    else:
        import torch

        seen: set[str] = set()
        handles = []

        def hook(name):
            def f(mod, inp, out):
                if isinstance(out, torch.Tensor) and name not in seen:
                    seen.add(name)
                    events.append((name, tuple(out.shape),
                                   pool_input(mod, inp[0]) if inp else None,
                                   isinstance(mod, torch.nn.Identity)))
            return f

        for name, mod in model.named_modules():
            if name:
                handles.append(mod.register_forward_hook(hook(name)))
        try:
            with torch.no_grad():
                out = model(torch.zeros(shape))
        finally:
            for h in handles:
                h.remove()
        out_ndim = out.ndim if isinstance(out, torch.Tensor) else -1
    result = (events, len(shape), out_ndim)
    m._events[shape] = result
    return result
