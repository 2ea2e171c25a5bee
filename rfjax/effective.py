"""The effective receptive field (ERF) of any JAX function, batched, cached and cropped.

Definition (Luo, Li, Urtasun & Zemel, NIPS 2016). For an output unit ``u`` (a tuple of output
spatial indices) and one image ``x_n`` of shape ``(*spatial, C)``::

    s_n = sum_c  fn(x_n)[u, c]            # over the output channels (or a selection)
    g_n = d s_n / d x_n                   # shape (*spatial, C), same dtype as x
    m_n = sum_k  reduce(g_n[..., k])      # over the input channels
    ERF = mean_n m_n                      # over the images with a finite gradient

``reduce`` is applied per input element: ``"abs"`` |g| (the paper's; the default),
``"grad"`` g (signed), ``"relu"`` max(g, 0) (RepLKNet's clamp), ``"square"`` g**2.
Orientation is cross-correlation: for one conv layer with kernel ``k`` (``lax.conv``
semantics), ``d y[i, j] / d x[i + a - 1, j + b - 1] = k[a, b]``, so a signed ERF of one layer
*is* its kernel, not the flipped kernel.
The sum over channels can cancel: after a LayerNorm with unit gain and zero bias it is zero
for every input, and the map is rounding noise. Each call checks this on its first image and
warns (:class:`NoiseMapWarning`, ``ERF.noise``; see ``check_noise`` of :func:`erf`).

Conventions of the public scripts (``convention=``):

* ``"paper"`` (default): as above, with the chosen ``reduce``.
* ``"replknet"``: RepLKNet's ``erf/visualize_erf.py`` (``get_input_grad``): the target is
  ``relu(output[:, :, H//2, W//2]).sum()`` (relu of every centre channel, then summed), the
  gradient is clamped with ``relu`` per element and summed over the input channels; images
  whose map has a NaN are skipped ("got NAN, next image") and the rest averaged
  (``AverageMeter``). ``reduce`` is left at its default (it becomes ``"relu"``).
* ``"openerf"``: OpenERF's ``src/openerf/erf.py``: the target is the *mean* over the output
  channels at the centre, the gradient is averaged over the input channels *first* and then
  clamped at zero (``grad.mean(dim=(0, 1)).clamp(min=0)``); the maps are summed over images.
  OpenERF finally divides by the map's total; here the maps are averaged instead (divide
  ``map`` by ``map.sum()`` to get theirs).

Speed. Every call is a jitted batched VJP: the gradient of ``sum_n s_n`` with respect to the
whole batch gives every ``g_n`` at once (images never interact in an inference-mode network;
``method="vmap"`` computes ``vmap(grad)`` per image instead). Compiled functions are cached
per function object (weakly: the cache entry dies with the function or module) and per
options; jax's own jit cache adds shapes, so a second call with the same ``fn`` and shapes
never retraces. ``functools.partial(module.apply, params)``, Flax NNX modules and Equinox
modules are unwrapped so that their arrays are jit *arguments*, not constants folded into the
program. ``batch_size`` chunks large inputs (the last chunk is padded to the same shape and
its padding masked out; on CPU the default is 16 images, which keeps several chunks in flight).
With several devices the batch axis is sharded over all of them. Cropping (``crop=``)
evaluates only what the unit depends on (see :mod:`rfjax.cone`): an input window or, faster,
every layer on the unit's dependency cone. A crop is checked once per function and shape on
the first image against the uncropped gradient (``allclose`` with ``rtol = 1e-4``, ``atol =
1e-4 * max|g|`` in float32) and dropped with a warning when they differ. ``ERF.crop`` says
what was used.

Measured on the project's loaded 2-core CPU (10-layer, 64-channel 3x3 ReLU stack, He init, 64
RGB images of 64x64, float32, steady state after compilation): ``crop="none"`` ~15-25
images/s, ``"input"`` ~170-340, ``"cone"`` ~450-950; 16 layers at 224x224: ``"none"`` ~1,
``"cone"`` ~80-130 images/s.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rfjax import adapters, callables
from rfjax import batches as _input
from rfjax.callables import InputTypeError
from rfjax.intermediate import intermediate_apply as _intermediate_apply
from rfjax.progress import progress as _progress_bar
from rfjax.selection import check_unit, explain_trace_error, select_output

__all__ = ["ERF", "CONVENTIONS", "PRECISIONS", "REDUCTIONS", "InputTypeError",
           "NoiseMapWarning", "erf", "erf_merge", "erf_intermediate", "erf_weight_draws",
           "select_output"]

REDUCTIONS = ("abs", "grad", "relu", "square")
CONVENTIONS = ("paper", "replknet", "openerf")
CROPS = ("auto", "cone", "input", "none")
METHODS = ("vjp", "vmap")


class NoiseMapWarning(UserWarning):
    """The ERF map is zero or rounding noise: the target's gradient is below ``sqrt(eps)`` of
    the per-channel gradient scale (see :func:`erf`, ``check_noise``), as for the channel sum of
    a LayerNorm output. Its size means nothing; pick one channel (``channels=0``) or another
    target."""


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["map", "per_image"],
    meta_fields=["count", "nonfinite", "unit", "reduce", "convention", "crop", "noise"],
)
@dataclasses.dataclass(frozen=True)
class ERF:
    """An effective receptive field: the mean gradient map of one output unit.

    Attributes:
      map: ``(*spatial,)`` float array, the input's spatial shape: the mean over ``count``
        images of the per-image map (see the module docstring for the definition).
      count: number of images averaged into ``map``.
      nonfinite: number of images whose gradient had a NaN or inf: excluded, never averaged.
      unit: the output unit (tuple of output spatial indices).
      per_image: ``(n_images, *spatial)`` per-image maps in input order when requested
        (``per_image=True``), rows of excluded (non-finite) images are NaN; else ``None``.
      reduce: the per-element reduction used (``"abs"``, ``"grad"``, ``"relu"``, ``"square"``
        or ``"mean-relu"`` for the OpenERF convention).
      convention: ``"paper"``, ``"replknet"`` or ``"openerf"``.
      crop: what was evaluated: ``"none"`` (the whole input), ``"input"`` (a grid-aligned input
        window) or ``"cone"`` (every layer on the unit's dependency cone only).
      noise: the map is zero or rounding noise (a :class:`NoiseMapWarning` was issued): the
        target's gradient was below ``sqrt(eps)`` of the per-channel gradient scale on the
        first image (see :func:`erf`, ``check_noise``); ``False`` when not checked.
    """

    map: jax.Array
    count: int
    nonfinite: int
    unit: tuple[int, ...]
    per_image: jax.Array | None = None
    reduce: str = "abs"
    convention: str = "paper"
    crop: str = "none"
    noise: bool = False

    def merge(self, other: ERF) -> ERF:
        """The running mean of two results of the same unit (``count``-weighted).

        ``a.merge(b).map == mean over the images of a and b``; ``per_image`` is concatenated
        when both carry it.
        """
        return erf_merge(self, other)


def erf_merge(a: ERF, b: ERF) -> ERF:
    """Merge two :class:`ERF` results of the same unit into their running (count-weighted) mean.

    Raises:
      ValueError: when the units, map shapes, reductions or conventions differ.
    """
    if not isinstance(a, ERF) or not isinstance(b, ERF):
        raise InputTypeError(f"erf_merge takes two ERF results, got {type(a)} and {type(b)}")
    if a.unit != b.unit:
        raise ValueError(f"cannot merge ERFs of different units {a.unit} and {b.unit}")
    if a.map.shape != b.map.shape:
        raise ValueError(f"cannot merge ERF maps of shapes {a.map.shape} and {b.map.shape}")
    if (a.reduce, a.convention) != (b.reduce, b.convention):
        raise ValueError(
            f"cannot merge ERFs computed with reduce/convention {a.reduce}/{a.convention} "
            f"and {b.reduce}/{b.convention}"
        )
    n = a.count + b.count
    if n == 0:
        new_map = jnp.zeros_like(a.map)
    else:
        new_map = (a.map * a.count + b.map * b.count) / n
    per = None
    if a.per_image is not None and b.per_image is not None:
        per = jnp.concatenate([a.per_image, b.per_image], axis=0)
    crop = a.crop if a.crop == b.crop else f"{a.crop}+{b.crop}"
    return ERF(new_map, n, a.nonfinite + b.nonfinite, a.unit, per, a.reduce, a.convention, crop,
               a.noise or b.noise)


# --------------------------------------------------------------------------------------------
# The traced core: per-image maps of one chunk
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Static options of one compiled computation (hashable: part of the cache key)."""

    unit: tuple[int, ...]
    channels: tuple[int, ...] | None
    reduce: str
    convention: str
    output: Any
    method: str
    per_image: bool
    precision: str = "highest"


#: Matmul/convolution precision -> tolerance of the crop verification (relative to the
#: gradient's maximum; a real crop error is of the order of the gradient itself).
PRECISIONS = {"highest": 1e-4, "high": 1e-2, "default": 5e-2}


def _target(out: jax.Array, spec: _Spec, unit: tuple[int, ...], weights=None) -> jax.Array:
    """Per-image scalar ``s_n`` from the batched output ``(B, *spatial_out, C_out)``.

    ``weights`` (one per selected channel) weight the channels before their sum (the noise
    probe, :func:`_make_probe_fn`); ``None`` is the ERF's target.
    """
    v = out[(slice(None), *unit)]  # (B, C_out)
    if spec.channels is not None:
        v = v[:, jnp.asarray(spec.channels)]
    if spec.convention == "replknet":
        v = jax.nn.relu(v)
    if weights is not None:
        v = v * weights.astype(v.dtype)
    if spec.convention == "openerf":
        return v.mean(axis=-1)
    return v.sum(axis=-1)


def _reduce_map(g: jax.Array, spec: _Spec) -> jax.Array:
    """Per-image map ``(B, *spatial)`` from the gradient ``(B, *spatial, C)``."""
    if spec.convention == "openerf":
        return jnp.maximum(g.mean(axis=-1), 0)
    r = spec.reduce
    if r == "abs":
        e = jnp.abs(g)
    elif r == "grad":
        e = g
    elif r == "relu":
        e = jnp.maximum(g, 0)
    else:
        e = g * g
    return e.sum(axis=-1)


def _input_grad(apply: Callable, x: jax.Array, spec: _Spec, unit: tuple[int, ...],
                weights=None) -> jax.Array:
    """Per-image gradients ``(B, *spatial, C)`` of ``s_n`` w.r.t. image n of ``x``."""
    if spec.method == "vmap":

        def one(xi):
            return _target(select_output(apply(xi[None]), spec.output), spec, unit,
                           weights)[0]

        return jax.vmap(jax.grad(one))(x)

    # Batched VJP: images are independent, so d(sum_n s_n)/dx stacks every d s_n / d x_n.
    def total(xb):
        return _target(select_output(apply(xb), spec.output), spec, unit, weights).sum()

    return jax.grad(total)(x)


def _place(window_maps: jax.Array, window: tuple[tuple[int, int], ...], shape) -> jax.Array:
    """Zero-pad maps computed on an input window back to the full spatial shape."""
    pads = [(0, 0)] + [(a, s - b) for (a, b), s in zip(window, shape, strict=True)]
    return jnp.pad(window_maps, pads)


def _summarise(maps: jax.Array, g: jax.Array, mask: jax.Array, spec: _Spec):
    """Sum of the finite, valid per-image maps, their count and the non-finite count."""
    axes = tuple(range(1, g.ndim))
    finite = jnp.all(jnp.isfinite(g), axis=axes)
    maps = maps.astype(jnp.promote_types(maps.dtype, jnp.float32))  # bf16/f16: sum in f32
    good = mask & finite
    shape = (-1,) + (1,) * (maps.ndim - 1)
    total = jnp.where(good.reshape(shape), maps, 0).sum(axis=0)
    count = good.sum()
    bad = (mask & ~finite).sum()
    per = jnp.where(good.reshape(shape), maps, jnp.nan) if spec.per_image else None
    return total, count, bad, per


def _make_chunk_fn(rebuild, spec: _Spec, mode: str, plan: Any, spatial: tuple[int, ...]):
    """The jitted ``(dyn, x, mask, unit) -> (sum map, count, nonfinite, per-image maps)``.

    Uncropped, ``unit`` is a traced int array, so every unit shares one compilation; a crop
    bakes its unit into the plan and ignores the argument.
    """

    def run(dyn, x, mask, unit):
        g, window = _mode_grad(rebuild, dyn, x, spec, mode, plan, unit)
        maps = _reduce_map(g, spec)
        if window is not None:
            maps = _place(maps, window, spatial)
        return _summarise(maps, g, mask, spec)

    return jax.jit(run)


def _mode_grad(rebuild, dyn, x, spec: _Spec, mode: str, plan: Any, unit=None, weights=None):
    """Gradient for one crop mode: ``(g on the evaluated window, window or None)``, traced at
    the matmul/convolution precision ``spec.precision``."""
    with jax.default_matmul_precision(spec.precision):
        return _mode_grad_at(rebuild, dyn, x, spec, mode, plan, unit, weights)


def _mode_grad_at(rebuild, dyn, x, spec: _Spec, mode: str, plan: Any, unit=None,
                  weights=None):
    if mode == "none":
        unit = spec.unit if unit is None else tuple(unit[i] for i in range(len(spec.unit)))
        return _input_grad(rebuild(dyn), x, spec, unit, weights), None
    window = plan.window
    xw = x[(slice(None), *(slice(a, b) for a, b in window))]
    if mode == "input":
        return _input_grad(rebuild(dyn), xw, spec, plan.unit, weights), window
    # mode == "cone": the windowed interpreter of fn's (already output-selected) jaxpr.
    cone_spec = dataclasses.replace(spec, output=None)
    return _input_grad(functools.partial(plan.apply, dyn), xw, cone_spec, plan.unit,
                       weights), window


def _progress(total: int | None, desc: str, enabled: bool = True):
    return _progress_bar(total, desc, enabled, unit="chunk", leave=False)


def _make_full_grad_fn(rebuild, spec: _Spec, mode: str, plan: Any, spatial: tuple[int, ...]):
    """Jitted raw gradient placed on the full input (for verifying a crop)."""

    def run(dyn, x):
        g, window = _mode_grad(rebuild, dyn, x, spec, mode, plan)
        if window is not None:
            pads = [(0, 0)] + [(a, s - b) for (a, b), s in zip(window, spatial, strict=True)]
            g = jnp.pad(g, pads + [(0, 0)])
        return g

    return jax.jit(run)


def _make_probe_fn(rebuild, spec: _Spec, mode: str, plan: Any):
    """Jitted ``(dyn, x1, unit, signs) -> (||g||, ||g_w||)`` for one image ``x1``: the L2 norms
    of the target's gradient ``g`` and of the gradient ``g_w`` of the same target with its
    channels weighted by ``signs`` (one forward pass; the two backward passes are vmapped).
    """

    def run(dyn, x1, unit, signs):
        weights = jnp.stack([jnp.ones_like(signs), signs])
        g = jax.vmap(lambda w: _mode_grad(rebuild, dyn, x1, spec, mode, plan, unit, w)[0])(
            weights)
        g = g.astype(jnp.promote_types(g.dtype, jnp.float32))
        scale = jnp.max(jnp.abs(g))  # scaled sums of squares: no underflow of tiny gradients
        safe = jnp.where(scale > 0, scale, 1)
        return jnp.sqrt(jnp.sum((g / safe) ** 2, axis=tuple(range(1, g.ndim)))) * scale

    return jax.jit(run)


# --------------------------------------------------------------------------------------------
# The public entry points
# --------------------------------------------------------------------------------------------


def _check_options(reduce, convention, crop, method, channels):
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    # The conventions fix their own reduction; reduce's default ("abs") means "not given".
    if convention == "replknet":
        if reduce not in ("abs", "relu"):
            raise ValueError("the 'replknet' convention fixes reduce='relu'; leave reduce unset")
        reduce = "relu"
    elif convention == "openerf":
        if reduce != "abs":
            raise ValueError("the 'openerf' convention fixes its reduction (channel mean, then "
                             "clamp at zero); leave reduce unset")
        reduce = "mean-relu"
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if channels is not None:
        channels = (int(channels),) if np.ndim(channels) == 0 else tuple(int(c) for c in channels)
    return reduce, channels


def _output_shape(entry: callables.CacheEntry, res: callables.Resolved, output: Any,
                  x_aval) -> tuple[int, ...]:
    def call(d, x):
        try:
            out = res.rebuild(d)(x)
        except Exception as e:  # say how rfjax read the input, keep the user's error chained
            raise explain_trace_error(e, x_aval.shape) from e
        return select_output(out, output)

    def make():
        out = jax.eval_shape(call, res.dyn, x_aval)
        if not hasattr(out, "shape"):
            raise ValueError(
                f"fn's output is a {type(out).__name__}, not an array; select the array with "
                "output= (an index, a path like '1/block2' or a callable)"
            )
        return tuple(out.shape)

    key = (output, x_aval.shape, x_aval.dtype, callables.signature(res.dyn))
    return entry.get("shapes", key, make)


def _unit_of(unit, out_shape: tuple[int, ...], n: int) -> tuple[int, ...]:
    """The unit of an ``(N, *spatial, C)`` output of a batch of ``n`` images (default centre)."""
    if len(out_shape) < 3:
        raise ValueError(
            f"fn's output has shape {out_shape}: it needs (N, *spatial, C) with at least one "
            "spatial axis to pick a unit from (an output without spatial axes has no ERF map)"
        )
    if out_shape[0] != n:
        raise ValueError(
            f"fn's output has leading size {out_shape[0]} for a batch of {n} images; the "
            "first axis of input and output must be the batch axis"
        )
    return check_unit(unit, out_shape[1:-1], centre=True)


def erf(
    fn: Callable,
    x: Any,
    unit: Sequence[int] | None = None,
    reduce: str = "abs",
    batch_size: int | None = None,
    *,
    channels: int | Sequence[int] | None = None,
    convention: str = "paper",
    output: Any = None,
    crop: str = "auto",
    per_image: bool = False,
    method: str = "vjp",
    image_key: str | Callable[[Any], Any] = "image",
    shard: bool = True,
    verify: bool = True,
    check_noise: bool = True,
    progress: bool = True,
    channel_axis: int | None = None,
    grid: Sequence[int] | None = None,
    prefix_tokens: int = 0,
    layer: str | None = None,
    precision: str = "highest",
) -> ERF:
    """The effective receptive field of one output unit of ``fn``, averaged over images.

    Args:
      fn: a model or function of one batch, ``(N, *spatial, C) -> (N, *spatial_out, C_out)``
        in its own layout: a plain JAX function, ``functools.partial(module.apply, params)``,
        an NNX module, a ``torch.nn.Module`` (with its current weights), a Keras 3 model (JAX
        backend), a Haiku pair ``(transformed, params[, state])``, an Equinox module
        (single-example: rfjax vmaps it). See :mod:`rfjax.adapters`. Images must not
        interact (inference mode: rfjax evaluates torch and Keras models in it).
      x: a float batch with a leading batch axis and 1 to 3 spatial axes (an array or a torch
        tensor), or an iterable of such batches (a generator, a TFDS/grain iterator, a torch
        DataLoader of tensors) yielding arrays or dicts (the image under ``image_key``). All
        batches share one image shape.
      unit: output spatial indices; default the centre ``(H_out // 2, W_out // 2, ...)``.
      reduce: per-element reduction ``"abs"`` (the paper's, default), ``"grad"``, ``"relu"`` or
        ``"square"``. The other conventions fix their own (leave it at its default).
      batch_size: images per compiled chunk (default: the first batch's size, at most 16 on
        CPU). The last chunk is padded to this size and the padding masked out, so one shape
        is compiled.
      channels: output channel(s) whose sum is the target (default all).
      convention: ``"paper"``, ``"replknet"`` or ``"openerf"`` (see the module docstring).
      output: selects the array from ``fn``'s output (see :func:`select_output`).
      crop: ``"auto"`` (the cone if it can be derived, else an input window, else nothing),
        ``"cone"``, ``"input"`` or ``"none"``. A crop is verified on the first image against
        the uncropped gradient (``verify=True``) and dropped with a warning if it differs.
      per_image: also return every image's map (``ERF.per_image``).
      method: ``"vjp"`` (one batched VJP, the default, faster) or ``"vmap"`` (vmap of grad).
      image_key: key of the image in dict batches, or a callable applied to every batch
        that returns the float image array (to select and normalise, e.g. uint8 TFDS images:
        ``lambda b: b["image"].astype(np.float32) / 255``).
      shard: shard each chunk's batch axis over ``jax.devices()`` when there are several.
      verify: check a crop against the uncropped gradient on the first image.
      check_noise: check on the first image that the map is not rounding noise. A target
        whose gradient cancels, like the channel sum of a LayerNorm output (unit gain, zero
        bias: ``sum_c y_c = 0`` for every input, so its gradient is zero up to rounding), has
        an ERF of noise. The check compares the L2 norm of the target's gradient ``g`` with
        that of ``g_w``, the gradient of the same target with its channels weighted by fixed
        random signs ``w_c = +-1`` (``E ||g_w||^2 = sum_c ||d v_c/d x||^2``: the scale of the
        per-channel gradients, whatever cancels in their sum). The map is flagged as noise
        when ``||g|| <= sqrt(eps) ||g_w||`` (``eps`` of the input dtype: ~3.5e-4 in float32,
        1.5e-8 in float64); a real ERF has a ratio of order 1 or more, rounding one of order
        ``eps``. Then a :class:`NoiseMapWarning` suggests ``channels=`` (one channel) or
        another target, and ``ERF.noise`` is ``True``. The image is skipped when its gradient
        is not finite or ``g_w = 0`` (a unit that depends on nothing). Costs one forward and
        two backward passes of one image per call (on the crop in use).
      progress: show a tqdm bar over chunks (never when stderr is not a terminal or
        ``RFJAX_NO_PROGRESS=1``).
      channel_axis: the channel axis of the batches (default: the framework's; 1 for torch
        and Equinox, -1 otherwise). The map is over the spatial axes either way; outputs of the
        input's rank are read in the same layout.
      grid, prefix_tokens: read token outputs ``(N, T, C)`` as ``(N, *grid, C)`` after
        dropping ``prefix_tokens`` leading tokens (a ViT's class token), so that ``unit`` is a
        patch position and the ERF of a token is a map.
      layer: a torch submodule path or a Keras layer name: the ERF of that layer's output.
      precision: the precision of the matmuls and convolutions of the forward and backward
        passes (``jax.default_matmul_precision``): ``"highest"`` (the default: full float32,
        as on the CPU; rfjax's maps are then the same on every backend), ``"high"`` or
        ``"default"`` (the accelerator's fast path: TF32 on recent NVIDIA GPUs, measured
        1-2% of the map's maximum away from ``"highest"`` for 10-20 conv layers). The
        verification of a crop compares at a tolerance that follows it (``PRECISIONS``), so
        a fast precision never makes a correct crop fall back. A bfloat16 model keeps its
        dtype; its maps are summed in float32.

    Returns:
      :class:`ERF` with ``map`` of the input's spatial shape, in the input's float dtype.

    Raises:
      ValueError: a wrong input rank or missing batch axis, a unit outside the output, an empty
        iterable, batches of different shapes, an unknown ``reduce``/``convention``/``crop``,
        an output without spatial axes.
      InputTypeError: (a ``TypeError`` and ``ValueError``) a non-callable ``fn``, a non-float
        input.
    """
    if not callable(fn) and not isinstance(fn, tuple):
        raise InputTypeError(f"fn must be callable (a function of one array), got {type(fn)}")
    reduce, channels = _check_options(reduce, convention, crop, method, channels)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    devices = jax.devices()
    ndev = len(devices) if shard else 1
    sharding = None
    if ndev > 1:
        mesh = Mesh(np.asarray(devices), ("batch",))
        sharding = NamedSharding(mesh, PartitionSpec("batch"))

    raw = _input.batches(x, image_key)
    first = next(raw, None)
    if first is None:
        raise ValueError("x is an empty iterable: no batches to average over")
    prep = adapters.prepare(fn, first, channel_axis=channel_axis, grid=grid,
                            prefix_tokens=prefix_tokens, layer=layer)
    res = prep.resolved
    first = prep.to_array(first)
    batches = map(prep.to_array, raw)
    _input.check_batch(first, "batch 0")
    entry = callables.cache_entry(res)
    spec, mode, plan = _plan(entry, res, first[:1], unit, reduce, channels, convention, output,
                             crop, per_image, method, verify, precision)
    if batch_size is None:
        # On CPU, several small chunks in flight beat one big one: measured on a 2-core CPU
        # for 64 images of a 10-layer 64-channel stack at 64x64, 16-image chunks ran the cone
        # ~3x and the uncropped gradient ~1.4x faster than one 64-image chunk.
        cpu = jax.default_backend() == "cpu"
        batch_size = min(first.shape[0], _CPU_CHUNK) if cpu else first.shape[0]
    ratio = _noise_ratio(entry, res, spec, mode, plan, first[:1], output) if check_noise else None
    batch_size = -(-batch_size // ndev) * ndev
    total = -(-x.shape[0] // batch_size) if hasattr(x, "shape") else None
    chunks = _input.chunks(itertools.chain([first], batches), batch_size, ndev)

    dyn = res.dyn
    unit_arg = np.asarray(spec.unit, np.int32)
    if sharding is not None:  # parameters (and the unit) replicated on every device
        dyn, unit_arg = jax.device_put((dyn, unit_arg), NamedSharding(sharding.mesh,
                                                                      PartitionSpec()))
    acc = None
    count = bad = 0
    per_list: list = []
    state = None
    with _progress(total, "ERF", progress) as bar:
        for chunk, n in chunks:
            if state is None:
                state = {"fn": _chunk_fn(entry, res, spec, mode, plan, chunk)}
            if sharding is not None:
                chunk = jax.device_put(chunk, sharding)
                mask = jax.device_put(np.arange(chunk.shape[0]) < n, sharding)
            else:
                mask = np.arange(chunk.shape[0]) < n
            s, c, b, per = state["fn"](dyn, chunk, mask, unit_arg)
            acc = s if acc is None else acc + s
            count = count + c
            bad = bad + b
            if per_image:
                per_list.append(per[:n])
            bar.update(1)
    count = int(count)
    mean = acc / count if count else jnp.zeros_like(acc)
    per = jnp.concatenate(per_list, axis=0) if per_image else None
    tau = float(np.sqrt(jnp.finfo(first.dtype).eps))
    noise = ratio is not None and ratio <= tau
    if noise:
        agg = "mean" if convention == "openerf" else "sum"
        n_ch = "the selected channels" if channels is not None else "every output channel"
        warnings.warn(
            f"rfjax.erf: the ERF map of unit {spec.unit} is rounding noise (map maximum "
            f"{float(jnp.max(jnp.abs(mean))):.3g}): the gradient of the target (the {agg} over "
            f"{n_ch} at the unit) is {ratio:.3g} times the per-channel gradient scale, below "
            f"sqrt(eps) = {tau:.3g} of {first.dtype}. The {agg} is constant, as after a LayerNorm "
            "(unit gain, zero bias), so its size means nothing; pick one channel (channels=0) "
            "or another target (an earlier layer)",
            NoiseMapWarning,
            stacklevel=2,
        )
    return ERF(mean, count, int(bad), spec.unit, per, reduce, convention, mode, noise)


_CPU_CHUNK = 16


def _noise_ratio(entry, res, spec, mode, plan, x1, output) -> float | None:
    """``||g|| / ||g_w||`` on the image ``x1`` (see ``check_noise`` of :func:`erf`), or ``None``
    when a gradient is not finite or ``g_w`` is zero."""
    skey = dataclasses.replace(spec, unit=len(spec.unit)) if mode == "none" else spec
    key = ("probe", skey, mode, plan, x1.shape, str(x1.dtype))
    f = entry.get("compiled", key, lambda: _make_probe_fn(res.rebuild, spec, mode, plan))
    aval = jax.ShapeDtypeStruct(x1.shape, x1.dtype)
    n = len(spec.channels) if spec.channels is not None else _output_shape(
        entry, res, output, aval)[-1]
    signs = np.where(np.random.default_rng(0).random(n) < 0.5, -1.0, 1.0).astype(np.float32)
    if n > 1:
        signs[1] = -signs[0]  # never all equal (then g_w would be +-g)
    a, b = (float(v) for v in f(res.dyn, x1, np.asarray(spec.unit, np.int32), signs))
    if not (np.isfinite(a) and np.isfinite(b)) or b == 0:
        return None
    return a / b


def _chunk_fn(entry, res, spec, mode, plan, chunk):
    """The compiled chunk function for this spec, crop and chunk shape (cached)."""
    # Uncropped, the unit is an argument: keyed by the number of unit axes, not their values.
    skey = dataclasses.replace(spec, unit=len(spec.unit)) if mode == "none" else spec
    fkey = ("chunk", skey, mode, plan, chunk.shape, str(chunk.dtype))
    return entry.get("compiled", fkey, lambda: _make_chunk_fn(res.rebuild, spec, mode, plan,
                                                              tuple(chunk.shape[1:-1])))


def _plan(entry, res, chunk, unit, reduce, channels, convention, output, crop, per_image,
          method, verify, precision="highest"):
    """Resolve the unit, pick and verify the crop: ``(spec, mode, plan)``.

    ``chunk`` is one image ``(1, *spatial, C)`` (shapes are all that matter, and the
    verification runs on it).
    """
    x_aval = jax.ShapeDtypeStruct(chunk.shape, chunk.dtype)
    out_shape = _output_shape(entry, res, output, x_aval)
    unit = _unit_of(unit, out_shape, chunk.shape[0])
    spec = _Spec(unit, channels, reduce, convention, output, method, per_image, precision)
    spatial = tuple(chunk.shape[1:-1])
    mode, plan = "none", None
    if crop != "none":
        from rfjax import cone

        mode, plan = cone.plan_crop(entry, res, spec.unit, output, x_aval, crop)
    if mode != "none" and verify:
        # Once per plan: whether a crop is exact is structural (it depends on the graph, not
        # on weight values), so later calls with the same function and shapes reuse the
        # outcome instead of paying an uncropped gradient each time.
        vkey = ("verified", spec, mode, plan, x_aval.shape[1:], str(x_aval.dtype))
        if vkey in entry.verified:
            mode, plan = entry.verified[vkey]
        else:
            mode, plan, checked = _verify(entry, res, spec, mode, plan, chunk, spatial,
                                          output)
            if checked:
                entry.verified[vkey] = (mode, plan)
    return spec, mode, plan


def _verify(entry, res, spec, mode, plan, chunk, spatial, output):
    """Compare the cropped gradient of the first image with the uncropped one.

    Returns ``(mode, plan, checked)``: ``(mode, plan)`` unchanged when they agree
    (``allclose``, ``rtol = tol``, ``atol = tol * max|g|``, ``tol`` the precision's in
    ``PRECISIONS``; 1e-10 in float64), else ``("none", None)`` with a warning. Non-finite
    gradients cannot be compared, nor can rounding noise (see ``check_noise`` of
    :func:`erf`): ``checked`` False, the next call tries again.
    """
    x1 = chunk[:1]
    grads = {}
    for m, p in ((mode, plan), ("none", None)):
        key = ("grad", spec, m, p, x1.shape, str(x1.dtype))
        f = entry.get("compiled", key,
                      lambda m=m, p=p: _make_full_grad_fn(res.rebuild, spec, m, p, spatial))
        grads[m] = np.asarray(f(res.dyn, x1))
    a, b = grads[mode], grads["none"]
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return mode, plan, False  # nothing to compare on a non-finite image
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    tol = PRECISIONS[spec.precision] if b.dtype != np.float64 else 1e-10
    if np.allclose(a, b, rtol=tol, atol=tol * max(scale, 1e-30)):
        return mode, plan, True
    ratio = _noise_ratio(entry, res, spec, "none", None, x1, output)
    if ratio is not None and ratio <= float(np.sqrt(jnp.finfo(x1.dtype).eps)):
        return mode, plan, False  # two roundings of zero differ: erf warns about the noise
    warnings.warn(
        f"rfjax.erf: the {mode!r} crop changed the gradient of the first image (max abs "
        f"difference {float(np.max(np.abs(a - b))):.3g} against max {scale:.3g}); fn is not "
        "translation-equivariant and local there, so the uncropped gradient is used",
        stacklevel=4,
    )
    return "none", None, True


# --------------------------------------------------------------------------------------------
# Intermediate units and weight draws
# --------------------------------------------------------------------------------------------


def erf_intermediate(
    module: Any,
    variables: Any,
    x: Any,
    name: str,
    *,
    collection: str = "intermediates",
    apply_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> ERF:
    """The ERF of a unit of an inner layer of a Flax linen model, addressed by name.

    ``name`` is the submodule path as in ``capture_intermediates`` (``"Conv_3"``,
    ``"block2/conv"``), or a name ``sow``n into ``collection`` (e.g. ``self.sow(
    "intermediates", "feat", h)`` -> ``name="feat"``), or a key of the intermediates dict of a
    model that returns ``(out, intermediates)``. The layer's output must be ``(N, *spatial,
    C)``. ``apply_kwargs`` go to ``module.apply`` (e.g. ``{"train": False}`` for a model whose
    call defaults to training mode: BatchNorm must use its running averages, as in
    :class:`rfjax.models.zoo.ResNet`, or the images of a batch interact and a model that updates
    ``batch_stats`` raises a ``ValueError`` naming the flag). ``kwargs`` go to :func:`erf`
    (``unit`` indexes the layer's output). Cached per module and name like :func:`erf`.
    """
    if not hasattr(module, "apply"):
        raise InputTypeError(f"module must be a Flax linen Module, got {type(module)}")
    fn = functools.partial(_intermediate_apply, module, name, collection, variables,
                           apply_kwargs=dict(apply_kwargs or {}))
    return erf(fn, x, **kwargs)


def erf_weight_draws(
    init_fn: Callable[[jax.Array], Any],
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    keys: jax.Array,
    x: jax.Array,
    unit: Sequence[int] | None = None,
    reduce: str = "abs",
    *,
    channels: int | Sequence[int] | None = None,
    convention: str = "paper",
    output: Any = None,
    method: str = "vjp",
    precision: str = "highest",
) -> tuple[ERF, jax.Array]:
    """The ERF averaged over random weight draws (the paper's protocol), vmapped over keys.

    Args:
      init_fn: ``init_fn(key) -> params``.
      apply_fn: ``apply_fn(params, x) -> (N, *spatial_out, C_out)``.
      keys: PRNG keys ``(K,)`` (new-style) or ``(K, 2)`` (raw uint32).
      x: one float batch ``(N, *spatial, C)``, used for every draw.
      precision: as in :func:`erf`.

    Returns:
      ``(mean, per_draw)``: ``mean`` an :class:`ERF` whose map is the mean over draws of each
      draw's image-averaged map (``count`` = finite (draw, image) pairs), and ``per_draw``
      ``(K, *spatial)`` the per-draw maps (NaN for a draw where every image was non-finite).
    """
    if not callable(init_fn) or not callable(apply_fn):
        raise InputTypeError("init_fn and apply_fn must be callable")
    reduce, channels = _check_options(reduce, convention, "none", method, channels)
    x = _input.as_batch(x, "image")
    _input.check_batch(x, "x")
    res = callables.resolve(apply_fn)
    entry = callables.cache_entry(res)
    def out_shape():
        params0 = jax.eval_shape(init_fn, keys[0])
        out = jax.eval_shape(
            lambda d, p, xx: select_output(res.rebuild(d)(p, xx), output), res.dyn, params0, x
        )
        return tuple(getattr(out, "shape", ()))

    key = ("draws", init_fn, output, x.shape, str(x.dtype), keys.shape[1:], keys.dtype)
    unit = _unit_of(unit, entry.get("shapes", key, out_shape), x.shape[0])
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    spec = _Spec(unit, channels, reduce, convention, output, method, False, precision)
    fkey = ("draws", init_fn, spec, x.shape, str(x.dtype))
    if fkey not in entry.compiled:
        rebuild = res.rebuild

        def run(dyn, keys, x):
            def one(k):
                params = init_fn(k)
                with jax.default_matmul_precision(spec.precision):
                    g = _input_grad(functools.partial(rebuild(dyn), params), x, spec,
                                    spec.unit)
                maps = _reduce_map(g, spec)
                mask = jnp.ones(x.shape[0], bool)
                return _summarise(maps, g, mask, spec)[:3]

            return jax.vmap(one)(keys)

        entry.compiled[fkey] = jax.jit(run)
    sums, counts, bads = entry.compiled[fkey](res.dyn, keys, x)
    per_draw = sums / jnp.where(counts > 0, counts, jnp.nan).reshape((-1,) + (1,) * (x.ndim - 2))
    ok = counts > 0
    mean = jnp.where(ok.reshape(per_draw.shape[:1] + (1,) * (per_draw.ndim - 1)), per_draw, 0)
    n_ok = int(ok.sum())
    mean = mean.sum(axis=0) / max(n_ok, 1)
    result = ERF(mean, int(counts.sum()), int(bads.sum()), unit, None, reduce, convention, "none")
    return result, per_draw
