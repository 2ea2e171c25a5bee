"""The receptive-field atlas (rfjax.atlas, scripts/atlas.py) on a small sample."""

import importlib.util
import json
import os

import numpy as np
import pytest

from rfjax import atlas

STAGE_FIELDS = {"layer", "output_shape", "size", "stride", "padding", "aligned", "is_global",
                "rectangular", "trf_seconds"}
ERF_FIELDS = {"layer", "unit", "images", "weight_draws", "channels", "remedy", "size_4sigma",
              "erf_trf_ratio", "erf_seconds"}
QUICK = {"erf_images": 1, "weight_draws": 1, "resolution": 32}


def _script():
    path = os.path.join(os.path.dirname(__file__), "..", "scripts", "atlas.py")
    spec = importlib.util.spec_from_file_location("atlas_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table_is_broad_and_lazy():
    es = atlas.entries()
    assert len(es) >= 100
    by_fw = {fw: sum(e.framework == fw for e in es) for fw in ("torchvision", "timm", "keras",
                                                               "rfjax")}
    assert by_fw["timm"] >= 40 and by_fw["keras"] >= 10 and by_fw["rfjax"] >= 1
    assert atlas.get_entry("inception_v3").resolution == 299
    assert atlas.get_entry("resnet50").stages == ("layer1", "layer2", "layer3", "layer4")
    with pytest.raises(ValueError, match="no atlas entry"):
        atlas.get_entry("nope")


def test_resnet18_record_with_the_oracle():
    pytest.importorskip("torchvision")
    r = atlas.atlas_record(atlas.get_entry("resnet18"), check_oracle=True, keep_maps=True,
                           **QUICK)
    assert r["status"] == "ok" and not r["errors"]
    assert [s["layer"] for s in r["stages"]] == ["layer1", "layer2", "layer3", "layer4"]
    for s in r["stages"]:
        assert STAGE_FIELDS <= set(s)
    last = r["stages"][-1]
    assert (last["size"], last["stride"], last["padding"]) == ([435, 435], [32, 32], [217, 217])
    assert last["aligned"] and last["rectangular"] and last["is_global"] == [False, False]
    assert ERF_FIELDS <= set(r["erf"]) and r["erf"]["channels"] is None
    assert 0 < r["erf"]["erf_trf_ratio"][0] < 1
    assert r["oracle"]["checked"] and r["oracle"]["ok"]
    maps = r.pop("_maps")
    assert maps["trf_mask"].shape == (32, 32) and maps["erf_map"].shape == (32, 32)
    json.dumps(r)  # JSON-ready


def test_zoo_record():
    r = atlas.atlas_record(atlas.get_entry("rfjax/cifar"), **QUICK)
    assert r["status"] == "ok" and r["resolution"] == 32
    s = r["stages"][0]
    assert (s["size"], s["stride"]) == ([74, 74], [8, 8])
    assert r["erf"]["size_4sigma"][0] > 0
    assert r["oracle"]["checked"] is False
    json.dumps(r)


def test_failing_constructor_is_recorded():
    def broken():
        raise RuntimeError("no such weights")

    e = atlas.Entry("broken", "test", "torchvision", broken, 32)
    r = atlas.atlas_record(e, **QUICK)
    assert r["status"] == "failed" and r["stages"] == []
    assert r["errors"][0]["type"] == "RuntimeError"
    assert "no such weights" in r["errors"][0]["message"]
    json.dumps(r)


def test_report_explains_each_kind_of_failure():
    """A failure is grouped by phase and type, with why that kind of failure happens."""
    from rfjax import atlas_report

    rec = {"name": "slow", "family": "test", "framework": "torchvision", "resolution": 32,
           "status": "failed", "stages": [], "seconds": 900.0,
           "errors": [{"phase": "run", "type": "Timeout", "message": "ran past 900 s",
                       "where": ""}]}
    text = atlas_report.markdown([rec], {}, total=1)
    line = next(ln for ln in text.splitlines() if ln.startswith("- **run: Timeout**"))
    assert "`slow`" in line and atlas_report.FAILURE_NOTES["run: Timeout"] in line
    assert "1 failed" in text


def test_rectangular_and_stage_ends():
    m = np.zeros((6, 6), bool)
    m[1:4, 2:5] = True
    assert atlas.rectangular(m)
    m[2, 3] = False  # a dilation hole
    assert not atlas.rectangular(m)
    assert not atlas.rectangular(np.zeros((3, 3), bool))
    items = [("a", (32, 32)), ("b", (16, 16)), ("c", (16, 16)), ("d", (8, 8)), ("e", (1, 1))]
    assert atlas._stage_ends(items, (32, 32)) == ["c", "d"]


def test_resume_skips_finished_records_and_writes_the_report(tmp_path):
    script = _script()
    out = str(tmp_path / "atlas")
    os.makedirs(os.path.join(out, "records"))
    done = {"name": "rfjax/cifar", "family": "zoo", "framework": "rfjax", "resolution": 32,
            "stages": [], "erf": None, "oracle": None, "errors": [], "status": "ok",
            "seconds": 1.0, "marker": "kept"}
    path = script.record_path(out, "rfjax/cifar")
    with open(path, "w") as fh:
        json.dump(done, fh)
    assert script.main(["--out", out, "--only", "rfjax/cifar", "--quick", "--no-figures"]) == 0
    with open(path) as fh:
        assert json.load(fh)["marker"] == "kept"  # not recomputed
    with open(os.path.join(out, "atlas.json")) as fh:
        data = json.load(fh)
    assert data["meta"]["versions"]["jax"] and data["meta"]["runs"][0]["models"] == 0
    assert [r["name"] for r in data["records"]] == ["rfjax/cifar"]
    readme = open(os.path.join(out, "README.md")).read()
    assert "`rfjax/cifar`" in readme and "google-research/receptive_field" in readme
