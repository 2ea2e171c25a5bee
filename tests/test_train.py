"""Tests of rfjax.train: metrics against hand-computed matrices, the losses, the fingerprint,
checkpoint hygiene, and a SIGKILL-and-resume run in subprocesses that must end bit-identical."""

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from synthetic import write_cifar

from rfjax import data as rdata
from rfjax import train as rtrain

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- metrics


def test_confusion_matrix_hand_computed():
    label = np.array([[0, 0, 1, 2], [2, 11, 1, 0]])
    pred = np.array([[0, 1, 1, 2], [0, 2, 1, 0]])
    # Rows: true class, columns: predicted; the void pixel (label 11) is not counted.
    expect = np.array([[2, 1, 0],
                       [0, 2, 0],
                       [1, 0, 1]])
    got = rtrain.confusion_matrix(pred, label, 3, ignore=11)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, expect)
    jitted = jax.jit(rtrain.confusion_matrix, static_argnums=(2, 3))
    np.testing.assert_array_equal(jitted(pred, label, 3, 11), expect)
    # Without ignore, out-of-range labels still do not count (11 >= num_classes).
    np.testing.assert_array_equal(rtrain.confusion_matrix(pred, label, 3), expect)
    # ignore may be a real class.
    np.testing.assert_array_equal(rtrain.confusion_matrix(pred, label, 3, ignore=0),
                                  expect * np.array([[0], [1], [1]]))


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match="differ"):
        rtrain.confusion_matrix(np.zeros(3, int), np.zeros(4, int), 2)
    with pytest.raises(ValueError, match="num_classes"):
        rtrain.confusion_matrix(np.zeros(3, int), np.zeros(3, int), 0)


def test_segmentation_scores_hand_computed():
    m = np.array([[2, 1, 0, 0],
                  [0, 2, 0, 0],
                  [1, 0, 1, 0],
                  [0, 0, 0, 0]])  # class 3 absent from labels and predictions
    s = rtrain.segmentation_scores(m)
    # IoU_c = tp / (row + col - tp): 2/(3+3-2), 2/(2+3-2), 1/(2+1-1), undefined.
    np.testing.assert_allclose(s["iou"][:3], [0.5, 2 / 3, 0.5])
    assert np.isnan(s["iou"][3])
    assert s["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert s["pixel_accuracy"] == pytest.approx(5 / 7)
    np.testing.assert_allclose(s["class_accuracy"][:3], [2 / 3, 1.0, 0.5])
    assert s["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    # A class predicted but never labelled has IoU 0 and counts in the mean.
    m2 = np.array([[1, 1], [0, 0]])
    assert rtrain.segmentation_scores(m2)["miou"] == pytest.approx((0.5 + 0.0) / 2)
    with pytest.raises(ValueError, match="square"):
        rtrain.segmentation_scores(np.zeros((2, 3)))


def test_median_frequency_weights_hand_computed():
    labels = np.array([[[0, 0], [0, 1]],
                       [[0, 2], [11, 11]]])
    # class 0: 4 px in images with 4 + 2 valid px -> 4/6; class 1: 1/4; class 2: 1/2.
    freq = np.array([4 / 6, 1 / 4, 1 / 2])
    w = rtrain.median_frequency_weights(labels, 4, ignore=11)
    np.testing.assert_allclose(w[:3], np.median(freq) / freq, rtol=1e-6)
    assert w[3] == 0.0 and w.dtype == np.float32


def test_downscale_helpers_hand_computed():
    labels = np.array([[[0, 0, 1, 2],
                        [0, 3, 2, 2],
                        [11, 11, 5, 5],
                        [11, 4, 6, 6]]])
    # Block majorities; the 5/6 tie goes to the smaller label.
    np.testing.assert_array_equal(rtrain.downscale_labels(labels, 2), [[[0, 2], [11, 5]]])
    images = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    # Block means 2.5, 4.5, 10.5, 12.5, rounded half to even.
    np.testing.assert_array_equal(rtrain.downscale_images(images, 2)[..., 0], [[[2, 4],
                                                                                  [10, 12]]])
    assert rtrain.downscale_images(images, 1) is images
    with pytest.raises(ValueError, match="not a multiple of 3"):
        rtrain.downscale_images(images, 3)
    with pytest.raises(ValueError, match="not a multiple of 3"):
        rtrain.downscale_labels(labels, 3)
    with pytest.raises(ValueError, match="downscale"):
        rtrain.TrainConfig(task="cifar10", steps=1, batch_size=1, lr=0.1, downscale=2)


# --------------------------------------------------------------------------- losses


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_cross_entropy_ignores_void():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 11)).astype(np.float32)
    labels = rng.integers(0, 12, (2, 3, 4))
    labels[0, 0, 0] = 11
    valid = labels != 11
    lp = _np_log_softmax(logits.astype(np.float64))
    expect = -np.mean(np.take_along_axis(lp, np.where(valid, labels, 0)[..., None], -1)[..., 0]
                      [valid])
    got = rtrain.cross_entropy(logits, labels, ignore_index=11)
    assert float(got) == pytest.approx(expect, rel=1e-5)
    # Logits at void pixels do not matter.
    other = np.where(valid[..., None], logits, 1e3 * rng.normal(size=logits.shape))
    assert float(rtrain.cross_entropy(other, labels, ignore_index=11)) == pytest.approx(
        float(got), rel=1e-6)
    # All void: zero, not NaN.
    assert float(rtrain.cross_entropy(logits, np.full(labels.shape, 11), ignore_index=11)) == 0


def test_cross_entropy_weights_and_smoothing():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 3))
    labels = np.array([0, 1, 2, 2, 1, 0])
    w = np.array([1.0, 2.0, 0.5])
    lp = _np_log_softmax(logits)
    per = -lp[np.arange(6), labels]
    expect = np.sum(w[labels] * per) / np.sum(w[labels])
    got = rtrain.cross_entropy(logits, labels, class_weights=w)
    assert float(got) == pytest.approx(expect, rel=1e-5)
    eps = 0.1
    target = np.full((6, 3), eps / 3)
    target[np.arange(6), labels] += 1 - eps
    expect_smooth = np.mean(-(target * lp).sum(-1))
    got = rtrain.cross_entropy(logits, labels, label_smoothing=eps)
    assert float(got) == pytest.approx(expect_smooth, rel=1e-5)
    with pytest.raises(ValueError, match="disagree"):
        rtrain.cross_entropy(logits, labels[:5])


# --------------------------------------------------------------------------- fingerprint


def test_params_sha256_is_little_endian_leaves_in_tree_order():
    params = {"b": np.arange(3, dtype=np.float32), "a": {"k": np.ones((2, 2), np.int32)}}
    h = hashlib.sha256()
    h.update(np.ones((2, 2), "<i4").tobytes())  # "a" comes first in tree order
    h.update(np.arange(3, dtype="<f4").tobytes())
    assert rtrain.params_sha256(params) == h.hexdigest()
    big_endian = {"b": params["b"].astype(">f4"), "a": {"k": params["a"]["k"].astype(">i4")}}
    assert rtrain.params_sha256(big_endian) == h.hexdigest()
    changed = {"b": params["b"] + 1, "a": params["a"]}
    assert rtrain.params_sha256(changed) != h.hexdigest()


# --------------------------------------------------------------------------- config, steps


def test_config_errors():
    ok = dict(task="cifar10", steps=10, batch_size=4, lr=0.1)
    rtrain.TrainConfig(**ok)
    for bad, match in ((dict(task="mnist"), "task"), (dict(steps=0), "steps"),
                       (dict(lr=-1.0), "lr"), (dict(seed=-1), "seed"),
                       (dict(crop=(100, 160)), "multiples of 8"),
                       (dict(class_weights="inverse"), "class_weights"),
                       (dict(warmup=1.0), "warmup"), (dict(batch_size=True), "batch_size")):
        with pytest.raises(ValueError, match=match):
            rtrain.TrainConfig(**{**ok, **bad})
    cfg = rtrain.TrainConfig(**ok, crop=(16, 24))
    assert rtrain.TrainConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        rtrain.TrainConfig.from_json({**cfg.to_json(), "colour": 1})


def test_config_arch():
    from rfjax.models.camvid import CamVidNet
    from rfjax.models.cifar import CifarNet, CifarResNet

    ok = dict(task="cifar10", steps=10, batch_size=4, lr=0.1, width=2)
    assert rtrain.TrainConfig(**ok).arch == "vgg"
    assert rtrain.TrainConfig(**{**ok, "task": "camvid"}).arch == "unet"
    assert isinstance(rtrain.make_model(rtrain.TrainConfig(**ok)), CifarNet)
    res = rtrain.TrainConfig(**ok, arch="resnet")
    model = rtrain.make_model(res)
    assert isinstance(model, CifarResNet) and model.width == 2
    assert isinstance(rtrain.make_model(rtrain.TrainConfig(**{**ok, "task": "camvid"})),
                      CamVidNet)
    for task, arch in (("camvid", "resnet"), ("cifar10", "unet"), ("cifar10", "ResNet")):
        with pytest.raises(ValueError, match="arch for"):
            rtrain.TrainConfig(**{**ok, "task": task, "arch": arch})
    # A config.json written before the field existed reads as the default architecture.
    old = {k: v for k, v in res.to_json().items() if k != "arch"}
    assert rtrain.TrainConfig.from_json(old).arch == "vgg"
    assert rtrain.TrainConfig.from_json(res.to_json()) == res


def test_task_table_covers_every_task_and_arch():
    assert set(rtrain.TASK_TABLE) == set(rtrain.TASKS) == set(rtrain.TASK_DEFAULTS) \
        == {"cifar10", "camvid"}
    for name, task in rtrain.TASK_TABLE.items():
        assert task.name == name and rtrain.get_task(name) is task
        assert rtrain.ARCHS[name] == tuple(task.models)
        for field in dataclasses.fields(rtrain.Task):
            if field.name not in ("name", "models", "downscale"):
                assert callable(getattr(task, field.name)), (name, field.name)
        for arch in rtrain.ARCHS[name]:
            cfg = rtrain.TrainConfig(task=name, steps=1, width=2, arch=arch)
            shape = task.input_shape(cfg)
            assert len(shape) == 4 and shape[0] == 1 and shape[-1] == 3
            model = rtrain.make_model(cfg)
            variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(shape))
            assert "params" in variables
    assert not rtrain.get_task("cifar10").downscale and rtrain.get_task("camvid").downscale


def test_unknown_task_and_arch_errors():
    with pytest.raises(ValueError, match=r"unknown task 'mnist'; known: cifar10, camvid"):
        rtrain.get_task("mnist")
    with pytest.raises(ValueError, match=r"task must be one of \('cifar10', 'camvid'\)"):
        rtrain.TrainConfig(task="mnist", steps=1)
    with pytest.raises(ValueError, match=r"arch for camvid must be one of \('unet',\)"):
        rtrain.TrainConfig(task="camvid", steps=1, arch="vgg")
    cfg = rtrain.TrainConfig(task="cifar10", steps=1)
    object.__setattr__(cfg, "arch", "transformer")  # past TrainConfig's own check
    with pytest.raises(ValueError, match=r"unknown arch 'transformer' for cifar10; known: "
                                         r"vgg, resnet"):
        rtrain.make_model(cfg)
    split = rdata.Split(name="mnist", split="test", images=np.zeros((1, 8, 8, 3), np.uint8),
                        labels=np.zeros(1, np.int32))
    with pytest.raises(ValueError, match="unknown task 'mnist'"):
        rtrain.evaluate(None, {}, split)


def test_task_defaults_resolve_at_construction():
    for task, values in rtrain.TASK_DEFAULTS.items():
        cfg = rtrain.TrainConfig(task=task, steps=5)
        assert {k: getattr(cfg, k) for k in values} == values
        assert cfg.arch == rtrain.ARCHS[task][0]
        # explicit values win, and what config.json records reads back unchanged
        explicit = rtrain.TrainConfig(task=task, steps=5, batch_size=3, lr=0.5, width=4)
        assert (explicit.batch_size, explicit.lr, explicit.width) == (3, 0.5, 4)
        assert rtrain.TrainConfig.from_json(cfg.to_json()) == cfg
        assert None not in cfg.to_json().values()
    assert rtrain.TrainConfig(task="camvid", steps=5).checkpoint_every == 200


def _train_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_script", REPO / "scripts" / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_train_script_defaults_are_trainconfig_defaults():
    script = _train_script()
    parser = script.make_parser()
    options = {a.dest for a in parser._actions}
    fields = {f.name: f for f in dataclasses.fields(rtrain.TrainConfig)}
    # every field is an option, except the evaluation batch size (no effect on the result)
    assert set(fields) - options == {"eval_batch_size"}
    for name, field in fields.items():
        if name in options and field.default is not dataclasses.MISSING:
            assert parser.get_default(name) == field.default, name
    # with only the required options, the script trains TrainConfig's defaults
    for task in rtrain.TASKS:
        args = script.parse_args([task, "--workdir", "w", "--steps", "7"])
        assert script.config_from_args(args) == rtrain.TrainConfig(task=task, steps=7)
    args = script.parse_args(["camvid", "--workdir", "w", "--steps", "7", "--crop", "16x24",
                              "--width", "4", "--class-weights", "median"])
    assert script.config_from_args(args) == rtrain.TrainConfig(
        task="camvid", steps=7, crop=(16, 24), width=4, class_weights="median")
    epilog = parser.epilog
    assert "cifar10 --batch-size 128 --lr 0.1 --width 32" in epilog
    assert "camvid --batch-size 8 --lr 0.05 --width 16" in epilog


def test_train_step_pure_and_masks_void():
    cfg = rtrain.TrainConfig(task="camvid", steps=4, batch_size=2, lr=0.05, width=2,
                             crop=(16, 16))
    state = rtrain.init_state(cfg)
    step = rtrain.make_train_step(cfg)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    labels = rng.integers(0, 12, (2, 16, 24)).astype(np.int32)
    key = jax.random.PRNGKey(3)
    s1, m1 = step(state, images, labels, key)
    s2, m2 = step(state, images, labels, key)
    assert int(s1["step"]) == 1 and int(state["step"]) == 0
    assert rtrain.params_sha256(s1["params"]) == rtrain.params_sha256(s2["params"])
    assert rtrain.params_sha256(s1["params"]) != rtrain.params_sha256(state["params"])
    assert float(m1["loss"]) == float(m2["loss"]) > 0
    # All-void labels: the data term vanishes.
    _, m_void = step(state, images, np.full_like(labels, rdata.CAMVID_VOID), key)
    assert float(m_void["loss"]) == 0.0


def test_evaluate_pads_the_last_batch_and_matches_direct_computation():
    from rfjax.models.camvid import segment

    cfg = rtrain.TrainConfig(task="camvid", steps=1, batch_size=2, lr=0.1, width=2)
    model = rtrain.make_model(cfg)
    state = rtrain.init_state(cfg)
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (3, 18, 20, 3), dtype=np.uint8)  # not multiples of 8
    labels = rng.integers(0, 12, (3, 18, 20)).astype(np.int32)
    split = rdata.Split(name="camvid", split="test", images=images, labels=labels)
    got = rtrain.evaluate(model, variables, split, batch_size=2)
    pred = np.argmax(segment(model, variables, rdata.normalize(images)), axis=-1)
    m = np.zeros((11, 11), int)
    for t, p in zip(labels.ravel(), pred.ravel(), strict=True):
        if t != 11:
            m[t, p] += 1
    np.testing.assert_array_equal(got["confusion"], m)
    assert got["miou"] == pytest.approx(rtrain.segmentation_scores(m)["miou"])
    assert got["resolution"] == [18, 20] and got["num_examples"] == 3
    # Downscaled input: logits at 9x10 resized (bilinear) to the labels' 18x20.
    half = rtrain.evaluate(model, variables, split, batch_size=3, downscale=2)
    small = rtrain.downscale_images(images, 2)
    logits = segment(model, variables, rdata.normalize(small))
    pred = np.argmax(jax.image.resize(logits, (3, 18, 20, 11), "bilinear"), axis=-1)
    m = np.zeros((11, 11), int)
    np.add.at(m, (labels[labels != 11], pred[labels != 11]), 1)
    np.testing.assert_array_equal(half["confusion"], m)
    assert half["input_resolution"] == [9, 10]

    ccfg = rtrain.TrainConfig(task="cifar10", steps=1, batch_size=2, lr=0.1, width=2)
    cmodel, cstate = rtrain.make_model(ccfg), rtrain.init_state(ccfg)
    cvars = {"params": cstate["params"], "batch_stats": cstate["batch_stats"]}
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    cpred = np.argmax(cmodel.apply(cvars, rdata.normalize(images)), axis=-1)
    labels = np.where(np.arange(5) < 3, cpred, (cpred + 1) % 10).astype(np.int32)  # 3 right
    csplit = rdata.Split(name="cifar10", split="test", images=images, labels=labels)
    assert rtrain.evaluate(cmodel, cvars, csplit, batch_size=2)["accuracy"] == pytest.approx(0.6)


# --------------------------------------------------------------------------- checkpoints


def test_clean_stale_checkpoints(tmp_path):
    d = tmp_path / "checkpoints"
    (d / "10").mkdir(parents=True)
    (d / "20.orbax-checkpoint-tmp-1234").mkdir()
    (d / "20.orbax-checkpoint-tmp-1234" / "x").write_text("partial")
    removed = rtrain.clean_stale_checkpoints(d)
    assert [p.name for p in removed] == ["20.orbax-checkpoint-tmp-1234"]
    assert sorted(p.name for p in d.iterdir()) == ["10"]
    assert rtrain.clean_stale_checkpoints(tmp_path / "missing") == []


def test_load_trained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a training workdir"):
        rtrain.load_trained(tmp_path)
    cfg = rtrain.TrainConfig(task="cifar10", steps=2, batch_size=2, lr=0.1, width=2)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_json()))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        rtrain.load_trained(tmp_path)


# --------------------------------------------------------------------------- end to end


def _write_cifar(root: Path, n_train=(24, 16), n_test=20, seed=0):
    """Tiny learnable CIFAR-10 layout: the red channel encodes the label."""
    rng = np.random.default_rng(seed)
    files = [(f"data_batch_{i + 1}", n) for i, n in enumerate(n_train)] + [("test_batch", n_test)]
    batches = {}
    for fname, n in files:
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        images[..., 0] = (labels * 25)[:, None, None]  # learnable: red channel encodes label
        batches[fname] = (images, labels.tolist())
    write_cifar(root, batches)


def _cmd(src, prepared, workdir, *extra):
    return [sys.executable, str(REPO / "scripts" / "train.py"), "cifar10",
            "--data-dir", str(src), "--prepared-dir", str(prepared), "--workdir", str(workdir),
            "--steps", "12", "--checkpoint-every", "3", "--seed", "7", "--batch-size", "8",
            "--lr", "0.05", "--width", "2", "--log-every", "2", *extra]


def _env(cache):
    # The persistent compilation cache lets the 2nd and 3rd runs skip XLA compilation.
    env = dict(os.environ, JAX_PLATFORMS="cpu", RFJAX_NO_PROGRESS="1",
               JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _sha(stdout: str) -> str:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("params_sha256="), stdout
    digest = last.split("=", 1)[1]
    assert len(digest) == 64 and int(digest, 16) >= 0
    return digest


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    src, prepared = tmp_path / "src", tmp_path / "prepared"
    env = _env(tmp_path / "xla")
    _write_cifar(src)
    # 1. Uninterrupted run.
    ref = subprocess.run(_cmd(src, prepared, tmp_path / "ref"), capture_output=True, text=True,
                         env=env, timeout=300)
    assert ref.returncode == 0, ref.stderr
    sha_ref = _sha(ref.stdout)
    final = json.loads((tmp_path / "ref" / "final.json").read_text())
    assert final["params_sha256"] == sha_ref and 0 <= final["test"]["accuracy"] <= 1
    records = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().split("\n")
               if x]
    assert [r["step"] for r in records if r.get("split") == "train"] == [2, 4, 6, 8, 10, 12]
    assert all(r["images_per_s"] > 0 for r in records if r.get("split") == "train")

    # 2. The same run, slowed down and SIGKILLed once its first checkpoint is complete.
    work = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(src, prepared, work, "--step-delay", "0.5"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    ckpts = work / "checkpoints"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert "params_sha256" not in out
    done = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert done and max(done) < 12
    # A temporary folder as a kill during a save leaves it.
    stale = ckpts / "99.orbax-checkpoint-tmp-1700000000"
    stale.mkdir()

    # 3. Restart with the same command: resumes and ends bit-identical.
    res = subprocess.run(_cmd(src, prepared, work), capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "resumed from" in res.stdout and "removed stale temporary checkpoint" in res.stdout
    assert not stale.exists()
    assert _sha(res.stdout) == sha_ref

    # 4. The trained model loads for inference with the same apply signature.
    model, variables, config = rtrain.load_trained(work)
    assert config.steps == 12 and set(variables) == {"params", "batch_stats"}
    assert rtrain.params_sha256(variables["params"]) == sha_ref
    logits = model.apply(variables, jnp.zeros((2, 32, 32, 3)))
    assert logits.shape == (2, 10)

    # 5. A different configuration in the same workdir is refused with a clear message.
    with pytest.raises(ValueError, match=r"different configuration.*'seed': \(7, 8\)"):
        rtrain.train(dataclasses.replace(config, seed=8), work)
