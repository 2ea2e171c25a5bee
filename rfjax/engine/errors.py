"""Errors of the jaxpr engine, and where an equation came from (for messages and tables)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from jax.extend import source_info_util

# The source line of the innermost call equation being interpreted (see ``enclosing``).
_ENCLOSING: contextvars.ContextVar[str] = contextvars.ContextVar("rfjax_enclosing", default="")


class TRFError(ValueError):
    """Base class of the errors raised by the TRF engine."""


class UnsupportedPrimitiveError(TRFError, NotImplementedError):
    """A primitive on the path from the input to the output that the engine has no rule for."""


class DynamicDependencyError(TRFError):
    """A primitive whose index map depends on runtime values (e.g. data-dependent gather)."""


def source_line(eqn) -> str:
    """The user's source line of a jaxpr equation (``file:line (function)``).

    Uses the public ``jax.extend.source_info_util.summarize``. An equation with no frame of
    the user's code (inside ``jnp``'s own jitted helpers, e.g. ``jnp.fft.fft2``) gives the
    line of the innermost enclosing call being interpreted (:func:`enclosing`); one without
    source information (built by hand) outside any call gives ``'<unknown source>'``.
    """
    info = getattr(eqn, "source_info", None)
    line = ""
    if info is not None and getattr(info, "traceback", None) is not None:
        line = source_info_util.summarize(info)
    return line or _ENCLOSING.get() or "<unknown source>"


@contextlib.contextmanager
def enclosing(eqn) -> Iterator[None]:
    """Within the block, equations without a user frame are reported at ``eqn``'s line (the
    call whose body is being interpreted)."""
    token = _ENCLOSING.set(source_line(eqn))
    try:
        yield
    finally:
        _ENCLOSING.reset(token)


def name_of(eqn) -> str:
    """The name stack of an equation (Flax module path), e.g. ``'VGG16/Conv_3'``."""
    info = getattr(eqn, "source_info", None)
    return str(info.name_stack) if info is not None else ""
