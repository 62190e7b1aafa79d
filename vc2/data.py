"""Real training data: a folder of videos with captions, behind the toy world's interface (toy/world.py: ToyWorld).

T2V-Turbo trains on WebVid-10M: 16 frames at 320 x 512, sampled at 16 fps (paper Sec. 4 and App. A). VideoFolder
serves the same thing from your own files:

    videos/                      captions.csv (or .jsonl), one row per video:
      0001.mp4                     path,caption                    <- any of the column names below
      more/0002.webm               0001.mp4,a dog runs on a beach
                                   more/0002.webm,waves at sunset
    WebVid's own CSV also works as it is: videoid,...,page_dir,name  ->  videos/{page_dir}/{videoid}.mp4

A clip: the stride is the file's own fps over the target fps (a 30 fps file at 16 fps keeps every 2nd frame, at
least 1), the start is random, the frames are resized (short side to fit) and centre-cropped to (height, width),
and returned in [-1, 1] as (3, t, h, w). Rows without a video name or a caption, and files that are missing,
corrupt, unreadable or too short for `frames` frames, are skipped and counted by reason (never fatal): the next
row is tried in their place. A caption file that cannot be read as a whole (not UTF-8, a line that is not JSON,
no caption column, ...) is an error of one line that names the file.

Keeping a GPU busy (train.py --data-workers N, --cache DIR; `python -m benchmarks data` measures each):
    - a clip is decoded from its first frame, not from the file's: ffmpeg seeks to it (read_frames), where that is
      known to give exactly the frames the sequential decode gives, which is the fallback everywhere else;
    - StepLoader (machinery/batches.py) decodes the batches of the coming steps in N worker processes while this one
      trains. The step number is still the data position: a batch is the same with 0 or N workers, and after
      --resume;
    - a latent cache: `--cache DIR --ckpt TEACHER` encodes one clip of every video with the teacher's first stage
      and text tower, once, and train.py --cache DIR reads those instead of decoding and encoding (LatentCache says
      what that gives up: a fixed clip per video instead of a new random start each time).

    python -m vc2.data VIDEO_DIR CAPTIONS.csv       # scans every row: what would be skipped and why (and a list file)
    python -m vc2.data VIDEO_DIR CAPTIONS.csv --cache DIR --ckpt weights/vc2/teacher.safetensors   # the latent cache
"""

import argparse
import csv
import json
import os
import sys
from collections import Counter
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open

from encoders import AutoencoderKL
from machinery.checkpoint import load_models, read_meta, save_tensors
from machinery.cli import check_device

PATH_COLUMNS = ("path", "video", "file", "filename", "video_path", "videoid", "video_id", "id")
CAPTION_COLUMNS = ("caption", "text", "prompt", "name", "title")  # WebVid calls its caption `name`
VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".gif")
KEEP_SKIPPED = 1000   # VideoFolder.skipped_files keeps the first this many skipped rows (the counts keep them all)
CHECK_ROWS = 1000     # check_data_args reads this many rows: enough for the columns, cheap on WebVid's 10M
SEEK_EXTS = (".mp4", ".m4v", ".mov", ".mkv", ".webm")  # containers whose seeks were measured frame-exact (not .avi)
SEEK_MARGIN = 0.05    # a seek aims this many frames before the first wanted one (read_frames says why)
SHARD_ROWS = 256      # videos per file of a latent cache (about 400 MiB at VC2's 16 x 320 x 512)
CACHE_FORMAT = "t2v-turbo latent cache 1"


class BadVideo(Exception):
    """A video that cannot give a clip. str(e) is the reason (the key counted in VideoFolder.skipped); `detail`
    says more about this file (e.g. how many frames it has)."""

    def __init__(self, reason, detail=""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def typed_line(e):
    """An exception as one line with its type: "Type: its first line" (the reason a row was skipped, and the like)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


# ----------------------------------------------------------------------------------------------------------------
# the caption file

def text_lines(path):
    """(line number from 1, text) for each line of a file. A byte that is not UTF-8 -> ValueError naming the line.
    Read as bytes and decoded line by line, so the error can say where (a text-mode file decodes 8 KB chunks)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8")   # -sig: drop the BOM that Excel writes
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} line {n} is not UTF-8 text (byte {e.start + 1} of the line): save the "
                                 f"file as UTF-8 CSV or JSONL") from None


def read_rows(path, limit=None):
    """-> (column names, [(line number, {column: value})]) from a CSV with a header row or a JSONL file (.jsonl or
    .json: one JSON object per line). Stops after `limit` rows. Whatever cannot be parsed -> ValueError."""
    rows, jsonl = [], path.suffix in (".jsonl", ".json")
    if jsonl:
        cols = {}                                               # JSONL rows may differ: every key seen, in order
        for n, text in text_lines(path):
            if not text.strip():
                continue
            try:
                r = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {n} is not JSON ({e.msg}, column {e.colno}): a JSONL file has one "
                                 f"JSON object per line") from None
            if not isinstance(r, dict):
                raise ValueError(f"{path} line {n} is a JSON {type(r).__name__}, not an object: a JSONL file has "
                                 'one {"path": ..., "caption": ...} per line')
            cols.update(dict.fromkeys(r))
            rows.append((n, r))
            if limit and len(rows) >= limit:
                break
        if not rows:
            raise ValueError(f'{path} is empty: write one JSON object per line, e.g. {{"path": "0001.mp4", '
                             f'"caption": "a dog runs"}}')
        return list(cols), rows
    lines = text_lines(path)
    reader = csv.DictReader((text for _, text in lines))        # a quoted caption may span lines: csv joins them
    try:
        cols = reader.fieldnames                                # the header row; None when the file is empty
        if cols is None:
            raise ValueError(f"{path} is empty: write a header row (e.g. path,caption) and one row per video")
        for r in reader:
            rows.append((reader.line_num, r))
            if limit and len(rows) >= limit:
                break
    except csv.Error as e:                                      # a NUL byte, a field over csv's size limit, ...
        raise ValueError(f"{path}: the row after line {reader.line_num} is not CSV ({e})") from None
    if not rows:
        raise ValueError(f"{path} has a header row but no rows")
    return cols, rows


def read_captions(path, dropped=None, limit=None):
    """-> [(relative path or id, caption, subfolder or '')] from a CSV (header row) or JSONL file.

    A row without a video name or without a caption (missing, empty, or not text) is left out; when `dropped`
    is a list, ("line N (name)", reason, "") is appended to it for each. `limit`: read only the first rows (a
    quick check). A file that cannot be read -> FileNotFoundError or ValueError, one line naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give the caption file (CSV or JSONL) inside it")
    if not path.is_file():
        raise FileNotFoundError(f"no caption file at {path}")
    cols, rows = read_rows(path, limit)
    lower = {str(c).strip().lower(): c for c in cols if c is not None}   # 'Caption' in an Excel header is fine
    pcol = next((lower[c] for c in PATH_COLUMNS if c in lower), None)
    ccol = next((lower[c] for c in CAPTION_COLUMNS if c in lower), None)
    missing = ([f"no video column (one of {', '.join(PATH_COLUMNS)})"] if pcol is None else []) + \
              ([f"no caption column (one of {', '.join(CAPTION_COLUMNS)})"] if ccol is None else [])
    if missing:
        raise ValueError(f"{path} has {' and '.join(missing)}; its columns are {', '.join(map(str, cols))}")
    out, reasons = [], Counter()
    for n, r in rows:
        # csv gives None for a field the row does not have, JSON may give null or a number (WebVid's videoid)
        name, cap = r.get(pcol), r.get(ccol)
        name = "" if name is None else str(name).strip()
        reason = "no path" if not name else "no caption" if not isinstance(cap, str) or not cap.strip() else None
        if reason:
            reasons[reason] += 1
            if dropped is not None:
                dropped.append((f"line {n}" + (f" ({name})" if name else ""), reason, ""))
            continue
        out.append((name, cap, str(r.get("page_dir") or "")))
    if not out and (not limit or len(rows) < limit):  # (a quick check that stopped early: the rest may be fine)
        raise ValueError(f"{path}: none of its {len(rows)} rows has both a video and a caption "
                         f"({', '.join(f'{k}: {v}' for k, v in reasons.items())})")
    return out


def check_data_args(data, captions):
    """The problem with a video folder and its caption file as one line, or None when they look usable. Cheap:
    it reads the caption file's first CHECK_ROWS rows (VideoFolder reads them all, and raises the same way).
    data == captions == '' (the toy world) is fine."""
    if not data and not captions:
        return None
    if not data or not captions:
        return "a folder of videos and its caption file go together: give both"
    if not Path(data).is_dir():
        return f"{data} is a file, not a folder of videos" if Path(data).exists() else f"no video folder at {data}"
    try:
        read_captions(captions, limit=CHECK_ROWS)
    except (ValueError, OSError) as e:       # OSError: not readable (permissions, a broken disk)
        return str(e)
    return None


# ----------------------------------------------------------------------------------------------------------------
# the videos

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


def exact_fps(fps):
    """The frame rate behind the one ffmpeg prints (2 decimals), or None where it cannot be known: a whole number
    is exact, and 23.98, 29.97, 59.94 are NTSC's 24000/1001, 30000/1001, 60000/1001."""
    ntsc = round(fps * 1.001) * 1000 / 1001
    return float(fps) if fps == round(fps) else ntsc if abs(fps - ntsc) < 0.006 else None


def read_frames(path, start, count, stride, fps, seek=True):
    """Frames start, start + stride, ... of a video file: up to `count` uint8 arrays (H, W, 3), fewer when the file
    ends first. `fps`: the file's frame rate (iio.immeta), or None (a GIF, ...).

    The reference is the sequential decode: every frame from the file's first, counted (iio.imiter). With `seek`,
    ffmpeg starts at frame `start`'s time instead (a fast seek to a keyframe, then an exact one over the last 10 s,
    imageio's recipe: a fast seek alone was inexact in imageio's tests on ffmpeg 4.1) and stops after the clip, so
    only the clip's frames come through the pipe and into numpy (python -m benchmarks data: 1.2x the clips/s on 8 s
    files; the later the start, the more it saves). A frame k is the one shown at k / fps in both decodes (ffmpeg's
    image pipe is constant-frame-rate), so the frames are the same where the frame rate is known exactly and the
    container keeps the timestamps (SEEK_EXTS: mp4, mkv, webm and mov files at 23.976 to 30 fps, with and without
    audio, were equal, tests/vc2/test_data.py; an .avi came 2 frames early). The seek aims SEEK_MARGIN frames early:
    rounding never loses frame `start`, and ffmpeg's constant-rate output does not repeat it (aimed half a frame
    early, it does). Anything else, or a seek that fails or ends short, falls back to the sequential decode, which
    decides. Not covered: variable-frame-rate files (phone videos) whose printed rate happens to look exact."""
    rate = exact_fps(fps) if seek and fps and Path(path).suffix.lower() in SEEK_EXTS else None
    need = (count - 1) * stride + 1                          # the frames the clip spans
    if rate:
        t = max(start - SEEK_MARGIN, 0) / rate               # seconds
        slow = min(t, 10.0)                                  # the last 10 s are decoded, the rest is a keyframe jump
        before = ["-ss", f"{t - slow:.6f}"] if t > slow else []                       # ffmpeg's flags before -i ...
        after = (["-ss", f"{slow:.6f}"] if t else []) + ["-frames:v", str(need)]      # ... and after it
        frames = []
        try:
            gen = imageio_ffmpeg.read_frames(str(path), input_params=before, output_params=after)
            w, h = next(gen)["size"]                         # (the first item is ffmpeg's header)
            frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for k, b in enumerate(gen) if k % stride == 0]
        except Exception:                                    # (ffmpeg fails in many ways: the fallback decides)
            pass
        if len(frames) == count:
            return frames
    keep, frames = set(range(start, start + need, stride)), []
    for k, frame in enumerate(iio.imiter(path)):
        if k in keep:
            frames.append(np.asarray(frame)[..., :3] if frame.ndim == 3 else np.repeat(frame[..., None], 3, -1))
        if len(frames) == count:
            break
    return frames


class VideoFolder:
    """(video, caption) batches from a folder of videos; the same batch(n, rng, rows) as toy/world.py's ToyWorld.

    skipped: reason -> count, every row skipped so far (caption-file rows at load, videos as they are tried).
    caption_skipped: the caption file's part of it, the same in every process (count it once across processes).
    skipped_files: [(row, reason, detail)] for the first `keep_skipped` of them (None: all).
    bad: {row index: (reason, detail)}, the videos counted in skipped (not tried again).
    seek: decode clips with ffmpeg's seek where it is exact (read_frames); False: always from the first frame."""

    def __init__(self, root, captions, height=320, width=512, frames=16, fps=16, keep_skipped=KEEP_SKIPPED, seek=True):
        self.root, self.height, self.width, self.frames, self.fps = Path(root), height, width, frames, fps
        self.seek = seek
        for name, v in (("height", height), ("width", width), ("frames", frames), ("fps", fps)):
            if v < 1:
                raise ValueError(f"VideoFolder: {name} must be >= 1, not {v}")
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is a file, not a folder of videos" if self.root.exists()
                                    else f"no video folder at {self.root}")
        dropped = []
        self.rows = read_captions(captions, dropped)
        self.skipped = Counter()   # reason -> count
        self.keep_skipped, self.skipped_files = keep_skipped, []
        for row, reason, detail in dropped:
            self.skip(row, reason, detail)
        self.caption_skipped = Counter(self.skipped)
        self.bad = {}

    def __len__(self):
        return len(self.rows)

    def name(self, i):
        """Row i's video as the caption file names it (with WebVid's page_dir in front)."""
        name, _, sub = self.rows[i]
        return f"{sub}/{name}" if sub else name

    def skip(self, row, reason, detail=""):
        """Counts a skipped row under its reason, and keeps which row it was (the first keep_skipped)."""
        self.skipped[reason] += 1
        if self.keep_skipped is None or len(self.skipped_files) < self.keep_skipped:
            self.skipped_files.append((row, reason, detail))

    def _file(self, i):
        name, _, sub = self.rows[i]
        for p in (self.root / sub / name, self.root / name):
            if p.is_file():
                return p
            for ext in VIDEO_EXTS:  # WebVid rows name a video id, not a file
                if p.with_name(p.name + ext).is_file():
                    return p.with_name(p.name + ext)
        raise BadVideo("missing", f"no such file in {self.root}")

    def clip(self, i, rng):
        """Row i -> (3, frames, height, width) in [-1, 1], or BadVideo(reason)."""
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
                raise BadVideo("too short", f"{n} frames at {native:g} fps; {self.frames} frames at {self.fps} "
                                            f"fps need {need}")
            start = int(rng.integers(0, n - need + 1))
            frames = read_frames(path, start, self.frames, stride, meta.get("fps"), self.seek)
        except BadVideo:
            raise
        except Exception as e:  # imageio/ffmpeg raise many kinds of errors for broken files
            raise BadVideo("unreadable", typed_line(e)) from e
        if len(frames) < self.frames:
            raise BadVideo("too short", f"only {len(frames)} of the {self.frames} frames decoded")
        return resize_crop(np.stack(frames), self.height, self.width)

    def batch(self, n, rng, rows=None):
        """Draws n row indices from rng (with replacement), loads those in `rows` (default all) -> (video
        (len(rows), 3, t, h, w) in [-1, 1], captions). A bad row is replaced by the next good one after it."""
        video, caps, bad = self.draw(n, rng, rows)
        self.count_bad(bad)
        return video, caps

    def draw(self, n, rng, rows=None):
        """batch's work, without the counting -> (video, captions, bad): bad lists every unusable row the batch
        passed over, (row index, reason, detail), in order, whether found now or known before (count_bad counts
        each once: a DataLoader worker sends them to the main process, whose counts then stay exact)."""
        idx = rng.integers(0, len(self.rows), n)
        seeds = rng.integers(0, 2 ** 63 - 1, n)  # each clip's start frame: independent of which rows load
        clips, caps, bad = [], [], {}
        for j in (range(n) if rows is None else rows):
            i = int(idx[j])
            for _ in range(len(self.rows)):
                if i in self.bad or i in bad:
                    bad.setdefault(i, self.bad.get(i))
                else:
                    try:
                        clips.append(self.clip(i, np.random.default_rng(seeds[j])))
                        caps.append(self.rows[i][1])
                        break
                    except BadVideo as e:
                        bad[i] = (e.reason, e.detail)
                i = (i + 1) % len(self.rows)
            else:
                self.count_bad([(i, *why) for i, why in bad.items()])
                raise RuntimeError(f"none of the {len(self.rows)} videos in {self.root} gives a clip of "
                                   f"{self.frames} frames at {self.fps} fps ({dict(self.skipped)})")
        return torch.stack(clips), caps, [(i, *why) for i, why in bad.items()]

    def count_bad(self, bad):
        """Counts the rows of draw's `bad` list that are not counted yet (in skipped and skipped_files)."""
        for i, reason, detail in bad:
            if i not in self.bad:
                self.bad[i] = (reason, detail)
                self.skip(self.name(i), reason, detail)


# ----------------------------------------------------------------------------------------------------------------
# the batches of the coming steps, decoded ahead in worker processes


# ----------------------------------------------------------------------------------------------------------------
# the latent cache: python -m vc2.data VIDEO_DIR CAPTIONS --cache DIR --ckpt TEACHER

def cache_rng(seed, i):
    """The generator of row i's clip in a latent cache: its own seed, so a row's clip does not depend on which
    other rows are good."""
    return np.random.default_rng([seed, i])


def encode_first_stage(ae, video):
    """What a latent cache keeps of ae.encode(video (b, 3, t, H, W)): {'z0'} for a deterministic first stage (the
    toy's linear autoencoder), else the KL posterior's {'mean', 'logvar'}, unscaled, each (b, c, t, h, w), so that
    cached_latents can sample z0 fresh each step, as training on videos does."""
    if not isinstance(ae, AutoencoderKL):
        return {"z0": ae.encode(video).float()}
    mean, logvar = ae.posterior(video, chunk_size=16)                  # 16 frames per call: bounded memory
    return {"mean": mean.float(), "logvar": logvar.float()}


def cached_latents(ae, x, device):
    """z0 (b, c, t, h, w) from a LatentCache batch, as ae.encode(video) gives it for the cached clips: the toy's
    cached z0 as it is, or z = (mean + std * eps) * scale_factor with eps drawn as AutoencoderKL.encode draws it
    (the global RNG, the same shape), so the same RNG state gives the same z0 (tests/vc2/test_data.py)."""
    if "z0" in x:
        return x["z0"].to(device).float()
    return ae.sample_latents(x["mean"].to(device), x["logvar"].to(device)).float()


class CacheWriter:
    """Writes a latent cache into a new folder: shard-00000.safetensors, ... (about SHARD_ROWS videos each: one
    clip's encode_first_stage and its caption's text embedding 'context' (L, d), fp32, the captions and video names
    in the metadata), then index.json, last (a folder without it is an unfinished cache): the clips' shape, the
    seed, the teacher's first stage and text tower configs, the shards and their rows."""

    def __init__(self, out, ckpt, device, clip, batch=8):
        self.out, self.ckpt, self.device, self.clip, self.batch = Path(out), ckpt, device, clip, batch
        self.models = load_models(ckpt, device, dtype=torch.float32)
        self.todo, self.shard, self.shards = [], [], []   # clips to encode, encoded rows, written shards

    def add(self, video, caption, name):
        """One row's clip (3, t, H, W) in [-1, 1]: encoded `batch` at a time, written SHARD_ROWS at a time."""
        self.todo.append((video, caption, name))
        if len(self.todo) == self.batch:
            self.encode()

    @torch.no_grad()
    def encode(self):
        video = torch.stack([v for v, _, _ in self.todo]).to(self.device)         # (n, 3, t, H, W)
        caps = [c for _, c, _ in self.todo]
        got = {**encode_first_stage(self.models["ae"], video), "context": self.models["text"].encode_text(caps).float()}
        self.shard += [({k: v[j].cpu() for k, v in got.items()}, c, name) for j, (_, c, name) in enumerate(self.todo)]
        self.todo = []
        if len(self.shard) >= SHARD_ROWS:
            self.write_shard()

    def write_shard(self):
        tensors = {k: torch.stack([t[k] for t, _, _ in self.shard]) for k in self.shard[0][0]}   # (rows, ...)
        self.out.mkdir(exist_ok=True)       # (made by the first shard: a run without a good row writes nothing)
        self.shards.append(save_shard(self.out, len(self.shards), tensors, [c for _, c, _ in self.shard],
                                      [v for _, _, v in self.shard]))
        self.shard = []

    def close(self, skipped):
        """Encodes and writes what is left, then index.json. -> the rows written."""
        if self.todo:
            self.encode()
        if self.shard:
            self.write_shard()
        if self.shards:
            save_index(self.out, self.clip, self.ckpt, self.models["meta"], self.shards, skipped)
        return sum(k for _, k in self.shards)


def save_shard(out, k, tensors, captions, videos):
    """OUT/shard-<k>.safetensors: {name: (rows, ...)} tensors, the captions and video names in its metadata.
    -> [file name, rows], the index's entry for it."""
    name = f"shard-{k:05d}.safetensors"
    save_tensors(Path(out) / name, tensors, {"captions": json.dumps(captions), "videos": json.dumps(videos)})
    return [name, len(captions)]


def save_index(out, clip, ckpt, meta, shards, skipped):
    """OUT/index.json, written last: the clips' shape and seed, the teacher's first stage and text tower configs
    (meta: its checkpoint's), the shards, the skipped rows by reason."""
    index = {"format": CACHE_FORMAT, **clip, "teacher": str(ckpt), "ae": meta["ae"], "text": meta["text"],
             "shards": shards, "skipped": dict(skipped)}
    (Path(out) / "index.json").write_text(json.dumps(index, indent=1))


def read_index(path):
    """A latent cache's index.json -> dict; ValueError (one line) when it is missing or not a cache's."""
    f = Path(path) / "index.json"
    if not f.is_file():
        raise ValueError(f"no index.json in {path}: not a finished latent cache (vc2/data.py --cache writes it last)")
    try:
        index = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise ValueError(f"{f} does not read as a latent cache's index ({typed_line(e)})") from None
    if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
        raise ValueError(f"{f} is not a latent cache's index (no format {CACHE_FORMAT!r})")
    return index


class LatentCache:
    """A latent cache (CacheWriter) behind VideoFolder's batch(n, rng, rows) -> (x, captions): x is {'z0'} or
    {'mean', 'logvar'}, and 'context', each (len(rows), ...) fp32; cached_latents turns x into z0 and x['context']
    is the text tower's embedding of the captions (train.py --cache).

    The trade-off: ONE clip per video, fixed when the cache was written (its start drawn from the row's own seed,
    cache_rng), where training on the videos draws a new start each time a video comes up, and the frames, size and
    fps are those of the cache. The first stage's posterior is still sampled afresh every step (its mean and log-
    variance are cached, not a sample). In exchange a step reads about 1.55 MiB per VC2 clip (latents 4 x 16 x 40 x
    64, twice, and 77 x 1024 text) and skips the video decode, the VAE encoder and the text tower."""

    def __init__(self, path):
        self.path, self.index = Path(path), read_index(path)
        rows = [k for _, k in self.index["shards"]]
        self.ends = np.cumsum(rows)          # shard s holds the cache's rows ends[s] - rows[s] .. ends[s] - 1
        self.frames, self.height, self.width, self.fps = (self.index[k] for k in ("frames", "height", "width", "fps"))

    def __len__(self):
        return int(self.ends[-1])

    def batch(self, n, rng, rows=None):
        idx = rng.integers(0, len(self), n)
        x, caps = {}, []
        for j in (range(n) if rows is None else rows):
            s = int(np.searchsorted(self.ends, idx[j], side="right"))          # the shard, and the row in it
            k = int(idx[j] - (self.ends[s - 1] if s else 0))
            with safe_open(str(self.path / self.index["shards"][s][0]), "pt") as f:   # memory-mapped: reads row k
                for name in f.keys():
                    x.setdefault(name, []).append(f.get_slice(name)[k])
                caps.append(json.loads(f.metadata()["captions"])[k])
        return {k: torch.stack(v) for k, v in x.items()}, caps


def check_cache(path, teacher, frames, height, width, fps):
    """train.py --cache DIR: one line when DIR is not a finished cache, or holds other clips than train.py would
    make, or was encoded by another first stage or text tower than the teacher's; else None."""
    if not Path(path).is_dir():
        return (f"--cache {path}: no such folder (python -m vc2.data VIDEOS CAPTIONS --cache DIR --ckpt TEACHER "
                f"makes one)")
    try:
        index = read_index(path)
    except ValueError as e:
        return f"--cache {path}: {e}"
    try:
        meta = read_meta(teacher)
    except (OSError, ValueError):
        meta = None                          # (train.py says what is wrong with the teacher)
    if meta and (meta.get("ae"), meta.get("text")) != (index["ae"], index["text"]):
        return (f"--cache {path} was encoded with the first stage and text tower of {index['teacher']}, not those of "
                f"the teacher {teacher}: encode it again with --ckpt {teacher}")
    have = tuple(index[k] for k in ("frames", "height", "width", "fps"))
    if have != (frames, height, width, fps):
        return (f"--cache {path} holds clips of {have[0]} frames of {have[1]} x {have[2]} at {have[3]} fps: give "
                f"--frames {have[0]} --height {have[1]} --width {have[2]} --fps {have[3]}")
    return None


def check_train_data(cfg, teacher, error):
    """train.py's data flags (--data/--captions, --cache, --data-workers; teacher: --teacher's path): a bad one ->
    error(one line naming the flag), as loop.check_device does."""
    if cfg.data_workers < 0:
        error(f"--data-workers {cfg.data_workers}: give 0 (decode in the training process) or more worker processes")
    if cfg.cache and (cfg.data or cfg.captions):
        error("--cache takes the place of --data/--captions: give one or the other")
    if cfg.cache:
        problem = check_cache(cfg.cache, teacher, cfg.frames, cfg.height or cfg.size, cfg.width or cfg.size, cfg.fps)
    else:
        problem = check_data_args(cfg.data, cfg.captions)    # a missing folder or file, a file without captions, ...
        problem = problem and f"--data/--captions: {problem}"
    if problem:
        error(problem)


# ----------------------------------------------------------------------------------------------------------------
# the scan: python -m vc2.data VIDEO_DIR CAPTIONS


def positive(text):
    """argparse type: an integer >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def skipped_list_path(captions):
    """Where the scan's list of skipped rows goes by default: beside the caption file, named after it, and never
    over an existing file (videos.csv -> videos.skipped.txt, else videos.skipped-2.txt, -3, ...)."""
    captions, k = Path(captions), 1
    while True:
        p = captions.with_name(f"{captions.stem}.skipped{'' if k == 1 else f'-{k}'}.txt")
        if not p.exists():
            return p
        k += 1


def check_new_path(flag, path, what, error):
    """A path the scan will create: error(one line) when it exists (nothing is written over) or its folder does not."""
    if path.exists():
        error(f"{flag} {path} exists: give a new {what}")
    if not path.parent.is_dir():
        error(f"{flag} {path}: no folder {path.parent}")


def check_cache_args(args, error):
    """vc2/data.py's --cache DIR --ckpt TEACHER: one line, before anything is read at length or written."""
    if not (args.cache and args.ckpt):
        error("--cache DIR and --ckpt TEACHER go together (the teacher's first stage and text tower encode the cache)")
    check_new_path("--cache", Path(args.cache), "folder (a cache is never written over)", error)
    try:
        meta = read_meta(args.ckpt)
    except (OSError, ValueError) as e:
        error(f"--ckpt {args.ckpt}: {typed_line(e)}")
    if "ae" not in meta or "text" not in meta:
        error(f"--ckpt {args.ckpt} is a {meta.get('kind')!r} checkpoint, without a first stage and text tower: give "
              f"the teacher")
    args.device = check_device(args.device, error)


def scan_parser():
    """vc2/data.py's command line: the scan, and the optional latent cache."""
    p = argparse.ArgumentParser(prog="vc2.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # a usage error is one line (argparse would print the whole usage first), exit code 2
    p.error = lambda msg: p.exit(2, f"vc2.data: error: {msg}\n")
    p.add_argument("video_dir", metavar="VIDEO_DIR", help="the folder of videos (the caption file's paths are "
                   "relative to it)")
    p.add_argument("captions", metavar="CAPTIONS", help="a CSV (header row) or JSONL file: a video and a caption "
                   "per row")
    p.add_argument("--frames", type=positive, default=16, help="frames per clip (default 16, T2V-Turbo's)")
    p.add_argument("--height", type=positive, default=320, help="clip height, pixels (default 320)")
    p.add_argument("--width", type=positive, default=512, help="clip width, pixels (default 512)")
    p.add_argument("--fps", type=positive, default=16, help="sampling rate of a clip (default 16)")
    p.add_argument("--show", type=int, default=10, help="skipped rows printed here (default 10; all in the file)")
    p.add_argument("--skipped-out", metavar="PATH", help="the file that lists every skipped row (default: "
                   "CAPTIONS' name with .skipped.txt, beside it, under a new name if that exists); never overwritten")
    p.add_argument("--cache", metavar="DIR", help="also write a latent cache into DIR, a new folder: one clip of "
                   "every good row, encoded by --ckpt's first stage and text tower (train.py --cache DIR reads it)")
    p.add_argument("--ckpt", metavar="TEACHER", help="with --cache: the teacher checkpoint the student will be "
                   "distilled from (its first stage and text tower encode)")
    p.add_argument("--seed", type=int, default=0, help="with --cache: picks each row's clip (default 0)")
    p.add_argument("--batch", type=positive, default=8, help="with --cache: clips per encoder call (default 8)")
    p.add_argument("--device", default="auto", help="with --cache: auto (CUDA when there is one), cpu, cuda or cuda:N")
    return p


def report(ds, captions, good, show, out):
    """The scan's report: rows, good clips, skips by reason, the first `show` skipped rows; every skipped row goes
    to a new file `out` (never overwritten). -> the number of rows in the caption file."""
    rows = len(ds) + sum(ds.caption_skipped.values())
    counts = ", ".join(f"{k}: {v}" for k, v in ds.skipped.most_common()) or "none"
    print(f"{rows} rows in {captions}: {good} give a clip of {ds.frames} frames at {ds.fps} fps "
          f"({ds.height} x {ds.width}); skipped: {counts}")
    for row, reason, detail in ds.skipped_files[:max(show, 0)]:
        print(f"  {reason:<11} {row}" + (f"  ({detail})" if detail else ""))
    if len(ds.skipped_files) > max(show, 0):
        print(f"  ... and {len(ds.skipped_files) - max(show, 0)} more")
    if ds.skipped_files:
        try:
            with open(out, "x", encoding="utf-8") as f:  # "x": fails rather than overwrite a new file
                f.write("reason\trow\tdetail\n")
                f.writelines(f"{reason}\t{row}\t{detail}\n" for row, reason, detail in ds.skipped_files)
        except OSError as e:
            sys.exit(f"vc2.data: error: cannot write the list of skipped rows to {out} ({typed_line(e)}): give "
                     f"--skipped-out PATH")
        print(f"{len(ds.skipped_files)} skipped rows listed in {out}")
    return rows


def skipped_out(args, error):
    """Where the list of skipped rows goes (--skipped-out, else beside the caption file), checked writable."""
    if args.skipped_out:
        out = Path(args.skipped_out)
        check_new_path("--skipped-out", out, "file name (it is never overwritten)", error)
    else:
        out = skipped_list_path(args.captions)
    if not os.access(out.parent, os.W_OK):
        error(f"cannot write {out} (the folder is read-only): give --skipped-out PATH")
    return out


def main(argv=None):
    p = scan_parser()
    args = p.parse_args(argv)

    # 1. every input checked before anything is read at length or written
    problem = check_data_args(args.video_dir, args.captions)
    if problem:
        p.error(problem)
    out = skipped_out(args, p.error)
    if args.cache or args.ckpt:
        check_cache_args(args, p.error)
    try:
        ds = VideoFolder(args.video_dir, args.captions, args.height, args.width, args.frames, args.fps,
                         keep_skipped=None)
    except (ValueError, OSError) as e:       # the caption file's rows after the first CHECK_ROWS
        p.error(str(e))

    # 2. every row, as a training step would load it (the caption file's unusable rows are already in ds.skipped);
    # with --cache its clip (the row's own seed picks it) is encoded into the cache
    clip, writer = {"frames": ds.frames, "height": ds.height, "width": ds.width, "fps": ds.fps, "seed": args.seed}, None
    try:
        writer = CacheWriter(args.cache, args.ckpt, args.device, clip, args.batch) if args.cache else None
    except (ValueError, OSError) as e:       # a checkpoint whose header reads but whose tensors do not load
        p.error(f"--ckpt {args.ckpt} does not load: {typed_line(e)}")
    good, done = 0, 0
    try:
        for i in range(len(ds)):
            try:
                video = ds.clip(i, cache_rng(args.seed, i))
                good += 1
                if writer:
                    writer.add(video, ds.rows[i][1], ds.name(i))
            except BadVideo as e:
                ds.skip(ds.name(i), e.reason, e.detail)
            done += 1
    except KeyboardInterrupt:  # Ctrl-C on a long scan: report and list what was scanned so far
        print(f"interrupted: rows 1 to {done} of {len(ds)} scanned", file=sys.stderr)

    # 3. the report, and the list of every skipped row in a new file
    rows = report(ds, args.captions, good, args.show, out)
    if writer and done == len(ds):
        n = writer.close(ds.skipped)
        if n:
            print(f"wrote a latent cache of {n} clips to {args.cache} in {len(writer.shards)} shard file(s): "
                  f"train.py --cache {args.cache} reads it")
    elif writer and writer.shards:
        print(f"{args.cache} is unfinished (no index.json): write it again into a new folder", file=sys.stderr)
    if done < len(ds):
        sys.exit(1)
    if good == 0:
        sys.exit(f"vc2.data: error: none of the {rows} rows gives a clip of {ds.frames} frames at {ds.fps} fps: "
                 f"see the reasons above")


if __name__ == "__main__":
    main()
