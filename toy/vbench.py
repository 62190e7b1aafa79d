"""A toy VBench: the paper's Table 1 measure (VBench's quality, semantic and total scores) rebuilt for the toy world
from its specification alone (toy/world.py: the palette, SHAPE_PX, the speed, the black background, render_clip).
Plain pixel arithmetic on uint8 videos; no learned model, so no method here was trained on it.

    python -m toy.evaluate --table runs/toy                    # the toy's Table 1: every method, every dimension
    python -m toy.evaluate --ckpt runs/toy/turbo.safetensors   # one checkpoint (toy/evaluate.py samples, this scores)
    python -m pytest tests/toy/test_vbench.py                  # its validation: spec clips 1, each flaw lowers its own

Each dimension is one video's score in [0, 1], 1 for a clip rendered by the spec, exp(-err / scale) otherwise, with
err an error measured from the pixels and scale a quantity of the spec, fixed before any model was scored.
The subject: the judge's foreground (brightest channel over FG_THRESHOLD) gives the video's colour, the median of
its brighter half (its core: a soft edge is darker); the subject's mask is then the pixels at least half as bright
as that colour (and over FG_THRESHOLD), where a blurred straight edge stays put; its area, centroid and core colour
are measured per frame. s is the spec's side (SHAPE_PX at 32 px), speed its 2 px per frame.

  quality (prompt-free, as VBench's are), named after the VBench dimension each stands in for:
    subject consistency     the subject keeps its size and colour: err = std over frames of its side sqrt(area)
                            / 1 px + RMS over frames of its core colour's distance from their mean / (half the
                            smallest distance between two palette colours)
    background consistency  the background stays black: RMS of the pixels outside the subject (the ideal shape,
                            below, grown by 2 px) / FG_THRESHOLD (where the judge starts calling a pixel foreground)
    temporal flickering     no frame-to-frame brightness jitter: RMS of the second difference over time of the
                            frame's total brightness, relative to its mean, / (1 / s): the change a row of s pixels
                            would make to a shape of s x s (second differences, so steady motion or a steady trend
                            is not counted as flicker)
    motion smoothness       the centroid moves on a straight line at constant velocity: RMS distance of the
                            centroids from their least-squares line / 1 px
    dynamic degree          it moves at the world's speed: | fitted speed - speed | / (speed / 4), the judge's bound
                            between moving and static
    imaging quality         each frame looks like a frame the world could draw: relative L1 error, within 2 px of the
                            shape, against the best of the spec's shapes at side s with its centroid on the subject's,
                            in the video's own colour / the relative error of a shape drawn one pixel too large all
                            round (so a blur, noise, a wrong size or a ragged edge all cost)
  semantic (against the caption; the scale is half the spec's distance from the caption's value to its nearest
  other value, so a video half way to being read as something else scores e^-1 and a clean wrong one e^-2 or less):
    color                   RGB distance of the video's colour from the caption's palette colour
    object class            the caption's shape against the best other shape, by mean IoU of each template (centroid
                            on the subject's) with the subject's mask: err = max(0, 1 + (IoU other - IoU caption's) /
                            separation), separation = 1 - that best other IoU on the spec's own rendering of the
                            caption's shape (err 0 at the spec, 1 where two shapes fit equally, 2 for a clean wrong one)
    temporal style          the angle between the fitted velocity and the caption's direction / 45 degrees (half
                            the 90 to the nearest other direction); below the judge's static bound (speed / 4) the
                            angle is pulled linearly towards 90 degrees, since a still subject shows no direction.
                            VBench has no direction-of-motion dimension; its temporal style (camera motions: pan
                            left, tilt up, ...) is the nearest, so direction is named after it.
  A frame without a subject (under a quarter of s x s pixels in its mask, the judge's rule) scores 0 on every
  dimension that needs one (all but background consistency, then the RMS of the whole frame, and temporal
  flickering). Not modelled: aesthetic quality, multiple objects, human action, spatial relationship, scene,
  appearance style, overall consistency (one flat shape on black has no aesthetics, people, layouts, scenes or
  styles).

Scores, as VBench's scripts/cal_final_score.py computes them (its constants in scripts/constant.py): each dimension
normalised as (x - Min) / (Max - Min) and times its weight DIM_WEIGHT; quality = sum over the quality dimensions /
sum of their weights, semantic likewise; total = (4 quality + 1 semantic) / 5 (QUALITY_WEIGHT 4, SEMANTIC_WEIGHT 1).
VBench's Min and Max are empirical ranges of its raw scores (e.g. subject consistency 0.1462..1); every toy
dimension is already 0 (infinitely far from the spec) to 1 (the spec), so Min 0 and Max 1 here, as VBench has for
its dimensions that live on [0, 1] (dynamic degree, imaging quality, object class, color, ...). DIM_WEIGHT is 1 for
every dimension but dynamic degree, 0.5 (VBench halves it: a model can raise it by moving regardless of the
prompt); quality weighs 4 to semantic's 1 (VBench's weights). All three are linear in the dimensions, so a video's
own quality, semantic and total are defined too, and the mean over videos comes with a standard error.
"""

from functools import lru_cache

import numpy as np

from machinery.videoio import mean_se, read_samples
from toy.world import COLOURS, DIRECTIONS, FG_THRESHOLD, SHAPE_PX, SHAPES, parse_caption, shape_mask, shape_size

QUALITY = {"subject consistency": 1.0, "background consistency": 1.0, "temporal flickering": 1.0,
           "motion smoothness": 1.0, "dynamic degree": 0.5, "imaging quality": 1.0}     # name: VBench's DIM_WEIGHT
SEMANTIC = {"color": 1.0, "object class": 1.0, "temporal style": 1.0}
DIMENSIONS = [*QUALITY, *SEMANTIC]
QUALITY_WEIGHT, SEMANTIC_WEIGHT = 4, 1
SCORES = ["total", "quality", "semantic"]
PAD = 4           # templates are drawn on a canvas this much larger each side, so one near an edge is never clipped
GROW = 2          # px around the ideal shape that belong to the subject (a soft edge is the subject's, not dirt)


def _palette_distance(rgb, others):
    return min(float(np.linalg.norm(np.subtract(rgb, COLOURS[o]))) for o in others)


COLOUR_SCALE = {c: _palette_distance(COLOURS[c], [o for o in COLOURS if o != c]) / 2 for c in COLOURS}
CONSTANCY_SCALE = min(COLOUR_SCALE.values())   # half the smallest distance between two palette colours


def dilate(mask, r):
    """Boolean (..., h, w) masks grown by r px (a (2r + 1)-square neighbourhood)."""
    h, w = mask.shape[-2:]
    p = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(r, r), (r, r)])
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= p[..., dy:dy + h, dx:dx + w]
    return out


def core_colour(pixels):
    """(n, 3) foreground pixels -> the median colour of their brighter half (the shape's core: a soft edge is
    darker, and would pull a plain median towards black)."""
    bright = pixels.max(-1)
    return np.median(pixels[bright >= np.median(bright)], axis=0)


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    return xs.mean() + 0.5, ys.mean() + 0.5        # pixel centres sit at +0.5, as in shape_mask


@lru_cache(maxsize=None)
def template_offset(shape, s):
    """Where the shape's pixel centroid sits relative to the centre render_clip places (the triangle's is lower)."""
    c = 2 * s
    x, y = _centroid(shape_mask(shape, c, c, s, 4 * s))
    return x - c, y - c


def template(shape, cx, cy, s, size):
    """The spec's shape of side s whose pixel centroid is (cx, cy), on a canvas padded by PAD: (size + 2 PAD,) * 2."""
    ox, oy = template_offset(shape, s)
    return shape_mask(shape, cx - ox + PAD, cy - oy + PAD, s, size + 2 * PAD)


def iou(a, b):
    return float((a & b).sum() / max(1, (a | b).sum()))


@lru_cache(maxsize=None)
def shape_separation(shape, s, size):
    """1 - the best IoU of another shape's template on the spec's own rendering of `shape` (centroids aligned): how
    far the nearest other shape is, in the units object class measures."""
    c = size // 2
    mask = np.pad(shape_mask(shape, c, c, s, size), PAD)
    cx, cy = _centroid(mask)
    return 1 - max(iou(mask, template(o, cx - PAD, cy - PAD, s, size)) for o in SHAPES if o != shape)


@lru_cache(maxsize=None)
def ring_scale(shape, s, size):
    """The relative L1 error of the spec's shape drawn one pixel too large all round (side s + 2)."""
    c = size // 2
    return float(shape_mask(shape, c, c, s + 2, size).sum() / shape_mask(shape, c, c, s, size).sum() - 1)


def score_video(clip, text, px=SHAPE_PX):
    """uint8 clip (t, h, w, 3) and its caption -> {dimension: score in [0, 1]} for every name in DIMENSIONS."""
    colour, shape, direction = parse_caption(text)
    t, size = clip.shape[0], clip.shape[1]
    s, speed = shape_size(size, px), size / 16
    x = clip.astype(np.float64)                                              # (t, h, w, 3), 0..255
    b = x.max(-1)                                                             # (t, h, w): a pixel's brightness
    out = dict.fromkeys(DIMENSIONS, 0.0)

    # temporal flickering needs no subject: the frames' total brightness, second differences over time
    bright = x.reshape(t, -1).sum(1)                                          # (t,)
    if t < 3 or bright.mean() == 0:
        out["temporal flickering"] = 1.0                                      # black or too short: nothing flickers
    else:
        jitter = np.sqrt(np.mean(np.diff(bright / bright.mean(), 2) ** 2))
        out["temporal flickering"] = float(np.exp(-jitter * s))               # scale 1 / s

    # the subject: the judge's foreground (brightest channel over FG_THRESHOLD) gives its colour; its shape is then
    # the pixels at least half as bright as that colour, where a blurred straight edge stays put (half height)
    seen = b > FG_THRESHOLD                                                   # (t, h, w)
    rgb = core_colour(x[seen]) if seen.any() else np.zeros(3)                 # the video's colour, (3,)
    fg = b > max(FG_THRESHOLD, rgb.max() / 2)                                 # (t, h, w)
    area = fg.reshape(t, -1).sum(1)                                           # (t,)
    if (area < 0.25 * s * s).any():                                           # a frame without a subject
        out["background consistency"] = float(np.exp(-np.sqrt(np.mean(x ** 2)) / FG_THRESHOLD))
        return out

    cents = np.array([_centroid(f) for f in fg])                              # (t, 2): x, y per frame
    per_frame_rgb = np.array([core_colour(x[i][fg[i]]) for i in range(t)])   # (t, 3)

    # subject consistency: its side and its colour stay put
    side_err = np.sqrt(area).std()                                            # px
    colour_err = np.sqrt(np.mean(np.sum((per_frame_rgb - per_frame_rgb.mean(0)) ** 2, 1)))
    out["subject consistency"] = float(np.exp(-side_err / 1.0 - colour_err / CONSTANCY_SCALE))

    # the path: a least-squares line through the centroids
    tt = np.arange(t) - (t - 1) / 2
    v = (tt[:, None] * cents).sum(0) / (tt * tt).sum()                        # (2,) px per frame
    fit = cents.mean(0) + tt[:, None] * v
    out["motion smoothness"] = float(np.exp(-np.sqrt(np.mean(np.sum((cents - fit) ** 2, 1))) / 1.0))
    out["dynamic degree"] = float(np.exp(-abs(np.linalg.norm(v) - speed) / (speed / 4)))
    d = np.array(DIRECTIONS[direction], np.float64)
    norm = np.linalg.norm(v)
    angle = 90.0 if norm == 0 else float(np.degrees(np.arccos(np.clip(v @ d / norm, -1, 1))))
    shown = min(1.0, norm / (speed / 4))
    out["temporal style"] = float(np.exp(-(shown * angle + (1 - shown) * 90.0) / 45.0))

    # templates of every spec shape on each frame's centroid
    fgp = np.pad(fg, ((0, 0), (PAD, PAD), (PAD, PAD)))                        # (t, h + 2 PAD, w + 2 PAD)
    xp = np.pad(x, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
    masks = {k: [template(k, cx, cy, s, size) for cx, cy in cents] for k in SHAPES}
    fits = {k: np.mean([iou(m, f) for m, f in zip(masks[k], fgp)]) for k in SHAPES}

    # imaging quality: the best shape, drawn in the video's own colour; error within GROW px of it
    img_err, region = {}, {}
    for k in SHAPES:
        m = np.stack(masks[k])                                                # (t, h', w')
        ideal = m[..., None] * rgb                                            # (t, h', w', 3)
        region[k] = dilate(m, GROW)
        errs = (np.abs(xp - ideal) * region[k][..., None]).sum((1, 2, 3)) / np.maximum(1e-9, ideal.sum((1, 2, 3)))
        img_err[k] = errs.mean() / ring_scale(k, s, size)
    best = min(img_err, key=img_err.get)
    out["imaging quality"] = float(np.exp(-img_err[best]))

    # background consistency: everything outside the subject (the best shape grown by GROW px) should be black;
    # the padding is not the video's, so only the frame's own pixels count
    inside = np.zeros((t, size + 2 * PAD, size + 2 * PAD), bool)
    inside[:, PAD:-PAD, PAD:-PAD] = True
    bg = xp[~region[best] & inside]                                           # (n, 3)
    out["background consistency"] = float(np.exp(-np.sqrt(np.mean(bg ** 2)) / FG_THRESHOLD)) if bg.size else 1.0

    # semantics
    out["color"] = float(np.exp(-np.linalg.norm(rgb - COLOURS[colour]) / COLOUR_SCALE[colour]))
    other = max(fits[k] for k in SHAPES if k != shape)
    err = max(0.0, 1 + (other - fits[shape]) / shape_separation(shape, s, size))
    out["object class"] = float(np.exp(-err))
    return out


def aggregate(dims):
    """{dimension: score} -> {'quality', 'semantic', 'total'}: VBench's weighted means (Min 0, Max 1: see above)."""
    q = sum(w * dims[k] for k, w in QUALITY.items()) / sum(QUALITY.values())
    sem = sum(w * dims[k] for k, w in SEMANTIC.items()) / sum(SEMANTIC.values())
    return {"total": (QUALITY_WEIGHT * q + SEMANTIC_WEIGHT * sem) / (QUALITY_WEIGHT + SEMANTIC_WEIGHT),
            "quality": q, "semantic": sem}


def score_clip(clip, text, px=SHAPE_PX):
    """One video -> every dimension and the three scores."""
    dims = score_video(clip, text, px)
    return {**dims, **aggregate(dims)}


def vbench(clips, texts, px=SHAPE_PX):
    """Videos and their captions -> {name: mean, name + '_se': its standard error over the videos, 'n': count} for
    every dimension and the three scores (mean_se: the sample standard deviation over sqrt(n))."""
    rows = [score_clip(c, t, px) for c, t in zip(clips, texts)]
    out = {"n": len(rows)}
    for k in SCORES + DIMENSIONS:
        out[k], out[k + "_se"] = mean_se([r[k] for r in rows])
    return out


def vbench_dirs(dirs, px=SHAPE_PX):
    """vbench of the videos in sample folders (prompts.jsonl + videos)."""
    samples = [s for d in dirs for s in read_samples(d)]                       # [(row, (t, h, w, 3) video)]
    return vbench([v for _, v in samples], [r["prompt"] for r, _ in samples], px)

