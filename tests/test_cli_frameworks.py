"""The ``rfjax`` command line with torchvision / timm / Keras models by name
(rfjax.models.external), image folders (rfjax.images) and ``rfjax trf --png``
(rfjax.plot.trf_mask_plot). Small inputs keep each test to seconds."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

from rfjax.cli import main


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(capsys, *argv) -> str:
    rc, out, err = run(capsys, *argv)
    assert rc == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    return lines[0]


def write_images(folder, sizes=((80, 100), (120, 90), (64, 64))):
    from PIL import Image

    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            folder / f"im{i}.png")
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).save(folder / "gray.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


# --------------------------------------------------------------------------------------------
# torchvision / timm
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "size"), [("resnet18", 435), ("resnet50", 427)])
def test_torchvision_resnet_trf_is_the_published_value(capsys, tmp_path, name, size):
    # The published TRF of ResNet-18 / ResNet-50 at the output of layer4 (Araujo et al.,
    # Distill 2019): 435 / 427, stride 32. The classifier's output has no spatial axis, so
    # the CLI analyses its last feature map, layer4.
    pytest.importorskip("torchvision")
    js = tmp_path / "t.json"
    rc, out, _ = run(capsys, "trf", f"torchvision:{name}", "--input-shape", "1,3,224,224",
                     "--json", js)
    assert rc == 0, out
    data = json.loads(js.read_text())
    assert data["layer"] == "layer4" and data["input"] == [1, 3, 224, 224]
    assert data["size"] == [size, size] and data["stride"] == [32, 32]
    assert data["input_shape"] == [224, 224] and data["output_shape"] == [7, 7]
    assert f"model torchvision:{name}, layer layer4 (its last feature map" in out


def test_torchvision_trf_matches_library_and_png(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    import rfjax

    js, png = tmp_path / "t.json", tmp_path / "t.png"
    rc, out, _ = run(capsys, "trf", "torchvision:resnet18", "--input-shape", "1,3,64,64",
                     "--layer", "layer2", "--unit", "0,1", "--json", js, "--png", png)
    assert rc == 0, out
    data = json.loads(js.read_text())
    torch.manual_seed(0)
    t = rfjax.trf(tv.models.get_model("resnet18", weights=None).eval(), (1, 3, 64, 64),
                  layer="layer2")
    assert data["size"] == list(t.size) == [99, 99] and data["stride"] == [8, 8]
    assert data["region"] == [list(r) for r in t.region((0, 1))] == [[-49, 49], [-41, 57]]
    assert data["pixels"] == int(t.mask((0, 1)).sum()) == 50 * 58
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert f"wrote {png}" in out


def test_timm_native_shape_feature_layer_and_preprocessing(capsys, tmp_path):
    pytest.importorskip("timm")
    from rfjax.models import external

    m = external.load("timm:resnet18")
    assert m.shape == (1, 3, 224, 224) and m.channel_axis == 1 and m.framework == "torch"
    pre = m.preprocessing()
    assert pre.crop_pct == 0.95 and pre.interpolation == "bicubic"
    assert pre.mean == external.IMAGENET_MEAN and pre.std == external.IMAGENET_STD
    assert "resolve_data_config" in pre.description
    assert external.load("timm:convnext_tiny").feature_layer((1, 3, 32, 32)) == "stages"
    assert external.load("timm:efficientnet_b0").feature_layer((1, 3, 32, 32)) == "bn2"
    assert external.load("timm:vit_tiny_patch16_224").feature_layer() is None  # tokens
    js = tmp_path / "t.json"
    rc, out, _ = run(capsys, "trf", "timm:resnet18", "--input-shape", "1,3,64,64", "--json", js)
    assert rc == 0, out
    data = json.loads(js.read_text())
    assert data["layer"] == "layer4" and data["size"] == [435, 435]


def test_torch_weights_round_trip(capsys, tmp_path):
    # --weights loads a state dict: the TRF (structure) is unchanged, the ERF changes.
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    from rfjax.models import external

    torch.manual_seed(123)
    saved = tv.models.get_model("resnet18", weights=None).state_dict()
    path = tmp_path / "w.pth"
    torch.save(saved, path)
    loaded = external.load("torchvision:resnet18").model(0, (1, 3, 32, 32), path).state_dict()
    for k, v in saved.items():
        assert torch.equal(loaded[k], v), k

    common = ["--input-shape", "1,3,32,32", "--layer", "maxpool"]
    trf = []
    for extra in ([], ["--weights", path]):
        js = tmp_path / "t.json"
        assert run(capsys, "trf", "torchvision:resnet18", *common, *extra, "--json", js)[0] == 0
        trf.append(json.loads(js.read_text()))
    assert trf[0] == trf[1] and trf[0]["size"] == [11, 11]
    erf = []
    for extra in ([], ["--weights", path]):
        js = tmp_path / "e.json"
        rc, out, _ = run(capsys, "erf", "torchvision:resnet18", *common, *extra, "--images", 2,
                         "--crop", "none", "--json", js)
        assert rc == 0, out
        erf.append(json.loads(js.read_text()))
    assert erf[1]["weights"] == str(path) and erf[0]["weights"] is None
    assert erf[0]["trf_region"] == erf[1]["trf_region"]
    assert erf[0]["gaussian_fit"]["sigma"] != erf[1]["gaussian_fit"]["sigma"]
    assert erf[0]["radius_mass"] != erf[1]["radius_mass"] or \
        erf[0]["size_gaussian"] != erf[1]["size_gaussian"]
    line = one_line_error(capsys, "erf", "torchvision:resnet18", *common, "--weights", path,
                          "--draws", 2)
    assert "fixed weights (its weights come from --weights)" in line


def test_torch_weights_that_do_not_fit(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")

    sd = tv.models.get_model("resnet18", weights=None).state_dict()
    cases = {"missing.pth": {k: v for k, v in sd.items() if k != "fc.bias"},
             "shape.pth": {**sd, "fc.weight": torch.zeros(3, 512)},
             "list.pth": [1, 2, 3]}
    needles = {"missing.pth": "1 missing key(s) (fc.bias)",
               "shape.pth": "size mismatch for fc.weight",
               "list.pth": "not a state dict"}
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        line = one_line_error(capsys, "trf", "torchvision:resnet18", "--input-shape",
                              "1,3,32,32", "--weights", tmp_path / name)
        assert needles[name] in line, line
    # a training checkpoint {"state_dict": ...} is unwrapped
    torch.save({"epoch": 3, "state_dict": sd}, tmp_path / "ckpt.pth")
    rc, out, _ = run(capsys, "trf", "torchvision:resnet18", "--input-shape", "1,3,32,32",
                     "--weights", tmp_path / "ckpt.pth")
    assert rc == 0, out


def test_erf_of_an_image_folder(capsys, tmp_path):
    pytest.importorskip("torchvision")
    folder = write_images(tmp_path / "photos")
    js, png = tmp_path / "e.json", tmp_path / "e.png"
    rc, out, _ = run(capsys, "erf", "torchvision:resnet18", "--input-shape", "1,3,32,32",
                     "--layer", "layer1", "--images", folder, "--batch-size", 3, "--json", js,
                     "--png", png)
    assert rc == 0, out
    data = json.loads(js.read_text())
    assert data["count"] == 4 and data["images"] == 4 and data["input"] == [4, 3, 32, 32]
    assert data["image_folder"] == str(folder)
    assert data["preprocessing"].startswith("ImageNet mean (0.485, 0.456, 0.406)")
    text = " ".join(out.split())
    assert f"= 1 weight draw(s) x 4 images from {folder}" in text
    assert f"images: the 4 image files of {folder}, resized and centre-cropped to (32, 32)" in text
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_models_lists_torch_layers(capsys):
    pytest.importorskip("torchvision")
    rc, out, _ = run(capsys, "models", "torchvision:resnet18", "--input-shape", "1,3,32,32")
    assert rc == 0
    rows = {ln.split()[0]: ln.split()[1] for ln in out.splitlines()[1:]}
    assert rows["conv1"] == "1x64x16x16" and rows["layer4"] == "1x512x1x1"
    assert rows["layer2.0.conv1"] == "1x128x4x4" and "fc" in rows


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["trf", "torchvision:resnet"], "did you mean resnet50, resnet34, resnet18"),
        (["trf", "timm:convnext_tinny"], "did you mean convnext_tiny"),
        (["trf", "torchvision:"], "give a model name after torchvision:"),
        (["trf", "torchvision:resnet18", "--input-shape", "1,3,32,32", "--layer", "layer5"],
         "did you mean layer4"),
        (["trf", "torchvision:resnet18", "--weights", "/nonexistent_xyz/w.pth"],
         "does not exist"),
        (["erf", "torchvision:resnet18", "--images", "/nonexistent_dir_xyz"], "is not a folder"),
        (["trf", "conv_stack", "--weights", "w.pth"], "--weights needs a torchvision:"),
        (["trf", "gap_classifier", "--png", "x.png"], "--png draws one unit"),
        (["erf", "conv_stack", "--images=-2"], "positive integer"),
    ],
)
def test_errors_are_one_line(capsys, argv, needle):
    if argv[1].startswith(("torchvision", "timm")):
        pytest.importorskip(argv[1].partition(":")[0])
    assert needle in one_line_error(capsys, *argv)


def test_keras_suggestion(capsys):
    pytest.importorskip("keras")
    line = one_line_error(capsys, "trf", "keras:resnet50")
    assert "keras has no model 'resnet50'; did you mean ResNet50" in line


@pytest.mark.parametrize(("spec", "module", "extra"),
                         [("timm:resnet18", "timm", "rfjax[torch]"),
                          ("torchvision:resnet18", "torchvision", "rfjax[torch]"),
                          ("keras:ResNet50", "keras", "rfjax[keras]")])
def test_missing_framework_names_the_extra(capsys, monkeypatch, spec, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    line = one_line_error(capsys, "trf", spec)
    assert f"model {spec!r} needs {module}" in line and f"pip install '{extra}'" in line


def test_image_folder_errors(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    line = one_line_error(capsys, "erf", "conv_stack", "--images", tmp_path / "empty")
    assert "holds no image file" in line
    write_images(tmp_path / "photos")
    # conv_stack takes 2 channels: image files give 1 or 3
    line = one_line_error(capsys, "erf", "conv_stack", "--images", tmp_path / "photos")
    assert "1 (grayscale) or 3 (RGB) channels; the model takes 2" in line


# --------------------------------------------------------------------------------------------
# --channel-axis, help
# --------------------------------------------------------------------------------------------

NCHW = textwrap.dedent(
    """
    import jax.numpy as jnp
    from jax import lax

    def nchw():
        def fn(x):  # (N, 2, H, W) -> (N, 1, H, W): one 3x3 conv
            return lax.conv_general_dilated(x, jnp.ones((1, 2, 3, 3)), (1, 1), "SAME",
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return fn, (1, 2, 9, 11)
    """
)


def test_channel_axis_passes_through(capsys, tmp_path, monkeypatch):
    (tmp_path / "cli_nchw.py").write_text(NCHW)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        js = tmp_path / "t.json"
        rc, out, _ = run(capsys, "trf", "cli_nchw:nchw", "--channel-axis", "1", "--json", js)
        assert rc == 0, out
        data = json.loads(js.read_text())
        assert data["input_shape"] == [9, 11] and data["output_shape"] == [9, 11]
        assert data["size"] == [3, 3] and data["region"] == [[3, 5], [4, 6]]
        rc, out, _ = run(capsys, "erf", "cli_nchw:nchw", "--channel-axis", "1", "--images", 2,
                         "--json", js)
        assert rc == 0, out
        assert json.loads(js.read_text())["size_threshold"]["extent"] == [3, 3]
    finally:
        sys.modules.pop("cli_nchw", None)


def test_help_names_the_frameworks(capsys):
    for cmd, needles in (
            (["trf"], ["--weights", "--channel-axis", "--png", "torchvision:resnet50",
                       "timm:convnext_tiny", "keras:ResNet50", "last feature map",
                       "TRF.mask(unit)"]),
            (["erf"], ["--images", "N|DIR", "timm.data.resolve_data_config", "ImageNet mean",
                       "preprocess_input", "timm:resnet50 --weights model.pth --images"]),
            ([], ["torchvision:<name>", "pip install 'rfjax[torch]'"])):
        with pytest.raises(SystemExit):
            main([*cmd, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        for n in needles:
            assert n in out, (cmd, n)


# --------------------------------------------------------------------------------------------
# Library pieces: rfjax.images, rfjax.plot.trf_mask_plot
# --------------------------------------------------------------------------------------------


def test_load_images_resizes_crops_and_normalises(tmp_path):
    from PIL import Image

    from rfjax import images

    # a 40x80 image: left half black, right half (200, 100, 50)
    a = np.zeros((40, 80, 3), np.uint8)
    a[:, 40:] = (200, 100, 50)
    Image.fromarray(a).save(tmp_path / "b.png")
    Image.fromarray(np.full((10, 10, 3), 255, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "c.png").write_bytes(b"not a png")
    paths = images.list_images(tmp_path)
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["a.png", "b.png", "c.png"]
    mean, std = (0.5, 0.25, 0.125), (0.5, 0.5, 0.25)
    x = images.load_images(paths[:2], (7, 8, 8, 3), mean=mean, std=std, crop_pct=1.0,
                           interpolation="nearest")
    assert x.shape == (2, 8, 8, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], np.broadcast_to((np.array([1.0] * 3) - mean) / std,
                                                     (8, 8, 3)), rtol=1e-6)
    # shorter side 40 -> 8 (width 16), centre crop 8: columns 4..11 of 16, half each colour
    right = (np.array([200, 100, 50]) / 255 - mean) / std
    np.testing.assert_allclose(x[1][:, 4:], np.broadcast_to(right, (8, 4, 3)), rtol=1e-5)
    np.testing.assert_allclose(x[1][:, :4], np.broadcast_to(-np.array(mean) / std, (8, 4, 3)))
    nchw = images.load_images(paths[:2], (1, 3, 8, 8), channel_axis=1, mean=mean, std=std,
                              crop_pct=1.0, interpolation="nearest")
    np.testing.assert_array_equal(nchw, np.moveaxis(x, -1, 1))
    gray = images.load_images(paths[:1], (1, 8, 8, 1), mean=mean, std=std)
    np.testing.assert_allclose(gray, (1 - np.mean(mean)) / np.mean(std), rtol=1e-6)
    t = images.load_images(paths[:1], (1, 4, 4, 3), transform=lambda p: p - 255.0)
    assert np.all(t == 0)
    assert [b.shape[0] for b in images.image_batches(paths[:2] * 2 + paths[:1], (1, 4, 4, 3),
                                                     2)] == [2, 2, 1]
    with pytest.raises(ValueError, match="cannot read the image"):
        images.load_images(paths[2:], (1, 4, 4, 3))
    with pytest.raises(ValueError, match="the model takes 2"):
        images.load_images(paths[:1], (1, 4, 4, 2))
    with pytest.raises(ValueError, match="2-D image input"):
        images.load_images(paths[:1], (1, 4, 3))
    with pytest.raises(NotADirectoryError):
        images.list_images(tmp_path / "a.png")


def test_trf_mask_plot_draws_mask_and_clipped_region(tmp_path):
    import matplotlib.pyplot as plt

    from rfjax.plot import trf_mask_plot

    mask = np.zeros((10, 12), bool)
    mask[0:4, 2:7] = True
    fig = trf_mask_plot(mask, ((-3, 3), (2, 6)), title="TRF of m, unit (0, 1)")
    ax = fig.axes[0]
    title = ax.get_title()
    assert title.startswith("TRF of m, unit (0, 1)\nregion rows -3..3, cols 2..6 (inclusive, "
                            "unclipped)")
    assert "20 input pixels in the field" in title and "10x12 input" in title
    (rect,) = ax.patches  # the clipped region: rows 0..3, cols 2..6
    assert rect.get_xy() == (1.5, -0.5) and rect.get_width() == 5 and rect.get_height() == 4
    assert ax.get_xlim() == (-0.5, 11.5) and ax.get_ylim() == (9.5, -0.5)
    plt.close(fig)
    fig = trf_mask_plot(np.ones(5, bool), ((-1, 5),))
    assert "x -1..5" in fig.axes[0].get_title()
    plt.close(fig)
    m3 = np.zeros((4, 5, 5), bool)
    m3[1:3, 1:4, 1:4] = True
    trf_mask_plot(m3, ((1, 2), (1, 3), (1, 3)), path=tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="region"):
        trf_mask_plot(mask, ((0, 1),))


# --------------------------------------------------------------------------------------------
# Keras (its first model build compiles its initialisers: ~15 s on CPU)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_keras_trf_erf_images_and_weights(capsys, tmp_path):
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("Keras is not on the JAX backend")
    from rfjax.models import external

    m = external.load("keras:MobileNetV2")
    assert m.channel_axis == -1 and m.framework == "keras"
    assert "mobilenet_v2.preprocess_input" in m.preprocessing().description
    common = ["keras:MobileNetV2", "--input-shape", "1,64,64,3"]
    js = tmp_path / "t.json"
    rc, out, _ = run(capsys, "trf", *common, "--json", js)
    assert rc == 0, out
    data = json.loads(js.read_text())
    # MobileNetV2's published TRF (Araujo et al., Distill 2019): 491, stride 32
    assert data["layer"] == "out_relu" and data["size"] == [491, 491]
    assert data["stride"] == [32, 32] and data["output_shape"] == [2, 2]

    keras.utils.set_random_seed(5)
    other = keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3))
    path = tmp_path / "w.weights.h5"
    other.save_weights(path)
    folder = write_images(tmp_path / "photos", sizes=((70, 90),))
    erf = []
    for extra in ([], ["--weights", path]):
        js = tmp_path / "e.json"
        rc, out, _ = run(capsys, "erf", *common, "--layer", "block_3_expand_relu", "--images",
                         folder, *extra, "--json", js)
        assert rc == 0, out
        erf.append(json.loads(js.read_text()))
    assert erf[0]["count"] == 2 and erf[0]["preprocessing"].endswith("preprocess_input")
    assert erf[0]["trf_region"] == erf[1]["trf_region"]
    assert erf[0]["gaussian_fit"]["sigma"] != erf[1]["gaussian_fit"]["sigma"]
