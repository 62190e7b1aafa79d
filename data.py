"""Real training data: a folder of videos with captions, behind the toy world's interface (toy.ToyWorld).

T2V-Turbo trains on WebVid-10M: 16 frames at 320 x 512, sampled at 16 fps (digest section 3). VideoFolder serves
the same thing from your own files:

    videos/                      captions.csv (or .jsonl), one row per video:
      0001.mp4                     path,caption                    <- any of the column names below
      more/0002.webm               0001.mp4,a dog runs on a beach
                                   more/0002.webm,waves at sunset
    WebVid's own CSV also works as it is: videoid,...,page_dir,name  ->  videos/{page_dir}/{videoid}.mp4

A clip: the stride is the file's own fps over the target fps (a 30 fps file at 16 fps keeps every 2nd frame, at
least 1), the start is random, the frames are resized (short side to fit) and centre-cropped to (height, width),
and returned in [-1, 1] as (3, t, h, w). Files that are missing, corrupt, unreadable or too short for `frames`
frames are skipped and counted by reason (never fatal): the next row is tried in their place.

    python data.py VIDEO_DIR CAPTIONS.csv       # scans every row and prints what would be skipped and why
"""

import csv
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PATH_COLUMNS = ("path", "video", "file", "filename", "video_path", "videoid", "video_id", "id")
CAPTION_COLUMNS = ("caption", "text", "prompt", "name", "title")  # WebVid calls its caption `name`
VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".gif")


class BadVideo(Exception):
    """A video that cannot give a clip; the message is the reason (counted in VideoFolder.skipped)."""


def read_captions(path):
    """-> [(relative path or id, caption, subfolder or '')] from a CSV (header row) or JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no caption file at {path}")
    if path.suffix == ".jsonl":
        rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    else:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no rows")
    cols = set(rows[0])
    pcol = next((c for c in PATH_COLUMNS if c in cols), None)
    ccol = next((c for c in CAPTION_COLUMNS if c in cols), None)
    if pcol is None or ccol is None:
        raise ValueError(f"{path}: need a video column (one of {PATH_COLUMNS}) and a caption column (one of "
                         f"{CAPTION_COLUMNS}); found {sorted(cols)}")
    return [(str(r[pcol]), str(r[ccol]), str(r.get("page_dir") or "")) for r in rows]


def resize_crop(frames, height, width):
    """uint8 (t, H, W, 3) -> float (3, t, height, width) in [-1, 1]: scale so the frame covers the target
    (bilinear, antialiased), then crop the centre."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()   # (t, 3, H, W)
    H, W = x.shape[-2:]
    s = max(height / H, width / W)
    h2, w2 = max(height, round(H * s)), max(width, round(W * s))
    x = F.interpolate(x, size=(h2, w2), mode="bilinear", align_corners=False, antialias=True)
    top, left = (h2 - height) // 2, (w2 - width) // 2
    x = x[:, :, top:top + height, left:left + width]
    return (x / 127.5 - 1).clamp(-1, 1).permute(1, 0, 2, 3)                           # (3, t, h, w)


class VideoFolder:
    """(video, caption) batches from a folder of videos; the same batch(n, rng, rows) as toy.ToyWorld."""

    def __init__(self, root, captions, height=320, width=512, frames=16, fps=16):
        self.root, self.height, self.width, self.frames, self.fps = Path(root), height, width, frames, fps
        if not self.root.is_dir():
            raise FileNotFoundError(f"no video folder at {self.root}")
        self.rows = read_captions(captions)
        self.skipped = Counter()   # reason -> count
        self.bad = set()           # rows known to be unusable, not tried again

    def __len__(self):
        return len(self.rows)

    def _file(self, i):
        name, _, sub = self.rows[i]
        for p in (self.root / sub / name, self.root / name):
            if p.is_file():
                return p
            for ext in VIDEO_EXTS:  # WebVid rows name a video id, not a file
                if p.with_name(p.name + ext).is_file():
                    return p.with_name(p.name + ext)
        raise BadVideo("missing")

    def clip(self, i, rng):
        """Row i -> (3, frames, height, width) in [-1, 1], or BadVideo(reason)."""
        import imageio.v3 as iio
        path = self._file(i)
        try:
            meta = iio.immeta(path)
            if "fps" in meta:                                   # ffmpeg: fps and duration in seconds
                native = float(meta["fps"])
                n = int(meta.get("duration", 0) * native)
            else:                                               # GIF (pillow): frame duration in ms
                native = 1000.0 / max(float(meta.get("duration", 100)), 1.0)
                n = iio.improps(path).shape[0]
            stride = max(1, round(native / self.fps))
            need = (self.frames - 1) * stride + 1
            if n < need:
                raise BadVideo("too short")
            start = int(rng.integers(0, n - need + 1))
            keep, frames = set(range(start, start + need, stride)), []
            for k, frame in enumerate(iio.imiter(path)):
                if k in keep:
                    frames.append(np.asarray(frame)[..., :3] if frame.ndim == 3 else np.repeat(frame[..., None], 3, -1))
                if len(frames) == self.frames:
                    break
        except BadVideo:
            raise
        except Exception as e:  # imageio/ffmpeg raise many kinds of errors for broken files
            raise BadVideo("unreadable") from e
        if len(frames) < self.frames:
            raise BadVideo("too short")
        return resize_crop(np.stack(frames), self.height, self.width)

    def batch(self, n, rng, rows=None):
        """Draws n row indices from rng (with replacement), loads those in `rows` (default all) -> (video
        (len(rows), 3, t, h, w) in [-1, 1], captions). A bad row is replaced by the next good one after it."""
        idx = rng.integers(0, len(self.rows), n)
        seeds = rng.integers(0, 2 ** 63 - 1, n)  # each clip's start frame: independent of which rows load
        clips, caps = [], []
        for j in (range(n) if rows is None else rows):
            i = int(idx[j])
            for _ in range(len(self.rows)):
                if i not in self.bad:
                    try:
                        clips.append(self.clip(i, np.random.default_rng(seeds[j])))
                        caps.append(self.rows[i][1])
                        break
                    except BadVideo as e:
                        self.skipped[str(e)] += 1
                        self.bad.add(i)
                i = (i + 1) % len(self.rows)
            else:
                raise RuntimeError(f"none of the {len(self.rows)} videos in {self.root} gives a clip of "
                                   f"{self.frames} frames at {self.fps} fps ({dict(self.skipped)})")
        return torch.stack(clips), caps


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    ds = VideoFolder(sys.argv[1], sys.argv[2])
    rng = np.random.default_rng(0)
    good = 0
    for i in range(len(ds)):
        try:
            ds.clip(i, rng)
            good += 1
        except BadVideo as e:
            ds.skipped[str(e)] += 1
    print(f"{len(ds)} rows: {good} give a clip of {ds.frames} frames at {ds.fps} fps; skipped: {dict(ds.skipped)}")
