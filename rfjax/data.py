"""CIFAR-10 and CamVid as numpy, through TensorFlow Datasets without TensorFlow.

Two folders are kept apart:

* the **source folder** (read-only) holds the raw data in its standard layouts::

      <source>/cifar10/cifar-10-batches-py/   data_batch_1 ... data_batch_N, test_batch
      <source>/camvid/                         train/ trainannot/ val/ valannot/ test/
                                               testannot/ train.txt val.txt test.txt

  It is the ``data_dir`` argument (``--data-dir`` on the command line), else the environment
  variable ``RFJAX_DATA_DIR``, else ``../shared/data`` relative to the working directory.
* the **prepared folder** is where TFDS writes the built datasets (``array_record`` files),
  on first use: the ``prepared_dir`` argument, else ``RFJAX_TFDS_DIR``, else
  ``~/.cache/rfjax/tensorflow_datasets``. Each build lives in ``<prepared>/<name>-<key>/``
  where ``key`` hashes the resolved source path and every source file's name, size and
  modification time, so different source folders (e.g. synthetic test data) never collide
  and edited sources are rebuilt.

Preparation is atomic and runs once: a build is written to a temporary folder next to its
target, ``<prepared>/.<name>-<key>.tmp-<pid>-<random>/``, and renamed to ``<name>-<key>/``
only when complete, so a target folder is either absent or whole. Builders hold an exclusive
lock (``fcntl.flock`` on ``<prepared>/.<name>-<key>.lock``, released by the kernel when a
process dies) while they check, build and rename: a second process preparing the same dataset
waits and then opens the first one's build instead of building again. Under the lock,
leftovers of killed runs (temporary folders of this key, a half-built target written by
another tool or an older version) are removed before building. Without ``fcntl`` (not POSIX)
there is no lock: concurrent builds may duplicate work, and the first rename wins.

Conventions: images are uint8 NHWC. CIFAR-10 labels are int32 (N,) in 0..9. CamVid labels are
int32 (N, H, W) in 0..10 with :data:`CAMVID_VOID` = 11 for unlabelled pixels, which losses and
metrics must ignore. No image count or size is assumed (all images of one split must share
their size so that they stack).

Training-side helpers are pure: :func:`batch_indices` (the data order; its whole state is the
step number), :func:`augment_cifar`, :func:`augment_camvid` (jitted, deterministic per key) and
:func:`normalize` (uint8 -> float32 in [-1, 1]).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import secrets
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from rfjax.progress import progress_enabled

try:
    import fcntl
except ImportError:  # not POSIX: no lock (see the module docstring)
    fcntl = None

DATASETS = ("cifar10", "camvid")
SPLITS = {"cifar10": ("train", "test"), "camvid": ("train", "val", "test")}
NUM_CLASSES = {"cifar10": 10, "camvid": 11}
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
)
CAMVID_VOID = 11
"""CamVid label of unlabelled ("void") pixels: ignored by losses and metrics."""

ENV_DATA_DIR = "RFJAX_DATA_DIR"
ENV_PREPARED_DIR = "RFJAX_TFDS_DIR"
DEFAULT_PREPARED_DIR = Path("~/.cache/rfjax/tensorflow_datasets")
_FALLBACK_DATA_DIR = Path("..") / "shared" / "data"

_LAYOUT = (
    "<source>/cifar10/cifar-10-batches-py/ (CIFAR-10 'python version': data_batch_1 ... "
    "data_batch_N, test_batch) and <source>/camvid/ (SegNet layout: train/ trainannot/ val/ "
    "valannot/ test/ testannot/ train.txt val.txt test.txt)"
)
_HOW = (
    f"Give the source folder with the data_dir argument (--data-dir on the command line) or "
    f"the {ENV_DATA_DIR} environment variable; otherwise ../shared/data relative to the "
    "working directory is used when it exists."
)


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset, in memory.

    Attributes:
      name: ``"cifar10"`` or ``"camvid"``.
      split: ``"train"``, ``"test"`` (or ``"val"`` for CamVid).
      images: uint8 (N, H, W, 3), NHWC.
      labels: int32; (N,) class indices 0..9 for CIFAR-10, (N, H, W) for CamVid with classes
        0..10 and :data:`CAMVID_VOID` = 11.
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.name]


def _check_name_split(name: str, split: str | None = None) -> None:
    if name not in SPLITS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {list(DATASETS)}.")
    if split is not None and split not in SPLITS[name]:
        raise ValueError(
            f"Unknown split {split!r} for dataset {name!r}; expected one of "
            f"{list(SPLITS[name])}."
        )


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The source folder: ``data_dir``, else ``$RFJAX_DATA_DIR``, else ``./../shared/data``.

    Raises ``ValueError`` saying where the data is expected and how to provide it when the
    chosen folder does not exist or when none is given and the fallback is absent.
    """
    if data_dir is not None:
        origin = "the data_dir argument (--data-dir)"
    elif os.environ.get(ENV_DATA_DIR):
        data_dir, origin = os.environ[ENV_DATA_DIR], f"${ENV_DATA_DIR}"
    else:
        fallback = Path.cwd() / _FALLBACK_DATA_DIR
        if not fallback.is_dir():
            raise ValueError(
                f"No source data folder: none was given and {fallback} does not exist. "
                f"Expected {_LAYOUT}. {_HOW}"
            )
        return fallback.resolve()
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"Source data folder {path} (from {origin}) does not exist. Expected {_LAYOUT}. "
            f"{_HOW}"
        )
    return path.resolve()


def resolve_prepared_dir(prepared_dir: str | os.PathLike | None = None) -> Path:
    """The prepared (TFDS) folder: ``prepared_dir``, else ``$RFJAX_TFDS_DIR``, else
    ``~/.cache/rfjax/tensorflow_datasets``."""
    if prepared_dir is None:
        prepared_dir = os.environ.get(ENV_PREPARED_DIR) or DEFAULT_PREPARED_DIR
    return Path(prepared_dir).expanduser().resolve()


def prepare(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    prepared_dir: str | os.PathLike | None = None,
):
    """Build (first call) or open (later calls) the TFDS dataset ``name``; returns its builder.

    The returned ``tfds.core.DatasetBuilder`` reads with ``builder.as_data_source(split)``
    (random access, numpy, no TensorFlow). Raises ``ValueError`` on a missing source folder
    and on corrupt, truncated or out-of-range source files (the message names the file).
    """
    _check_name_split(name)
    from rfjax.datasets import sources  # no TFDS import: cheap

    root = resolve_data_dir(data_dir)
    subdir = sources.CIFAR10_SUBDIR if name == "cifar10" else sources.CAMVID_SUBDIR
    if not (root / subdir).is_dir():
        raise ValueError(
            f"{name} source data not found: {root / subdir} does not exist. Expected "
            f"{_LAYOUT}. {_HOW}"
        )
    key = sources.fingerprint(root, subdir)
    prepared = resolve_prepared_dir(prepared_dir)
    target = prepared / f"{name}-{key}"

    import tensorflow_datasets as tfds  # deferred: slow import, only needed to build/read

    from rfjax.datasets import RfjaxCamvid, RfjaxCifar10

    if not progress_enabled():
        tfds.disable_progress_bar()
    cls = RfjaxCifar10 if name == "cifar10" else RfjaxCamvid
    builder = cls(data_dir=os.fspath(target))
    if builder.is_prepared():  # targets appear whole (renamed in): no lock needed to read
        return builder
    prepared.mkdir(parents=True, exist_ok=True)
    with _locked(prepared / f".{name}-{key}.lock"):
        builder = cls(data_dir=os.fspath(target))
        if builder.is_prepared():  # another process built it while this one waited
            return builder
        if fcntl is not None:  # holding the lock: nobody else is building this key
            _remove_leftovers(prepared, f".{name}-{key}.tmp-", target)
        tmp = prepared / f".{name}-{key}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            cls(data_dir=os.fspath(tmp)).download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(root))
            )
            try:
                os.rename(tmp, target)  # atomic: the target is absent, then whole
            except OSError:
                if not cls(data_dir=os.fspath(target)).is_prepared():  # lost no race
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; else a failure
    return cls(data_dir=os.fspath(target))


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive ``fcntl.flock`` on ``path`` (created if needed; kept afterwards, since
    deleting a lock file races with its next user); no lock without ``fcntl``."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_leftovers(prepared: Path, tmp_prefix: str, target: Path) -> None:
    """Remove this key's temporary folders (of killed runs) and a half-built target."""
    for p in prepared.iterdir():
        if p.name.startswith(tmp_prefix):
            shutil.rmtree(p, ignore_errors=True)
    if target.exists():
        shutil.rmtree(target)


def load(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    prepared_dir: str | os.PathLike | None = None,
) -> Split:
    """Load one split of ``"cifar10"`` or ``"camvid"`` as numpy arrays (see :class:`Split`).

    Builds the TFDS dataset in the prepared folder on first use (see the module docstring
    for how both folders are found), then reads it with ``tfds.data_source``; TensorFlow is
    never imported. Order is the source order (batch files / list file order).
    """
    _check_name_split(name, split)
    builder = prepare(name, data_dir=data_dir, prepared_dir=prepared_dir)
    source = builder.as_data_source(split=split)
    n = len(source)
    if n == 0:
        raise ValueError(f"{name} split {split!r} is empty.")
    examples = source.__getitems__(list(range(n)))
    shapes = {ex["image"].shape for ex in examples}
    if len(shapes) != 1:
        raise ValueError(
            f"{name} split {split!r} mixes image sizes {sorted(shapes)}; a Split needs one size."
        )
    images = np.stack([ex["image"] for ex in examples]).astype(np.uint8, copy=False)
    if name == "cifar10":
        labels = np.asarray([ex["label"] for ex in examples], dtype=np.int32)
    else:
        labels = np.stack([ex["label"][..., 0] for ex in examples]).astype(np.int32)
    return Split(name=name, split=split, images=images, labels=labels)


# --------------------------------------------------------------------------- data order


def batch_indices(seed: int, step: int, num_examples: int, batch_size: int) -> np.ndarray:
    """Example indices of training batch ``step``: int64 (batch_size,).

    The stream of examples is epoch 0, epoch 1, ... where epoch ``e`` is the permutation
    ``np.random.default_rng([seed, e]).permutation(num_examples)``. Batch ``step`` is items
    ``step * batch_size ... (step + 1) * batch_size - 1`` of that stream, so a batch that
    crosses an epoch boundary WRAPS into the next epoch (nothing is dropped; every example is
    seen exactly once per epoch). Pure: the step number is the whole state of the data order.
    """
    for arg, value, low in (("seed", seed, 0), ("step", step, 0),
                            ("num_examples", num_examples, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{arg} must be an int, got {type(value).__name__}.")
        if value < low:
            raise ValueError(f"{arg} must be >= {low}, got {value}.")
    positions = int(step) * int(batch_size) + np.arange(batch_size, dtype=np.int64)
    epochs, within = np.divmod(positions, num_examples)
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([int(seed), int(epoch)]).permutation(num_examples)
        mask = epochs == epoch
        out[mask] = perm[within[mask]]
    return out


# --------------------------------------------------------------------------- preprocessing


@jax.jit
def normalize(images: ArrayLike) -> Float[Array, "*batch h w c"]:
    """uint8 pixels -> float32 in [-1, 1]: ``(x - 127.5) / 127.5`` (no dataset statistics).

    Any shape. The same map for both datasets, for training and for ERF measurements; 0.0 is
    mid-grey, which is also the value of the zero padding in :func:`augment_cifar`.
    """
    # Centre first: x - 127.5 is exact in float32, so 0 -> -1 and 255 -> 1 exactly.
    return (jnp.asarray(images, jnp.float32) - 127.5) / 127.5


@jax.jit
def denormalize(images: ArrayLike) -> Float[Array, "*batch h w c"]:
    """Inverse of :func:`normalize`, to float32 in [0, 255] (for display)."""
    return (jnp.asarray(images, jnp.float32) + 1.0) * 127.5


def _crop(image: Array, top: Array, left: Array, height: int, width: int) -> Array:
    return jax.lax.dynamic_slice(
        image, (top, left) + (0,) * (image.ndim - 2), (height, width) + image.shape[2:]
    )


@functools.partial(jax.jit, static_argnames=("pad",))
def augment_cifar(
    key: Array, images: Float[ArrayLike, "b h w c"], pad: int = 4
) -> Float[Array, "b h w c"]:
    """CIFAR augmentation: random crop of a ``pad``-pixel zero-padded image, random h-flip.

    Args:
      key: a JAX PRNG key; the output is a deterministic function of ``key`` and ``images``.
      images: (B, H, W, C), any H, W (normalised float32 in practice: zero padding is then
        mid-grey).
      pad: padding on each side; crops are offset by 0..2*pad in each axis, independently
        per image, and each image is flipped left-right with probability 1/2.

    Returns:
      (B, H, W, C), same dtype.
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}.")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}.")
    b, h, w, _ = images.shape
    k_top, k_left, k_flip = jax.random.split(key, 3)
    tops = jax.random.randint(k_top, (b,), 0, 2 * pad + 1)
    lefts = jax.random.randint(k_left, (b,), 0, 2 * pad + 1)
    flips = jax.random.bernoulli(k_flip, 0.5, (b,))
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def one(image, top, left, flip):
        out = _crop(image, top, left, h, w)
        return jnp.where(flip, out[:, ::-1], out)

    return jax.vmap(one)(padded, tops, lefts, flips)


def augment_camvid(
    key: Array,
    images: Float[ArrayLike, "b h w c"],
    labels: Int[ArrayLike, "b h w"],
    crop_size: tuple[int, int],
) -> tuple[Float[Array, "b ch cw c"], Int[Array, "b ch cw"]]:
    """CamVid augmentation: random h-flip and random crop, identical for image and label.

    Args:
      key: a JAX PRNG key; the output is a deterministic function of its inputs.
      images: (B, H, W, C), any dtype.
      labels: (B, H, W) class indices (void included), any integer dtype.
      crop_size: ``(height, width)`` <= (H, W), a compile-time constant (any sequence of two
        ints); the crop's top-left corner is uniform over all valid positions, independently
        per image; each image-label pair is flipped left-right together with probability 1/2.

    Returns:
      ``(images, labels)`` of shapes (B, height, width, C) and (B, height, width).
    """
    if len(crop_size) != 2:
        raise ValueError(f"crop_size must be (height, width), got {crop_size!r}.")
    # A tuple of Python ints: hashable, so it can be a static argument of the jitted kernel.
    return _augment_camvid(key, images, labels, tuple(int(s) for s in crop_size))


@functools.partial(jax.jit, static_argnames=("crop_size",))
def _augment_camvid(key, images, labels, crop_size):
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    if images.ndim != 4 or labels.shape != images.shape[:3]:
        raise ValueError(
            f"images must be (B, H, W, C) and labels (B, H, W), got {images.shape} and "
            f"{labels.shape}."
        )
    ch, cw = crop_size
    b, h, w, _ = images.shape
    if not (0 < ch <= h and 0 < cw <= w):
        raise ValueError(f"crop_size {crop_size} must lie within the image size {(h, w)}.")
    k_top, k_left, k_flip = jax.random.split(key, 3)
    tops = jax.random.randint(k_top, (b,), 0, h - ch + 1)
    lefts = jax.random.randint(k_left, (b,), 0, w - cw + 1)
    flips = jax.random.bernoulli(k_flip, 0.5, (b,))

    def one(image, label, top, left, flip):
        image, label = _crop(image, top, left, ch, cw), _crop(label, top, left, ch, cw)
        return jnp.where(flip, image[:, ::-1], image), jnp.where(flip, label[:, ::-1], label)

    return jax.vmap(one)(images, labels, tops, lefts, flips)
