"""Figures (matplotlib only here): ERF maps, TRF outlines, log-log growth plots.

Every function takes plain NumPy data (produced by :mod:`rfjax.experiments` or
:mod:`rfjax.effective`) and returns a ``matplotlib.figure.Figure``; :func:`save` writes it as
PNG and closes it.
Maps are ``(H, W)`` arrays indexed ``[row, col]`` and drawn with ``origin="upper"``; a TRF
region is ``((row_start, row_stop), (col_start, col_stop))``, inclusive.

Importing this module does not choose a matplotlib backend: matplotlib picks a non-interactive
one by itself where there is no display, and the scripts that only write files select Agg in
their ``main``.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from rfjax.metrics import normalize_map

__all__ = ["save", "outline_region", "erf_heatmap", "trf_mask_plot", "paper_figure", "FIGURES",
           "fig_atlas_ratio", "fig_atlas_gallery"]


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


def trf_mask_plot(mask, region=None, *, title: str | None = None,
                  path: str | os.PathLike[str] | None = None) -> Figure:
    """A unit's exact theoretical field over an input-sized canvas: the mask
    (``TRF.mask(unit)``) filled and its region rectangle (``TRF.region(unit)``) outlined.

    The region is inclusive and unclipped (it may reach into the padding, past the input): the
    part inside the input is drawn, and a second title line gives the unclipped bounds. A 1-D
    mask is drawn as one row; a 3-D mask as its slice through the middle of the region's
    clipped extent along axis 0 (named in the title).

    Args:
      mask: ``(L,)``, ``(H, W)`` or ``(D, H, W)`` boolean (the input's spatial shape).
      region: inclusive ``((start, stop), ...)`` per axis of ``mask``, or ``None``.
      title: the first title line (e.g. the model, unit, size and stride).
      path: when given, the figure is written there as PNG (:func:`save`, which closes it).

    Returns:
      The ``Figure``.
    """
    import numpy as np

    m = np.asarray(mask, dtype=bool)
    if m.ndim not in (1, 2, 3):
        raise ValueError(f"trf_mask_plot takes a 1-D, 2-D or 3-D mask, got shape {m.shape}")
    if region is not None and len(region) != m.ndim:
        raise ValueError(f"region {region} has {len(region)} axes; the mask has {m.ndim}")
    lines = [] if not title else [title]
    full = m
    if region is not None:
        axes = ("rows", "cols") if m.ndim == 2 else ("x",) if m.ndim == 1 else \
            ("depth", "rows", "cols")
        bounds = ", ".join(f"{name} {a}..{b}" for name, (a, b) in zip(axes, region, strict=True))
        lines.append(f"region {bounds} (inclusive, unclipped)")
    reg2 = None if region is None else tuple(tuple(int(v) for v in r) for r in region)
    if m.ndim == 1:
        m = m[None, :]
        reg2 = None if reg2 is None else ((0, 0), reg2[0])
    elif m.ndim == 3:
        if reg2 is None:
            k = m.shape[0] // 2
        else:
            lo, hi = max(reg2[0][0], 0), min(reg2[0][1], m.shape[0] - 1)
            k = (lo + hi) // 2 if lo <= hi else m.shape[0] // 2
        m, reg2 = m[k], None if reg2 is None else reg2[1:]
        lines.append(f"slice {k} of axis 0")
    lines.append(f"{int(full.sum())} input pixels in the field (filled); "
                 f"{'x'.join(map(str, full.shape))} input, region clipped to it")
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    from matplotlib.colors import ListedColormap

    ax.imshow(m.astype(float), cmap=ListedColormap(["#f2f2f2", "#3b75af"]), vmin=0, vmax=1,
              origin="upper", interpolation="nearest")
    if reg2 is not None:
        (r0, r1), (c0, c1) = reg2
        h, w = m.shape
        cr = (max(r0, 0), min(r1, h - 1))
        cc = (max(c0, 0), min(c1, w - 1))
        if cr[0] <= cr[1] and cc[0] <= cc[1]:
            outline_region(ax, (cr, cc), color="red", lw=1.5, label="region (clipped)")
            ax.legend(loc="best", fontsize=7, framealpha=0.7)
    ax.set_xlim(-0.5, m.shape[1] - 0.5)
    ax.set_ylim(m.shape[0] - 0.5, -0.5)
    ax.set_title("\n".join(lines), fontsize=8)
    ax.set_xlabel("column")
    ax.set_ylabel("row" if full.ndim > 1 else "")
    if path is not None:
        save(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------
# The paper figures (scripts/make_figures.py): one function per experiment of
# rfjax.experiments, each taking that experiment's result dict (``data`` and ``measured``).


def _np():
    import numpy as np

    return np


def _map_panel(ax, m, *, vmax=1.0, region=None, title=None, cmap="viridis", norm=None,
               region_label="TRF"):
    """One normalised map on ``ax`` (colour range ``[0, vmax]`` unless ``norm``), with the TRF
    outlined; returns the image for a shared colorbar."""
    kw = {"norm": norm} if norm is not None else {"vmin": 0.0, "vmax": vmax}
    im = ax.imshow(m, cmap=cmap, origin="upper", interpolation="nearest", **kw)
    if region is not None:
        outline_region(ax, region, color="red", lw=1.2, label=region_label)
    ax.set_xlim(-0.5, m.shape[1] - 0.5)
    ax.set_ylim(m.shape[0] - 0.5, -0.5)
    if title:
        ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    return im


def _centre_region(shape, size):
    """The inclusive box of side ``size`` centred on a map of ``shape`` (``n // 2``)."""
    h = size // 2
    return ((shape[0] // 2 - h, shape[0] // 2 + h), (shape[1] // 2 - h, shape[1] // 2 + h))


def fig_trf_example(result) -> Figure:
    """Two 3x3 convolutions: the layer-2 unit's 3x3 field on layer 1 and 5x5 field on the
    input (exact ``rfjax.trf`` masks), one layer-1 unit's 3x3 field on the input outlined."""
    np = _np()
    d = result["data"]
    m_in, m_l1 = np.asarray(d["mask_input"]), np.asarray(d["mask_layer1"])
    unit, corner = d["unit"], d["corner"]
    n = m_in.shape[0]
    fig, axes = plt.subplots(1, 3, figsize=(13, 5), layout="constrained")
    layer2 = np.zeros_like(m_in)
    layer2[unit] = True
    panels = ((m_in, "input: the unit's TRF is 5x5", "#f4a261"),
              (m_l1, "layer 1 (3x3 conv): the unit sees 3x3", "#2a9d8f"),
              (layer2, "layer 2 (3x3 conv): the unit", "#e76f51"))
    for ax, (mask, title, colour) in zip(axes, panels, strict=True):
        img = np.ones(mask.shape + (3,))
        rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        img[mask] = rgb
        ax.imshow(img, origin="upper", interpolation="nearest")
        ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
        ax.grid(which="minor", color="0.6", linewidth=0.6)
        ax.tick_params(which="minor", length=0)
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.tick_params(labelsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    rows, cols = np.nonzero(np.asarray(d["mask_corner"]))  # that unit's exact TRF mask
    outline_region(axes[0], ((rows.min(), rows.max()), (cols.min(), cols.max())),
                   color="black", lw=2, label=f"TRF of layer-1 unit {tuple(corner)} (3x3)")
    axes[1].add_patch(Rectangle((corner[1] - 0.5, corner[0] - 0.5), 1, 1, fill=False,
                                edgecolor="black", linewidth=2))
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8)
    m = result["measured"]
    fig.suptitle(f"TRF example: two 3x3 convolutions ('same' padding), unit {tuple(unit)} of "
                 f"layer 2; measured TRF size {m['size']} (rfjax.trf masks)", fontsize=11)
    return fig


def fig_cnn_vs_transformer(result) -> Figure:
    """TRF size against depth for a CNN and a ViT, beside the ERFs of both."""
    d, m = result["data"], result["measured"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), layout="constrained",
                             gridspec_kw={"width_ratios": [1.2, 1, 1]})
    ax = axes[0]
    cnn, vit = m["cnn_trf_sizes"], m["vit_trf_sizes"]
    ax.plot(range(1, len(cnn) + 1), cnn, "o-", label="CNN (3x3 convs): TRF")
    ax.plot(range(0, len(vit)), vit, "s-", label=f"ViT (patch {m['patch']}): TRF")
    ax.axhline(m["input_size"], color="0.4", ls=":", label=f"input size {m['input_size']}")
    ax.plot([len(cnn)], [m["cnn_erf_size"]], "o", mfc="none", ms=10, color="C0",
            label=f"CNN ERF size ({m['cnn_erf_size']:.1f}, 4 sigma)")
    ax.set_xlabel("layer (ViT: 0 = patch embedding, then attention blocks)")
    ax.set_ylabel("receptive field size (pixels, per axis)")
    ax.set_title("TRF grows layer by layer (CNN) vs. global after one block (ViT)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    e_cnn, e_vit = normalize_map(d["cnn_erf"]), normalize_map(d["vit_erf"])
    im = _map_panel(axes[1], e_cnn, region=d["cnn_region"],
                    title=f"CNN, {d['cnn_depth']} layers: ERF of the centre unit\n"
                          f"TRF {cnn[-1]}x{cnn[-1]} (dashed red)\n")
    n = e_vit.shape[0]
    _map_panel(axes[2], e_vit, region=((0, n - 1), (0, n - 1)),
               title=f"ViT, {d['vit_depth']} blocks: ERF of the centre token\n"
                     f"TRF = whole image (red); {100 * m['vit_own_patch_mass']:.0f}% of the "
                     "mass\nin its own 4x4 patch (white)")
    outline_region(axes[2], ((0, n - 1), (0, n - 1)), color="red", lw=3)  # global TRF
    outline_region(axes[2], d["patch_region"], color="white", lw=1.2)
    for a in axes[1:]:
        a.set_xlabel("column")
        a.set_ylabel("row")
    fig.colorbar(im, ax=list(axes[1:]), label="mean |dy/dx| / max (random init, random inputs)",
                 shrink=0.9)
    fig.suptitle("CNN vs. Transformer: the theoretical receptive field and the effective one",
                 fontsize=11)
    return fig


def fig_trf_vs_erf(result) -> Figure:
    """The uniform TRF box against the Gaussian ERF of the same unit, and single-input ERFs."""
    np = _np()
    d, m = result["data"], result["measured"]
    per = [normalize_map(p) for p in d["per_input"]]
    k = len(per)
    cols = max(3, k)
    fig = plt.figure(figsize=(3.9 * cols + 1.5, 8.2), layout="constrained")
    gs = fig.add_gridspec(2, cols)
    axes = np.empty((2, cols), dtype=object)
    axes[0, 0], axes[0, 1] = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
    axes[0, 2] = fig.add_subplot(gs[0, 2:])
    for i in range(cols):
        axes[1, i] = fig.add_subplot(gs[1, i])
    mean = normalize_map(d["mean"])
    trf_mask = np.asarray(d["trf_mask"], dtype=float)
    im = _map_panel(axes[0, 0], trf_mask, region=d["region"],
                    title=f"TRF of the centre unit:\na uniform {m['trf_size'][0]}x"
                          f"{m['trf_size'][1]} box")
    _map_panel(axes[0, 1], mean, region=d["region"],
               title=f"ERF, mean over {m['images']} inputs\nERF/TRF area "
                     f"{m['erf_trf_area_ratio']:.2f}, Gaussian R^2 {m['gaussian_r2']:.3f}")
    ax = axes[0, 2]
    r = mean.shape[0] // 2
    xs = np.arange(mean.shape[1])
    ax.step(xs, trf_mask[r], where="mid", color="red", label="TRF (box)")
    ax.plot(xs, mean[r], "o-", ms=3, label="ERF (centre row)")
    mu, sg = np.asarray(d["fit_mean"]), np.asarray(d["fit_sigma"])
    g = np.exp(-0.5 * ((xs - mu[1]) / sg[1]) ** 2)
    ax.plot(xs, g * mean[r].max(), "--", color="0.3", label="Gaussian fit (moments)")
    ax.set_xlabel("column")
    ax.set_ylabel("value / max")
    ax.set_title("centre row: box vs. Gaussian", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    for i in range(cols):
        a = axes[1, i]
        if i < k:
            _map_panel(a, per[i], region=d["region"], title=f"ERF of input {i} alone")
        else:
            a.axis("off")
    for a in list(axes[0, :2]) + list(axes[1, :k]):
        a.set_xlabel("column")
        a.set_ylabel("row")
    fig.colorbar(im, ax=list(axes[1, :k]) + list(axes[0, :2]),
                 label="value / max (shared scale; TRF dashed red)", shrink=0.8)
    fig.suptitle(f"TRF vs. ERF: {d['depth']} 3x3 ReLU layers (He init). The TRF is the same "
                 "for every input; the ERF is Gaussian, smaller, and input-dependent\n(mean "
                 f"pairwise total-variation distance between single-input ERFs "
                 f"{m['per_input_dissimilarity']:.2f}; identical TRF masks: "
                 f"{m['trf_masks_identical']})", fontsize=10)
    return fig


_SETTING_LABELS = {"uniform": "Uniform", "random": "Random", "random_relu": "Random + ReLU"}


def fig_layers_and_init(result) -> Figure:
    """The paper's Fig. 1: ERFs against depth for Uniform, Random, Random + ReLU, each beside
    the theory's map where one exists, plus centre-row profiles."""
    np = _np()
    d, m = result["data"], result["measured"]
    depths = d["depths"]
    rows = [("uniform", d["maps"]["uniform"], "Uniform\nmeasured |dy/dx|"),
            ("uniform", d["theory"]["uniform"], "Uniform\ntheory: n-fold box conv."),
            ("random", d["maps"]["random"], "Random\nmeasured E[g^2]"),
            ("random", d["theory"]["random"], "Random\ntheory E[g^2]"),
            ("random_relu", d["maps"]["random_relu"], "Random + ReLU\nmeasured E[g^2]")]
    nc = len(depths)
    fig, axes = plt.subplots(len(rows) + 1, nc, figsize=(3.1 * nc + 1.5, 3.0 * (len(rows) + 1)),
                             layout="constrained")
    axes = np.asarray(axes).reshape(len(rows) + 1, nc)
    im = None
    for i, (_, maps, label) in enumerate(rows):
        for j, depth in enumerate(depths):
            mm = normalize_map(maps[j])
            region = _centre_region(mm.shape, 2 * depth + 1)
            im = _map_panel(axes[i, j], mm, region=region,
                            title=f"n = {depth} (TRF {2 * depth + 1})" if i == 0 else None)
            if j == 0:
                axes[i, j].set_ylabel(label, fontsize=9)
    for j, depth in enumerate(depths):
        ax = axes[-1, j]
        for key, name, colour in (("uniform", "Uniform", "C0"), ("random", "Random", "C1")):
            mm = normalize_map(d["maps"][key][j])
            tt = normalize_map(d["theory"][key][j])
            r = mm.shape[0] // 2
            xs = np.arange(mm.shape[1]) - mm.shape[1] // 2
            ax.plot(xs, mm[r], "o", ms=2.5, color=colour, label=f"{name} measured")
            ax.plot(xs, tt[r], "-", color=colour, lw=1, label=f"{name} theory")
        rr = normalize_map(d["maps"]["random_relu"][j])
        ax.plot(xs, rr[mm.shape[0] // 2], "x", ms=3, color="C2", label="Random + ReLU")
        ax.set_xlabel("offset from the unit (pixels)")
        ax.set_title(f"n = {depth}: centre row, rel. error U "
                     f"{m['uniform_rel_error'][j]:.0e}, R {m['random_rel_error'][j]:.2f}",
                     fontsize=8)
        ax.grid(alpha=0.3)
        if j == 0:
            ax.set_ylabel("value / max")
            ax.legend(fontsize=7)
    fig.colorbar(im, ax=list(axes[:-1].ravel()), label="value / max (per map; TRF dashed red)",
                 shrink=0.5)
    fig.suptitle("ERF vs. number of layers and initialisation (3x3 kernels, no subsampling, "
                 f"{m['channels']} channels; random rows: mean over {m['draws']} weight "
                 "draws)", fontsize=11)
    return fig


def fig_erf_growth(result) -> Figure:
    """The paper's Fig. 2: ERF size and ERF/TRF ratio against depth, log-log, fitted lines."""
    np = _np()
    d, m = result["data"], result["measured"]
    depths = np.asarray(d["depths"], dtype=float)
    trf = np.asarray(d["trf"], dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5), layout="constrained")
    xs = np.geomspace(depths.min(), depths.max(), 50)
    for i, (s, sizes) in enumerate(d["sizes"].items()):
        es, er, ep = d["fits"][s]
        colour = f"C{i}"
        lab = _SETTING_LABELS[s]
        sizes = np.asarray(sizes)
        c0 = np.exp(np.mean(np.log(sizes) - es * np.log(depths)))
        axes[0].loglog(depths, sizes, "o", color=colour,
                       label=f"{lab}: slope {es:.2f} (mean map)")
        axes[0].loglog(xs, c0 * xs**es, "-", color=colour, lw=1)
        per = np.asarray(d["per_network"][s])
        if s != "uniform":
            axes[0].loglog(depths, per, "^", mfc="none", color=colour,
                           label=f"{lab}: slope {ep:.2f} (mean of per-network sizes)")
        ratio = sizes / trf
        c1 = np.exp(np.mean(np.log(ratio) - er * np.log(depths)))
        axes[1].loglog(depths, ratio, "o", color=colour, label=f"{lab}: slope {er:.2f}")
        axes[1].loglog(xs, c1 * xs**er, "-", color=colour, lw=1)
    axes[0].loglog(depths, d["theory_uniform"], "k--", lw=1,
                   label="theory, uniform: 4 sqrt(2n/3) (slope 0.5)")
    axes[0].loglog(depths, trf, ":", color="0.4", label="TRF = 2n + 1 (slope ~1)")
    rt = np.asarray(d["theory_uniform"]) / trf
    axes[1].loglog(depths, rt, "k--", lw=1, label="theory, uniform (slope -> -0.5)")
    axes[0].set_ylabel("ERF size (pixels, Gaussian 4 sigma)")
    axes[1].set_ylabel("ERF size / TRF size")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for ax in axes:
        ax.set_xlabel("number of layers n")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        ax.set_xticks(depths)
        ax.set_xticklabels([str(int(v)) for v in depths])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.tick_params(axis="y", which="minor", labelsize=7)
    head = _SETTING_LABELS[m["headline"]]
    axes[0].set_title(f"ERF size: exponent_size ({head}, mean map) = {m['exponent_size']:.2f} "
                      "(paper 0.56, theory 0.5)", fontsize=9)
    axes[1].set_title(f"ERF/TRF ratio: exponent_ratio ({head}) = {m['exponent_ratio']:.2f} "
                      "(paper -0.43, theory -0.5)", fontsize=9)
    fig.suptitle(f"ERF growth with depth (3x3 kernels, reduce='{m['reduce']}')", fontsize=11)
    return fig


def fig_nonlinearities(result) -> Figure:
    """The paper's Fig. 3: ERFs with ReLU, Tanh and Sigmoid at the same depth."""
    d, m = result["data"], result["measured"]
    names = list(d["maps"])
    fig, axes = plt.subplots(2, len(names), figsize=(4.0 * len(names) + 1.5, 8.5),
                             layout="constrained")
    size, depth = d["size"], d["depth"]
    region = _centre_region((size, size), 2 * depth + 1)
    im = None
    for j, name in enumerate(names):
        im = _map_panel(axes[0, j], normalize_map(d["maps"][name]), region=region,
                        title=f"{name}: mean of {m['maps_averaged']} maps\nGaussian fit R^2 "
                              f"{m['gaussian_r2_mean_map'][name]:.4f}")
        _map_panel(axes[1, j], normalize_map(d["singles"][name][0]), region=region,
                   title=f"{name}: one network, one input\nmean R^2 of such maps "
                         f"{m['gaussian_r2_single'][name]:.3f}")
        for a in axes[:, j]:
            a.set_xlabel("column")
            a.set_ylabel("row")
    fig.colorbar(im, ax=list(axes.ravel()), label="|dy/dx| / max (TRF dashed red)",
                 shrink=0.6)
    fig.suptitle(f"Nonlinearities: {depth} 3x3 layers, He-normal weights, the same draws and "
                 "inputs for each", fontsize=11)
    return fig


def fig_subsampling_dilation(result) -> Figure:
    """The paper's Fig. 4: plain stack vs. subsampled vs. dilated, same depth."""
    np = _np()
    d, m = result["data"], result["measured"]
    names = list(d["maps"])
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.4 * (len(names) + 1), 5),
                             layout="constrained")
    im = None
    labels = {"plain": "plain", "subsampled": f"stride 2 at layers {m['stride_layers']}",
              "dilated": f"dilations {m['dilations']}"}
    for j, name in enumerate(names):
        t = m["trf_size"][name]
        im = _map_panel(axes[j], normalize_map(d["maps"][name]), region=d["regions"][name],
                        title=f"{labels[name]}\nERF {m['erf_size'][name]:.1f}, TRF "
                              f"{t[0]}x{t[1]}")
        axes[j].set_xlabel("column")
        axes[j].set_ylabel("row")
    ax = axes[-1]
    for j, name in enumerate(names):
        mm = normalize_map(d["maps"][name])
        r = int(round((d["regions"][name][0][0] + d["regions"][name][0][1]) / 2))
        r = min(max(r, 0), mm.shape[0] - 1)
        ax.plot(np.arange(mm.shape[1]), mm[r], "-" if j < 2 else "--", color=f"C{j}",
                label=name)
    ax.set_xlabel("column")
    ax.set_ylabel("value / max (row through the unit)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("profiles", fontsize=9)
    fig.colorbar(im, ax=list(axes[:-1]), label="|dy/dx| / max (TRF dashed red)", shrink=0.85)
    fig.suptitle(f"Subsampling and dilation: {m['depth']} 3x3 ReLU layers, He init, mean over "
                 f"{m['draws']} weight draws x {m['images']} random inputs\n(dilation = the "
                 "subsampled net's jump at each layer: the same TRF, and with the same weights "
                 "the same ERF of the centre unit)", fontsize=11)
    return fig


def fig_training(result) -> Figure:
    """The paper's Fig. 5: ERFs before and after training, CIFAR-10 and CamVid."""
    import matplotlib.colors as mcolors

    np = _np()
    d, m = result["data"], result["measured"]
    fig, axes = plt.subplots(2, 3, figsize=(14, 9.5), layout="constrained")
    norm = mcolors.PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    im = im_c = None
    # CIFAR: draw the whole 74x74 TRF around the 32x32 image
    img = np.asarray(d["cifar_image"])
    axes[0, 0].imshow(img, origin="upper")
    axes[0, 0].set_title(f"CIFAR-10 test image 0 of {m['erf_images']} (32x32)", fontsize=9)
    (r0, r1), (c0, c1) = d["cifar_region"]
    for j, tag in enumerate(("before", "after"), start=1):
        ax = axes[0, j]
        im_c = _map_panel(ax, normalize_map(d[f"cifar_{tag}"]))  # linear: the maps are broad
        outline_region(ax, d["cifar_region"], color="red", lw=1.2, label="TRF 74x74")
        ax.set_xlim(min(c0, 0) - 1.5, max(c1, 31) + 1.5)
        ax.set_ylim(max(r1, 31) + 1.5, min(r0, 0) - 1.5)
        ax.add_patch(Rectangle((-0.5, -0.5), 32, 32, fill=False, edgecolor="white", lw=1))
        extra = f", test accuracy {m['cifar_test_accuracy']:.3f}" if tag == "after" else ""
        ax.set_title(f"CIFAR-10 {tag} training{extra}\nERF size "
                     f"{m[f'erf_cifar_{tag}']:.1f} px (image 32)", fontsize=9)
        ax.legend(loc="lower right", fontsize=7)
    img = np.asarray(d["camvid_image"])
    axes[1, 0].imshow(img, origin="upper")
    cu = d["camvid_unit"]
    axes[1, 0].plot([cu[1]], [cu[0]], "r+", ms=12)
    axes[1, 0].set_title(f"CamVid test image 0, centre crop {img.shape[0]}x{img.shape[1]}"
                         " (unit +)", fontsize=9)
    for j, tag in enumerate(("before", "after"), start=1):
        ax = axes[1, j]
        mm = normalize_map(d[f"camvid_{tag}"])
        im = _map_panel(ax, mm, norm=norm)  # square root: the maps are peaked
        extra = f", test mIoU {m['camvid_test_miou']:.3f}" if tag == "after" else ""
        ax.set_title(f"CamVid {tag} training{extra}\nERF size "
                     f"{m[f'erf_camvid_{tag}']:.1f} px", fontsize=9)
    for ax in axes.ravel():
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    fig.colorbar(im_c, ax=list(axes[0, 1:]), label="|dy/dx| / max (linear scale)", shrink=0.9)
    fig.colorbar(im, ax=list(axes[1, 1:]), label="|dy/dx| / max (square-root scale)",
                 shrink=0.9)
    src = "checkpoints" if m["from_checkpoints"] else "trained here"
    fig.suptitle(f"ERF before and after training (CIFAR-10: {m['cifar_steps']} steps, "
                 f"CamVid: {m['camvid_steps']} steps, {src}; mean over {m['erf_images']} test "
                 "images)", fontsize=11)
    return fig


def fig_erf_along_training(data) -> Figure:
    """ERF of one training run at initialisation, at the last checkpoint, and its size per step.

    ``data``: the dict of :func:`rfjax.experiments.erf_along_training`. The two maps share one
    colour scale (each divided by its maximum, square-root scale).
    """
    import matplotlib.colors as mcolors

    np = _np()
    steps, maps = list(data["steps"]), np.asarray(data["maps"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), layout="constrained",
                             gridspec_kw={"width_ratios": [1, 1, 1.4]})
    norm = mcolors.PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    im = None
    for ax, i in zip(axes[:2], (0, len(steps) - 1), strict=True):
        im = _map_panel(ax, normalize_map(maps[i]), norm=norm)
        if data["task"] == "camvid":  # CIFAR's unit is on the 4x4 (or 32x32) feature grid
            ax.plot([data["unit"][1]], [data["unit"][0]], "r+", ms=10)
        ax.set_title(f"step {steps[i]}: ERF size {data['size'][i]:.1f} px", fontsize=10)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    fig.colorbar(im, ax=list(axes[:2]), label="|dy/dx| / max (square-root scale)", shrink=0.9)
    ax = axes[2]
    hw, thr = np.asarray(data["size_hw"]), np.asarray(data["threshold_hw"])
    ax.plot(steps, data["size"], "o-", color="C0", label="4-sigma size (mean of axes)")
    ax.plot(steps, hw[:, 0], ":", color="C0", alpha=0.6, label="4-sigma, rows")
    ax.plot(steps, hw[:, 1], "--", color="C0", alpha=0.6, label="4-sigma, columns")
    ax.plot(steps, thr.mean(axis=1), "s-", color="C1", ms=4,
            label="threshold extent (4.55% of peak)")
    h, w = data["input_hw"]
    ax.axhline(min(h, w), color="k", lw=0.8, ls="--", label=f"input side ({min(h, w)} px)")
    ax.set_xlabel("training step")
    ax.set_ylabel("ERF extent (pixels)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    final = data.get("final") or {}
    score = final.get("test", {})
    tail = (f", test accuracy {score['accuracy']:.3f}" if "accuracy" in score else
            f", test mIoU {score['miou']:.3f}" if "miou" in score else "")
    unit = ("centre unit of the last feature map" if data["task"] == "cifar10"
            else "centre pixel of the logits")
    fig.suptitle(f"ERF during training: {data['task']} {data['arch']} (width {data['width']}, "
                 f"TRF {data['trf'][0]}x{data['trf'][1]}), {unit}, input "
                 f"{h}x{w}{tail}", fontsize=11)
    return fig


#: Experiment name -> figure function.
FIGURES = {
    "trf_example": fig_trf_example,
    "cnn_vs_transformer": fig_cnn_vs_transformer,
    "trf_vs_erf": fig_trf_vs_erf,
    "layers_and_init": fig_layers_and_init,
    "erf_growth": fig_erf_growth,
    "nonlinearities": fig_nonlinearities,
    "subsampling_dilation": fig_subsampling_dilation,
    "training": fig_training,
}


def paper_figure(result) -> Figure:
    """The figure of one experiment result (``result["name"]`` selects it)."""
    name = result.get("name")
    if name not in FIGURES:
        raise ValueError(f"no figure for experiment {name!r}; known: {sorted(FIGURES)}")
    return FIGURES[name](result)


# --------------------------------------------------------------------------------------------
# The receptive-field atlas (rfjax.atlas, scripts/atlas.py)
# --------------------------------------------------------------------------------------------


def fig_atlas_ratio(records) -> Figure:
    """ERF/TRF ratio (mean over axes) against the last stage's TRF size (mean over axes), one
    point per architecture record with an ERF, coloured by family; global TRFs are drawn as
    open markers (their size is the input's extent)."""
    np = _np()
    pts = []
    for r in records:
        erf = r.get("erf")
        ok = [s for s in r.get("stages", []) if "error" not in s]
        if not erf or not ok or not erf.get("erf_trf_ratio"):
            continue
        last = ok[-1]
        pts.append((r["family"], float(np.mean(last["size"])),
                    float(np.mean(erf["erf_trf_ratio"])), all(last["is_global"]), r["name"]))
    fams = sorted({p[0] for p in pts})
    cmap = plt.get_cmap("tab20")
    colours = {f: cmap(i % 20) for i, f in enumerate(fams)}
    fig, ax = plt.subplots(figsize=(9, 6))
    for f in fams:
        for glob in (False, True):
            sel = [p for p in pts if p[0] == f and p[3] == glob]
            if not sel:
                continue
            ax.scatter([p[1] for p in sel], [p[2] for p in sel], s=36,
                       facecolors="none" if glob else colours[f], edgecolors=colours[f],
                       label=None if glob else f)
    for p in pts:
        if p[4] in ("resnet50", "vgg16", "vit_b_16", "alexnet", "inception_v3", "swin_t"):
            ax.annotate(p[4], (p[1], p[2]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("TRF size of the last stage (pixels, mean of the axes; log)")
    ax.set_ylabel("ERF 4σ size / TRF size (mean of the axes)")
    ax.set_title(f"ERF/TRF at initialisation, {len(pts)} architectures (open: global TRF)",
                 fontsize=10)
    handles = [plt.Line2D([], [], ls="", marker="o", color=colours[f], label=f) for f in fams]
    if handles:
        ax.legend(handles=handles, fontsize=7, ncol=2, loc="upper right", frameon=False)
    ax.grid(alpha=0.3, which="both")
    return fig


def fig_atlas_gallery(items) -> Figure:
    """Centre-unit TRF masks (top of each pair) and ERF maps (below) of a few models.

    Args:
      items: ``[(name, trf_mask, erf_map_or_None)]``; each ERF map is scaled to peak 1 and
        all share one colour scale ``[0, 1]``; masks are drawn in grey.
    """
    np = _np()
    n = len(items)
    cols = min(n, 6) or 1
    rows = -(-n // cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(2.0 * cols, 4.1 * rows), squeeze=False)
    im = None
    for k in range(rows * cols):
        a_mask, a_erf = axes[2 * (k // cols), k % cols], axes[2 * (k // cols) + 1, k % cols]
        if k >= n:
            a_mask.axis("off")
            a_erf.axis("off")
            continue
        name, mask, emap = items[k]
        a_mask.imshow(np.asarray(mask, float), cmap=ListedColormap(["#1b1b1b", "#9ecae1"]),
                      vmin=0, vmax=1, interpolation="nearest")
        a_mask.set_title(f"{name}\nTRF mask", fontsize=7)
        if emap is not None:
            im = _map_panel(a_erf, normalize_map(np.asarray(emap)), vmax=1.0, title="ERF")
        else:
            a_erf.text(0.5, 0.5, "no ERF", ha="center", va="center", fontsize=7)
        for a in (a_mask, a_erf):
            a.set_xticks([])
            a.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="ERF / its peak")
    return fig
