"""The built-in models by name (what ``rfjax models`` lists): a Flax module, an example input
shape, and how to turn them into the ``fn`` whose TRF and ERF are measured.

>>> from rfjax.models import builtin_models, model_fn
>>> builtin_models()["cifar"].shape
(1, 32, 32, 3)
>>> fn = model_fn("conv_stack", seed=0)           # fn(x): (N, 16, 16, 2) -> (N, 16, 16, C)
>>> inner = model_fn("conv_stack", layer="conv2")  # the output of an inner layer instead

Adding a model is one entry in :func:`_entries` (or one in ``zoo.examples()``, which are all
built-ins): a name and a :class:`BuiltinModel`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from rfjax.intermediate import intermediate_apply, layer_shapes
from rfjax.models import camvid, cifar, zoo

__all__ = ["BuiltinModel", "builtin_models", "get_model", "model_fn"]


@dataclasses.dataclass(frozen=True)
class BuiltinModel:
    """A built-in model: a Flax linen ``module`` applied with ``method`` (``None``:
    ``__call__``) to float batches of the example ``shape`` ``(N, *spatial, C)``."""

    module: Any
    shape: tuple[int, ...]
    method: Callable | None = None
    description: str = ""

    def fn(self, seed: int = 0, shape: tuple[int, ...] | None = None, layer: str | None = None,
           abstract: bool = False) -> Callable:
        """``fn(x)``, the model with weights initialised from ``seed`` for inputs of ``shape``
        (default: the example shape).

        Args:
          seed: the PRNG seed of ``module.init``.
          shape: the input shape the weights are initialised for.
          layer: return the output of this inner layer instead (a Flax submodule path, e.g.
            ``"layer2_0"`` or ``"layer2_0/conv2"``; one of the names :meth:`layers` lists).
          abstract: zero weights of the right shapes, from ``jax.eval_shape`` (nothing is
            compiled or randomly drawn): enough for the TRF, which depends on the structure
            only; not for the ERF.

        Raises:
          ValueError: ``layer`` is not one of :meth:`layers` (the message lists them).
        """
        import jax
        import jax.numpy as jnp

        shape = self.shape if shape is None else tuple(shape)
        if layer is not None:
            names = self.layers(shape)
            if layer not in names:
                raise ValueError(f"{type(self.module).__name__} has no layer {layer!r} at input "
                                 f"shape {shape}; its layers are {', '.join(names)}")
        kw = {} if self.method is None else {"method": self.method}
        init = functools.partial(self.module.init, **kw)
        if abstract:
            specs = jax.eval_shape(init, jax.random.key(seed),
                                   jax.ShapeDtypeStruct(shape, jnp.float32))
            variables = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), specs)
        else:
            variables = init(jax.random.key(seed), jnp.zeros(shape, jnp.float32))
        if layer is not None:
            return functools.partial(intermediate_apply, self.module, layer, "intermediates",
                                     variables, **kw)
        return functools.partial(self.module.apply, variables, **kw)

    def layers(self, shape: tuple[int, ...] | None = None) -> dict[str, tuple[int, ...]]:
        """Name -> output shape of every inner layer whose output is a feature map (names
        sorted at each level): the names ``layer=`` takes
        (:func:`rfjax.intermediate.layer_shapes`), for inputs of ``shape`` (default: the
        example shape)."""
        return dict(_layers(self.module, self.shape if shape is None else tuple(shape),
                            self.method))


@functools.lru_cache(maxsize=64)
def _layers(module: Any, shape: tuple[int, ...], method: Any) -> dict[str, tuple[int, ...]]:
    return layer_shapes(module, shape, method=method)


def _entries() -> dict[str, BuiltinModel]:
    """The built-ins beyond ``zoo.examples()``, in listing order: one line per model."""
    M = BuiltinModel
    return {
        "conv_stack_10x64": M(zoo.ConvStack(n=10, features=64), (1, 64, 64, 3), None,
                              "10 ReLU convs 3x3, 64 channels, He init (the ERF benchmark)"),
        "linear_stack_10x64": M(zoo.ConvStack(n=10, features=64, act=zoo.identity),
                                (1, 64, 64, 3), None, "the same without nonlinearity"),
        "resnet50_full": M(zoo.ResNet(width=64), (1, 224, 224, 3), None,
                           "ResNet-50 features (layer4), torchvision width"),
        "resnet18_full": M(zoo.ResNet(blocks=(2, 2, 2, 2), bottleneck=False, width=64),
                           (1, 224, 224, 3), None, "ResNet-18 features (layer4), full width"),
        "vgg16_full": M(zoo.VGG16(width=64), (1, 224, 224, 3), None,
                        "VGG-16 features, full width"),
        "cifar": M(cifar.CifarNet(), (1, 32, 32, 3), cifar.CifarNet.features,
                   "CIFAR-10 net, last feature map (untrained weights)"),
        "camvid": M(camvid.CamVidNet(), (1, 184, 240, 3), None,
                    "CamVid U-Net logits (untrained weights)"),
    }


@functools.cache
def _registry() -> dict[str, BuiltinModel]:
    out = {name: BuiltinModel(m, tuple(shape), None, f"zoo: {type(m).__name__} (small width)")
           for name, (m, shape) in zoo.examples().items()}
    out.update(_entries())
    return out


def builtin_models() -> dict[str, BuiltinModel]:
    """Every built-in name -> :class:`BuiltinModel`, in listing order: the small instances of
    ``zoo.examples()``, then the full-width and data models. A new dict at every call."""
    return dict(_registry())


def get_model(name: str) -> BuiltinModel:
    """The built-in model called ``name``.

    Raises:
      ValueError: an unknown name (the message lists the known ones).
    """
    reg = _registry()
    if not isinstance(name, str) or name not in reg:
        raise ValueError(f"unknown built-in model {name!r}; the built-in models are "
                         f"{', '.join(reg)}")
    return reg[name]


def model_fn(name: str, *, seed: int = 0, shape: tuple[int, ...] | None = None,
             layer: str | None = None, abstract: bool = False) -> Callable:
    """``get_model(name).fn(seed, shape, layer, abstract)``: the built-in model ``name`` as a
    function of one float batch (see :meth:`BuiltinModel.fn`)."""
    return get_model(name).fn(seed, shape, layer, abstract)
