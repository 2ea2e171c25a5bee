"""Tests of rfjax.data: the TFDS builders on synthetic copies of both layouts, bad input,
the data order and the augmentations; one test reads ../shared/data when it exists."""

import pickle
import re
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image
from synthetic import make_camvid, make_cifar, write_cifar, write_png

from rfjax import data

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# --------------------------------------------------------------------------- synthetic data


@pytest.fixture
def prepared(tmp_path):
    return tmp_path / "prepared"


# --------------------------------------------------------------------------- builders


def test_cifar10_builder_roundtrip(tmp_path, prepared):
    src = tmp_path / "src"
    batches = make_cifar(src)
    train = data.load("cifar10", "train", data_dir=src, prepared_dir=prepared)
    test = data.load("cifar10", "test", data_dir=src, prepared_dir=prepared)
    want_images = np.concatenate([batches["data_batch_1"][0], batches["data_batch_2"][0]])
    want_labels = batches["data_batch_1"][1] + batches["data_batch_2"][1]
    assert isinstance(train, data.Split) and (train.name, train.split) == ("cifar10", "train")
    assert train.images.dtype == np.uint8 and train.images.shape == (5, 32, 32, 3)
    assert train.labels.dtype == np.int32 and train.labels.shape == (5,)
    np.testing.assert_array_equal(train.images, want_images)
    np.testing.assert_array_equal(train.labels, want_labels)
    np.testing.assert_array_equal(test.images, batches["test_batch"][0])
    np.testing.assert_array_equal(test.labels, batches["test_batch"][1])
    assert len(test) == 2 and test.num_classes == 10
    # TFDS wrote array_record files, and TensorFlow was never imported.
    assert list(prepared.rglob("*.array_record*"))
    assert "tensorflow" not in sys.modules


def test_cifar10_any_image_size_and_batch_order(tmp_path, prepared):
    rng = np.random.default_rng(1)
    batches = {
        f: (rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8), [i])
        for i, f in enumerate(["data_batch_2", "data_batch_10", "data_batch_1", "test_batch"])
    }
    write_cifar(tmp_path / "src", batches)
    train = data.load("cifar10", "train", data_dir=tmp_path / "src", prepared_dir=prepared)
    assert train.images.shape == (3, 8, 8, 3)
    order = ["data_batch_1", "data_batch_2", "data_batch_10"]  # numeric, not lexical
    np.testing.assert_array_equal(train.images, np.concatenate([batches[f][0] for f in order]))
    np.testing.assert_array_equal(train.labels, [batches[f][1][0] for f in order])


def test_camvid_builder_roundtrip(tmp_path, prepared):
    src = tmp_path / "src"
    want = make_camvid(src)
    for split in ("train", "val", "test"):
        got = data.load("camvid", split, data_dir=src, prepared_dir=prepared)
        images, labels = want[split]
        assert (got.name, got.split, got.num_classes) == ("camvid", split, 11)
        assert got.images.dtype == np.uint8 and got.images.shape == images.shape
        assert got.labels.dtype == np.int32 and got.labels.shape == labels.shape
        np.testing.assert_array_equal(got.images, images)
        np.testing.assert_array_equal(got.labels, labels)
        assert (got.labels == data.CAMVID_VOID).any() and got.labels.max() == 11
    assert list(prepared.rglob("*.array_record*"))
    assert "tensorflow" not in sys.modules


def test_camvid_accepts_palette_labels_and_segnet_absolute_paths(tmp_path, prepared):
    src = tmp_path / "src"
    want = make_camvid(src, sizes=(("train", 2), ("val", 1), ("test", 1)))
    folder = src / "camvid"
    # A palette ("P") label PNG decodes to its indices; re-encoded by the builder.
    labels = want["train"][1]
    pal = Image.fromarray(labels[0], mode="L").convert("P")
    pal.putpalette([v for i in range(256) for v in (i, 255 - i, 7)])
    pal.save(folder / "trainannot" / "seq_train_000.png")
    assert Image.open(folder / "trainannot" / "seq_train_000.png").mode == "P"
    # The SegNet tutorial's list files hold absolute /SegNet/CamVid/... paths.
    lines = (folder / "train.txt").read_text().split("\n")
    lines = [" ".join("/SegNet/CamVid/" + p for p in ln.split()) for ln in lines if ln]
    (folder / "train.txt").write_text("\n".join(lines))
    got = data.load("camvid", "train", data_dir=src, prepared_dir=prepared)
    np.testing.assert_array_equal(got.labels, labels)
    np.testing.assert_array_equal(got.images, want["train"][0])


def test_prepared_copies_are_keyed_on_source(tmp_path, prepared):
    a, b = tmp_path / "a", tmp_path / "b"
    make_camvid(a, seed=1)
    want_b = make_camvid(b, seed=2)
    got_a = data.load("camvid", "val", data_dir=a, prepared_dir=prepared)
    got_b = data.load("camvid", "val", data_dir=b, prepared_dir=prepared)
    np.testing.assert_array_equal(got_b.labels, want_b["val"][1])
    assert not np.array_equal(got_a.images, got_b.images)
    assert len([p for p in prepared.iterdir() if p.name.startswith("camvid-")]) == 2
    # Changing a source file gives a new key: the edited data is rebuilt, not stale.
    new = np.zeros((12, 16, 3), np.uint8)
    write_png(b / "camvid" / "val" / "seq_val_000.png", new)
    got_b2 = data.load("camvid", "val", data_dir=b, prepared_dir=prepared)
    np.testing.assert_array_equal(got_b2.images[0], new)


def test_folders_from_environment(tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_cifar(src)
    monkeypatch.setenv("RFJAX_DATA_DIR", str(src))
    monkeypatch.setenv("RFJAX_TFDS_DIR", str(tmp_path / "envprep"))
    assert data.resolve_data_dir() == src.resolve()
    assert data.resolve_prepared_dir() == (tmp_path / "envprep").resolve()
    assert data.resolve_prepared_dir(tmp_path / "x") == (tmp_path / "x").resolve()
    got = data.load("cifar10", "test")
    assert got.images.shape == (2, 32, 32, 3)
    assert any((tmp_path / "envprep").iterdir())
    monkeypatch.delenv("RFJAX_TFDS_DIR")
    assert data.resolve_prepared_dir() == data.DEFAULT_PREPARED_DIR.expanduser().resolve()


def test_fallback_source_is_shared_data_next_to_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("RFJAX_DATA_DIR", raising=False)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    assert data.resolve_data_dir() == (tmp_path / "shared" / "data").resolve()


# --------------------------------------------------------------------------- bad input


def test_missing_source_folder_says_where_and_how(tmp_path, monkeypatch, prepared):
    monkeypatch.delenv("RFJAX_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/data here
    with pytest.raises(ValueError, match=r"No source data folder.*cifar-10-batches-py.*"
                                         r"--data-dir.*RFJAX_DATA_DIR"):
        data.load("cifar10", "train", prepared_dir=prepared)
    missing = tmp_path / "nowhere"
    where = re.escape(str(missing))
    with pytest.raises(ValueError, match=rf"{where}.*does not exist.*camvid.*--data-dir"):
        data.load("camvid", "train", data_dir=missing, prepared_dir=prepared)
    # The folder exists but lacks the dataset's subfolder.
    make_cifar(tmp_path / "src")
    with pytest.raises(ValueError, match=r"camvid source data not found.*trainannot.*--data-dir"):
        data.load("camvid", "train", data_dir=tmp_path / "src", prepared_dir=prepared)
    assert not prepared.exists() or not any(prepared.rglob("*.array_record*"))


def test_truncated_cifar_batch_names_the_file(tmp_path, prepared):
    folder = write_cifar(tmp_path, {})
    make_cifar(tmp_path)
    blob = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"(?i)corrupt or truncated.*data_batch_2"):
        data.load("cifar10", "train", data_dir=tmp_path, prepared_dir=prepared)


def test_cifar_wrong_contents_and_labels_out_of_range(tmp_path, prepared):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    write_cifar(tmp_path, {"data_batch_1": (images, [3, 10]), "test_batch": (images, [0, 1])})
    with pytest.raises(ValueError, match=r"data_batch_1.*label 10 at index 1.*0\.\.9"):
        data.load("cifar10", "train", data_dir=tmp_path, prepared_dir=prepared)
    # One build writes every split, so each bad file below fails the build.
    write_cifar(tmp_path, {"data_batch_1": (images, [3, 9])})
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, f)
    with pytest.raises(ValueError, match=r"test_batch.*b'labels' must hold 2"):
        data.load("cifar10", "test", data_dir=tmp_path, prepared_dir=prepared)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(ValueError, match=r"test_batch is not a batch dict"):
        data.load("cifar10", "test", data_dir=tmp_path, prepared_dir=prepared)


def test_corrupt_camvid_png_names_the_file(tmp_path, prepared):
    make_camvid(tmp_path)
    bad = tmp_path / "camvid" / "valannot" / "seq_val_001.png"
    blob = bad.read_bytes()
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"(?i)corrupt or truncated.*valannot/seq_val_001\.png"):
        data.load("camvid", "val", data_dir=tmp_path, prepared_dir=prepared)
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"valannot/seq_val_001\.png"):
        data.load("camvid", "val", data_dir=tmp_path, prepared_dir=prepared)


def test_camvid_labels_out_of_range_and_other_layout_errors(tmp_path, prepared):
    make_camvid(tmp_path)
    folder = tmp_path / "camvid"
    label = np.zeros((12, 16), np.uint8)
    label[3, 4] = 12
    write_png(folder / "testannot" / "seq_test_001.png", label)
    with pytest.raises(ValueError, match=r"testannot/seq_test_001\.png.*\[12\].*0\.\.11"):
        data.load("camvid", "test", data_dir=tmp_path, prepared_dir=prepared)
    # Size mismatch between an image and its label.
    write_png(folder / "testannot" / "seq_test_001.png", np.zeros((6, 16), np.uint8))
    with pytest.raises(ValueError, match=r"seq_test_001\.png is 12x16 but its label.*6x16"):
        data.load("camvid", "test", data_dir=tmp_path, prepared_dir=prepared)
    # An RGB (colour-coded) label is not class indices.
    write_png(folder / "valannot" / "seq_val_000.png", np.zeros((12, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"valannot/seq_val_000\.png must be a single-channel"):
        data.load("camvid", "val", data_dir=tmp_path, prepared_dir=prepared)
    # A list file naming a missing file, and a malformed line.
    (folder / "train.txt").write_text("train/seq_train_000.png trainannot/nope.png\n")
    with pytest.raises(ValueError, match=r"train\.txt:1: file not found: .*trainannot/nope"):
        data.load("camvid", "train", data_dir=tmp_path, prepared_dir=prepared)
    (folder / "train.txt").write_text("train/seq_train_000.png\n")
    with pytest.raises(ValueError, match=r"train\.txt:1: expected 'IMAGE LABEL'"):
        data.load("camvid", "train", data_dir=tmp_path, prepared_dir=prepared)
    (folder / "train.txt").unlink()
    with pytest.raises(ValueError, match=r"CamVid list file not found: .*train\.txt"):
        data.load("camvid", "train", data_dir=tmp_path, prepared_dir=prepared)


def test_unknown_dataset_or_split(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown dataset 'mnist'.*cifar10.*camvid"):
        data.load("mnist", "train", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"Unknown split 'val' for dataset 'cifar10'"):
        data.load("cifar10", "val", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"Unknown split 'validation'.*'train', 'val', 'test'"):
        data.load("camvid", "validation", data_dir=tmp_path)


def test_constants():
    assert data.NUM_CLASSES == {"cifar10": 10, "camvid": 11}
    assert len(data.CAMVID_CLASSES) == 11 and data.CAMVID_CLASSES[0] == "Sky"
    assert data.CAMVID_CLASSES[-1] == "Bicyclist" and data.CAMVID_VOID == 11
    assert len(data.CIFAR10_CLASSES) == 10 and data.CIFAR10_CLASSES[9] == "truck"


# --------------------------------------------------------------------------- data order


@pytest.mark.parametrize("n, bs", [(10, 3), (7, 7), (5, 12), (1, 4)])
def test_batch_indices_is_the_epoch_stream(n, bs):
    seed, steps = 3, 9
    stream = np.concatenate(
        [np.random.default_rng([seed, e]).permutation(n) for e in range(steps * bs // n + 2)]
    )
    for step in range(steps):
        got = data.batch_indices(seed, step, n, bs)
        assert got.shape == (bs,) and np.issubdtype(got.dtype, np.integer)
        np.testing.assert_array_equal(got, stream[step * bs:(step + 1) * bs])
    # Every example exactly once per epoch (wrap-around, nothing dropped).
    first_epochs = np.concatenate([data.batch_indices(seed, s, n, bs) for s in range(n)])
    for e in range(bs):
        np.testing.assert_array_equal(np.sort(first_epochs[e * n:(e + 1) * n]), np.arange(n))


def test_batch_indices_depends_only_on_arguments():
    a = data.batch_indices(0, 5, 1000, 32)
    np.testing.assert_array_equal(a, data.batch_indices(0, 5, 1000, 32))
    assert not np.array_equal(a, data.batch_indices(1, 5, 1000, 32))
    assert not np.array_equal(a, data.batch_indices(0, 6, 1000, 32))
    # Epoch permutations differ from one epoch to the next.
    e0 = np.concatenate([data.batch_indices(0, s, 100, 10) for s in range(10)])
    e1 = np.concatenate([data.batch_indices(0, s, 100, 10) for s in range(10, 20)])
    assert not np.array_equal(e0, e1)


def test_batch_indices_bad_arguments():
    with pytest.raises(ValueError, match="step must be >= 0"):
        data.batch_indices(0, -1, 10, 2)
    with pytest.raises(ValueError, match="num_examples must be >= 1"):
        data.batch_indices(0, 0, 0, 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.batch_indices(0, 0, 10, 0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        data.batch_indices(-2, 0, 10, 2)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        data.batch_indices(0, 0, 10, 2.0)


# --------------------------------------------------------------------------- augmentation


def _crops(image: np.ndarray, pad: int, out_hw) -> list[np.ndarray]:
    """Brute force: every crop of the zero-padded image and of its mirror."""
    padded = np.pad(image, ((pad, pad), (pad, pad)) + ((0, 0),) * (image.ndim - 2))
    h, w = out_hw
    out = []
    for top in range(padded.shape[0] - h + 1):
        for left in range(padded.shape[1] - w + 1):
            crop = padded[top:top + h, left:left + w]
            out += [crop, crop[:, ::-1]]
    return out


def test_augment_cifar_is_a_padded_crop_and_flip_deterministic_per_key():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 10, 12, 3)).astype(np.float32)
    key = jax.random.key(7)
    out = np.asarray(data.augment_cifar(key, images))
    assert out.shape == images.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.asarray(data.augment_cifar(key, images)))
    assert not np.array_equal(out, np.asarray(data.augment_cifar(jax.random.key(8), images)))
    flipped = shifted = 0
    for img, got in zip(images, out, strict=True):
        candidates = _crops(img, 4, img.shape[:2])
        assert any(np.array_equal(got, c) for c in candidates)
        flipped += any(np.array_equal(got, c) for c in candidates[1::2])
        shifted += not (np.array_equal(got, img) or np.array_equal(got, img[:, ::-1]))
    assert 0 < flipped < 16 and shifted > 0
    # pad=0: only identity or mirror.
    out0 = np.asarray(data.augment_cifar(key, images, pad=0))
    for img, got in zip(images, out0, strict=True):
        assert np.array_equal(got, img) or np.array_equal(got, img[:, ::-1])


def test_augment_camvid_same_crop_and_flip_for_image_and_label():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 12, (8, 9, 11)).astype(np.int32)
    # Channel 0 of the image carries the label: the pair must stay aligned.
    images = np.concatenate(
        [labels[..., None].astype(np.float32), rng.normal(size=(8, 9, 11, 2))], axis=-1
    ).astype(np.float32)
    key = jax.random.key(3)
    out_i, out_l = data.augment_camvid(key, images, labels, (5, 7))
    out_i, out_l = np.asarray(out_i), np.asarray(out_l)
    assert out_i.shape == (8, 5, 7, 3) and out_l.shape == (8, 5, 7)
    assert out_l.dtype == np.int32 and out_i.dtype == np.float32
    np.testing.assert_array_equal(out_i[..., 0], out_l)
    for img, got in zip(images, out_i, strict=True):
        assert any(np.array_equal(got, c) for c in _crops(img, 0, (5, 7)))
    again = data.augment_camvid(key, images, labels, [5, 7])  # any sequence of two ints
    np.testing.assert_array_equal(np.asarray(again[0]), out_i)
    np.testing.assert_array_equal(np.asarray(again[1]), out_l)
    other = data.augment_camvid(jax.random.key(4), images, labels, (5, 7))
    assert not np.array_equal(np.asarray(other[1]), out_l)
    # Full-size crop: identity or mirror only.
    full_i, full_l = data.augment_camvid(key, images, labels, (9, 11))
    for img, lab, gi, gl in zip(images, labels, np.asarray(full_i), np.asarray(full_l),
                                strict=True):
        assert (np.array_equal(gi, img) and np.array_equal(gl, lab)) or (
            np.array_equal(gi, img[:, ::-1]) and np.array_equal(gl, lab[:, ::-1]))


def test_augment_bad_shapes():
    with pytest.raises(ValueError, match=r"crop_size \(10, 4\) must lie within"):
        data.augment_camvid(jax.random.key(0), np.zeros((1, 9, 11, 3)), np.zeros((1, 9, 11)),
                            (10, 4))
    with pytest.raises(ValueError, match=r"crop_size must be \(height, width\)"):
        data.augment_camvid(jax.random.key(0), np.zeros((1, 9, 11, 3)), np.zeros((1, 9, 11)),
                            (4,))
    with pytest.raises(ValueError, match=r"labels \(B, H, W\)"):
        data.augment_camvid(jax.random.key(0), np.zeros((1, 9, 11, 3)), np.zeros((1, 9, 10)),
                            (4, 4))
    with pytest.raises(ValueError, match=r"images must be \(B, H, W, C\)"):
        data.augment_cifar(jax.random.key(0), np.zeros((9, 11, 3)))


def test_normalize_exact_and_inverse():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    y = np.asarray(data.normalize(x))
    assert y.dtype == np.float32 and y.shape == x.shape
    # float32 result within about one ulp of the exact value.
    np.testing.assert_allclose(y, x.astype(np.float64) / 127.5 - 1, rtol=0, atol=1.2e-7)
    assert y.min() == -1.0 and y.max() == 1.0
    np.testing.assert_allclose(np.asarray(data.denormalize(y)), x, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="session")
def real_prepared(tmp_path_factory):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return tmp_path_factory.mktemp("real_prepared")


def _pil(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def test_real_shared_data(real_prepared):
    """Build both real datasets (about 1 s each) and check them against the raw files."""
    cifar_dir = SHARED_DATA / "cifar10" / "cifar-10-batches-py"
    with open(cifar_dir / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    for split in ("train", "test"):
        got = data.load("cifar10", split, data_dir=SHARED_DATA, prepared_dir=real_prepared)
        assert got.images.shape[1:] == (32, 32, 3) and got.images.dtype == np.uint8
        assert got.labels.shape == (len(got),) and got.labels.dtype == np.int32
        assert set(np.unique(got.labels)) == set(range(10))
    n = len(raw[b"labels"])
    assert len(got) == n
    np.testing.assert_array_equal(got.labels, raw[b"labels"])
    np.testing.assert_array_equal(
        got.images, raw[b"data"].reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))

    camvid_dir = SHARED_DATA / "camvid"
    for split in ("train", "val", "test"):
        got = data.load("camvid", split, data_dir=SHARED_DATA, prepared_dir=real_prepared)
        pairs = [ln.split() for ln in (camvid_dir / f"{split}.txt").read_text().splitlines()
                 if ln.strip()]
        assert len(got) == len(pairs)
        for i in (0, len(pairs) - 1):
            np.testing.assert_array_equal(got.images[i], _pil(camvid_dir / pairs[i][0]))
            np.testing.assert_array_equal(got.labels[i], _pil(camvid_dir / pairs[i][1]))
        assert got.labels.shape == got.images.shape[:3] and got.labels.dtype == np.int32
        assert got.labels.min() >= 0 and got.labels.max() <= data.CAMVID_VOID
    assert "tensorflow" not in sys.modules


def test_no_tensorflow_anywhere():
    """Last in the file on purpose: after every build and read above."""
    assert "tensorflow" not in sys.modules
    import rfjax.datasets  # noqa: F401

    assert "tensorflow" not in sys.modules
