"""The README's Python examples run as written."""

from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python examples"
    for i, code in enumerate(blocks):
        namespace: dict = {"__name__": f"readme_block_{i}"}
        exec(compile(code, f"README.md[block {i}]", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "(5, 5) (1, 1) (2, 2)" in out
    assert "(212, 212)" in out
