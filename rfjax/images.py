"""Image files as model inputs (pure functions returning NumPy arrays; Pillow reads the files).

>>> from rfjax import images
>>> paths = images.list_images("photos/")                    # PNG/JPEG/... files, sorted
>>> x = images.load_images(paths, (1, 3, 224, 224), channel_axis=1)   # (N, 3, 224, 224)

Each image is converted to RGB (or grayscale for a 1-channel input), resized so that its
shorter side is ``size / crop_pct`` and centre-cropped to the input size (torchvision's and
timm's evaluation transform; ``crop_pct=1`` crops nothing beyond the aspect ratio), then
normalised: ``(pixel / 255 - mean) / std`` per channel, or ``transform(pixels)`` on float RGB
pixels in [0, 255] (a Keras ``preprocess_input``). The result is float32 in the model's layout
(``channel_axis``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["EXTENSIONS", "image_batches", "list_images", "load_image", "load_images"]

#: The file name extensions :func:`list_images` picks (lower case).
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def list_images(folder: str | os.PathLike) -> list[str]:
    """The image files directly in ``folder`` (by extension, :data:`EXTENSIONS`), sorted by
    name.

    Raises:
      NotADirectoryError: ``folder`` is not a folder.
      FileNotFoundError: it holds no image file.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder!r} is not a folder")
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.lower().endswith(EXTENSIONS)
                   and os.path.isfile(os.path.join(folder, f)))
    if not paths:
        raise FileNotFoundError(f"{folder!r} holds no image file ({', '.join(EXTENSIONS)})")
    return paths


def _spatial(shape: Sequence[int], channel_axis: int) -> tuple[tuple[int, int], int]:
    nd = len(shape)
    a = channel_axis + nd if channel_axis < 0 else channel_axis
    if nd != 4 or a not in (1, 3):
        raise ValueError(f"image files need a 2-D image input (N, H, W, C) or (N, C, H, W); "
                         f"got shape {tuple(shape)} with channel_axis={channel_axis}")
    hw = tuple(int(d) for i, d in enumerate(shape[1:], 1) if i != a)
    return (hw[0], hw[1]), int(shape[a])


def load_image(path: str | os.PathLike, size: tuple[int, int], *, channels: int = 3,
               crop_pct: float = 0.875, interpolation: str = "bilinear") -> np.ndarray:
    """One image file as float32 pixels in [0, 255], ``(H, W, channels)`` with ``(H, W) =
    size``: resized so that its shorter side is ``max(size) / crop_pct`` (aspect ratio kept),
    then centre-cropped.

    Raises:
      ValueError: ``channels`` is not 1 or 3, ``crop_pct`` is not in (0, 1], an unknown
        ``interpolation``, or the file is not an image Pillow can read.
    """
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise ValueError(f"image files give 1 (grayscale) or 3 (RGB) channels; the model "
                         f"takes {channels}")
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    if interpolation not in _RESAMPLE:
        raise ValueError(f"interpolation {interpolation!r} is not one of {', '.join(_RESAMPLE)}")
    h, w = size
    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            scale = (max(h, w) / crop_pct) / min(im.size)
            # never below the crop: the short side covers the crop's side along it
            new_w = max(w, round(im.size[0] * scale))
            new_h = max(h, round(im.size[1] * scale))
            im = im.resize((new_w, new_h), resample=_RESAMPLE[interpolation])
            left, top = (new_w - w) // 2, (new_h - h) // 2
            im = im.crop((left, top, left + w, top + h))
            a = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read the image {os.fspath(path)!r}: {e}") from e
    return a.reshape(h, w, channels)


def load_images(paths: Sequence[str | os.PathLike], shape: Sequence[int], *,
                channel_axis: int = -1, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None, crop_pct: float = 0.875,
                interpolation: str = "bilinear",
                transform: Callable[[Any], Any] | None = None) -> np.ndarray:
    """Image files as one float32 batch ``(len(paths), *shape[1:])`` in the model's layout.

    Args:
      paths: the files (e.g. :func:`list_images`).
      shape: the model's input shape (its batch size is ignored): ``(N, H, W, C)`` or, with
        ``channel_axis=1``, ``(N, C, H, W)``; ``C`` is 1 or 3.
      channel_axis: 1 or -1 (3).
      mean, std: per channel, for pixels in [0, 1] (default: no normalisation, pixels / 255);
        3 values on a 1-channel input are averaged.
      crop_pct, interpolation: see :func:`load_image`.
      transform: replaces mean/std: ``transform(pixels)`` of float pixels in [0, 255],
        ``(N, H, W, C)``, returning the model's input channels-last (Keras
        ``preprocess_input``).
    """
    size, channels = _spatial(shape, channel_axis)
    x = np.stack([load_image(p, size, channels=channels, crop_pct=crop_pct,
                             interpolation=interpolation) for p in paths])
    if transform is not None:
        x = np.asarray(transform(x), dtype=np.float32)
    else:
        x = x / np.float32(255.0)
        for stat, op in ((mean, np.subtract), (std, np.divide)):
            if stat is not None:
                v = np.asarray(stat, dtype=np.float32).reshape(-1)
                x = op(x, v.mean(keepdims=True) if channels == 1 and v.size > 1 else v)
    x = x.astype(np.float32, copy=False)
    a = channel_axis + len(shape) if channel_axis < 0 else channel_axis
    return np.moveaxis(x, -1, 1) if a == 1 else x


def image_batches(paths: Sequence[str | os.PathLike], shape: Sequence[int], batch_size: int,
                  **kwargs: Any) -> Iterator[np.ndarray]:
    """:func:`load_images` in batches of ``batch_size`` files (the last may be smaller): what
    :func:`rfjax.erf` takes as an iterable, without holding every image at once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, len(paths), batch_size):
        yield load_images(paths[i:i + batch_size], shape, **kwargs)
