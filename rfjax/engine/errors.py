"""Errors of the jaxpr engine, and where an equation came from (for messages and tables)."""

from __future__ import annotations

from jax.extend import source_info_util


class TRFError(ValueError):
    """Base class of the errors raised by the TRF engine."""


class UnsupportedPrimitiveError(TRFError, NotImplementedError):
    """A primitive on the path from the input to the output that the engine has no rule for."""


class DynamicDependencyError(TRFError):
    """A primitive whose index map depends on runtime values (e.g. data-dependent gather)."""


def source_line(eqn) -> str:
    """The user's source line of a jaxpr equation (``file:line (function)``).

    Uses the public ``jax.extend.source_info_util.summarize``; an equation without source
    information (built by hand) gives ``'<unknown source>'``.
    """
    info = getattr(eqn, "source_info", None)
    if info is None or getattr(info, "traceback", None) is None:
        return "<unknown source>"
    return source_info_util.summarize(info)


def name_of(eqn) -> str:
    """The name stack of an equation (Flax module path), e.g. ``'VGG16/Conv_3'``."""
    info = getattr(eqn, "source_info", None)
    return str(info.name_stack) if info is not None else ""
