"""The toy world, "moving shapes", and its pixel-level judge.

The world's rules (this file is its specification): 8 frames of 32 x 32 RGB, one flat-coloured shape (square,
circle or triangle, 14 px across: SHAPE_PX) on black, moving 2 px per frame left, right, up or down, captioned
exactly `a {colour} {shape} moving {direction}`. 84 captions; 8 of them are held out of every training stage
(teacher, reward models, distillation), so generalising to them measures composition, not memorisation.

Nothing here is from the paper: this file stands in for WebVid-10M (the data) and for VBench (the evaluation).
Clips are rendered on the fly from a seed, so there is nothing to download.

    python -m toy.world                       # renders a GIF grid of real clips to runs/toy/real_clips.gif, judges them
    python -m toy.world --judge DIR           # judges the videos listed in DIR/prompts.jsonl (what sample.py writes)
"""

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch

from machinery.videoio import read_prompts, read_samples, save_grid

# ----------------------------------------------------------------------------------------------------------------
# The world

COLOURS = {  # RGB 0..255
    "red": (230, 40, 40), "green": (40, 200, 40), "blue": (50, 80, 240), "yellow": (240, 220, 40),
    "magenta": (220, 50, 220), "cyan": (40, 220, 220), "white": (240, 240, 240),
}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy); +y is down the image

TOY_ASSETS = Path(__file__).resolve().parent / "assets"
PROMPTS = TOY_ASSETS             # prompts_{all,train,heldout}.txt: the split is data
TOY_MODELS = TOY_ASSETS          # the shipped teacher.safetensors, reward_{image,video}.safetensors (toy/prepare.py)
CAPTION_RE = re.compile(r"^a (\w+) (\w+) moving (\w+)$")


def caption(colour, shape, direction):
    return f"a {colour} {shape} moving {direction}"


def parse_caption(text):
    """'a red circle moving left' -> ('red', 'circle', 'left'); a clear error for anything else."""
    m = CAPTION_RE.match(text.strip())
    if not m or m[1] not in COLOURS or m[2] not in SHAPES or m[3] not in DIRECTIONS:
        raise ValueError(f"not a toy caption: {text!r} (expected 'a <colour> <shape> moving <direction>', "
                         f"colours {list(COLOURS)}, shapes {list(SHAPES)}, directions {list(DIRECTIONS)})")
    return m[1], m[2], m[3]


def all_captions():
    return [caption(c, s, d) for c in COLOURS for s in SHAPES for d in DIRECTIONS]


def split_captions(split):
    """'train' (76), 'heldout' (8) or 'all' (84), read from toy/assets/prompts_<split>.txt. The held-out 8 are a
    choice, not a rule: every colour, shape and direction in them is seen in training, but not that combination."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    return read_prompts(PROMPTS / f"prompts_{split}.txt")


# The shape's side at 32 px. At 10 px a circle and a square differ by corners of about 2 px, less than one 4 x 4
# latent cell, and the first stage alone drew some circles as squares; at 14 px every reconstruction is judged
# right (RESULTS.md, "Why the toy teacher confused circles and squares": python -m toy.evaluate --first-stage).
SHAPE_PX = 14


def shape_size(size, px=SHAPE_PX):
    return round(px * size / 32)  # s = round(px S / 32)


def shape_mask(shape, cx, cy, s, size):
    """Boolean (size, size) mask of one shape centred at (cx, cy); pixel centres sit at +0.5."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    if shape == "square":
        return (np.abs(x - cx) <= s / 2) & (np.abs(y - cy) <= s / 2)
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= (s / 2 + 0.5) ** 2
    if shape == "triangle":  # apex up, isosceles, height = base = s + 2, bounding box centred on (cx, cy)
        h = s + 2
        top = cy - h / 2
        half_width = (h / 2) * (y - top) / h  # grows linearly from 0 at the apex to h/2 at the base
        return (y >= top) & (y <= cy + h / 2) & (np.abs(x - cx) <= half_width)
    raise ValueError(f"unknown shape {shape!r}")


def half_extent(shape, s):
    """How far the shape reaches from its centre (for keeping it inside every frame)."""
    return {"square": s / 2, "circle": s / 2 + 0.5, "triangle": (s + 2) / 2}[shape]


def centre_range(e, size, travel):
    """The integer centres c, along one axis, where a shape of half-extent e can start a path of `travel` px towards
    larger c and stay inside the frame all along (c - e >= 0, c + travel + e <= size) -> (lo, hi); empty if lo > hi."""
    return int(np.ceil(e)), int(np.floor(size - e - travel))


def max_frames(size=32, px=SHAPE_PX):
    """The most frames a clip of `size` px can have: every shape must cross the frame without leaving it, moving
    1/16 of the frame a frame: 9 at 24 to 256 px (0 when none fits, below 4 px)."""
    s, speed = shape_size(size, px), size / 16
    fits = lambda frames: all(lo <= hi for lo, hi in (centre_range(half_extent(shape, s), size, speed * (frames - 1))
                                                      for shape in SHAPES))
    return max((f for f in range(1, 64) if fits(f)), default=0)


def frames_problem(frames, size=32, px=SHAPE_PX):
    """None when the toy world can draw clips of `frames` frames at `size` px, else the one line that says so
    (train.py and toy/prepare.py refuse --frames with it, before render_clip would fail on an empty start range)."""
    most = max_frames(size, px)
    if frames <= most:
        return None
    fix = f"give --frames {most} or fewer" if most else "give a larger --size"
    return f"--frames {frames}: the toy world's shapes leave a {size} px frame within {frames} frames; {fix}"


def render_clip(colour, shape, direction, rng, size=32, frames=8, px=SHAPE_PX):
    """One clip as uint8 (t, h, w, 3). The start is uniform over integer centres that keep the shape inside."""
    s, speed = shape_size(size, px), size / 16  # 2 px per frame at 32 px
    dx, dy = DIRECTIONS[direction]
    e, travel = half_extent(shape, s), speed * (frames - 1)

    def start_range(d):  # along an axis the shape moves by d (-1, 0, 1): a path towards smaller c starts `travel` up
        lo, hi = centre_range(e, size, travel if d != 0 else 0)
        return (lo + (travel if d < 0 else 0), hi + (travel if d < 0 else 0))

    (x0, x1), (y0, y1) = start_range(dx), start_range(dy)
    cx, cy = rng.integers(int(x0), int(x1) + 1), rng.integers(int(y0), int(y1) + 1)
    clip = np.zeros((frames, size, size, 3), np.uint8)
    for i in range(frames):
        clip[i][shape_mask(shape, cx + dx * speed * i, cy + dy * speed * i, s, size)] = COLOURS[colour]
    return clip


def to_tensor(clips):
    """uint8 (b, t, h, w, 3) -> float (b, c, t, h, w) in [-1, 1], the layout every model here uses."""
    return torch.from_numpy(np.asarray(clips)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1


class ToyWorld:
    """Infinite stream of (video, caption) batches drawn from a caption list (the 76 training ones by default)."""

    def __init__(self, captions=None, size=32, frames=8, seed=0, px=SHAPE_PX):
        self.captions = captions if captions is not None else split_captions("train")
        self.size, self.frames, self.px = size, frames, px
        self.rng = np.random.default_rng(seed)

    def batch(self, n, rng=None, rows=None):
        """-> video (len(rows), 3, t, h, w) in [-1, 1] and its captions. Draws the captions and start positions of
        n clips from `rng` (default: the world's own stream) and renders only `rows` (default: all n), so a DDP
        rank renders its share of a global batch that every rank draws alike (train.py)."""
        rng = self.rng if rng is None else rng
        caps = [self.captions[i] for i in rng.integers(0, len(self.captions), n)]
        seeds = rng.integers(0, 2 ** 63 - 1, n)  # one stream per clip: clip i does not depend on `rows`
        rows = range(n) if rows is None else rows
        clips = [render_clip(*parse_caption(caps[i]), np.random.default_rng(seeds[i]), self.size, self.frames,
                             self.px) for i in rows]
        return to_tensor(clips), [caps[i] for i in rows]


# ----------------------------------------------------------------------------------------------------------------
# The judge: does a video show the caption's colour, shape and direction? Plain pixel arithmetic, no learning.

FG_THRESHOLD = 80  # a pixel is foreground when its brightest channel exceeds this (background is black)


def judge(clip, size=None, px=SHAPE_PX):
    """clip: uint8 (t, h, w, 3). Returns {'colour', 'shape', 'direction', 'iou'}; None where it can't tell.

    colour:    nearest palette colour to the median foreground pixel over all frames;
    shape:     per frame, the shape template (true size, searched over centres near the foreground centroid) with the
               best IoU against the foreground mask, averaged over frames; `iou` is that best mean IoU;
    direction: least-squares slope of the foreground centroid over time; the larger axis wins if it moves
               at least a quarter of the true speed, else 'static'.
    """
    t, h, w, _ = clip.shape
    size = size or h
    s = shape_size(size, px)
    fg = clip.max(axis=-1) > FG_THRESHOLD  # (t, h, w)
    area = fg.reshape(t, -1).sum(1)
    out = {"colour": None, "shape": None, "direction": None, "iou": 0.0}
    if (area < 0.25 * s * s).any():  # a frame without a shape-sized blob cannot show anything
        return out
    rgb = np.median(clip[fg].astype(np.float64), axis=0)
    out["colour"] = min(COLOURS, key=lambda c: np.sum((rgb - np.array(COLOURS[c])) ** 2))

    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    cx = (fg * xs).reshape(t, -1).sum(1) / area
    cy = (fg * ys).reshape(t, -1).sum(1) / area
    ious = {}
    for shape in SHAPES:
        per_frame = []
        for i in range(t):
            best = 0.0
            for ox in range(-3, 4):
                for oy in range(-3, 4):
                    m = shape_mask(shape, round(cx[i]) + ox, round(cy[i]) + oy, s, size)
                    best = max(best, (m & fg[i]).sum() / (m | fg[i]).sum())
            per_frame.append(best)
        ious[shape] = float(np.mean(per_frame))
    out["shape"] = max(ious, key=ious.get)
    out["iou"] = ious[out["shape"]]

    tt = np.arange(t) - (t - 1) / 2
    vx, vy = (tt * cx).sum() / (tt * tt).sum(), (tt * cy).sum() / (tt * tt).sum()  # px per frame
    speed = size / 16
    if max(abs(vx), abs(vy)) < speed / 4:
        out["direction"] = "static"
    elif abs(vx) >= abs(vy):
        out["direction"] = "right" if vx > 0 else "left"
    else:
        out["direction"] = "down" if vy > 0 else "up"
    return out


def correct(clip, text):
    """Per-attribute verdicts for one clip against its caption; 'all' is what the accuracy figures count."""
    return verdicts(judge(clip), text)


def verdicts(j, text):
    """judge()'s answer against a caption -> {'colour', 'shape', 'direction', 'all'} booleans."""
    colour, shape, direction = parse_caption(text)
    v = {"colour": j["colour"] == colour, "shape": j["shape"] == shape, "direction": j["direction"] == direction}
    return {**v, "all": all(v.values())}


def judge_videos(clips, texts, px=SHAPE_PX):
    """Scores videos against their captions -> {'n', 'all', 'colour', 'shape', 'direction'} shares, and per shape
    of the caption: 'per_shape' {shape: share judged that shape} and 'confusion' {caption's shape: {judged shape or
    'none': count}}, so a circle drawn as a square shows up by name."""
    tally = {"colour": 0, "shape": 0, "direction": 0, "all": 0}
    confusion = {s: {} for s in SHAPES}
    for clip, text in zip(clips, texts):
        j = judge(clip, px=px)
        for k, ok in verdicts(j, text).items():
            tally[k] += ok
        shape, got = parse_caption(text)[1], j["shape"] or "none"
        confusion[shape][got] = confusion[shape].get(got, 0) + 1
    n = len(texts)
    per_shape = {s: c.get(s, 0) / sum(c.values()) for s, c in confusion.items() if c}
    return {"n": n, **{k: v / n for k, v in tally.items()}, "per_shape": per_shape,
            "confusion": {s: c for s, c in confusion.items() if c}}


def judge_dir(out_dir, px=SHAPE_PX):
    """Scores a sample folder (prompts.jsonl + videos): judge_videos of its videos."""
    samples = read_samples(out_dir)                                             # [(row, (t, h, w, 3) video)]
    return judge_videos([clip for _, clip in samples], [r["prompt"] for r, _ in samples], px)


def main(argv=None):
    p = argparse.ArgumentParser(prog="toy.world", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.error = lambda msg: p.exit(2, f"toy.world: error: {msg}\n")     # one line, no usage dump
    p.add_argument("--judge", metavar="DIR", help="score DIR/prompts.jsonl and its videos")
    p.add_argument("--out", default="runs/toy/real_clips.gif", help="where the grid of real clips goes")
    args = p.parse_args(argv)
    if args.judge:
        print(json.dumps(judge_dir(args.judge)))
        return
    rng = np.random.default_rng(0)
    caps = split_captions("all")
    clips = np.stack([render_clip(*parse_caption(c), rng) for c in caps])
    res = judge_videos(clips, caps)
    print(f"judge accuracy on {len(caps)} real clips: {res['all']:.3f}; shape right per shape {res['per_shape']}")
    save_grid(clips[:24], args.out, ncol=6)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
