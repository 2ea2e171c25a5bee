"""Resolving a user's callable for jit, and the per-function cache of compiled work.

:func:`resolve` turns ``fn`` (a plain function, ``functools.partial(module.apply, params)``, a
Flax NNX module, an Equinox module, a bound method) into a static key, a ``rebuild(dyn) ->
callable`` and the pytree ``dyn`` of its arrays, so that jitted functions take the arrays as
*arguments* instead of folding them into the program as constants.

:func:`cache_entry` gives the :class:`CacheEntry` of a resolved function: traced jaxprs, crop
plans and compiled functions, each keyed by the options and shapes they depend on. Entries
are held weakly by the function's owner (a module, a function object), so caching never
keeps a model alive; :func:`clear_cache` drops them all.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import weakref
from collections.abc import Callable, Hashable
from typing import Any

import jax
import numpy as np

from rfjax.engine import constants

__all__ = ["CacheEntry", "InputTypeError", "Resolved", "cache_entry", "cache_size",
           "clear_cache", "resolve", "signature"]


class InputTypeError(TypeError, ValueError):
    """A wrong *type* of argument (non-callable ``fn``, non-float input).

    Subclasses both ``TypeError`` and ``ValueError`` so that either ``except`` catches it.
    """


@dataclasses.dataclass(frozen=True)
class Resolved:
    owner: Any  # object whose lifetime bounds the cache entry (weakly referenced)
    key: Hashable  # static part of the cache key
    rebuild: Callable[[Any], Callable]  # rebuild(dyn) -> the callable; holds owner weakly
    dyn: Any  # pytree of arrays, passed to the jitted function as arguments


def _is_array(leaf: Any) -> bool:
    """An array argument (abstract ones too: the TRF takes ``jax.ShapeDtypeStruct`` weights)."""
    return (isinstance(leaf, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))
            and not isinstance(leaf, np.generic))


def _hashable(obj: Any) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def _split_pytree(tree: Any):
    """Split a pytree into (static key, dynamic array leaves, merge(dyn) -> tree)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    mask = tuple(_is_array(v) for v in leaves)
    statics = tuple(v for v, m in zip(leaves, mask, strict=True) if not m)
    dyn = [v for v, m in zip(leaves, mask, strict=True) if m]
    key = (treedef, statics, mask)

    def merge(dyn_leaves):
        it = iter(dyn_leaves)
        st = iter(statics)
        return jax.tree_util.tree_unflatten(treedef, [next(it) if m else next(st) for m in mask])

    return key, dyn, merge


def _weak(obj: Any) -> Callable[[], Any]:
    """A weak reference to ``obj`` (a ``WeakMethod`` for bound methods)."""
    if inspect.ismethod(obj):
        return weakref.WeakMethod(obj)
    return weakref.ref(obj)


def _deref(ref: Callable[[], Any]) -> Any:
    obj = ref()
    if obj is None:  # only possible if the cache outlived its owner, which finalize prevents
        raise RuntimeError("the function of a cached ERF computation was garbage-collected")
    return obj


def resolve(fn: Any) -> Resolved:
    """How to call ``fn`` from a jitted function with its arrays as arguments."""
    if not callable(fn):
        raise InputTypeError(f"fn must be callable (a function of one array), got {type(fn)}")
    if isinstance(fn, functools.partial):
        base = resolve(fn.func)
        pkey, pdyn, pmerge = _split_pytree((fn.args, fn.keywords))
        if _hashable(pkey):

            def rebuild_partial(dyn, _b=base.rebuild, _m=pmerge):
                args, kwargs = _m(dyn[1])
                return functools.partial(_b(dyn[0]), *args, **kwargs)

            return Resolved(
                base.owner, ("partial", base.key, pkey), rebuild_partial, (base.dyn, pdyn)
            )
    nnx_module = _nnx_module_type()
    if nnx_module is not None and isinstance(fn, nnx_module):
        from flax import nnx

        graphdef, state = nnx.split(fn)
        if _hashable(graphdef):
            return Resolved(
                type(fn), ("nnx", graphdef), lambda st, _g=graphdef: nnx.merge(_g, st), state
            )
    if inspect.ismethod(fn):
        ref = weakref.WeakMethod(fn)
        return Resolved(fn.__self__, ("method", fn.__func__), lambda dyn: _deref(ref), ())
    leaves = jax.tree_util.tree_leaves(fn)
    if not (len(leaves) == 1 and leaves[0] is fn) and any(_is_array(v) for v in leaves):
        # A pytree callable (an Equinox module): its arrays become jit arguments.
        tkey, tdyn, tmerge = _split_pytree(fn)
        if _hashable(tkey):
            return Resolved(type(fn), ("pytree", tkey), tmerge, tdyn)
    try:
        ref = _weak(fn)
    except TypeError:  # not weakly referenceable: cache strongly on the object itself
        return Resolved(None, ("strong", fn), lambda dyn: fn, ())
    return Resolved(fn, ("fn",), lambda dyn: _deref(ref), ())


@functools.cache
def _nnx_module_type():
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is a dependency, nnx may move
        return None
    return nnx.Module


@dataclasses.dataclass
class CacheEntry:
    """What is cached for one resolved function. Each table maps a hashable key (the options
    and shapes the value depends on) to the value; :meth:`get` computes a missing one."""

    shapes: dict[Hashable, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    jaxprs: dict[Hashable, Any] = dataclasses.field(default_factory=dict)
    plans: dict[Hashable, Any] = dataclasses.field(default_factory=dict)
    verified: dict[Hashable, Any] = dataclasses.field(default_factory=dict)
    compiled: dict[Hashable, Callable] = dataclasses.field(default_factory=dict)

    def get(self, table: str, key: Hashable, make: Callable[[], Any]) -> Any:
        """``table[key]``, computed by ``make()`` and stored if missing."""
        t = getattr(self, table)
        if key not in t:
            t[key] = make()
        return t[key]

    def size(self) -> int:
        return sum(len(getattr(self, f.name)) for f in dataclasses.fields(self))


# id(owner) -> (weak ref to owner, {static key: entry}). Entries are removed by
# weakref.finalize when the owner dies.
_CACHE: dict[int, tuple[Any, dict[Hashable, CacheEntry]]] = {}
_STRONG_CACHE: dict[Hashable, CacheEntry] = {}


def cache_entry(res: Resolved) -> CacheEntry:
    """The cache entry of a resolved function (a fresh, uncached one if it is unhashable)."""
    if res.owner is None:
        if not _hashable(res.key):
            return CacheEntry()
        return _STRONG_CACHE.setdefault(res.key, CacheEntry())
    oid = id(res.owner)
    slot = _CACHE.get(oid)
    if slot is None or slot[0]() is not res.owner:
        try:
            ref = weakref.ref(res.owner)
        except TypeError:
            return _STRONG_CACHE.setdefault((res.owner, res.key), CacheEntry())
        slot = (ref, {})
        _CACHE[oid] = slot
        weakref.finalize(res.owner, _CACHE.pop, oid, None)
    return slot[1].setdefault(res.key, CacheEntry())


def cache_size() -> int:
    """Number of live cached function entries (for tests and diagnostics)."""
    return sum(len(s[1]) for s in _CACHE.values()) + len(_STRONG_CACHE)


def clear_cache() -> None:
    """Drop every cached jaxpr, crop plan and compiled function (jax's own caches stay),
    the TRF engine's compiled constant programs included."""
    _CACHE.clear()
    _STRONG_CACHE.clear()
    constants.clear_cache()


def signature(dyn: Any) -> Hashable:
    """The structure, shapes and dtypes of a pytree of arrays (a cache key)."""
    leaves, treedef = jax.tree_util.tree_flatten(dyn)
    return treedef, tuple(
        (tuple(np.shape(v)), str(v.dtype if hasattr(v, "dtype") else np.asarray(v).dtype))
        for v in leaves
    )
