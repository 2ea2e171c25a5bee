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

__all__ = ["save", "outline_region", "erf_heatmap"]


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


def erf_heatmap(erf_map, *, trf_region=None, title: str | None = None, log: bool = False,
                cmap: str = "viridis", path: str | os.PathLike[str] | None = None) -> Figure:
    """Heatmap of an ERF map with a colorbar and, optionally, the TRF outline.

    Args:
      erf_map: ``(H, W)`` map (e.g. ``rfjax.erf(...).map``), drawn ``origin="upper"``.
      trf_region: inclusive ``((r0, r1), (c0, c1))`` (``TRF.region(unit)``), drawn dashed;
        the axes grow to show all of it when it reaches past the image (into the padding).
      title: axes title.
      log: colour by ``log10(|map|)`` (zeros shown as the smallest nonzero value).
      cmap: matplotlib colormap name.
      path: when given, the figure is written there as PNG (:func:`save`, which closes it).

    Returns:
      The ``Figure``.
    """
    import numpy as np

    m = np.asarray(erf_map, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"erf_heatmap takes an (H, W) map, got shape {m.shape}")
    label = "ERF"
    if log:
        a = np.abs(m)
        tiny = a[a > 0].min() if np.any(a > 0) else 1.0
        m, label = np.log10(np.maximum(a, tiny)), "log10 |ERF|"
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    im = ax.imshow(m, cmap=cmap, origin="upper", interpolation="nearest")
    fig.colorbar(im, ax=ax, label=label)
    if trf_region is not None:
        outline_region(ax, trf_region, color="red", label="TRF")
        # Show the whole outline even where the field reaches past the image (into padding).
        (r0, r1), (c0, c1) = trf_region
        ax.set_xlim(min(c0, 0) - 1.5, max(c1, m.shape[1] - 1) + 1.5)
        ax.set_ylim(max(r1, m.shape[0] - 1) + 1.5, min(r0, 0) - 1.5)
        ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    if path is not None:
        save(fig, path)
    return fig
