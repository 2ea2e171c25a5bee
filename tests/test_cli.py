"""The ``rfjax`` command line (rfjax.cli), called in-process with tiny models."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rfjax.cli import main

# A factory module written into a temporary directory (the CLI imports from the current one).
FACTORY = textwrap.dedent(
    """
    import jax.numpy as jnp
    from jax import lax

    def _stack(kernels):
        def fn(x):
            for k in kernels:
                x = lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return x
        return fn

    def uniform2():
        # two linear 3x3 convs of ones, 1 -> 2 -> 1 channels: the ERF is the box (*) box
        ks = [jnp.ones((3, 3, 1, 2)), jnp.ones((3, 3, 2, 1))]
        return _stack(ks), jnp.zeros((1, 11, 11, 1))

    def seeded(seed=0):
        import jax
        k = jax.random.normal(jax.random.key(seed), (3, 3, 1, 1))
        return _stack([k]), (1, 9, 9, 1)

    def dead():
        # a zero kernel: the ERF map is all zero, so it has no metrics
        return _stack([jnp.zeros((3, 3, 1, 1))]), (1, 9, 9, 1)

    def bad_return():
        return 42

    not_callable = 3
    """
)


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "cli_factories.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("cli_factories", None)


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_models_lists_builtins(capsys):
    rc, out, _ = run(capsys, "models")
    assert rc == 0
    for name in ("conv_stack", "resnet50", "resnet50_full", "conv_stack_10x64", "vit"):
        assert any(line.split()[0] == name for line in out.splitlines())


def test_trf_builtin_table_and_json(capsys, tmp_path):
    path = tmp_path / "t.json"
    rc, out, _ = run(capsys, "trf", "conv_stack", "--json", str(path))
    assert rc == 0
    assert "ConvStack/conv4" in out and "closed form" in out
    assert "size=(9, 9)" in out and "padding=(4, 4)" in out
    data = json.loads(path.read_text())
    assert data["size"] == [9, 9] and data["stride"] == [1, 1] and data["padding"] == [4, 4]
    assert data["unit"] == [8, 8] and data["region"] == [[4, 12], [4, 12]]
    assert data["pixels"] == 81 and len(data["layers"]) == 4


def test_trf_input_shape_and_unit_match_library(capsys, tmp_path):
    import functools

    import rfjax
    from rfjax.models import zoo

    path = tmp_path / "t.json"
    rc, out, _ = run(capsys, "trf", "conv_stack_strided", "--input-shape", "2,48,40,2",
                     "--unit", "0,3", "--json", str(path))
    assert rc == 0
    model, _ = zoo.examples()["conv_stack_strided"]
    v = zoo.init_variables(model, (2, 48, 40, 2))
    t = rfjax.trf(functools.partial(model.apply, v), (2, 48, 40, 2))
    data = json.loads(path.read_text())
    assert data["input"] == [2, 48, 40, 2] and data["input_shape"] == [48, 40]
    assert data["output_shape"] == list(t.output_shape)
    assert data["region"] == [list(r) for r in t.region((0, 3))]
    assert data["pixels"] == int(t.mask((0, 3)).sum())
    assert "unit (0, 3)" in out


def test_trf_misaligned_model_prints_dash_strides_and_json_null(capsys, tmp_path):
    path = tmp_path / "t.json"
    rc, out, _ = run(capsys, "trf", "transposed", "--json", str(path))
    assert rc == 0
    assert "stride=(-, -)" in out and "aligned=False" in out
    assert 'stride "-": no single stride fits every unit on that axis' in out
    data = json.loads(path.read_text())
    assert data["stride"] == [None, None] and data["aligned_axes"] == [False, False]


def test_trf_global_output_has_no_unit(capsys):
    rc, out, _ = run(capsys, "trf", "gap_classifier")
    assert rc == 0 and "no spatial axis" in out


def test_erf_factory_exact_box_json_png(capsys, factories):
    js, png = factories / "e.json", factories / "e.png"
    rc, out, _ = run(capsys, "erf", "cli_factories:uniform2", "--images", "3", "--json", str(js),
                     "--png", str(png))
    assert rc == 0, out
    data = json.loads(js.read_text())
    assert data["count"] == 3 and data["nonfinite"] == 0 and data["unit"] == [5, 5]
    assert data["trf_size"] == [5, 5] and data["trf_region"] == [[3, 7], [3, 7]]
    # The map is 2 * (box * box) around (5, 5): per-axis variance 2 * 2/3, so 4 sigma =
    # 4 sqrt(4/3); the threshold reading holds every pixel of the 5x5 support.
    sig = math.sqrt(4.0 / 3.0)
    np.testing.assert_allclose(data["gaussian_fit"]["sigma"], [sig, sig], rtol=1e-5)
    np.testing.assert_allclose(data["gaussian_fit"]["mean"], [5, 5], atol=1e-5)
    np.testing.assert_allclose(data["size_gaussian"]["extent"], [4 * sig] * 2, rtol=1e-5)
    assert data["size_threshold"]["extent"] == [5, 5] and data["size_threshold"]["area"] == 25
    np.testing.assert_allclose(data["erf_trf_ratio_gaussian"]["axis"], [4 * sig / 5] * 2,
                               rtol=1e-5)
    assert data["erf_trf_ratio_threshold"]["area"] == 1.0
    assert len(data["area_ratio"]["ratio"]) == 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "size (gaussian, 4 sigma)" in out and "ERF/TRF" in out and "wrote" in out
    # every printed number has its meaning next to it
    text = " ".join(out.split())
    assert "ERF: the mean of 3 gradient maps = 1 weight draw(s) x 3 random images" in text
    for meaning in ("(4 sigma per axis of the moment-fitted Gaussian",
                    "(pixels above 4.55% (1 - 95.45%) of the map's maximum",
                    "(r2 = 1 - SS(map - fit) / SS(map - mean(map)): 1 = a Gaussian, 0 or below "
                    "= the Gaussian fits no better than a constant; rel_l2 = ||map - fit|| / "
                    "||map||)",
                    "none: no tested square (sides 3 to 9 of 11x11) holds it)",
                    "(the smallest radius around the map's maximum enclosing 50% / 90%"):
        assert meaning in text, meaning


def test_erf_builtin_draws_and_conventions(capsys, tmp_path):
    js = tmp_path / "e.json"
    rc, out, _ = run(capsys, "erf", "conv1d", "--images", "2", "--draws", "2", "--crop", "none",
                     "--convention", "replknet", "--json", str(js), "--png",
                     str(tmp_path / "e.png"))
    assert rc == 0, out
    data = json.loads(js.read_text())
    assert data["draws"] == 2 and data["count"] == 4 and data["crop"] == "none"
    # 4 maps in all, counted once (not "4 images x 2 draws")
    assert "ERF: the mean of 4 gradient maps = 2 weight draw(s) x 2 random images" in out
    assert data["reduce"] == "relu" and data["convention"] == "replknet"
    assert "area_ratio" not in data  # a 1-D map
    assert (tmp_path / "e.png").stat().st_size > 0


def test_layer_option_lists_and_selects_inner_layers(capsys, tmp_path):
    rc, out, _ = run(capsys, "models", "conv_stack")
    assert rc == 0
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == ["conv1", "conv2", "conv3",
                                                              "conv4"]
    js = tmp_path / "t.json"
    rc, out, _ = run(capsys, "trf", "conv_stack", "--layer", "conv2", "--json", str(js))
    assert rc == 0 and "layer conv2" in out
    data = json.loads(js.read_text())
    assert data["layer"] == "conv2" and data["size"] == [5, 5]
    assert data["region"] == [[6, 10], [6, 10]]
    rc, out, _ = run(capsys, "erf", "conv_stack", "--layer", "conv2", "--images", "2",
                     "--crop", "none", "--json", str(js))
    assert rc == 0, out
    data = json.loads(js.read_text())
    assert data["trf_size"] == [5, 5] and data["size_threshold"]["extent"][0] <= 5


def test_erf_seeded_factory_draws(capsys, factories):
    rc, out, _ = run(capsys, "erf", "cli_factories:seeded", "--images", "2", "--draws", "2",
                     "--reduce", "grad", "--crop", "none")
    assert rc == 0, out
    assert "2 weight draw(s)" in out


def test_erf_of_an_all_zero_map_notes_that_it_has_no_metrics(capsys, factories):
    js = factories / "z.json"
    rc, out, _ = run(capsys, "erf", "cli_factories:dead", "--images", "2", "--json", str(js))
    assert rc == 0, out
    assert "no metrics: map is all zero" in out
    data = json.loads(js.read_text())
    assert data["note"].startswith("no metrics: map is all zero") and "size_gaussian" not in data


def test_erf_options_are_the_library_constants(capsys):
    import inspect

    from rfjax.cli import _parser
    from rfjax.effective import CONVENTIONS, CROPS, REDUCTIONS, erf

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    actions = {a.dest: a for a in sub.choices["erf"]._actions}
    defaults = inspect.signature(erf).parameters
    for dest, const in (("reduce", REDUCTIONS), ("convention", CONVENTIONS), ("crop", CROPS)):
        assert actions[dest].choices is const
        if dest != "reduce":  # --reduce defaults to the convention's own (None: unset)
            assert actions[dest].default == defaults[dest].default
    with pytest.raises(SystemExit):
        main(["erf", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for const in (REDUCTIONS, CONVENTIONS, CROPS):
        assert "{" + ",".join(const) + "}" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["trf", "no_such_model"], "unknown model"),
        (["trf", "conv"], "did you mean"),
        (["trf", "no_such_module_xyz:f"], "cannot import module"),
        (["trf", "cli_factories:nothing"], "has no attribute"),
        (["trf", "cli_factories:not_callable"], "not callable"),
        (["trf", "cli_factories:bad_return"], "must return (fn, example_input)"),
        (["trf", ":f"], "package.module:factory"),
        (["trf", "conv_stack", "--input-shape", "1,a,3"], "comma-separated integers"),
        (["trf", "conv_stack", "--input-shape", "16,16"], "has 2 axes"),
        (["trf", "conv_stack", "--input-shape", "1,0,16,2"], "every axis must be >= 1"),
        (["trf", "conv_stack", "--input-shape", "1,16,2"], "takes 4"),
        (["trf", "cli_factories:uniform2", "--input-shape", "1,8,8,3"], "input shape"),
        (["trf", "conv_stack", "--unit", "99,99"], "outside the output"),
        (["trf", "conv_stack", "--unit", "1"], "outside the output"),
        (["trf", "conv_stack", "--unit=-1,2"], ">= 0"),
        (["trf", "gap_classifier", "--unit", "0,0"], "no spatial axis"),
        (["erf", "gap_classifier"], "no spatial axis"),
        (["erf", "conv_stack", "--unit", "16,0"], "outside the output"),
        (["erf", "conv_stack", "--images", "0"], "positive integer"),
        (["erf", "conv_stack", "--reduce", "max"], "invalid choice"),
        (["erf", "conv_stack", "--convention", "openerf", "--reduce", "abs"], "openerf"),
        (["erf", "conv_stack", "--convention", "replknet", "--reduce", "abs"], "replknet"),
        (["erf", "cli_factories:uniform2", "--draws", "2"], "fixed weights"),
        (["trf", "conv_stack", "--json", "/nonexistent_dir_xyz/t.json"], "--json"),
        (["trf", "conv_stack", "--layer", "conv"], "did you mean conv1"),
        (["erf", "conv_stack", "--layer", "nope"], "no such layer"),
        (["trf", "cli_factories:uniform2", "--layer", "conv1"], "needs a built-in, torchvision:"),
        (["models", "cli_factories:uniform2"], "unknown built-in model"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_errors_are_one_line_exit_2(capsys, factories, argv, needle):
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rfjax") and "error:" in lines[0]
    assert needle in lines[0]
    assert "Traceback" not in err


def test_debug_reraises(factories):
    from rfjax.cli import CLIError

    with pytest.raises(CLIError, match="unknown model"):
        main(["--debug", "trf", "no_such_model"])


@pytest.mark.parametrize("cmd", [[], ["trf"], ["erf"], ["models"]])
def test_help_explains_every_option_with_examples(capsys, cmd):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out
    opts = {"trf": ["--input-shape", "--unit", "--seed", "--json", "--layer", "--weights",
                    "--channel-axis", "--png"],
            "models": ["--input-shape"],
            "erf": ["--input-shape", "--unit", "--seed", "--json", "--layer", "--images",
                    "--weights", "--channel-axis",
                    "--batch-size",
                    "--draws", "--reduce", "--convention", "--crop", "--png", "--log"]}
    for opt in opts.get(cmd[0] if cmd else "", []):
        assert opt in out
    if cmd and cmd[0] == "erf":
        assert "rfjax erf conv_stack_10x64" in out and "threshold" in out


def test_console_module_exit_status():
    # A real process: the exit status and the one-line message reach the shell.
    p = subprocess.run([sys.executable, "-m", "rfjax.cli", "trf", "no_such_model"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().startswith("rfjax trf: error: unknown model")
    assert "Traceback" not in p.stderr


def test_erf_heatmap_figure_and_errors(tmp_path):
    from rfjax.plot import erf_heatmap

    m = np.outer(np.hanning(9), np.hanning(9))
    fig = erf_heatmap(m, trf_region=((-2, 10), (1, 7)), title="t", log=True)
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # the map and its colorbar
    assert ax.get_xlim() == (-1.5, 9.5) and ax.get_ylim() == (11.5, -3.5)
    assert len(ax.patches) == 1
    erf_heatmap(m, path=tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"\(H, W\) map"):
        erf_heatmap(np.zeros((2, 2, 2)))
