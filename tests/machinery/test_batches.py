"""machinery/batches.py: N worker processes give the batches one process gives, also after a resume and with a
corrupt video among the rows, and for the toy world."""
import csv
from functools import partial
from types import SimpleNamespace

import imageio.v3 as iio
import torch

from conftest import moving_frames
from machinery.batches import StepLoader
from machinery.loop import data_draws
from toy.world import ToyWorld
from vc2.data import VideoFolder


def write_folder(root):
    """Three GIFs (25 fps, 20 frames; they decode fast), an mp4 (25 fps, 40 frames), a corrupt mp4, a missing one,
    and a 2-frame GIF."""
    root.mkdir()
    frames = moving_frames(40, 24, 32)
    for k, name in enumerate(("a.gif", "b.gif", "d.gif")):
        iio.imwrite(root / name, frames[k:k + 20], duration=40, loop=0)
    iio.imwrite(root / "short.gif", frames[:2], duration=40, loop=0)
    iio.imwrite(root / "c.mp4", moving_frames(40, 32, 48), fps=25)
    (root / "broken.mp4").write_bytes(b"not a video" * 50)
    with open(root / "captions.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "caption")] + [(n, f"caption of {n}") for n in (
            "a.gif", "broken.mp4", "c.mp4", "gone.mp4", "b.gif", "d.gif", "short.gif")])
    return root / "captions.csv"


def test_workers_give_the_batches_of_one_process_also_after_a_resume(tmp_path):
    caps = write_folder(tmp_path / "v")
    draws = partial(data_draws, SimpleNamespace(seed=0, grad_accum=2), SimpleNamespace(world=1, rank=0), "turbo", b=1)

    def batches(workers, keys, seek=True):
        ds = VideoFolder(tmp_path / "v", caps, height=16, width=16, frames=4, fps=12, seek=seek)
        loader = StepLoader(ds, draws, workers, micros=2)
        got = [loader.batch(*k) for k in keys]
        loader.close()
        return got, ds

    def same(a, b):
        return len(a) == len(b) and all(torch.equal(x, y) and cx == cy for (x, cx), (y, cy) in zip(a, b))

    keys = [(s, m) for s in range(3) for m in range(2)]
    one, ds1 = batches(0, keys)
    two, ds2 = batches(2, keys)
    assert same(one, two) and ds1.skipped == ds2.skipped and ds1.skipped_files == ds2.skipped_files
    assert set(ds1.skipped) == {"unreadable", "missing", "too short"}        # every kind of bad row was met
    # a resumed run (from step 1), then a key out of sequence (a step cut short by a non-finite micro-batch)
    resumed, _ = batches(2, [(1, 0), (1, 1), (2, 1)])
    assert same(resumed, [one[2], one[3], one[5]])
    # the toy world, rendered in the workers
    toy = [StepLoader(ToyWorld(size=16, frames=4), draws, w, micros=2) for w in (0, 2)]
    assert same(*([t.batch(*k) for k in keys[:2]] for t in toy))
