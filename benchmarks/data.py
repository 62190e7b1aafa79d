"""The data path's speed: clips/s with ffmpeg's seek and without, in 1 and N worker processes, and from a
latent cache.

    python -m benchmarks data
"""

import os
import tempfile
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import torch

from machinery.batches import StepLoader
from machinery.loop import data_draws
from vc2 import data


def bench_data(videos=12, seconds=8, batches=8, batch=4):
    """vc2/data.py's path on `videos` synthetic mp4s (320 x 512, 25 fps, `seconds` s, H.264 as imageio writes it, in a
    temporary folder): clips/s of the vc2 preset's clips (16 frames at 16 fps, 320 x 512: 31 frames of the file)
    over `batches` batches of `batch`, decoded in this process with ffmpeg's seek and from the first frame, and by
    StepLoader in 1 and in N worker processes (N = min(4, the cores this process may run on), when N > 1; the
    time includes starting them); then the clips/s read from a latent cache of VC2-shaped tensors (random values: a read
    costs the same; just written, so from the page cache, not the disk). The batches are the same in every case."""
    out, n = {}, min(4, len(os.sched_getaffinity(0)))
    draws = partial(data_draws, SimpleNamespace(seed=0, grad_accum=1), SimpleNamespace(world=1, rank=0), "bench",
                    b=batch)                                 # train.py's draws: step k's batch from k's seed
    with tempfile.TemporaryDirectory() as d:
        d, rng = Path(d), np.random.default_rng(0)
        y, x = np.mgrid[0:320, 0:512]
        for i in range(videos):  # a smooth picture drifting sideways, with a little noise: compresses like video
            base = np.sin(x / (20 + i) + y / 31)[..., None] * [60, 40, 80] + 128 + rng.normal(0, 6, (320, 512, 3))
            base = base.clip(0, 255).astype(np.uint8)
            frames = np.stack([np.roll(base, 4 * k, axis=1) for k in range(25 * seconds)])     # (t, 320, 512, 3)
            iio.imwrite(d / f"{i}.mp4", frames, fps=25)
        (d / "c.csv").write_text("path,caption\n" + "".join(f"{i}.mp4,video {i}\n" for i in range(videos)))
        runs = [("seek", 0, True), ("sequential", 0, False), ("1_worker", 1, True)]
        runs += [(f"{n}_workers", n, True)] if n > 1 else []
        for name, workers, seek in runs:
            loader = StepLoader(data.VideoFolder(d, d / "c.csv", 320, 512, 16, 16, seek=seek), draws, workers)
            t0 = time.perf_counter()
            for step in range(batches):
                loader.batch(step, 0)
            out[f"data_clips_per_s_{name}"] = batches * batch / (time.perf_counter() - t0)
            loader.close()
        out["data_seek_speedup"] = out["data_clips_per_s_seek"] / out["data_clips_per_s_sequential"]
        out["data_workers_n"] = n
        # the latent cache: VC2's posterior mean and log-variance (4 x 16 x 40 x 64 each) and text (77 x 1024)
        rows, shape = 64, (4, 16, 40, 64)
        tensors = {"mean": torch.randn(rows, *shape), "logvar": torch.randn(rows, *shape),
                   "context": torch.randn(rows, 77, 1024)}
        (d / "cache").mkdir()
        shards = [data.save_shard(d / "cache", k, {name: t[k * 16:(k + 1) * 16] for name, t in tensors.items()},
                                  [f"video {j}" for j in range(16)], [str(j) for j in range(16)]) for k in range(4)]
        clip = {"frames": 16, "height": 320, "width": 512, "fps": 16, "seed": 0}
        data.save_index(d / "cache", clip, "random", {"ae": {}, "text": {}}, shards, {})
        cache = data.LatentCache(d / "cache")
        t0 = time.perf_counter()
        for step in range(4 * batches):
            cache.batch(batch, np.random.default_rng(step))
        out["data_cache_clips_per_s"] = 4 * batches * batch / (time.perf_counter() - t0)
        out["data_cache_mb_per_clip"] = sum(t[0].numel() * 4 for t in tensors.values()) / 2 ** 20
    return out
