"""Figures (matplotlib only here, Agg backend): ERF maps, TRF outlines, log-log growth plots.

Every function takes plain NumPy data (produced by :mod:`rfjax.experiments` or :mod:`rfjax.erf`)
and returns a ``matplotlib.figure.Figure``; :func:`save` writes it as PNG and closes it.
Maps are ``(H, W)`` arrays indexed ``[row, col]`` and drawn with ``origin="upper"``; a TRF
region is ``((row_start, row_stop), (col_start, col_stop))``, inclusive.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

__all__ = ["save", "outline_region"]


def save(fig: Figure, path: str | os.PathLike[str], dpi: int = 110) -> str:
    """Write ``fig`` to ``path`` (PNG), creating the folder, and close it. Returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def outline_region(ax, region, color: str = "cyan", lw: float = 1.5, label: str | None = None):
    """Draw an inclusive TRF box ``((r0, r1), (c0, c1))`` on image axes (pixel centres at
    integer coordinates)."""
    (r0, r1), (c0, c1) = region
    rect = Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False,
                     edgecolor=color, linewidth=lw, linestyle="--", label=label)
    ax.add_patch(rect)
    return rect
