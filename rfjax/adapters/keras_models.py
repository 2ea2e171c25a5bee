"""Keras 3 models (JAX backend) as JAX functions of one batch: ``stateless_call`` in inference
mode (``training=False``), with the model's variables as arrays.

Keras must run on the JAX backend (``KERAS_BACKEND=jax`` set before ``import keras``). The
program is cached per model, weakly: the cache (and rfjax's compiled functions, keyed by the
program) dies with the model. The variables are read again at every call.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["KerasProgram", "default_channel_axis", "from_keras"]


def _keras():
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"rfjax needs Keras on the JAX backend; this Keras runs on "
            f"{keras.backend.backend()!r}. Set the environment variable KERAS_BACKEND=jax "
            "before importing keras")
    return keras


def default_channel_axis() -> int:
    """1 when Keras is configured ``channels_first``, else -1."""
    import keras

    return 1 if keras.config.image_data_format() == "channels_first" else -1


def _takes_training(model) -> bool:
    """Whether ``model.call`` accepts ``training`` (``stateless_call`` passes its keywords to
    ``call`` as they are; a subclassed model's ``call(self, x)`` does not take it)."""
    try:
        params = inspect.signature(model.call).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "training" or p.kind is p.VAR_KEYWORD for p in params)


@dataclasses.dataclass(eq=False)
class KerasProgram:
    """``apply((trainable, non_trainable), x)``: the model's output in inference mode.

    ``model_ref()`` gives the model: a weak reference for a model the user holds (the program
    is cached under it, and must not keep it alive), the sub-model itself for ``layer=``."""

    model_ref: Callable[[], Any]

    @property
    def model(self):
        model = self.model_ref()
        if model is None:  # pragma: no cover - the program dies with its model
            raise RuntimeError("the Keras model of a cached rfjax program was garbage-collected")
        return model

    def apply(self, variables, x):
        model = self.model
        kwargs = {"training": False} if _takes_training(model) else {}
        out, _ = model.stateless_call(variables[0], variables[1], x, **kwargs)
        return out

    def variables(self):
        model = self.model
        return ([v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables])


_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sub_model(model, layer: str):
    keras = _keras()
    try:
        target = model.get_layer(layer)
    except ValueError as e:
        names = [lay.name for lay in getattr(model, "layers", [])]
        raise ValueError(f"layer {layer!r} is not a layer of {model.name}; its layers: "
                         f"{names}") from e
    try:
        inputs = model.inputs
        if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
            # one input, not a list of one: called on a bare array, Keras warns that "the
            # structure of `inputs` doesn't match" at every trace
            inputs = inputs[0]
        return keras.Model(inputs, target.output)
    except (AttributeError, ValueError) as e:
        raise ValueError(f"layer={layer!r} needs a functional or Sequential Keras model "
                         f"(one with model.inputs); {model.name} is subclassed") from e


def _strong(obj) -> Callable[[], Any]:
    return lambda: obj


def from_keras(model, *, layer: str | None = None) -> Callable:
    """``fn(x) -> output``: ``model`` (or its layer ``layer``'s output) in inference mode, a
    ``functools.partial`` over the model's current variables."""
    _keras()
    if not getattr(model, "built", True):
        raise ValueError(f"the Keras model {model.name} is not built (it has no variables "
                         "yet): build it first, e.g. model.build(input_shape) or call it once")
    per = _PROGRAMS.setdefault(model, {})
    if layer not in per:
        ref = weakref.ref(model) if layer is None else _strong(_sub_model(model, layer))
        per[layer] = KerasProgram(ref)
    prog = per[layer]
    return functools.partial(prog.apply, prog.variables())
