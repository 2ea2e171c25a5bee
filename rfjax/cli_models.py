"""Model specs of the ``rfjax`` command line: a built-in name, ``torchvision:<name>``,
``timm:<name>``, ``keras:<Name>`` (:mod:`rfjax.models.external`) or ``package.module:factory``
(see :mod:`rfjax.cli`), resolved to a :class:`Model`; user errors are :class:`CLIError`."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from rfjax.models import builtin_models

__all__ = ["CLIError", "Model", "resolve_model"]

class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Model:
    """A resolved model: ``make(seed, shape, layer, abstract) -> fn`` (a built-in's
    ``rfjax.models.BuiltinModel.fn``, a factory's ``fn``, or a torch / Keras model that
    ``rfjax.trf`` and ``rfjax.erf`` take as it is) and the example input shape (a callable for
    an external model: a Keras model is built to know it)."""

    name: str
    example_shape: tuple[int, ...] | Callable[[], tuple[int, ...]]
    make: Callable[..., Any]  # make(seed, shape, layer=None, abstract=False) -> fn
    seedable: bool  # whether different seeds give different weights
    layers: Callable[[tuple[int, ...]], dict[str, tuple[int, ...]]] | None = None
    external: Any = None  # an rfjax.models.external.ExternalModel
    weights: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        s = self.example_shape
        return tuple(s() if callable(s) else s)


def _load_factory(spec: str) -> Callable:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise CLIError(f"model {spec!r}: expected package.module:factory")
    if os.getcwd() not in sys.path:  # so a mymodels.py in the current directory imports
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise CLIError(f"model {spec!r}: cannot import module {mod_name!r} ({e})") from e
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CLIError(f"model {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CLIError(f"model {spec!r}: {attr!r} is not callable (expected a factory "
                       "returning (fn, example_input))")
    return obj


def _shape_of(example: Any, spec: str) -> tuple[int, ...]:
    if isinstance(example, tuple | list) and all(isinstance(d, int | np.integer)
                                                  for d in example):
        return tuple(int(d) for d in example)
    if hasattr(example, "shape"):
        return tuple(int(d) for d in example.shape)
    raise CLIError(f"model {spec!r}: the factory's example_input must be an array or a shape "
                   f"tuple, got {type(example).__name__}")


def _resolve_external(spec: str, weights: str | None) -> Model:
    from rfjax.models import external

    try:
        ext = external.load(spec)
    except (ImportError, ValueError, RuntimeError) as e:
        raise CLIError(str(e)) from e

    def make(seed: int, shape: tuple[int, ...], layer: str | None = None,
             abstract: bool = False) -> Any:
        try:
            return ext.model(seed, shape, weights)
        except (OSError, ValueError) as e:
            raise CLIError(f"--weights: {e}") from e

    def layers(shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        return {n: s for n, s in ext.layers(shape).items() if n}

    return Model(spec, lambda: ext.shape, make, weights is None, layers, ext, weights)


def resolve_model(spec: str, weights: str | None = None) -> Model:
    """A built-in name, ``torchvision:<name>`` / ``timm:<name>`` / ``keras:<Name>``
    (:mod:`rfjax.models.external`; ``weights``: a file of weights for it) or
    ``package.module:factory`` -> :class:`Model`.

    Raises:
      CLIError: an unknown name (with close matches), a framework that is not installed, a
        module or attribute that cannot be found, a factory that does not return
        ``(fn, example_input)``, or ``weights`` for a model that is not external.
    """
    from rfjax.models import external

    if external.is_external(spec):
        return _resolve_external(spec, weights)
    if weights is not None:
        raise CLIError(f"--weights needs a {', '.join(f'{s}:' for s in external.SOURCES)} "
                       f"model (a torch state dict or Keras weights); {spec!r} is not one")
    models = builtin_models()
    if spec in models:
        entry = models[spec]
        return Model(spec, entry.shape, entry.fn, True, entry.layers)
    if ":" not in spec:
        near = [n for n in models if spec.lower() in n]
        near += [n for n in difflib.get_close_matches(spec.lower(), list(models), n=4)
                 if n not in near]
        hint = f" (did you mean {', '.join(near[:4])}?)" if near else ""
        raise CLIError(f"unknown model {spec!r}{hint}: give a built-in name (see `rfjax "
                       "models`), torchvision:<name>, timm:<name>, keras:<Name> or "
                       "package.module:factory")
    factory = _load_factory(spec)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    seedable = "seed" in params

    def call(seed: int) -> tuple[Callable, Any]:
        out = factory(seed=seed) if seedable else factory()
        if not (isinstance(out, tuple | list) and len(out) == 2 and callable(out[0])):
            raise CLIError(f"model {spec!r}: the factory must return (fn, example_input), "
                           f"got {type(out).__name__}")
        return out[0], out[1]

    _, example = call(0)
    shape = _shape_of(example, spec)

    def make(seed: int, shape: tuple[int, ...], layer: str | None = None,
             abstract: bool = False) -> Callable:
        return call(seed)[0]

    return Model(spec, shape, make, seedable)


