"""Preparing a dataset survives being killed and being run twice at once: builds are renamed
into place whole, under a lock, and a killed run's leftovers are cleaned up.

The child processes patch ``rfjax.datasets.sources.camvid_examples`` (what the TFDS builder
iterates) to stop at a known point inside the build: deterministic, no timing guesses.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from synthetic import make_camvid

from rfjax import data
from rfjax.datasets import sources

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import fcntl, os, sys, time
    from pathlib import Path
    import numpy as np
    from rfjax import data
    from rfjax.datasets import sources

    src, prepared, work, mode = sys.argv[1:5]
    work = Path(work)
    original = sources.camvid_examples

    def patched(root, split):
        if split == "train":  # once per build
            with open(work / "builds", "a") as f:
                f.write(f"{os.getpid()}\\n")
        for i, example in enumerate(original(root, split)):
            yield example
            if split == "train" and i == 0 and mode in ("hang", "wait"):
                (work / f"building-{mode}").touch()  # inside the build, files half written
                while mode == "hang" or not (work / "go").exists():
                    time.sleep(0.02)

    sources.camvid_examples = patched
    if mode == "second":
        real_flock = fcntl.flock

        def flock(f, op):
            if op == fcntl.LOCK_EX:
                (work / "locking").touch()  # about to wait for the first process's lock
            return real_flock(f, op)

        fcntl.flock = flock
    split = data.load("camvid", "train", data_dir=src, prepared_dir=prepared)
    np.save(work / f"images-{mode}.npy", split.images)
""")


def _start(tmp_path, mode):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
           "RFJAX_NO_PROGRESS": "1", "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "src"), str(tmp_path / "prepared"),
         str(tmp_path), mode],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the child exited ({proc.returncode}) before {path.name}:\n"
                                 f"{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {path.name}")
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, timeout: float = 180.0) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out


def _key(tmp_path):
    return sources.fingerprint(tmp_path / "src", sources.CAMVID_SUBDIR)


def test_a_killed_preparation_leaves_no_half_built_dataset(tmp_path):
    want = make_camvid(tmp_path / "src")
    prepared = tmp_path / "prepared"
    proc = _start(tmp_path, "hang")
    _wait_for(tmp_path / "building-hang", proc)
    proc.send_signal(signal.SIGKILL)  # killed inside the build
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    target = prepared / f"camvid-{_key(tmp_path)}"
    leftovers = [p for p in prepared.iterdir() if ".tmp-" in p.name]
    assert not target.exists()  # never half-built at its final name
    assert len(leftovers) == 1 and any(leftovers[0].rglob("*"))  # the killed build's files
    # Preparing again succeeds, removes the leftover and builds once.
    got = data.load("camvid", "train", data_dir=tmp_path / "src", prepared_dir=prepared)
    np.testing.assert_array_equal(got.images, want["train"][0])
    np.testing.assert_array_equal(got.labels, want["train"][1])
    assert not [p for p in prepared.iterdir() if ".tmp-" in p.name]
    assert (target / "rfjax_camvid" / "1.0.0" / "dataset_info.json").is_file()
    assert len((tmp_path / "builds").read_text().split()) == 1  # only the killed child's


def test_a_half_built_target_is_rebuilt(tmp_path):
    # What an interrupted in-place build (an older rfjax, plain TFDS) leaves behind.
    want = make_camvid(tmp_path / "src")
    prepared = tmp_path / "prepared"
    version = prepared / f"camvid-{_key(tmp_path)}" / "rfjax_camvid" / "1.0.0"
    version.mkdir(parents=True)
    (version / "rfjax_camvid-train.array_record-00000-of-00001").write_bytes(b"partial")
    got = data.load("camvid", "val", data_dir=tmp_path / "src", prepared_dir=prepared)
    np.testing.assert_array_equal(got.images, want["val"][0])
    assert (version / "dataset_info.json").is_file()


@pytest.mark.skipif(getattr(data, "fcntl", None) is None, reason="no fcntl: no lock")
def test_two_preparations_at_once_build_once(tmp_path):
    want = make_camvid(tmp_path / "src")
    first = _start(tmp_path, "wait")
    _wait_for(tmp_path / "building-wait", first)  # the first holds the lock, mid-build
    second = _start(tmp_path, "second")
    _wait_for(tmp_path / "locking", second)  # the second now waits for that lock
    time.sleep(0.5)
    assert second.poll() is None  # still waiting
    (tmp_path / "go").touch()
    _finish(first)
    _finish(second)
    assert len((tmp_path / "builds").read_text().split()) == 1  # built once
    for mode in ("wait", "second"):
        np.testing.assert_array_equal(np.load(tmp_path / f"images-{mode}.npy"),
                                      want["train"][0])
    prepared = tmp_path / "prepared"
    names = sorted(p.name for p in prepared.iterdir())
    assert names == [f".camvid-{_key(tmp_path)}.lock", f"camvid-{_key(tmp_path)}"]
