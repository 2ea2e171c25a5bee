"""Keras 3 models (JAX backend) as JAX functions of one batch: ``stateless_call`` in inference
mode (``training=False``), with the model's variables as arrays.

Keras must run on the JAX backend (``KERAS_BACKEND=jax`` set before ``import keras``). The
program is cached per model (weakly); the variables are read again at every call.
"""

from __future__ import annotations

import dataclasses
import functools
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


@dataclasses.dataclass(eq=False)
class KerasProgram:
    """``apply((trainable, non_trainable), x)``: the model's output in inference mode."""

    model: Any

    def apply(self, variables, x):
        out, _ = self.model.stateless_call(variables[0], variables[1], x, training=False)
        return out

    def variables(self):
        return ([v.value for v in self.model.trainable_variables],
                [v.value for v in self.model.non_trainable_variables])


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
        return keras.Model(model.inputs, target.output)
    except (AttributeError, ValueError) as e:
        raise ValueError(f"layer={layer!r} needs a functional or Sequential Keras model "
                         f"(one with model.inputs); {model.name} is subclassed") from e


def from_keras(model, *, layer: str | None = None) -> Callable:
    """``fn(x) -> output``: ``model`` (or its layer ``layer``'s output) in inference mode, a
    ``functools.partial`` over the model's current variables."""
    _keras()
    per = _PROGRAMS.setdefault(model, {})
    if layer not in per:
        per[layer] = KerasProgram(model if layer is None else _sub_model(model, layer))
    prog = per[layer]
    return functools.partial(prog.apply, prog.variables())
