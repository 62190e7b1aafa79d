"""The math of the main job, pinned: the first two steps of `python train.py` (the toy preset on the shipped models
in toy/assets/, 8 clips, CD and both rewards) log the loss and each of its terms. The second step's values depend on
the first step's backward pass and AdamW update, so together they cover forward, backward and optimizer. A change
meant to make a step faster must keep them. The values were logged by this command, with the loop of
train.py as it was before any speed-up:

    python -c "import train; train.main(['--turbo-steps', '2', '--compare-per-caption', '0', '--out', 'runs/pin'])"
    # then machinery.checkpoint.read_meta('runs/pin/turbo.safetensors')['stats']['log']

The tolerance is float noise across CPUs and thread counts (sums ordered differently), far below what any change of
the draws, the loss or the recipe moves: the second step's loss differs from the first's by 1e-3.
"""
import pytest

import train
from conftest import TRAIN_CPU
from machinery.checkpoint import read_meta

PINNED = [{"loss": -2.672912836074829, "cd": 0.03666233271360397, "r_img": 0.9534996151924133,
           "r_vid": 0.8780378103256226},
          {"loss": -2.67590594291687, "cd": 0.03576766327023506, "r_img": 0.940602719783783,
           "r_vid": 0.885535478591919}]


def test_the_main_jobs_first_two_steps_keep_their_loss(tmp_path):
    train.main(["--turbo-steps", "2", "--out", str(tmp_path), *TRAIN_CPU])
    log = read_meta(tmp_path / "turbo.safetensors")["stats"]["log"]
    assert [sorted(step) for step in log] == [sorted(step) for step in PINNED]
    for got, want in zip(log, PINNED, strict=True):
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=2e-5, abs=2e-6), (k, got, want)
