"""Image and label downscaling for training at a reduced resolution (CamVid ``downscale``).

Images are uint8 ``(N, H, W, C)``, labels int ``(N, H, W)``; both are reduced by an integer
``factor`` that must divide H and W, in NumPy on the host (once, before training).
"""

from __future__ import annotations

import numpy as np

__all__ = ["downscale_images", "downscale_labels"]


def downscale_images(images: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter (N, H, W, C) uint8 images down by ``factor``: uint8 (N, H/f, W/f, C), rounded.

    H and W must be multiples of ``factor``. ``factor == 1`` returns ``images`` itself.
    """
    n, h, w, c = images.shape
    if h % factor or w % factor:
        raise ValueError(f"downscale: image size {h}x{w} is not a multiple of {factor}")
    if factor == 1:
        return images
    blocks = images.reshape(n, h // factor, factor, w // factor, factor, c)
    return np.rint(blocks.mean(axis=(2, 4), dtype=np.float64)).astype(np.uint8)


def downscale_labels(labels: np.ndarray, factor: int, num_labels: int = 12) -> np.ndarray:
    """Majority label of each ``factor x factor`` block: int32 (N, H/f, W/f).

    Labels take the values ``0..num_labels-1`` (CamVid: 11 classes and void, 11). Ties go to
    the smallest label value; void (11) wins only where it is the strict majority over every
    class.
    """
    n, h, w = labels.shape
    if h % factor or w % factor:
        raise ValueError(f"downscale: label size {h}x{w} is not a multiple of {factor}")
    if factor == 1:
        return labels.astype(np.int32)
    out = np.empty((n, h // factor, w // factor), np.int32)
    for i in range(n):  # one image at a time keeps the one-hot small
        blocks = labels[i].reshape(h // factor, factor, w // factor, factor)
        counts = np.zeros((h // factor, w // factor, num_labels), np.int16)
        for a in range(factor):
            for b in range(factor):
                np.add.at(counts, (*np.indices(counts.shape[:2]), blocks[:, a, :, b]), 1)
        out[i] = np.argmax(counts, axis=-1)
    return out
