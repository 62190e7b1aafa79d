"""Videos and prompts on disk: what sample.py writes and the evaluators and toy/world.py read, and the mean with its
standard error that both evaluators report over videos. No model code here.

    videos in memory  uint8 (n, t, h, w, 3), RGB, what GIF / MP4 files hold
    videos in models  float (b, 3, t, h, w) in [-1, 1] (to_uint8 converts)
    prompt files      one caption a line; blank lines and '#' comments skipped
"""

import json
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch


def mean_se(values):
    """Per-video scores -> (mean, standard error of the mean). SE = s / sqrt(n) with s the SAMPLE standard deviation
    (n - 1 in its denominator); None for fewer than 2 videos, where it is not defined (mean None for none)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return None, None
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else None


def read_prompts(path):
    """One caption a line; blank lines and '#' comments skipped."""
    lines = Path(path).read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]


def slug(text):
    """A caption as a file name: lower case, runs of other characters as one '_', at most 80 characters."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:80]


def to_uint8(video):
    """float (b, c, t, h, w) in [-1, 1] -> uint8 (b, t, h, w, 3)."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()


def read_video(path):
    """A GIF or MP4 -> uint8 (t, h, w, 3) (an alpha channel is dropped)."""
    return np.asarray(iio.imread(path, index=None))[..., :3]


def sample_rows(folder):
    """A sample folder (what sample.py writes) -> its prompts.jsonl rows, in the file's order, each checked to have
    a "prompt" and a "file". ValueError (one line) for a missing folder or listing, a line that is not such JSON,
    or a listing of nothing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder")
    listing = folder / "prompts.jsonl"
    if not listing.is_file():
        raise ValueError(f"{folder}: no prompts.jsonl there (give a folder sample.py wrote)")
    rows = []
    for i, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{listing} line {i} is not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(row.get("file"), str):
            raise ValueError(f"{listing} line {i} has no \"prompt\" and \"file\" (sample.py writes both)")
        rows.append(row)
    if not rows:
        raise ValueError(f"{listing} lists no videos")
    return rows


def read_samples(folder):
    """A sample folder -> [(its prompts.jsonl row, the video uint8 (t, h, w, 3))], in the file's order. Every video
    at once: fine for the toy's folders (a real evaluation reads a batch at a time, evaluate.score_folder)."""
    return [(r, read_video(Path(folder) / r["file"])) for r in sample_rows(folder)]


def save_video(frames, path, fps=16):
    """frames: uint8 (t, h, w, 3) -> GIF or MP4 by suffix, at `fps` (16: the rate VC2 and T2V-Turbo train and
    write at; a GIF stores 1/100 s per frame, so 16 fps plays at 16.7)."""
    path = Path(path)
    if path.suffix == ".gif":
        iio.imwrite(path, frames, extension=".gif", duration=int(1000 / fps), loop=0)
    else:
        iio.imwrite(path, frames, extension=path.suffix, fps=fps, codec="libx264", macro_block_size=1)


def save_grid(clips, path, ncol=8, scale=2, fps=16):
    """clips: uint8 (n, t, h, w, 3) -> one GIF with the n videos tiled (n / ncol rows), each upscaled x scale."""
    clips = np.asarray(clips)
    n, t, h, w, _ = clips.shape
    nrow = -(-n // ncol)
    pad = np.full((nrow * ncol, t, h + 2, w + 2, 3), 64, np.uint8)  # a grey 1-px border around each video
    pad[:n, :, 1:-1, 1:-1] = clips
    grid = pad.reshape(nrow, ncol, t, h + 2, w + 2, 3).transpose(2, 0, 3, 1, 4, 5)  # (t, rows, H, cols, W, 3)
    grid = grid.reshape(t, nrow * (h + 2), ncol * (w + 2), 3).repeat(scale, 1).repeat(scale, 2)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_video(grid, path, fps)


def unique_path(path):
    """path, or path with -2, -3, ... before its suffix when that name is taken: nothing is overwritten."""
    path, n = Path(path), 2
    candidate = path
    while candidate.exists():
        candidate, n = path.with_name(f"{path.stem}-{n}{path.suffix}"), n + 1
    return candidate
