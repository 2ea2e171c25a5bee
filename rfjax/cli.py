"""The ``rfjax`` command line: theoretical (``rfjax trf``) and effective (``rfjax erf``) fields.

A model is a built-in name (``rfjax models`` lists them), a model of another framework
(``torchvision:<name>``, ``timm:<name>``, ``keras:<Name>``: :mod:`rfjax.models.external`), or
``package.module:factory``, a function returning ``(fn, example_input)``: ``fn`` maps a float
batch ``(N, *spatial, C)`` to ``(N, *spatial_out, C_out)`` and ``example_input`` is an array
(or a shape tuple) of the input shape. A factory with a ``seed`` parameter is called as
``factory(seed=S)`` (for ``--seed`` and ``--draws``); otherwise as ``factory()``. The current
directory is importable, so a file ``mymodels.py`` next to you is ``mymodels:factory``.

User errors (a bad model spec, a bad shape, a unit outside the output, an option the model
does not support) print one line ``rfjax <command>: error: ...`` on stderr and exit with
status 2; ``--debug`` re-raises them with the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
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
from rfjax.cli_models import CLIError, Model, resolve_model
from rfjax.effective import CONVENTIONS, CROPS, REDUCTIONS, erf
from rfjax.models import builtin_models
from rfjax.selection import check_unit

__all__ = ["main", "resolve_model", "CLIError"]


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


def _images_arg(text: str) -> int | str:
    """``--images``: a positive count of random images, or a folder of image files."""
    if text.strip().lstrip("+-").isdigit():
        return _positive(text)
    return text


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
  rfjax models torchvision:resnet18             list a torchvision model's modules
  rfjax trf resnet50_full                       per-layer TRF table of ResNet-50 at 224x224
  rfjax trf torchvision:resnet50 --input-shape 1,3,224,224
  rfjax trf timm:convnext_tiny --png trf.png    the centre unit's field drawn on the input
  rfjax trf keras:ResNet50
  rfjax trf vgg16 --input-shape 1,128,128,3 --unit 2,2 --json vgg.json
  rfjax erf conv_stack_10x64 --images 64 --png erf.png --json erf.json
  rfjax erf timm:resnet50 --weights model.pth --images photos/ --png erf.png
  rfjax erf mypkg.models:make_net --unit 7,7 --convention replknet

A model is
  - a built-in name (`rfjax models` lists them);
  - torchvision:<name>   torchvision.models.get_model(name, weights=None), NCHW input
  - timm:<name>          timm.create_model(name, pretrained=False), NCHW input
  - keras:<Name>         keras.applications.<Name>(weights=None) on the JAX backend,
                         channels-last input
    (these need pip install 'rfjax[torch]' / 'rfjax[keras]'; weights are random from
    --seed unless --weights gives a file);
  - package.module:factory, a function returning (fn, example_input) where fn maps
    (N, *spatial, C) -> (N, *spatial_out, C_out).
Run `rfjax trf --help` / `rfjax erf --help` for the options of each command.
"""

_TRF_EPILOG = """\
examples:
  rfjax trf conv_stack
  rfjax trf resnet50_full --unit 3,3
  rfjax trf unet --input-shape 1,64,64,2 --json unet_trf.json
  rfjax trf resnet50_full --layer layer2_0
  rfjax trf torchvision:resnet50 --input-shape 1,3,224,224     (layer4: size 427)
  rfjax trf torchvision:resnet18 --layer layer3 --png layer3.png
  rfjax trf timm:convnext_tiny
  rfjax trf keras:ResNet50 --layer conv4_block6_out
  rfjax trf mypkg.models:make_net --input-shape 1,96,96,3

A torchvision/timm/Keras classifier (an output with no spatial axis) is analysed at its last
feature map, the layer before global pooling (printed; --layer picks another).

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
  rfjax erf timm:resnet50 --weights model.pth --images photos/ --png erf.png
  rfjax erf torchvision:resnet18 --input-shape 1,3,64,64 --layer layer2 --images 8
  rfjax erf keras:MobileNetV2 --input-shape 1,96,96,3 --images 4
  rfjax erf mypkg.models:make_net --input-shape 1,64,64,3 --seed 1

The ERF of an output unit (Luo et al., NIPS 2016) is the gradient of the unit (summed over
output channels) with respect to the input, reduced per element (--reduce), summed over input
channels and averaged over images: random inputs x ~ N(0, 1) of --input-shape (--images N), or
the image files of a folder (--images DIR), and, with --draws K, over K random weight draws
(seeds seed .. seed+K-1; the model is re-initialised for each draw, the paper's protocol).

Image files (--images DIR: PNG, JPEG, BMP, GIF, TIFF, WebP) are converted to RGB (grayscale for
a 1-channel input), resized so that the shorter side is size/crop_pct and centre-cropped to the
input size, then normalised with the model's own preprocessing where rfjax knows it:
  timm:<name>         timm.data.resolve_data_config(model) mean/std, crop_pct, interpolation
  keras:<Name>        the application's preprocess_input (keras.applications.<module>);
                      ImageNet mean/std for one without
  torchvision:<name>, built-in models and factories: ImageNet mean (0.485, 0.456, 0.406),
                      std (0.229, 0.224, 0.225), crop_pct 0.875 (256 -> 224), bilinear
A torchvision/timm/Keras classifier is analysed at its last feature map (see `rfjax trf
--help`).

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
    p.add_argument("model", help="a built-in model name (see `rfjax models`), "
                   "torchvision:<name> (e.g. torchvision:resnet50), timm:<name> (e.g. "
                   "timm:convnext_tiny), keras:<Name> (e.g. keras:ResNet50), or "
                   "package.module:factory returning (fn, example_input)")
    p.add_argument("--input-shape", type=_shape_arg, metavar="N,H,W,C",
                   help="input shape in the model's layout (overrides the model's example "
                   "shape), e.g. 1,128,128,3; 1,3,224,224 for a torch model (NCHW); N,L,C for "
                   "1-D and N,D,H,W,C for 3-D models. Default for torchvision/timm: "
                   "1,3,S,S at the model's native resolution S (timm's pretrained_cfg; 299 "
                   "for torchvision's inception_v3, else 224); for Keras: the application's "
                   "input_shape. rfjax erf takes the image count from --images, not from N")
    p.add_argument("--channel-axis", type=int, metavar="AXIS",
                   help="the channel axis of the input (passed to rfjax.trf/erf as "
                   "channel_axis), e.g. 1 for an NCHW factory; default: the framework's "
                   "(1 for torch models, -1 for Keras, built-ins and factories)")
    p.add_argument("--weights", metavar="PATH",
                   help="load the model's weights from PATH instead of random ones: a torch "
                   "state dict for torchvision:/timm: models (torch.load(PATH, "
                   "map_location='cpu', weights_only=True), then load_state_dict), Keras "
                   "weights for keras: models (model.load_weights(PATH)); e.g. --weights "
                   "model.pth")
    p.add_argument("--unit", type=_unit_arg, metavar="I,J",
                   help="output unit (spatial indices), e.g. 3,3; default: the centre "
                   "(H_out // 2, W_out // 2)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the weights (built-in models; torchvision/timm models via "
                   "torch.manual_seed, Keras via keras.utils.set_random_seed; factories with "
                   "a seed parameter) and of the random inputs (default 0), e.g. --seed 3")
    p.add_argument("--layer", metavar="NAME",
                   help="analyse the output of an inner layer instead of the model's output: "
                   "a built-in model's layer (layer2_0, layer2_0/conv2), a torch submodule "
                   "path (layer3, features.denseblock2) or a Keras layer name "
                   "(conv4_block6_out); `rfjax models MODEL` lists the names")
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
    p.add_argument("--png", metavar="PATH",
                   help="draw the unit's exact field (TRF.mask(unit), filled) and its region "
                   "rectangle (TRF.region(unit), clipped to the input; the title gives the "
                   "unclipped bounds) on an input-sized canvas, e.g. --png trf.png")

    p = sub.add_parser("erf", help="effective receptive field metrics (and heatmap)",
                       description="Compute the effective receptive field (ERF) of one output "
                       "unit over random inputs\nor the image files of a folder, and print its "
                       "metrics.", epilog=_ERF_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p)
    p.add_argument("--images", type=_images_arg, default=16, metavar="N|DIR",
                   help="N random input images x ~ N(0, 1) per weight draw (default 16), or "
                   "a folder DIR of image files (PNG/JPEG/...), resized, centre-cropped and "
                   "normalised as the model expects (see below), e.g. --images photos/")
    p.add_argument("--batch-size", type=_positive,
                   help="images per compiled chunk (default: min(--images, 32))")
    p.add_argument("--draws", type=_positive, default=1,
                   help="average over this many random weight draws (default 1; needs a "
                   "built-in model, a torchvision/timm/Keras model without --weights, or a "
                   "factory with a seed parameter), e.g. --draws 8")
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
                       epilog="examples:\n  rfjax models\n  rfjax models resnet50_full\n"
                       "  rfjax models torchvision:resnet18 --input-shape 1,3,64,64\n"
                       "  rfjax models keras:MobileNetV2\n")
    p.add_argument("model", nargs="?", help="a built-in model name, or torchvision:<name>, "
                   "timm:<name>, keras:<Name>: list its layers (the names --layer takes)")
    p.add_argument("--input-shape", type=_shape_arg, metavar="N,H,W,C",
                   help="input shape for the layer shapes (default: the example shape), e.g. "
                   "1,3,64,64 for a torch model")
    return top


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _input_shape(model: Model, args: argparse.Namespace) -> tuple[int, ...]:
    shape = args.input_shape or model.shape
    if not 3 <= len(shape) <= 5:
        raise CLIError(f"model {model.name!r}: input shape {shape} must be (N, *spatial, C) "
                       "with 1 to 3 spatial axes")
    # (an external model's shape may need a build to know: its own errors say the rest)
    if (args.input_shape is not None and model.external is None
            and len(args.input_shape) != len(model.shape)):
        raise CLIError(f"--input-shape {args.input_shape} has {len(args.input_shape)} axes but "
                       f"model {model.name!r} takes {len(model.shape)} (example shape "
                       f"{model.shape})")
    return shape


@dataclasses.dataclass(frozen=True)
class _Target:
    """What a command analyses: the model at ``shape``, its ``layer`` (given, or for an
    external classifier its last feature map: ``auto``), and the keyword arguments of
    ``rfjax.trf`` / ``rfjax.erf`` (``channel_axis``; ``layer`` for torch and Keras)."""

    model: Model
    shape: tuple[int, ...]
    layer: str | None
    auto: bool
    kw: dict

    def build(self, seed: int, abstract: bool = False) -> Any:
        return _build(self.model, seed, self.shape, self.layer, abstract,
                      check=not self.auto)

    @property
    def where(self) -> str:
        if self.layer is None:
            return self.model.name
        note = (" (its last feature map: the model's output has no spatial axis; --layer "
                "picks another)") if self.auto else ""
        return f"{self.model.name}, layer {self.layer}{note}"


def _target(args: argparse.Namespace) -> _Target:
    model = resolve_model(args.model, getattr(args, "weights", None))
    shape = _input_shape(model, args)
    layer, auto = args.layer, False
    kw: dict[str, Any] = {}
    if args.channel_axis is not None:
        kw["channel_axis"] = args.channel_axis
    if model.external is not None:
        if layer is None:
            try:
                layer = model.external.feature_layer(shape, args.seed)
            except Exception as e:
                raise CLIError(f"model {model.name!r} cannot be built for input shape {shape}: "
                               f"{_one_line(e)}") from e
            auto = layer is not None
        if layer is not None:
            kw["layer"] = layer
    return _Target(model, shape, layer, auto, kw)


def _build(model: Model, seed: int, shape: tuple[int, ...], layer: str | None = None,
           abstract: bool = False, check: bool = True) -> Any:
    if layer is not None and check:
        if model.layers is None:
            raise CLIError(f"--layer needs a built-in, torchvision:, timm: or keras: model; "
                           f"for {model.name!r} let the factory return a fn whose output is "
                           "that layer")
        names = _layers_of(model, shape)
        if layer not in names:
            near = [n for n in names if layer in n][:5]
            near += [n for n in difflib.get_close_matches(layer, list(names), n=5)
                     if n not in near]
            hint = f"; did you mean {', '.join(near[:5])}?" if near else ""
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


def _trf_of(fn: Any, shape: tuple[int, ...], name: str, **kw: Any):
    import jax

    import rfjax

    try:
        return rfjax.trf(fn, jax.ShapeDtypeStruct(shape, np.float32), **kw)
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
    from rfjax.models import external

    models = builtin_models()
    if args.model is not None:
        if args.model not in models and not external.is_external(args.model):
            raise CLIError(f"unknown built-in model {args.model!r} (`rfjax models` lists them; "
                           "or give torchvision:<name>, timm:<name>, keras:<Name>)")
        model = resolve_model(args.model)
        shape = _input_shape(model, args)
        names = _layers_of(model, shape)
        if not names:
            raise CLIError(f"model {model.name!r} has no inner layer")
        w = max(len(n) for n in names)
        layout = "" if model.external is None else ", output shapes in the model's layout"
        print(f"layers of {model.name} at input {'x'.join(map(str, shape))} (for --layer"
              f"{layout}):")
        for name, shp in names.items():
            print(f"  {name:<{w}}  {'x'.join(map(str, shp))}")
        return 0
    w = max(len(n) for n in models)
    for name, entry in models.items():
        print(f"{name:<{w}}  {'x'.join(map(str, entry.shape)):<14}  {entry.description}")
    return 0


def cmd_trf(args: argparse.Namespace) -> int:
    tg = _target(args)
    shape = tg.shape
    t = _trf_of(tg.build(args.seed, abstract=True), shape, tg.model.name, **tg.kw)
    _check_unit_rank(args.unit, t.output_shape)
    print(f"model {tg.where}, input {'x'.join(map(str, shape))}")
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
    data: dict[str, Any] = {"model": tg.model.name, "layer": tg.layer, "input": list(shape),
                            **t.as_dict()}
    if t.output_shape:
        unit = args.unit or tuple(n // 2 for n in t.output_shape)
        try:
            region = t.region(unit)
            mask = t.mask(unit)
        except ValueError as e:
            raise CLIError(str(e)) from e
        pixels = int(mask.sum())
        print(f"unit {_fmt(unit)}: region {_fmt([list(r) for r in region])} (inclusive, "
              f"unclipped), {pixels} input pixels in its field")
        data["unit"] = list(unit)
        data["region"] = [list(r) for r in region]
        data["pixels"] = pixels
    else:
        print("the output has no spatial axis (every output depends on the whole input)")
        if args.png:
            raise CLIError("--png draws one unit's field, and this output has no spatial axis "
                           "(no units); pick a layer with --layer")
    _write_json(args.json, data)
    if args.png:
        _write_trf_png(args.png, t, unit, mask, region, tg)
    return 0


def _write_trf_png(path: str, t: Any, unit: tuple[int, ...], mask: np.ndarray,
                   region: Any, tg: _Target) -> None:
    from rfjax.plot import trf_mask_plot

    name = tg.model.name + (f", layer {tg.layer}" if tg.layer else "")
    title = (f"TRF of {name}, unit {_fmt(unit)}\nsize {'x'.join(map(str, t.size))}, stride "
             f"{'x'.join(map(str, t.stride_text))}, padding {'x'.join(map(str, t.padding))}")
    try:
        trf_mask_plot(mask, region, title=title, path=path)
    except OSError as e:
        raise CLIError(f"--png {path!r}: {e.strerror or e}") from e
    print(f"wrote {path}")


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


@dataclasses.dataclass(frozen=True)
class _Images:
    """The ERF's inputs: ``count`` random images, or the files of a folder."""

    count: int
    batches: Callable[[np.random.Generator], Any]  # rng -> an array or an iterable of batches
    what: str  # "random images" / "images from DIR (preprocessing)"
    folder: str | None = None
    preprocessing: str | None = None


def _images(args: argparse.Namespace, tg: _Target, batch: int | None) -> _Images:
    if not isinstance(args.images, str):
        shape = (args.images, *tg.shape[1:])
        return _Images(args.images, lambda rng: rng.standard_normal(shape, dtype=np.float32),
                       "random images")
    from rfjax import images
    from rfjax.models.external import Preprocessing

    try:
        paths = images.list_images(args.images)
    except OSError as e:
        raise CLIError(f"--images {args.images!r}: {e}") from e
    ext = tg.model.external
    try:
        pre = ext.preprocessing(args.seed) if ext is not None else Preprocessing()
    except Exception as e:
        raise CLIError(f"model {tg.model.name!r}: its preprocessing: {_one_line(e)}") from e
    axis = tg.kw.get("channel_axis", ext.channel_axis if ext is not None else -1)
    kw = {"channel_axis": axis, "crop_pct": pre.crop_pct, "interpolation": pre.interpolation,
          **({"transform": pre.transform} if pre.transform is not None else
             {"mean": pre.mean, "std": pre.std})}
    try:  # the first image now: a layout or file error is one line before any compilation
        images.load_images(paths[:1], tg.shape, **kw)
    except ValueError as e:
        raise CLIError(f"--images {args.images!r}: {e}") from e
    size = batch or min(len(paths), 32)
    return _Images(len(paths), lambda rng: images.image_batches(paths, tg.shape, size, **kw),
                   f"images from {args.images}", args.images, pre.description)


def cmd_erf(args: argparse.Namespace) -> int:
    import jax.numpy as jnp

    tg = _target(args)
    model, shape = tg.model, tg.shape
    if args.draws > 1 and not model.seedable:
        why = ("its weights come from --weights" if model.weights else
               "its factory takes no seed parameter")
        raise CLIError(f"--draws {args.draws}: model {model.name!r} has fixed weights ({why})")
    if args.convention == "openerf" and args.reduce is not None:
        raise CLIError("--convention openerf fixes its reduction; leave --reduce unset")
    if args.convention == "replknet" and args.reduce not in (None, "relu"):
        raise CLIError("--convention replknet fixes --reduce relu; leave --reduce unset")
    # Pass reduce only when given: the conventions fix their own, erf's default is "abs".
    reduce = args.reduce if args.convention == "paper" else None
    opts = {"reduce": reduce} if reduce is not None else {}
    # The TRF is structural: check the output and the unit on zero weights (cheap) first.
    t = _trf_of(tg.build(args.seed, abstract=True), shape, model.name, **tg.kw)
    if not t.output_shape:
        raise CLIError(f"model {model.name!r}: its output has no spatial axis, so it has no "
                       "units and no ERF map; pick a model or layer with a spatial output")
    _check_unit_rank(args.unit, t.output_shape)
    imgs = _images(args, tg, args.batch_size)
    fn0 = tg.build(args.seed)
    unit = args.unit or tuple(n // 2 for n in t.output_shape)
    batch = args.batch_size or min(imgs.count, 32)
    rng = np.random.default_rng(args.seed)
    maps, count, nonfinite, crop = [], 0, 0, None
    t0 = time.perf_counter()
    for d in range(args.draws):
        fn = fn0 if d == 0 else tg.build(args.seed + d)
        try:
            r = erf(fn, imgs.batches(rng), unit=unit, batch_size=batch,
                    convention=args.convention, crop=args.crop, **opts, **tg.kw)
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
    print(f"model {tg.where}, input {'x'.join(map(str, shape[1:]))}, unit "
          f"{_fmt(unit)} of output {_fmt(t.output_shape)}")
    print(f"ERF: the mean of {count} gradient maps = {args.draws} weight draw(s) x "
          f"{imgs.count} {imgs.what} ({nonfinite} non-finite map(s) skipped); convention "
          f"{args.convention}, reduce {r.reduce}, crop {crop}; {seconds:.2f} s")
    if imgs.folder is not None:
        print(f"images: the {imgs.count} image files of {imgs.folder}, resized and "
              f"centre-cropped to {_fmt(t.input_shape)}; preprocessing: {imgs.preprocessing}")
    print(f"TRF: size {_fmt(t.size)} (the largest per-unit extent); " + (
        "this unit depends on no input position" if region is None else
        f"this unit's region {_fmt([list(x) for x in region])} (inclusive, unclipped)"))
    print("metrics of the ERF map (the meaning of each number in parentheses):")
    _print_metrics(met, m.shape)
    data = {"model": model.name, "layer": tg.layer, "input": [imgs.count, *shape[1:]],
            "input_shape": list(t.input_shape), "unit": list(unit),
            "output_shape": list(t.output_shape), "images": imgs.count,
            "image_folder": imgs.folder, "preprocessing": imgs.preprocessing,
            "weights": model.weights, "draws": args.draws, "count": count,
            "nonfinite": nonfinite, "seed": args.seed, "convention": args.convention,
            "reduce": r.reduce, "crop": crop, "seconds": seconds,
            "trf_region": None if region is None else [list(x) for x in region], **met}
    _write_json(args.json, data)
    if args.png:
        name = model.name + (f", layer {tg.layer}" if tg.layer else "")
        _write_png(args.png, m, region, unit, name, r.reduce, args.log, jnp)
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
