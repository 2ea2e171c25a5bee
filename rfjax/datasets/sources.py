"""Readers of the raw source layouts (CIFAR-10 python batches, CamVid SegNet layout).

No TensorFlow Datasets here: these functions parse and validate the files on disk and raise
a ``ValueError`` that names the offending file. The TFDS builders in this package call them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

CIFAR10_SUBDIR = Path("cifar10") / "cifar-10-batches-py"
CAMVID_SUBDIR = Path("camvid")
CAMVID_SPLITS = ("train", "val", "test")
# Largest valid CamVid label: classes 0-10, 11 = void.
CAMVID_MAX_LABEL = 11
CIFAR10_NUM_CLASSES = 10

_CIFAR_KEYS = (b"data", b"labels")


def cifar10_files(root: Path, split: str) -> list[Path]:
    """The batch files of a CIFAR-10 split: ``data_batch_*`` (numeric order) or ``test_batch``."""
    folder = Path(root) / CIFAR10_SUBDIR
    if split == "test":
        files = [folder / "test_batch"]
    else:
        files = sorted(
            folder.glob("data_batch_*"),
            key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)],
        )
    missing = [f for f in files if not f.is_file()]
    if not files or missing:
        what = missing[0] if missing else folder / "data_batch_1"
        raise ValueError(
            f"CIFAR-10 {split} batch file not found: {what}. Expected the CIFAR-10 'python "
            f"version' layout in {folder}/ (data_batch_1 ... data_batch_N and test_batch)."
        )
    return files


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch.

    Returns ``(images, labels)``: ``images`` uint8 (N, S, S, 3) NHWC with S = sqrt(row/3)
    (32 for CIFAR-10), ``labels`` int32 (N,) in 0..9. Raises ``ValueError`` naming ``path``
    when the file is truncated, not a batch dict, inconsistent, or has labels out of range.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, ImportError) as e:
        raise ValueError(
            f"Corrupt or truncated CIFAR-10 batch file {path}: {type(e).__name__}: {e}"
        ) from e
    if not isinstance(batch, dict) or any(k not in batch for k in _CIFAR_KEYS):
        raise ValueError(
            f"CIFAR-10 batch file {path} is not a batch dict with keys b'data' and b'labels'."
        )
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(
            f"CIFAR-10 batch file {path}: b'data' must be a uint8 (N, 3*S*S) array, "
            f"got {data.dtype} {data.shape}."
        )
    side = int(round((data.shape[1] / 3) ** 0.5))
    if 3 * side * side != data.shape[1] or side == 0:
        raise ValueError(
            f"CIFAR-10 batch file {path}: rows of b'data' have {data.shape[1]} values, "
            "not 3 square colour planes (3*S*S)."
        )
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"CIFAR-10 batch file {path}: b'labels' must hold {data.shape[0]} integers "
            f"(one per row of b'data'), got {labels.dtype} {labels.shape}."
        )
    bad = (labels < 0) | (labels >= CIFAR10_NUM_CLASSES)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"CIFAR-10 batch file {path}: label {int(labels[i])} at index {i} is out of range "
            f"0..{CIFAR10_NUM_CLASSES - 1} ({int(bad.sum())} bad labels)."
        )
    # Rows are R|G|B planes of S x S, row-major: -> (N, 3, S, S) -> NHWC.
    images = data.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def camvid_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """The (image, label) PNG paths of a CamVid split, from ``camvid/<split>.txt``.

    Each line of the list file holds two paths relative to ``camvid/`` (the SegNet tutorial's
    absolute ``/SegNet/CamVid/...`` paths are accepted too: their last two components are used).
    """
    folder = Path(root) / CAMVID_SUBDIR
    listing = folder / f"{split}.txt"
    if not listing.is_file():
        raise ValueError(
            f"CamVid list file not found: {listing}. Expected the SegNet layout in {folder}/ "
            "(train/ trainannot/ val/ valannot/ test/ testannot/ and train.txt val.txt "
            "test.txt)."
        )
    pairs = []
    for lineno, line in enumerate(listing.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(
                f"{listing}:{lineno}: expected 'IMAGE LABEL' (two paths), got {line!r}."
            )
        pair = []
        for field in fields:
            p = folder / field
            if Path(field).is_absolute() and not Path(field).exists():
                p = folder.joinpath(*Path(field).parts[-2:])
            if not p.is_file():
                raise ValueError(f"{listing}:{lineno}: file not found: {p}.")
            pair.append(p)
        pairs.append((pair[0], pair[1]))
    if not pairs:
        raise ValueError(f"CamVid list file {listing} lists no image-label pairs.")
    return pairs


def _open_png(path: Path) -> tuple[bytes, np.ndarray, str]:
    """Read and fully decode an image file; returns (raw bytes, pixels, PIL mode)."""
    raw = Path(path).read_bytes()
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            mode = im.mode
            if mode not in ("RGB", "L", "P"):
                im = im.convert("RGB")
            pixels = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(
            f"Corrupt or truncated image file {path}: {type(e).__name__}: {e}"
        ) from e
    return raw, pixels, mode


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def read_camvid_pair(image_path: Path, label_path: Path) -> tuple[bytes, bytes]:
    """Validate one CamVid pair and return PNG bytes ``(image_png, label_png)``.

    The image decodes to RGB uint8 (H, W, 3) and the label to uint8 (H, W) class indices
    0..11 (11 = void), of the same H, W. The original bytes are returned when already in
    that form (RGB / 8-bit grey PNG), else canonical PNGs are re-encoded with PIL (never
    with TensorFlow). Raises ``ValueError`` naming the file on corrupt files, wrong modes,
    size mismatch or labels out of range.
    """
    img_raw, img, img_mode = _open_png(image_path)
    lab_raw, lab, lab_mode = _open_png(label_path)
    if img.ndim == 2:  # greyscale or palette photo: expand to RGB
        with Image.open(io.BytesIO(img_raw)) as im:
            img = np.asarray(im.convert("RGB"))
    if lab.ndim != 2:
        raise ValueError(
            f"CamVid label file {label_path} must be a single-channel PNG of class indices "
            f"(mode L or P), got mode {lab_mode} with shape {lab.shape}."
        )
    if img.shape[:2] != lab.shape:
        raise ValueError(
            f"CamVid image {image_path} is {img.shape[0]}x{img.shape[1]} but its label "
            f"{label_path} is {lab.shape[0]}x{lab.shape[1]}."
        )
    if lab.dtype != np.uint8 or int(lab.max()) > CAMVID_MAX_LABEL:
        bad = np.unique(lab[lab > CAMVID_MAX_LABEL]).tolist()
        raise ValueError(
            f"CamVid label file {label_path} has values {bad[:10]} outside 0..{CAMVID_MAX_LABEL} "
            "(classes 0-10, 11 = void)."
        )
    is_png = img_raw[:8] == b"\x89PNG\r\n\x1a\n"
    img_png = img_raw if (is_png and img_mode == "RGB") else _png_bytes(img)
    lab_png = lab_raw if (lab_raw[:8] == b"\x89PNG\r\n\x1a\n" and lab_mode == "L") else (
        _png_bytes(lab.astype(np.uint8))
    )
    return img_png, lab_png


def cifar10_examples(root: Path, split: str) -> Iterator[tuple[int, dict]]:
    """TFDS examples of a CIFAR-10 split: key = position in the split (TFDS writes them in key
    order, so the source order is kept), PNG image, int label."""
    key = 0
    for path in cifar10_files(root, split):
        images, labels = read_cifar10_batch(path)
        for image, label in zip(images, labels, strict=True):
            yield key, {"image": _png_bytes(image), "label": int(label)}
            key += 1


def camvid_examples(root: Path, split: str) -> Iterator[tuple[int, dict]]:
    """TFDS examples of a CamVid split: key = line number in the list file (source order kept),
    PNG image and label."""
    for key, (image_path, label_path) in enumerate(camvid_pairs(root, split)):
        image, label = read_camvid_pair(image_path, label_path)
        yield key, {"image": image, "label": label}


def fingerprint(root: Path, subdir: Path) -> str:
    """A short hash of a source folder: its resolved path and every file's name, size, mtime.

    Keys the prepared TFDS copy, so two different source folders (or a folder whose files
    changed) never share a prepared dataset.
    """
    folder = (Path(root) / subdir).resolve()
    entries = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            st = os.stat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), folder)
            entries.append((rel, st.st_size, st.st_mtime_ns))
    blob = json.dumps([str(folder), entries]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
