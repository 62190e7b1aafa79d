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
and returned in [-1, 1] as (3, t, h, w). Rows without a video name or a caption, and files that are missing,
corrupt, unreadable or too short for `frames` frames, are skipped and counted by reason (never fatal): the next
row is tried in their place. A caption file that cannot be read as a whole (not UTF-8, a line that is not JSON,
no caption column, ...) is an error of one line that names the file.

    python data.py VIDEO_DIR CAPTIONS.csv       # scans every row: what would be skipped and why (and a list file)
"""

import argparse
import csv
import json
import os
import sys
from collections import Counter
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F

from toy import ToyWorld

PATH_COLUMNS = ("path", "video", "file", "filename", "video_path", "videoid", "video_id", "id")
CAPTION_COLUMNS = ("caption", "text", "prompt", "name", "title")  # WebVid calls its caption `name`
VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".gif")
KEEP_SKIPPED = 1000   # VideoFolder.skipped_files keeps the first this many skipped rows (the counts keep them all)
CHECK_ROWS = 1000     # check_data_args reads this many rows: enough for the columns, cheap on WebVid's 10M


class BadVideo(Exception):
    """A video that cannot give a clip. str(e) is the reason (the key counted in VideoFolder.skipped); `detail`
    says more about this file (e.g. how many frames it has)."""

    def __init__(self, reason, detail=""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def one_line(e):
    """An exception as one line: its message's first line, else its type's name."""
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


class VideoFolder:
    """(video, caption) batches from a folder of videos; the same batch(n, rng, rows) as toy.ToyWorld.

    skipped: reason -> count, every row skipped so far (caption-file rows at load, videos as they are tried).
    caption_skipped: the caption file's part of it, the same in every process (count it once across processes).
    skipped_files: [(row, reason, detail)] for the first `keep_skipped` of them (None: all)."""

    def __init__(self, root, captions, height=320, width=512, frames=16, fps=16, keep_skipped=KEEP_SKIPPED):
        self.root, self.height, self.width, self.frames, self.fps = Path(root), height, width, frames, fps
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
        self.bad = set()           # rows known to be unusable, not tried again

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
            keep, frames = set(range(start, start + need, stride)), []
            for k, frame in enumerate(iio.imiter(path)):
                if k in keep:
                    frames.append(np.asarray(frame)[..., :3] if frame.ndim == 3 else np.repeat(frame[..., None], 3, -1))
                if len(frames) == self.frames:
                    break
        except BadVideo:
            raise
        except Exception as e:  # imageio/ffmpeg raise many kinds of errors for broken files
            raise BadVideo("unreadable", one_line(e)) from e
        if len(frames) < self.frames:
            raise BadVideo("too short", f"only {len(frames)} of the {self.frames} frames decoded")
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
                        self.skip(self.name(i), e.reason, e.detail)
                        self.bad.add(i)
                i = (i + 1) % len(self.rows)
            else:
                raise RuntimeError(f"none of the {len(self.rows)} videos in {self.root} gives a clip of "
                                   f"{self.frames} frames at {self.fps} fps ({dict(self.skipped)})")
        return torch.stack(clips), caps


# ----------------------------------------------------------------------------------------------------------------
# the scan: python data.py VIDEO_DIR CAPTIONS

def open_data(data, captions, height, width, frames, fps=16, seed=0):
    """What a training step draws from: the toy world (data == '': toy.ToyWorld, square frames) or a folder of
    videos (VideoFolder). Both give batch(n, rng, rows) -> (video (n, 3, t, h, w) in [-1, 1], captions).
    A bad folder or caption file: ValueError or OSError, one line."""
    if not data:
        if height != width:
            raise ValueError("the toy world is square: use --size, not --height/--width")
        return ToyWorld(size=height, frames=frames, seed=seed)
    return VideoFolder(data, captions, height=height, width=width, frames=frames, fps=fps)


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


def main(argv=None):
    p = argparse.ArgumentParser(prog="data.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # a usage error is one line (argparse would print the whole usage first), exit code 2
    p.error = lambda msg: p.exit(2, f"data.py: error: {msg}\n")
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
    args = p.parse_args(argv)

    # 1. every input checked before anything is read at length or written
    problem = check_data_args(args.video_dir, args.captions)
    if problem:
        p.error(problem)
    if args.skipped_out:
        out = Path(args.skipped_out)
        if out.exists():
            p.error(f"--skipped-out {out} exists: give a new file name (it is never overwritten)")
        if not out.parent.is_dir():
            p.error(f"--skipped-out {out}: no folder {out.parent}")
    else:
        out = skipped_list_path(args.captions)
    if not os.access(out.parent, os.W_OK):
        p.error(f"cannot write {out} (the folder is read-only): give --skipped-out PATH")
    try:
        ds = VideoFolder(args.video_dir, args.captions, args.height, args.width, args.frames, args.fps,
                         keep_skipped=None)
    except (ValueError, OSError) as e:       # the caption file's rows after the first CHECK_ROWS
        p.error(str(e))

    # 2. every row, as a training step would load it (the caption file's unusable rows are already in ds.skipped)
    rng, good, done = np.random.default_rng(0), 0, 0
    try:
        for i in range(len(ds)):
            try:
                ds.clip(i, rng)
                good += 1
            except BadVideo as e:
                ds.skip(ds.name(i), e.reason, e.detail)
            done += 1
    except KeyboardInterrupt:  # Ctrl-C on a long scan: report and list what was scanned so far
        print(f"interrupted: rows 1 to {done} of {len(ds)} scanned", file=sys.stderr)

    # 3. the report, and the list of every skipped row in a new file
    rows = len(ds) + sum(ds.caption_skipped.values())
    counts = ", ".join(f"{k}: {v}" for k, v in ds.skipped.most_common()) or "none"
    print(f"{rows} rows in {args.captions}: {good} give a clip of {ds.frames} frames at {ds.fps} fps "
          f"({ds.height} x {ds.width}); skipped: {counts}")
    for row, reason, detail in ds.skipped_files[:max(args.show, 0)]:
        print(f"  {reason:<11} {row}" + (f"  ({detail})" if detail else ""))
    if len(ds.skipped_files) > max(args.show, 0):
        print(f"  ... and {len(ds.skipped_files) - max(args.show, 0)} more")
    if ds.skipped_files:
        try:
            with open(out, "x", encoding="utf-8") as f:  # "x": fails rather than overwrite a new file
                f.write("reason\trow\tdetail\n")
                f.writelines(f"{reason}\t{row}\t{detail}\n" for row, reason, detail in ds.skipped_files)
        except OSError as e:
            sys.exit(f"data.py: error: cannot write the list of skipped rows to {out} ({one_line(e)}): give "
                     f"--skipped-out PATH")
        print(f"{len(ds.skipped_files)} skipped rows listed in {out}")
    if done < len(ds):
        sys.exit(1)
    if good == 0:
        sys.exit(f"data.py: error: none of the {rows} rows gives a clip of {ds.frames} frames at {ds.fps} fps: "
                 f"see the reasons above")


if __name__ == "__main__":
    main()
