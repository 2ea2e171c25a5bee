"""The ``rfjax`` command line: theoretical (``rfjax trf``) and effective (``rfjax erf``) fields.

A model is either a built-in name (``rfjax models`` lists them) or ``package.module:factory``,
a function returning ``(fn, example_input)``: ``fn`` maps a float batch ``(N, *spatial, C)`` to
``(N, *spatial_out, C_out)`` and ``example_input`` is an array (or a shape tuple) of the input
shape. A factory with a ``seed`` parameter is called as ``factory(seed=S)`` (for ``--seed`` and
``--draws``); otherwise as ``factory()``. The current directory is importable, so a file
``mymodels.py`` next to you is ``mymodels:factory``.

User errors (a bad model spec, a bad shape, a unit outside the output, an option the model
does not support) print one line ``rfjax <command>: error: ...`` on stderr and exit with
status 2; ``--debug`` re-raises them with the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import math
import os
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# The ERF options, imported in this one place.
from rfjax.effective import CONVENTIONS, CROPS, REDUCTIONS, erf
from rfjax.models import builtin_models
from rfjax.selection import check_unit

__all__ = ["main", "resolve_model", "CLIError"]


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Model:
    """A resolved model: ``make(seed, shape, layer, abstract) -> fn`` (a built-in's
    ``rfjax.models.BuiltinModel.fn``, or a factory's ``fn``) and the example input shape."""

    name: str
    shape: tuple[int, ...]
    make: Callable[..., Callable]  # make(seed, shape, layer=None, abstract=False) -> fn
    seedable: bool  # whether different seeds give different weights
    layers: Callable[[tuple[int, ...]], dict[str, tuple[int, ...]]] | None = None


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


def resolve_model(spec: str) -> Model:
    """A built-in name or ``package.module:factory`` -> :class:`Model`.

    Raises:
      CLIError: an unknown name, a module or attribute that cannot be found, or a factory
        that does not return ``(fn, example_input)``.
    """
    models = builtin_models()
    if spec in models:
        entry = models[spec]
        return Model(spec, entry.shape, entry.fn, True, entry.layers)
    if ":" not in spec:
        near = [n for n in models if spec.lower() in n]
        hint = f" (did you mean {', '.join(near[:4])}?)" if near else ""
        raise CLIError(f"unknown model {spec!r}{hint}: give a built-in name (see `rfjax "
                       "models`) or package.module:factory")
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


# --------------------------------------------------------------------------------------------
# Argument parsing
# --------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, printed by ``main``)."""

    def error(self, message: str):  # type: ignore[override]
        raise CLIError(f"{message} (see `{self.prog} --help`)")


def _ints(text: str, what: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"{what} is empty")
    return vals


def _shape_arg(text: str) -> tuple[int, ...]:
    shape = _ints(text, "--input-shape")
    if not 3 <= len(shape) <= 5:
        raise argparse.ArgumentTypeError(
            f"--input-shape {text!r} has {len(shape)} axes; expected N,H,W,C (or N,L,C / "
            "N,D,H,W,C): a batch axis, 1 to 3 spatial axes, channels")
    if any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"--input-shape {text!r}: every axis must be >= 1")
    return shape


def _unit_arg(text: str) -> tuple[int, ...]:
    unit = _ints(text, "--unit")
    if any(u < 0 for u in unit):
        raise argparse.ArgumentTypeError(f"--unit {text!r}: indices must be >= 0")
    return unit


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


_TOP_EPILOG = """\
examples:
  rfjax models                                  list the built-in models
  rfjax models resnet50_full                    list its layers (for --layer)
  rfjax trf resnet50_full                       per-layer TRF table of ResNet-50 at 224x224
  rfjax trf vgg16 --input-shape 1,128,128,3 --unit 2,2 --json vgg.json
  rfjax erf conv_stack_10x64 --images 64 --png erf.png --json erf.json
  rfjax erf mypkg.models:make_net --unit 7,7 --convention replknet

A model is a built-in name or package.module:factory, a function returning
(fn, example_input) where fn maps (N, *spatial, C) -> (N, *spatial_out, C_out).
Run `rfjax trf --help` / `rfjax erf --help` for the options of each command.
"""

_TRF_EPILOG = """\
examples:
  rfjax trf conv_stack
  rfjax trf resnet50_full --unit 3,3
  rfjax trf unet --input-shape 1,64,64,2 --json unet_trf.json
  rfjax trf resnet50_full --layer layer2_0
  rfjax trf mypkg.models:make_net --input-shape 1,96,96,3

Output: the per-layer table (size, stride and padding of every layer's field, per input
axis; "all" marks a global axis; a stride "-" an axis where no single stride fits every
position), then the closed form of the output: unit u sees input indices
u*stride - padding .. u*stride - padding + size - 1 (exact for every unit when
aligned=True; size is the largest per-unit extent), and the exact region and pixel count of
the chosen unit. --json writes null for a stride printed "-".
"""

_ERF_EPILOG = """\
examples:
  rfjax erf conv_stack_10x64 --images 64
  rfjax erf conv_stack_10x64 --draws 8 --images 16 --png erf.png
  rfjax erf resnet50_full --images 8 --unit 0,0 --json r50.json
  rfjax erf cifar --convention replknet --reduce relu
  rfjax erf resnet18_full --layer layer2_1 --images 8 --png layer2.png
  rfjax erf mypkg.models:make_net --input-shape 1,64,64,3 --seed 1

The ERF of an output unit (Luo et al., NIPS 2016) is the gradient of the unit (summed over
output channels) with respect to the input, reduced per element (--reduce), summed over input
channels and averaged over images: here random inputs x ~ N(0, 1) of --input-shape, and, with
--draws K, over K random weight draws (seeds seed .. seed+K-1; the model is re-initialised for
each draw, the paper's protocol).

The map is the mean of (weight draws) x (--images) per-image gradient maps: the output line
"mean of 64 gradient maps = 4 weight draw(s) x 16 images" counts them once. Every metric is
printed with its meaning under it (lengths in input pixels):
  size (gaussian)   4 sigma per axis of the moment-fitted Gaussian (2 sigma either side),
                    area = product; the reading the paper figures use
  size (threshold)  the paper's literal reading: pixels above (1 - 95.45%) of the maximum;
                    extent = bounding box, area = pixel count
  gaussian fit      centre (mean position) and sigma (standard deviation) per axis
  fit quality       r2 = 1 - SS(map - fit) / SS(map - mean): 1 = Gaussian, 0 or below = the
                    Gaussian fits no better than a constant; rel_l2 = ||map - fit|| / ||map||
  ERF/TRF ratio     per axis and by area, for both size readings (TRF = rfjax.trf size)
  area ratio        RepLKNet's high-contribution area ratio at t = 0.2, 0.3, 0.5, 0.99
                    (log10(1 + map), 2-D maps); "none": no tested square holds more than t
  radius 50%/90%    radius around the map's maximum enclosing that fraction of the mass
A signed map (--reduce grad) is measured through its absolute value.
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a built-in model name (see `rfjax models`) or "
                   "package.module:factory returning (fn, example_input)")
    p.add_argument("--input-shape", type=_shape_arg, metavar="N,H,W,C",
                   help="input shape (overrides the model's example shape), e.g. 1,128,128,3; "
                   "N,L,C for 1-D and N,D,H,W,C for 3-D models (rfjax erf takes the image "
                   "count from --images, not from N)")
    p.add_argument("--unit", type=_unit_arg, metavar="I,J",
                   help="output unit (spatial indices), e.g. 3,3; default: the centre "
                   "(H_out // 2, W_out // 2)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the weights (built-in models; factories with a seed "
                   "parameter) and of the random inputs (default 0)")
    p.add_argument("--layer", metavar="NAME",
                   help="analyse the output of an inner layer of a built-in model instead of "
                   "the model's output, e.g. layer2_0 or layer2_0/conv2 (`rfjax models MODEL` "
                   "lists the names)")
    p.add_argument("--json", metavar="PATH", help="write the numbers as JSON to PATH")


def _parser() -> _Parser:
    top = _Parser(prog="rfjax", description="Theoretical (TRF) and effective (ERF) receptive "
                  "fields of any JAX function.", epilog=_TOP_EPILOG,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--debug", action="store_true",
                     help="show the full traceback of an error instead of one line")
    sub = top.add_subparsers(dest="command", metavar="{trf,erf,models}", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("trf", help="per-layer theoretical receptive field table",
                       description="Print the per-layer theoretical receptive field (TRF) "
                       "table and the closed form\nof a model's output.", epilog=_TRF_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p)

    p = sub.add_parser("erf", help="effective receptive field metrics (and heatmap)",
                       description="Compute the effective receptive field (ERF) of one output "
                       "unit over random inputs\nand print its metrics.", epilog=_ERF_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p)
    p.add_argument("--images", type=_positive, default=16,
                   help="number of random input images per weight draw (default 16)")
    p.add_argument("--batch-size", type=_positive,
                   help="images per compiled chunk (default: min(--images, 32))")
    p.add_argument("--draws", type=_positive, default=1,
                   help="average over this many random weight draws (default 1; needs a "
                   "built-in model or a factory with a seed parameter)")
    p.add_argument("--reduce", choices=REDUCTIONS,
                   help="per-element reduction of the gradient: abs |g| (the paper's, default "
                   "for --convention paper), grad (signed), relu max(g,0), square g^2")
    p.add_argument("--convention", choices=CONVENTIONS, default="paper",
                   help="paper (default); replknet: relu of the centre output, relu of the "
                   "gradient (RepLKNet erf/visualize_erf.py; --reduce must be unset or relu); "
                   "openerf: channel mean, then clamp (OpenERF; --reduce must be unset)")
    p.add_argument("--crop", choices=CROPS, default="auto",
                   help="evaluate only the unit's dependency cone (cone), the input window "
                   "(input), nothing cropped (none); auto (default): the best that applies. "
                   "Crops are verified on the first image")
    p.add_argument("--png", metavar="PATH",
                   help="write a heatmap of the ERF with a colorbar and the TRF outline (a 1-D "
                   "map is drawn as one row, a 3-D map as its slice through the maximum)")
    p.add_argument("--log", action="store_true", help="heatmap in log10 scale")

    p = sub.add_parser("models", help="list the built-in models (or one model's layers)",
                       description="List the built-in model names with their example input "
                       "shape; with a MODEL,\nlist the names --layer accepts for it.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  rfjax models\n  rfjax models resnet50_full\n")
    p.add_argument("model", nargs="?", help="a built-in model name: list its layers")
    p.add_argument("--input-shape", type=_shape_arg, metavar="N,H,W,C",
                   help="input shape for the layer shapes (default: the example shape)")
    return top


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _input_shape(model: Model, args: argparse.Namespace) -> tuple[int, ...]:
    shape = args.input_shape or model.shape
    if not 3 <= len(shape) <= 5:
        raise CLIError(f"model {model.name!r}: input shape {shape} must be (N, *spatial, C) "
                       "with 1 to 3 spatial axes")
    if args.input_shape is not None and len(args.input_shape) != len(model.shape):
        raise CLIError(f"--input-shape {args.input_shape} has {len(args.input_shape)} axes but "
                       f"model {model.name!r} takes {len(model.shape)} (example shape "
                       f"{model.shape})")
    return shape


def _build(model: Model, seed: int, shape: tuple[int, ...], layer: str | None = None,
           abstract: bool = False) -> Callable:
    if layer is not None:
        if model.layers is None:
            raise CLIError(f"--layer needs a built-in model; for {model.name!r} let the factory "
                           "return a fn whose output is that layer")
        names = _layers_of(model, shape)
        if layer not in names:
            near = [n for n in names if layer in n][:5]
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise CLIError(f"--layer {layer!r}: model {model.name!r} has no such layer{hint} "
                           f"(`rfjax models {model.name}` lists its {len(names)} layers)")
    try:
        return model.make(seed, shape, layer, abstract)
    except CLIError:
        raise
    except Exception as e:
        raise CLIError(f"model {model.name!r} cannot be built for input shape {shape}: "
                       f"{_one_line(e)}") from e


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _check_unit_rank(unit: tuple[int, ...] | None, out_shape: tuple[int, ...]) -> None:
    if unit is None:
        return
    try:
        check_unit(unit, out_shape)
    except ValueError as e:
        raise CLIError(f"--unit: {e}") from e


def _trf_of(fn: Callable, shape: tuple[int, ...], name: str):
    import jax

    import rfjax

    try:
        return rfjax.trf(fn, jax.ShapeDtypeStruct(shape, np.float32))
    except rfjax.TRFError as e:
        raise CLIError(f"TRF of {name!r}: {_one_line(e)}") from e
    except Exception as e:  # the model fails at this shape: one line, --debug for the rest
        raise CLIError(f"model {name!r} at input shape {shape}: {_one_line(e)}") from e


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, list | tuple):
        return "(" + ", ".join(_fmt(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return str(v)


def _layers_of(model: Model, shape: tuple[int, ...]) -> dict[str, tuple]:
    assert model.layers is not None
    try:
        return model.layers(shape)
    except Exception as e:
        raise CLIError(f"model {model.name!r} cannot be built for input shape {shape}: "
                       f"{_one_line(e)}") from e


def cmd_models(args: argparse.Namespace) -> int:
    models = builtin_models()
    if args.model is not None:
        if args.model not in models:
            raise CLIError(f"unknown built-in model {args.model!r} (`rfjax models` lists them)")
        model = resolve_model(args.model)
        shape = _input_shape(model, args)
        names = _layers_of(model, shape)
        w = max(len(n) for n in names)
        print(f"layers of {model.name} at input {'x'.join(map(str, shape))} (for --layer):")
        for name, shp in names.items():
            print(f"  {name:<{w}}  {'x'.join(map(str, shp))}")
        return 0
    w = max(len(n) for n in models)
    for name, entry in models.items():
        print(f"{name:<{w}}  {'x'.join(map(str, entry.shape)):<14}  {entry.description}")
    return 0


def cmd_trf(args: argparse.Namespace) -> int:
    model = resolve_model(args.model)
    shape = _input_shape(model, args)
    fn = _build(model, args.seed, shape, args.layer, abstract=True)
    t = _trf_of(fn, shape, model.name)
    _check_unit_rank(args.unit, t.output_shape)
    print(f"model {model.name}" + (f", layer {args.layer}" if args.layer else "")
          + f", input {'x'.join(map(str, shape))}")
    print(t.table())
    print()
    print("closed form: unit u sees input indices u*stride - padding .. "
          "u*stride - padding + size - 1" + ("" if t.aligned else
                                              " on the aligned axes only"))
    print(f"  size={_fmt(t.size)}  stride={_fmt(t.stride_text)}  "
          f"padding={_fmt(t.padding)}  aligned={t.aligned}  is_global={_fmt(t.is_global)}")
    if not t.aligned:
        print('  stride "-": no single stride fits every unit on that axis; size is the largest '
              "per-unit extent, padding minus unit 0's start; the region below is exact")
    data: dict[str, Any] = {"model": model.name, "layer": args.layer, "input": list(shape),
                            **t.as_dict()}
    if t.output_shape:
        unit = args.unit or tuple(n // 2 for n in t.output_shape)
        try:
            region = t.region(unit)
            pixels = int(t.mask(unit).sum())
        except ValueError as e:
            raise CLIError(str(e)) from e
        print(f"unit {_fmt(unit)}: region {_fmt([list(r) for r in region])} (inclusive, "
              f"unclipped), {pixels} input pixels in its field")
        data["unit"] = list(unit)
        data["region"] = [list(r) for r in region]
        data["pixels"] = pixels
    else:
        print("the output has no spatial axis (every output depends on the whole input)")
    _write_json(args.json, data)
    return 0


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    try:
        with open(path, "w") as f:
            json.dump(data, f, indent=2, default=_json_default)
            f.write("\n")
    except OSError as e:
        raise CLIError(f"--json {path!r}: {e.strerror or e}") from e
    print(f"wrote {path}")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _metrics(m: np.ndarray, trf_size: Sequence[int]) -> dict[str, Any]:
    """``rfjax.metrics.summary``, or ``{"note": ...}`` for a map that has no metrics (e.g. an
    all-zero map)."""
    from rfjax import metrics

    try:
        return metrics.summary(m, tuple(trf_size))
    except ValueError as e:
        return {"note": f"no metrics: {e}"}


def _print_metrics(met: dict[str, Any], shape: tuple[int, ...]) -> None:
    """Every metric of ``rfjax.metrics.summary`` with its name, value and, on the line under
    it, what the number means. ``shape``: the map's shape (for the tested squares)."""
    if "note" in met:
        print(met["note"])
        return
    g, t = met["size_gaussian"], met["size_threshold"]
    fit = met["gaussian_fit"]
    rg, rt = met["erf_trf_ratio_gaussian"], met["erf_trf_ratio_threshold"]
    unit = {1: "px", 2: "px^2", 3: "px^3"}.get(len(shape), "px^n")
    rows = [
        ("size (gaussian, 4 sigma)",
         f"extent {_fmt(g['extent'])} px  area {_fmt(g['area'])} {unit}",
         "4 sigma per axis of the moment-fitted Gaussian (2 sigma either side of its "
         "centre); area = product of the extents"),
        ("size (threshold 4.55%)",
         f"extent {_fmt(t['extent'])} px  area {_fmt(t['area'])} {unit}",
         "pixels above 4.55% (1 - 95.45%) of the map's maximum: bounding box per axis; "
         "area = their count"),
        ("gaussian fit", f"centre {_fmt(fit['mean'])}  sigma {_fmt(fit['sigma'])} px",
         "the map's mean position (index per axis) and standard deviation per axis"),
        ("fit quality", f"r2 {_fmt(fit['r2'])}  rel_l2 {_fmt(fit['rel_l2'])}",
         "r2 = 1 - SS(map - fit) / SS(map - mean(map)): 1 = a Gaussian, 0 or below = the "
         "Gaussian fits no better than a constant; rel_l2 = ||map - fit|| / ||map||"),
        ("TRF size", f"{_fmt(tuple(met['trf_size']))} px",
         "rfjax.trf size: the largest extent of a unit's theoretical field, per axis"),
        ("ERF/TRF (gaussian)", f"axis {_fmt(rg['axis'])}  area {_fmt(rg['area'])}",
         "size (gaussian, 4 sigma) / TRF size, per axis and by area"),
        ("ERF/TRF (threshold)", f"axis {_fmt(rt['axis'])}  area {_fmt(rt['area'])}",
         "size (threshold 4.55%) / TRF size, per axis and by area"),
    ]
    if "area_ratio" in met:
        a = met["area_ratio"]
        h, w = shape
        largest = 2 * (h // 2 - 1) + 1
        rows.append(("area ratio (RepLKNet)", "  ".join(
            f"t={th}: {_fmt(r) if r is not None else 'none'}"
            for th, r in zip(a["thresholds"], a["ratio"], strict=True)),
            "(side/H)*(side/W) of the smallest centred square holding more than the fraction "
            f"t of the log10(1 + map) mass; none: no tested square (sides 3 to {largest} of "
            f"{h}x{w}) holds it"))
    rm = met["radius_mass"]
    rows.append(("radius 50% / 90% mass", f"{rm['50%']} / {rm['90%']} px",
                 "the smallest radius around the map's maximum enclosing 50% / 90% of the map's "
                 "mass"))
    width = max(len(r[0]) for r in rows)
    indent = " " * (width + 6)
    for name, value, meaning in rows:
        print(f"  {name:<{width}}  {value}")
        print(textwrap.fill(f"({meaning})", 96, initial_indent=indent,
                            subsequent_indent=indent + " "))


def cmd_erf(args: argparse.Namespace) -> int:
    import jax.numpy as jnp

    model = resolve_model(args.model)
    shape = _input_shape(model, args)
    if args.draws > 1 and not model.seedable:
        raise CLIError(f"--draws {args.draws}: model {model.name!r} has fixed weights (its "
                       "factory takes no seed parameter)")
    if args.convention == "openerf" and args.reduce is not None:
        raise CLIError("--convention openerf fixes its reduction; leave --reduce unset")
    if args.convention == "replknet" and args.reduce not in (None, "relu"):
        raise CLIError("--convention replknet fixes --reduce relu; leave --reduce unset")
    # Pass reduce only when given: the conventions fix their own, erf's default is "abs".
    reduce = args.reduce if args.convention == "paper" else None
    opts = {"reduce": reduce} if reduce is not None else {}
    img_shape = (args.images, *shape[1:])
    # The TRF is structural: check the output and the unit on zero weights (cheap) first.
    t = _trf_of(_build(model, args.seed, shape, args.layer, abstract=True), shape, model.name)
    if not t.output_shape:
        raise CLIError(f"model {model.name!r}: its output has no spatial axis, so it has no "
                       "units and no ERF map; pick a model or layer with a spatial output")
    _check_unit_rank(args.unit, t.output_shape)
    fn0 = _build(model, args.seed, shape, args.layer)
    unit = args.unit or tuple(n // 2 for n in t.output_shape)
    batch = args.batch_size or min(args.images, 32)
    rng = np.random.default_rng(args.seed)
    maps, count, nonfinite, crop = [], 0, 0, None
    t0 = time.perf_counter()
    for d in range(args.draws):
        fn = fn0 if d == 0 else _build(model, args.seed + d, shape, args.layer)
        x = rng.standard_normal(img_shape, dtype=np.float32)
        try:
            r = erf(fn, x, unit=unit, batch_size=batch, convention=args.convention,
                    crop=args.crop, **opts)
        except Exception as e:  # one line; --debug shows the traceback
            raise CLIError(f"ERF of {model.name!r}: {_one_line(e)}") from e
        maps.append(np.asarray(r.map, dtype=np.float64))
        count += r.count
        nonfinite += r.nonfinite
        crop = r.crop
    seconds = time.perf_counter() - t0
    m = np.mean(maps, axis=0)
    sizes = [int(s) for s in t.size]
    met = _metrics(np.abs(m) if reduce == "grad" else m, sizes)
    try:
        region = t.region(unit)
    except ValueError:  # the unit depends on no input position (e.g. a kernel of zeros)
        region = None
    where = f"{model.name}" + (f", layer {args.layer}" if args.layer else "")
    print(f"model {where}, input {'x'.join(map(str, img_shape[1:]))}, unit "
          f"{_fmt(unit)} of output {_fmt(t.output_shape)}")
    print(f"ERF: the mean of {count} gradient maps = {args.draws} weight draw(s) x "
          f"{args.images} random images ({nonfinite} non-finite map(s) skipped); convention "
          f"{args.convention}, reduce {r.reduce}, crop {crop}; {seconds:.2f} s")
    print(f"TRF: size {_fmt(t.size)} (the largest per-unit extent); " + (
        "this unit depends on no input position" if region is None else
        f"this unit's region {_fmt([list(x) for x in region])} (inclusive, unclipped)"))
    print("metrics of the ERF map (the meaning of each number in parentheses):")
    _print_metrics(met, m.shape)
    data = {"model": model.name, "layer": args.layer, "input": list(img_shape),
            "input_shape": list(t.input_shape), "unit": list(unit),
            "output_shape": list(t.output_shape), "images": args.images,
            "draws": args.draws, "count": count, "nonfinite": nonfinite, "seed": args.seed,
            "convention": args.convention, "reduce": r.reduce, "crop": crop,
            "seconds": seconds,
            "trf_region": None if region is None else [list(x) for x in region], **met}
    _write_json(args.json, data)
    if args.png:
        _write_png(args.png, m, region, unit, model.name, r.reduce, args.log, jnp)
    return 0


def _write_png(path, m, region, unit, name, reduce, log, jnp) -> None:
    from rfjax.plot import erf_heatmap

    title = f"ERF of {name}, unit {_fmt(unit)} ({reduce})"
    if m.ndim == 1:
        m2, reg = m[None, :], None if region is None else ((0, 0), region[0])
    elif m.ndim == 3:  # the slice through the map's maximum along the first axis
        k = int(np.unravel_index(np.argmax(np.abs(m)), m.shape)[0])
        m2, reg = m[k], None if region is None else region[1:]
        title += f", slice {k} of axis 0"
    else:
        m2, reg = m, region
    try:
        erf_heatmap(m2, trf_region=reg, title=title, log=log, path=path)
    except OSError as e:
        raise CLIError(f"--png {path!r}: {e.strerror or e}") from e
    print(f"wrote {path}")


_COMMANDS = {"trf": cmd_trf, "erf": cmd_erf, "models": cmd_models}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rfjax`` console script. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    debug = "--debug" in argv
    prog = "rfjax"
    try:
        args = parser.parse_args(argv)
        prog = f"rfjax {args.command}"
        return _COMMANDS[args.command](args)
    except CLIError as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rfjax ... | head`: stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
