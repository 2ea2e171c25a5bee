"""The output of an inner layer of a Flax linen model, as a function of the model's input.

``intermediate_apply(module, name, collection, variables, x)`` is ``module.apply(variables, x)``
returning, instead of the model's output, the value of the submodule at the path ``name``
(``capture_intermediates``, e.g. ``"Conv_3"`` or ``"layer2_0/conv2"``) or a value ``sow``n under
``name`` into ``collection``. With ``functools.partial`` it is the ``fn`` whose TRF or ERF is
that layer's (``rfjax.erf_intermediate``, ``rfjax --layer``). :func:`layer_shapes` lists the
names and output shapes of a model's submodules without running it.

Nothing here imports ``rfjax.effective`` (so that it can use this module); names are looked up with
:func:`rfjax.selection.select_output`; Flax is duck-typed (anything with ``init``/``apply`` of
the linen signature).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from rfjax.selection import select_output

__all__ = ["intermediate_apply", "intermediate_names", "layer_shapes"]


def _leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any, bool]]:
    """``(path, value, captured)`` for every entry of a captured/sown tree, in order:
    ``captured`` for a submodule's ``__call__`` output, else a sown (or other) leaf."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            if k == "__call__":
                yield path, v, True
            else:
                yield from _leaves(v, (*path, k))
    else:
        yield path, node, False


def intermediate_names(node: Any) -> list[str]:
    """The ``"/"``-joined names of every value in a captured/sown tree (e.g. the
    ``"intermediates"`` collection of ``module.apply(..., mutable=["intermediates"])``)."""
    return ["/".join(path) for path, _, _ in _leaves(node)]


# Call flags that put a model in training mode, and the value that means inference.
_INFERENCE_FLAGS = {"train": False, "training": False, "is_training": False,
                    "deterministic": True, "use_running_average": True, "inference": True}


def _training_flags(module: Any, method: Any) -> dict[str, bool]:
    """The inference values of the training flags of ``module``'s call that default to
    training mode (``{"train": False}`` for ``def __call__(self, x, train=True)``)."""
    try:
        fn = getattr(type(module), method) if isinstance(method, str) else (
            method if method is not None else type(module).__call__)
        params = inspect.signature(fn).parameters
    except (AttributeError, TypeError, ValueError):
        params = {}
    return {n: v for n, v in _INFERENCE_FLAGS.items()
            if n in params and params[n].default is not v}


def _inference_hint(module: Any, method: Any) -> str:
    """``apply_kwargs={...}`` for the training flags of ``module``'s call that default to
    training mode, or a generic hint."""
    flags = _training_flags(module, method)
    if flags:
        return f"pass apply_kwargs={flags!r}"
    return ("pass its inference flag with apply_kwargs= (e.g. {'train': False}) or build it "
            "with nn.BatchNorm(use_running_average=True)")


def _apply(module: Any, variables: Any, x: Any, method: Any, apply_kwargs: Mapping | None,
           **kw: Any) -> Any:
    """``module.apply(variables, x, **apply_kwargs, **kw)`` in evaluation mode (the call's
    training flags that default to training, e.g. ``train=True``, are set to inference unless
    ``apply_kwargs`` sets them), with the errors of a model in training mode or of missing
    variables explained."""
    kwargs = {**_training_flags(module, method), **dict(apply_kwargs or {})}
    if method is not None:
        kwargs["method"] = method
    try:
        return module.apply(variables, x, **kwargs, **kw)
    except Exception as e:
        kind = type(e).__name__
        if kind == "ModifyScopeVariableError":  # e.g. BatchNorm updating its batch_stats
            raise ValueError(
                f"{type(module).__name__} updates a variable while it runs ({e}): a layer is "
                "in training mode, e.g. BatchNorm with batch statistics, which couple the "
                "images of a batch (no unit then has a per-image receptive field). Run it in "
                f"inference mode: {_inference_hint(module, method)}."
            ) from e
        if kind in ("ScopeCollectionNotFound", "ScopeVariableNotFoundError"):
            raise ValueError(
                f"{type(module).__name__} reads a variable that is not in `variables` ({e}); "
                "pass every collection that model.init returned (e.g. 'params' and "
                "'batch_stats'), not only the parameters."
            ) from e
        raise


def intermediate_apply(module: Any, name: str, collection: str, variables: Any, x: Any, *,
                       method: Any = None, apply_kwargs: Mapping | None = None) -> Any:
    """``module.apply(variables, x)`` returning the value captured or sown under ``name``.

    Args:
      module: a Flax linen module.
      name: the submodule path as in ``capture_intermediates`` (``"Conv_3"``,
        ``"block2/conv"``; the submodule's last ``__call__`` output), or a name ``sow``n into
        ``collection`` (its last value), or a key of the intermediates dict of a model that
        returns ``(out, intermediates)``.
      collection: the mutable collection to read (``"intermediates"``).
      variables: the module's variables.
      x: the input.
      method: the module's method to apply (``module.apply(..., method=method)``); ``None``
        for ``__call__``.
      apply_kwargs: more keyword arguments of ``module.apply`` (the call's own). Evaluation
        mode is forced: a training flag of the call that defaults to training (``train``,
        ``training``, ``is_training``, ``deterministic``, ``use_running_average``,
        ``inference``) gets its inference value unless ``apply_kwargs`` sets it (Flax's
        ImageNet ResNet example runs with ``train=False``).

    Raises:
      ValueError: no value named ``name`` (the message lists the names that were captured or
        sown); a model that updates a variable while it runs (BatchNorm with batch
        statistics: the message names the inference flag to pass in ``apply_kwargs``); a
        variable missing from ``variables``.
    """
    path = tuple(p for p in name.split("/") if p)

    def filt(mdl: Any, method_name: str) -> bool:
        return method_name == "__call__" and tuple(mdl.path) == path

    out, state = _apply(module, variables, x, method, apply_kwargs, capture_intermediates=filt,
                        mutable=[collection])
    node = state.get(collection, {})
    try:
        return select_output(node, name)
    except ValueError:
        pass
    # A model that returns (out, intermediates): look the name up in its own dict.
    if isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[1], Mapping):
        return select_output(out[1], name)
    raise ValueError(
        f"no intermediate named {name!r}: captured/sown names in {collection!r} are "
        f"{intermediate_names(node)}"
    )


def layer_shapes(module: Any, shape: Sequence[int], *, method: Any = None) -> dict[str, tuple]:
    """Name -> output shape of every submodule whose output has the rank of the input
    ``shape`` (the feature maps, ``(N, *spatial, C)`` for an ``(N, *spatial, C)`` input): the
    names :func:`intermediate_apply` takes, in jax's pytree order (names sorted at each level
    of the module tree). Traced abstractly (``jax.eval_shape``: no weights are allocated,
    nothing is compiled).
    """
    import jax
    import jax.numpy as jnp

    shape = tuple(shape)
    kw = {} if method is None else {"method": method}

    def run(x: Any) -> Any:
        variables = module.init(jax.random.key(0), x, **kw)
        return module.apply(variables, x, capture_intermediates=True,
                            mutable=["intermediates"], **kw)[1]

    state = jax.eval_shape(run, jax.ShapeDtypeStruct(shape, jnp.float32))
    out: dict[str, tuple] = {}
    for path, value, captured in _leaves(state.get("intermediates", {})):
        shp = tuple(getattr(value[-1], "shape", ())) if captured else ()
        if captured and path and len(shp) == len(shape):
            out["/".join(path)] = shp
    return out
