"""Tests of rfjax.experiments, rfjax.plot's paper figures and scripts/make_figures.py.

Every experiment runs its tiny configuration (seconds); the verdict ``holds`` must equal the
criterion applied to the measurement, and a measurement that violates the claim must turn it
false. The training experiment trains a few steps on synthetic CIFAR-10 / CamVid copies.
"""

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic import make_camvid, make_cifar

from rfjax import data as rdata
from rfjax import experiments as E
from rfjax import plot
from rfjax.experiments import common

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ helpers


def _check_entry(entry):
    assert set(entry) == set(E.RESULT_KEYS)
    assert isinstance(entry["claim"], str) and entry["claim"]
    assert isinstance(entry["criterion"], str) and entry["criterion"]
    assert isinstance(entry["measured"], dict) and entry["measured"]
    assert isinstance(entry["paper"], dict)
    assert isinstance(entry["holds"], bool)
    json.dumps(entry, allow_nan=False)  # JSON-serialisable, no NaN


def _run_tiny(name, tmp_path, **overrides):
    cfg = E.make_config(name, "tiny", **overrides)
    result = E.run_experiment(name, cfg, seed=0)
    assert result["name"] == name
    entry = E.result_entry(result)
    _check_entry(entry)
    # the verdict is the criterion applied to exactly the measurement that is reported
    assert entry["holds"] == E.EXPERIMENTS[name].holds(entry["measured"])
    fig = plot.paper_figure(result)
    png = plot.save(fig, tmp_path / f"{name}.png")
    assert Path(png).stat().st_size > 10_000
    return result, entry


def _broken(measured, **changes):
    m = copy.deepcopy(measured)
    for key, value in changes.items():
        m[key] = value
    return m


# ------------------------------------------------------------------------ experiments


def test_trf_example_exact(tmp_path):
    result, entry = _run_tiny("trf_example", tmp_path)
    m = entry["measured"]
    assert m["size"] == [5, 5] and m["layer2_on_layer1_size"] == [3, 3]
    assert m["input_mask_area"] == 25 and m["layer1_mask_area"] == 9
    assert entry["holds"] is True
    assert not E.holds_trf_example(_broken(m, size=[5, 3]))
    assert not E.EXPERIMENTS["trf_example"].holds(_broken(m, input_mask_area=24))
    with pytest.raises(ValueError, match="size must be >= 5"):
        E.run_experiment("trf_example", E.make_config("trf_example", "tiny", size=4))


def test_cnn_vs_transformer(tmp_path):
    _, entry = _run_tiny("cnn_vs_transformer", tmp_path)
    m = entry["measured"]
    assert m["cnn_trf_sizes"] == [3, 5]
    assert m["vit_trf_sizes"] == [4, 16] and m["vit_trf_global"] == [False, True]
    assert 0 < m["vit_own_patch_mass"] <= 1
    holds = E.EXPERIMENTS["cnn_vs_transformer"].holds
    good = _broken(m, cnn_erf_trf_ratio=0.5, vit_own_patch_mass=0.9)
    assert holds(good)
    assert not holds(_broken(good, vit_trf_sizes=[4, 12]))
    assert not holds(_broken(good, cnn_trf_sizes=[3, 4]))
    assert not holds(_broken(good, cnn_erf_trf_ratio=1.2))
    assert not holds(_broken(good, vit_own_patch_mass=m["vit_own_patch_area_share"]))


def test_trf_vs_erf(tmp_path):
    _, entry = _run_tiny("trf_vs_erf", tmp_path)
    m = entry["measured"]
    assert m["trf_masks_identical"] is True
    assert m["trf_size"] == [7, 7] and m["trf_mask_area"] == 49
    assert m["per_input_dissimilarity"] > 0  # ReLU: different inputs, different ERFs
    holds = E.EXPERIMENTS["trf_vs_erf"].holds
    good = _broken(m, erf_trf_area_ratio=0.3, gaussian_r2=0.99, per_input_dissimilarity=0.2)
    assert holds(good)
    assert not holds(_broken(good, trf_masks_identical=False))
    assert not holds(_broken(good, per_input_dissimilarity=0.0))
    assert not holds(_broken(good, erf_trf_area_ratio=0.9))


def test_layers_and_init_matches_theory(tmp_path):
    _, entry = _run_tiny("layers_and_init", tmp_path)
    m = entry["measured"]
    assert max(m["uniform_rel_error"]) < 1e-4  # exact n-fold box convolution
    assert m["trf_size"] == [5, 9]
    holds = E.EXPERIMENTS["layers_and_init"].holds
    assert not holds(_broken(m, uniform_rel_error=[0.0, 0.1]))
    assert not holds(_broken(m, ratio_random=[0.5, 0.6]))


def test_erf_growth_and_its_criterion(tmp_path):
    _, entry = _run_tiny("erf_growth", tmp_path)
    m = entry["measured"]
    assert m["exponent_size_reading"] == "mean_map"
    assert m["exponent_size"] == m[f"exponent_size_{m['headline']}"]
    # the uniform stack's size is exact: 4 sqrt(2n/3) -> slope 0.5 exactly
    assert m["exponent_size_uniform"] == pytest.approx(0.5, abs=1e-3)
    holds = E.holds_erf_growth
    assert holds(_broken(m, exponent_size=0.56, exponent_ratio=-0.43))
    assert not holds(_broken(m, exponent_size=0.65, exponent_ratio=-0.5))
    assert not holds(_broken(m, exponent_size=0.5, exponent_ratio=-0.35))
    assert common.loglog_fit([1, 2, 4], [3, 6, 12])[0] == pytest.approx(1.0)


def test_nonlinearities(tmp_path):
    _, entry = _run_tiny("nonlinearities", tmp_path)
    m = entry["measured"]
    assert set(m["gaussian_r2_single"]) == {"relu", "tanh", "sigmoid"}
    assert m["zero_fraction_single"]["tanh"] == 0.0
    holds = E.EXPERIMENTS["nonlinearities"].holds
    good = _broken(m, gaussian_r2_single={"relu": 0.5, "tanh": 0.9, "sigmoid": 0.9},
                   gaussian_rel_l2_single={"relu": 0.5, "tanh": 0.1, "sigmoid": 0.1})
    assert holds(good)
    assert not holds(_broken(good, gaussian_r2_single={"relu": 0.95, "tanh": 0.9,
                                                       "sigmoid": 0.9}))


def test_subsampling_dilation(tmp_path):
    _, entry = _run_tiny("subsampling_dilation", tmp_path)
    m = entry["measured"]
    # dilation = the subsampled net's jump: the same TRF (and here the same ERF)
    assert m["trf_size"]["subsampled"] == m["trf_size"]["dilated"] == [9, 9]
    assert m["trf_size"]["plain"] == [7, 7]
    holds = E.EXPERIMENTS["subsampling_dilation"].holds
    assert not holds(_broken(m, erf_size={"plain": 10.0, "subsampled": 11.0, "dilated": 20.0}))
    assert holds(_broken(m, erf_size={"plain": 10.0, "subsampled": 13.0, "dilated": 20.0}))


# ------------------------------------------------------------------------- training


@pytest.fixture
def synthetic_data(tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_cifar(src, sizes=(("data_batch_1", 16), ("test_batch", 4)))
    make_camvid(src, seed=1, hw=(16, 24), sizes=(("train", 4), ("val", 2), ("test", 2)))
    monkeypatch.setenv(rdata.ENV_PREPARED_DIR, str(tmp_path / "prepared"))
    return src


def test_training_trains_then_reads_its_checkpoints(tmp_path, synthetic_data):
    work = tmp_path / "runs"
    cfg = E.make_config("training", "tiny", data_dir=str(synthetic_data), workdir=str(work))
    result = E.run_experiment("training", cfg)
    entry = E.result_entry(result)
    _check_entry(entry)
    m = entry["measured"]
    assert m["trf_cifar"] == [74, 74]  # from rfjax.trf on the CIFAR model
    assert m["cifar_image_size"] == 32 and m["from_checkpoints"] is False
    assert 0 <= m["cifar_test_accuracy"] <= 1 and 0 <= m["camvid_test_miou"] <= 1
    assert entry["holds"] == E.holds_training(m)
    plot.save(plot.paper_figure(result), tmp_path / "training.png")
    # the same workdirs as --checkpoints: no training, the trained parameters (their
    # fingerprint in final.json) and, as "before", the run's own initialisation
    from rfjax import train as rtrain
    from rfjax.experiments import training as T

    cfg2 = E.make_config("training", "tiny", data_dir=str(synthetic_data), checkpoints=str(work))
    models = T._models(cfg2, 0, work, common.NoProgress())
    for task in ("cifar10", "camvid"):
        _, before, after, tcfg, scores, _ = models[task]
        final = json.loads((work / task / "final.json").read_text())
        assert rtrain.params_sha256(after["params"]) == final["params_sha256"]
        assert rtrain.params_sha256(before["params"]) == rtrain.params_sha256(
            rtrain.init_state(tcfg)["params"]) != final["params_sha256"]
        assert scores == final["test"]
    good = _broken(m, erf_cifar_before=10.0, erf_cifar_after=20.0, erf_camvid_before=5.0,
                   erf_camvid_after=9.0)
    assert E.holds_training(good)
    assert not E.holds_training(_broken(good, erf_camvid_after=4.0))
    assert not E.holds_training(_broken(good, erf_cifar_after=10.5))  # < 10%: not significant
    assert m["cifar_flat_map_size"] == pytest.approx(4 * np.sqrt((32**2 - 1) / 12), rel=1e-5)
    assert not E.holds_training(_broken(good, erf_cifar_after=37.0))
    assert not E.holds_training(_broken(good, trf_cifar=[32, 32]))
    with pytest.raises(FileNotFoundError, match="no finished run cifar10/"):
        E.run_experiment("training", E.make_config("training", "tiny",
                                                   checkpoints=str(tmp_path / "none")))


def test_training_runs_are_trainconfig_defaults_but_the_stated_changes():
    from rfjax import train as rtrain
    from rfjax.experiments import training as T

    stated = {"batch_size", "width", "lr", "crop", "downscale", "seed", "checkpoint_every",
              "log_every"}
    for mode in E.MODES:
        cfg = E.make_config("training", mode)
        for task, steps in (("cifar10", cfg.cifar_steps), ("camvid", cfg.camvid_steps)):
            run = T._train_config(cfg, task, seed=3)
            base = rtrain.TrainConfig(task=task, steps=steps)
            changed = {f.name for f in dataclasses.fields(base)
                       if getattr(run, f.name) != getattr(base, f.name)}
            assert changed <= stated, (mode, task, changed - stated)
            assert run.seed == 3 and run.checkpoint_every == steps
    full = E.make_config("training", "full")
    cifar, camvid = (T._train_config(full, t, 0) for t in ("cifar10", "camvid"))
    # the values the figure has always trained with
    assert (cifar.batch_size, cifar.width, cifar.lr, cifar.log_every) == (64, 16, 0.05, 50)
    assert (camvid.batch_size, camvid.width, camvid.lr, camvid.crop, camvid.downscale) == (
        4, 8, 0.05, (64, 96), 2)
    assert camvid.lr == rtrain.TASK_DEFAULTS["camvid"]["lr"]  # not restated by the experiment


def test_erf_along_training_reads_every_checkpoint(tmp_path, synthetic_data):
    import functools

    import rfjax
    from rfjax import train as rtrain

    work = tmp_path / "run"
    cfg = rtrain.TrainConfig(task="cifar10", steps=2, batch_size=4, lr=0.05, width=2,
                             checkpoint_every=1, max_to_keep=5, log_every=1)
    rtrain.train(cfg, work, data_dir=synthetic_data, log=lambda s: None)
    assert rtrain.checkpoint_steps(work) == [1, 2]
    data = E.erf_along_training(work, data_dir=str(synthetic_data), erf_images=3)
    assert data["steps"] == [0, 1, 2] and data["task"] == "cifar10" and data["arch"] == "vgg"
    assert data["maps"].shape == (3, 32, 32) and data["trf"] == [74, 74]
    assert data["unit"] == [2, 2] and data["input_hw"] == [32, 32]
    assert data["final"]["params_sha256"] == json.loads(
        (work / "final.json").read_text())["params_sha256"]
    # Oracle: the ERF of the initial and of the last parameters, computed directly.
    test = rdata.load("cifar10", "test", data_dir=synthetic_data)
    x = rdata.normalize(test.images[:3])
    model, last, _ = rtrain.load_trained(work)
    state0 = rtrain.init_state(cfg)
    first = {"params": state0["params"], "batch_stats": state0["batch_stats"]}
    for i, variables in ((0, first), (2, last)):
        fn = functools.partial(model.apply, variables, method=type(model).features)
        expect = rfjax.erf(fn, x, unit=(2, 2), progress=False).map
        np.testing.assert_allclose(data["maps"][i], expect, rtol=1e-6)
        assert data["size"][i] == pytest.approx(common.size_of(expect))
    assert not np.allclose(data["maps"][0], data["maps"][2])
    # The script: figure + JSON, and a clear error for a folder without checkpoints.
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "erf_during_training", REPO / "scripts" / "erf_during_training.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "figs" / "traj"
    assert script.main([str(work), "--data-dir", str(synthetic_data), "--images", "2",
                        "--out", str(out)]) == 0
    assert out.with_suffix(".png").stat().st_size > 10_000
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["steps"] == [0, 1, 2] and len(rec["size"]) == 3 and "maps" not in rec
    (tmp_path / "empty").mkdir()
    assert script.main([str(tmp_path / "empty")]) == 2
    with pytest.raises(SystemExit):
        script.parse_args([str(work), "--images", "0"])
    with pytest.raises(SystemExit):
        script.parse_args([str(tmp_path / "missing")])
    with pytest.raises(FileNotFoundError, match="not a training workdir"):
        E.erf_along_training(tmp_path / "empty")


# ----------------------------------------------------------------- registry and script


def test_registry_and_results_merge(tmp_path):
    assert E.NAMES == ("trf_example", "cnn_vs_transformer", "trf_vs_erf", "layers_and_init",
                       "erf_growth", "nonlinearities", "subsampling_dilation", "training")
    for name, exp in E.EXPERIMENTS.items():
        for mode in E.MODES:
            cfg = E.make_config(name, mode)
            assert isinstance(cfg, exp.config) and cfg.work > 0
            with pytest.raises(dataclasses.FrozenInstanceError):
                cfg.seed_of_nothing = 1
    with pytest.raises(ValueError, match="unknown experiment"):
        E.make_config("nope")
    with pytest.raises(ValueError, match="mode must be"):
        E.make_config("trf_example", "huge")
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"training": {"claim": "c", "measured": {"x": 1}, "paper": {},
                                             "criterion": "k", "holds": False}}))
    result = E.run_experiment("trf_example", E.make_config("trf_example", "tiny"))
    merged = E.merge_results(path, [result])
    assert list(merged) == ["trf_example", "training"]  # kept, in NAMES order
    assert json.loads(path.read_text()) == merged
    assert common.jsonable({"a": np.float32(np.nan), "b": np.arange(2)}) == {"a": None,
                                                                           "b": [0, 1]}
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        E.merge_results(path, [result])


def _script_env():
    """The scripts import the installed rfjax (``pip install -e .``): make it this checkout."""
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_make_figures_script_only_and_errors(tmp_path):
    out = tmp_path / "figs"
    (out).mkdir()
    (out / "results.json").write_text(json.dumps({"erf_growth": {"claim": "kept"}}))
    script = [sys.executable, str(REPO / "scripts" / "make_figures.py")]
    env = _script_env()
    res = subprocess.run(script + ["--quick", "--only", "trf_example", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert res.returncode == 0, res.stderr
    assert (out / "trf_example.png").stat().st_size > 10_000
    results = json.loads((out / "results.json").read_text())
    assert results["erf_growth"] == {"claim": "kept"}
    assert results["trf_example"]["holds"] is True
    bad = subprocess.run(script + ["--only", "trf_example,nope", "--out", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert bad.returncode != 0 and "unknown experiment 'nope'" in bad.stderr
    bad = subprocess.run(script + ["--checkpoints", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert bad.returncode != 0 and "no such folder" in bad.stderr


def test_scripts_import_the_installed_package():
    """No script edits sys.path; each answers --help from the project root."""
    scripts = sorted((REPO / "scripts").glob("*.py"))
    assert {p.name for p in scripts} >= {"train.py", "make_figures.py",
                                        "erf_during_training.py", "trf_demo.py"}
    for path in scripts:
        assert "sys.path" not in path.read_text(), path.name
        res = subprocess.run([sys.executable, str(path.relative_to(REPO)), "--help"],
                             capture_output=True, text=True, timeout=120, cwd=REPO,
                             env=_script_env())
        assert res.returncode == 0, (path.name, res.stderr)
        assert "usage:" in res.stdout, path.name


def test_importing_plot_leaves_the_matplotlib_backend_alone():
    # A backend chosen before the import survives it (the import used to force Agg).
    code = ("import matplotlib; matplotlib.use('svg'); import rfjax.plot; "
            "assert matplotlib.get_backend().lower() == 'svg', matplotlib.get_backend()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=REPO, env=_script_env())
    assert res.returncode == 0, res.stderr
