"""rfjax.progress: the one RFJAX_NO_PROGRESS switch and the tqdm wrapper."""

from __future__ import annotations

import io
import sys

import pytest

from rfjax.progress import ENV_VAR, progress, progress_enabled


@pytest.fixture
def tty(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)


@pytest.mark.parametrize(("value", "shown"), [
    (None, True), ("", True), ("0", True),
    ("1", False), ("yes", False), ("true", False), ("false", False), ("00", False),
])
def test_switch_reads_the_variable_at_every_call(monkeypatch, tty, value, shown):
    if value is None:
        monkeypatch.delenv(ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(ENV_VAR, value)
    assert ENV_VAR == "RFJAX_NO_PROGRESS"
    assert progress_enabled() is shown
    assert progress_enabled(enabled=False) is False
    with progress(3, "work") as bar:
        assert bar.disable is not shown


def test_no_bar_without_a_terminal(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "0")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not progress_enabled()
    monkeypatch.setattr(sys, "stderr", object())  # no isatty at all
    assert not progress_enabled()
    closed = io.StringIO()
    closed.close()  # isatty() raises ValueError on a closed stream
    monkeypatch.setattr(sys, "stderr", closed)
    assert not progress_enabled()


def test_wraps_an_iterable_or_counts_a_total(monkeypatch, tty):
    monkeypatch.setenv(ENV_VAR, "1")
    assert list(progress(range(4), "items")) == [0, 1, 2, 3]  # a disabled bar still iterates
    monkeypatch.setenv(ENV_VAR, "0")
    out = io.StringIO()  # shown bars draw here, not on the test's stderr
    with progress(None, "unknown total", unit="chunk", leave=False, file=out) as bar:
        assert not bar.disable and bar.total is None and bar.unit == "chunk"
        bar.update(2)
        assert bar.n == 2
    assert "unknown total: 0chunk" in out.getvalue()
    with progress(10, initial=3, file=out) as bar:
        assert bar.total == 10 and bar.n == 3
    assert list(progress(iter("ab"), "items", file=out)) == ["a", "b"]
    with progress(2.5, "fractional", enabled=False) as bar:
        assert bar.disable and bar.total == 2.5
