"""Synthetic copies of the CIFAR-10 ("python version") and CamVid (SegNet) layouts for tests.

Shared by the data, training and experiment tests so that the real TFDS builders always run on
files written the same way.
"""

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from rfjax import data


def write_cifar(root: Path, batches: dict[str, tuple[np.ndarray, list[int]]]) -> Path:
    """CIFAR-10 python batches under root/cifar10/cifar-10-batches-py; images NHWC uint8."""
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for fname, (images, labels) in batches.items():
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # R|G|B planes
        batch = {
            b"batch_label": fname.encode(),
            b"labels": list(labels),
            b"data": rows,
            b"filenames": [f"{fname}_{i}.png".encode() for i in range(len(images))],
        }
        with open(folder / fname, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in data.CIFAR10_CLASSES]}, f)
    return folder


def make_cifar(root: Path, seed: int = 0, side: int = 32,
               sizes=(("data_batch_1", 3), ("data_batch_2", 2), ("test_batch", 2))):
    """Random images and labels in the given batch files; returns {file: (images, labels)}."""
    rng = np.random.default_rng(seed)
    batches = {}
    for fname, n in sizes:
        images = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
        batches[fname] = (images, rng.integers(0, 10, n).tolist())
    write_cifar(root, batches)
    return batches


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def make_camvid(root: Path, seed: int = 0, hw=(12, 16), sizes=(("train", 3), ("val", 2),
                                                                  ("test", 2))):
    """SegNet layout under root/camvid; returns {split: (images, labels)}."""
    rng = np.random.default_rng(seed)
    folder = root / "camvid"
    out = {}
    for split, n in sizes:
        images = rng.integers(0, 256, (n, *hw, 3), dtype=np.uint8)
        labels = rng.integers(0, 12, (n, *hw), dtype=np.uint8)
        labels[:, 0, 0] = data.CAMVID_VOID  # void present in every image
        lines = []
        for i in range(n):
            name = f"seq_{split}_{i:03d}.png"
            write_png(folder / split / name, images[i])
            write_png(folder / f"{split}annot" / name, labels[i])
            lines.append(f"{split}/{name} {split}annot/{name}")
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
        out[split] = (images, labels)
    return out
