"""TUTORIAL.md's snippets are promised to run: run every ```python block, each in a fresh namespace."""
import re

import pytest

from conftest import ROOT

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "TUTORIAL.md").read_text(), re.S)


def test_there_are_snippets():
    assert len(BLOCKS) >= 6


# what each snippet's comment says it prints (a new snippet needs a line here)
SHOWS = [["[0.99915, 0.982244, 0.27767, 0.00466]"], ["1413284420", "torch.Size([2, 8, 8, 8, 8])"],
         ["tensor([1.0000e+00, 2.4938e-03, 6.9252e-06"], ["torch.Size([2, 8, 8, 8, 8])"],
         ["'r_img': torch.Size([2])", "'r_vid': torch.Size([2])", "tensor(True)"],
         ["[[999], [999, 499], [999, 759, 519, 279], [999, 879, 759, 639, 519, 399, 279, 159]]"]]


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_snippet_runs(i, capsys):
    exec(compile(BLOCKS[i], f"TUTORIAL.md snippet {i}", "exec"), {"__name__": "tutorial"})
    out = capsys.readouterr().out
    assert len(SHOWS) == len(BLOCKS) and all(s in out for s in SHOWS[i]), out
