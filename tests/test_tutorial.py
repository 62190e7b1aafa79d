"""TUTORIAL.md's snippets are promised to run: run every ```python block, each in a fresh namespace."""
import re
from pathlib import Path

import pytest

BLOCKS = re.findall(r"```python\n(.*?)```", (Path(__file__).resolve().parents[1] / "TUTORIAL.md").read_text(), re.S)


def test_there_are_snippets():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_snippet_runs(i, capsys):
    exec(compile(BLOCKS[i], f"TUTORIAL.md snippet {i}", "exec"), {"__name__": "tutorial"})
    assert capsys.readouterr().out.strip()                       # every snippet prints what it shows
