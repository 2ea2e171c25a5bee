"""Progress bars: one switch (``RFJAX_NO_PROGRESS``) and one ``tqdm`` wrapper for all of rfjax.

A bar is shown only when all three hold:

* the caller asks for one (``enabled=True``, e.g. ``rfjax.erf(..., progress=True)``);
* the environment variable ``RFJAX_NO_PROGRESS`` is unset, empty or ``"0"`` (any other
  value, e.g. ``RFJAX_NO_PROGRESS=1``, turns every bar off);
* standard error is a terminal (bars never go to logs, pipes or captured test output).

The variable is read at every call, so setting it at run time takes effect for the next bar.
"""

from __future__ import annotations

import numbers
import os
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["ENV_VAR", "progress", "progress_enabled"]

#: The environment variable that turns progress bars off (any value other than "" and "0").
ENV_VAR = "RFJAX_NO_PROGRESS"


def progress_enabled(enabled: bool = True) -> bool:
    """Whether a progress bar is shown: ``enabled``, ``RFJAX_NO_PROGRESS`` unset, empty or
    ``"0"``, and ``sys.stderr`` a terminal (see the module docstring)."""
    if not enabled or os.environ.get(ENV_VAR, "") not in ("", "0"):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def progress(iterable_or_total: Iterable[Any] | int | None = None, desc: str | None = None,
             enabled: bool = True, **kwargs: Any):
    """A ``tqdm`` bar, disabled unless :func:`progress_enabled`.

    Args:
      iterable_or_total: an iterable to wrap (``for x in progress(xs, "work"): ...``), or the
        total number of steps (a number, or ``None`` for unknown) of a bar advanced by hand
        with ``bar.update(n)``; use it as a context manager to close it.
      desc: the bar's label.
      enabled: the caller's own switch (e.g. a ``progress=`` argument); ``False`` never shows
        a bar.
      **kwargs: passed to ``tqdm`` (``unit``, ``leave``, ``initial``, ``dynamic_ncols``...).

    Returns:
      The ``tqdm`` object; a disabled bar still iterates and accepts ``update``/``close``.
    """
    from tqdm.auto import tqdm

    kwargs["disable"] = not progress_enabled(enabled)
    if iterable_or_total is None or isinstance(iterable_or_total, numbers.Real):
        return tqdm(total=iterable_or_total, desc=desc, **kwargs)
    return tqdm(iterable_or_total, desc=desc, **kwargs)
