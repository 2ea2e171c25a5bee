"""Every framework's models through one front door: :func:`prepare` turns what the user passed
to :func:`rfjax.trf` / :func:`rfjax.erf` into a channels-last JAX callable with its weights as
arrays (:class:`rfjax.callables.Resolved`).

What is accepted, and its default layout (``channel_axis``):

- a ``torch.nn.Module`` (``NCHW``, axis 1): exported and lowered to JAX
  (:mod:`rfjax.adapters.pytorch`); the example may be a tensor, an array or a shape;
- a Keras 3 model on the JAX backend (``keras.config.image_data_format()``, channels-last by
  default): its ``stateless_call`` in inference mode (:mod:`rfjax.adapters.keras_models`);
- a Haiku pair ``(transformed, params)`` or ``(transformed_with_state, params, state)``
  (channels-last): ``apply`` with no random key, the output without the new state
  (:mod:`rfjax.adapters.haiku_models`);
- an Equinox module other than ``eqx.Partial``: single-example by Equinox's convention, so it
  is vmapped over the batch, channels-first (axis 1 of the batch) by default;
- anything else callable (a function, ``functools.partial(module.apply, params)``, a Flax NNX
  module, an ``eqx.Partial`` of a batched function): channels-last, as before.

Framework imports stay optional: a framework is imported only when its object is given.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rfjax import callables
from rfjax.adapters import layout
from rfjax.adapters.layout import LayoutWarning

__all__ = ["LayoutWarning", "Prepared", "clear_cache", "from_haiku", "from_keras", "from_torch",
           "prepare"]


def clear_cache() -> None:
    """Drop every cached jaxpr, crop plan and compiled function (jax's own caches stay), the
    TRF engine's compiled constant programs, the exported torch / Keras / Haiku programs and
    the resampling weights read off PyTorch."""
    callables.clear_cache()
    for name in ("pytorch", "keras_models", "haiku_models"):
        mod = sys.modules.get(f"rfjax.adapters.{name}")
        for table in ("_FUNCTIONS", "_PROGRAMS"):
            cache = getattr(mod, table, None)
            if cache is not None:
                cache.clear()
    resample = sys.modules.get("rfjax.adapters.pytorch_resample")
    if resample is not None:  # PyTorch's resampling weights, read once per shape
        resample.clear_cache()


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A model ready for the engine.

    Attributes:
      resolved: the channels-last callable, its weights as arrays.
      to_array: a user batch (a torch tensor, an array in the user's layout) -> a channels-last
        NumPy/JAX array.
      shape: the example's shape, channels-last.
      framework: ``"torch"``, ``"keras"``, ``"haiku"``, ``"equinox"`` or ``"jax"``.
      channel_axis: the channel axis of the user's input (non-negative).
    """

    resolved: callables.Resolved
    to_array: Callable[[Any], Any]
    shape: tuple[int, ...]
    framework: str
    channel_axis: int


def _module_of(name: str) -> Any:
    """The framework module ``name`` if it is imported already (``None`` otherwise): an
    object of that framework cannot exist before its import."""
    return sys.modules.get(name)


def _framework(fn: Any) -> str:
    if _module_of("torch") is not None:
        from rfjax.adapters import pytorch

        if pytorch.is_torch_module(fn):
            return "torch"
    keras = _module_of("keras")
    if keras is not None and isinstance(fn, keras.Layer):
        return "keras"
    if (isinstance(fn, tuple) and len(fn) in (2, 3) and hasattr(fn[0], "init")
            and hasattr(fn[0], "apply") and _module_of("haiku") is not None
            and type(fn[0]).__module__.partition(".")[0] == "haiku"):  # not (flax module, p)
        return "haiku"
    eqx = _module_of("equinox")
    if eqx is not None and isinstance(fn, eqx.Module) and not isinstance(fn, eqx.Partial):
        return "equinox"
    return "jax"


def example_spec(x: Any):
    """``jax.ShapeDtypeStruct`` of an example (an array, a torch tensor, a shape tuple: float32)."""
    import jax

    shape = _shape_of(x)
    dtype = getattr(x, "dtype", np.float32)
    try:
        dtype = np.dtype(dtype)
    except TypeError:  # a torch dtype: its name is NumPy's
        dtype = np.dtype(str(dtype).removeprefix("torch."))
    return jax.ShapeDtypeStruct(shape, dtype)


def _shape_of(x: Any) -> tuple[int, ...]:
    if isinstance(x, (tuple, list)) and all(isinstance(d, (int, np.integer)) for d in x):
        return tuple(int(d) for d in x)
    if hasattr(x, "shape"):
        return tuple(int(d) for d in x.shape)
    raise TypeError(f"x must be an array (or jax.ShapeDtypeStruct, or a shape tuple) of shape "
                    f"(N, *spatial, C); got {type(x).__name__}")


_DEFAULT_AXIS = {"torch": 1, "equinox": 1, "haiku": -1, "jax": -1}


def prepare(fn: Any, example: Any, *, channel_axis: int | None = None,
            grid: Sequence[int] | None = None, prefix_tokens: int = 0,
            layer: str | None = None) -> Prepared:
    """The front door (see the module docstring).

    Args:
      fn: the model or function.
      example: an example input in the model's own layout (an array, a torch tensor, a
        ``jax.ShapeDtypeStruct`` or a shape tuple); only its shape is used here.
      channel_axis: the channel axis of the input (default: the framework's, see above).
      grid, prefix_tokens: map token outputs ``(N, T, C)`` to ``(N, *grid, C)`` after dropping
        ``prefix_tokens`` leading tokens.
      layer: a submodule path (torch), layer name (Keras) or module name (Haiku) whose
        output replaces the model's.

    Raises:
      TypeError: ``fn`` is not callable, or ``channel_axis`` is not an int.
      ValueError: ``channel_axis`` is the batch axis or out of range; ``layer`` is given for a
        framework without named layers, or names no layer.
    """
    kind = _framework(fn)
    shape = _shape_of(example)
    if layer is not None and kind not in ("torch", "keras", "haiku"):
        raise ValueError(
            f"layer={layer!r} needs a torch, Keras or Haiku model (got {type(fn).__name__}); "
            "for a Flax model use rfjax.erf_intermediate, for a function return the layer's "
            "output")
    to_array: Callable[[Any], Any] = _identity
    if kind == "torch":
        from rfjax.adapters import pytorch

        base = callables.resolve(pytorch.from_torch(fn, shape, layer=layer)[0])
        to_array = _torch_to_array
    elif kind == "keras":
        from rfjax.adapters import keras_models

        base = callables.resolve(keras_models.from_keras(fn, layer=layer))
    elif kind == "haiku":
        from rfjax.adapters import haiku_models

        base = callables.resolve(haiku_models.from_haiku_parts(fn, layer=layer)[0])
    elif kind == "equinox":
        import equinox as eqx

        base = callables.resolve(eqx.filter_vmap(fn))
    else:
        if not callable(fn):
            raise callables.InputTypeError(
                f"fn must be callable (a function of one array), got {type(fn)}")
        base = callables.resolve(fn)
    given = channel_axis is not None
    if not given:
        if kind == "keras":  # Keras's configured image_data_format, read when it is used
            from rfjax.adapters import keras_models

            channel_axis = keras_models.default_channel_axis()
        else:
            channel_axis = _DEFAULT_AXIS[kind]
    axis = layout.normalize_axis(channel_axis, len(shape))
    if axis == len(shape) - 1:
        layout.check_layout(shape, channel_axis if given else None, kind)
    res = layout.wrap(base, len(shape), axis, grid, prefix_tokens)
    cl_shape = shape[:axis] + shape[axis + 1:] + (shape[axis],)

    def convert(b, _t=to_array, _a=axis):
        return layout.to_channels_last(_t(b), _a)

    return Prepared(res, convert, cl_shape, kind, axis)


def _identity(b):
    return b


def _torch_to_array(b):
    from rfjax.adapters import pytorch

    return pytorch.to_numpy(b)


def from_torch(module, example, *, layer: str | None = None):
    """A PyTorch module as ``(fn, x)``: a JAX function in PyTorch's layout and the example as
    a NumPy array (:func:`rfjax.adapters.pytorch.from_torch`)."""
    from rfjax.adapters import pytorch

    return pytorch.from_torch(module, example, layer=layer)


def from_keras(model, *, layer: str | None = None):
    """A Keras 3 model (JAX backend) as a JAX function of one batch, inference mode
    (:func:`rfjax.adapters.keras_models.from_keras`)."""
    from rfjax.adapters import keras_models

    return keras_models.from_keras(model, layer=layer)


def from_haiku(transformed, params, state=None, *, layer: str | None = None, **apply_kwargs):
    """A Haiku model as a JAX function of one batch (its output, or module ``layer``'s; the
    state is dropped); ``apply_kwargs`` (``is_training=False``) go to ``apply``."""
    from rfjax.adapters import haiku_models

    parts = (transformed, params) if state is None else (transformed, params, state)
    return haiku_models.from_haiku_parts(parts, layer=layer, **apply_kwargs)[0]
