"""The toy VBench (toy/vbench.py) is validated before it scores any model: clips rendered by the spec score 1 on
every dimension, and each flaw drawn into them lowers the dimension it breaks, by a margin. These run first."""
import numpy as np
import pytest

from machinery.videoio import mean_se
from toy import vbench as vb
from toy.world import COLOURS, DIRECTIONS, SHAPES, all_captions, parse_caption, render_clip, shape_mask

# ----------------------------------------------------------------------------------------------------------------
# Validation: the spec scores 1, each flaw costs its own dimension


def test_clips_rendered_by_the_spec_score_one_on_every_dimension():
    """All 84 captions, 2 seeds each, at the world's 14 px shapes; and a few of the earlier 10 px world."""
    rng = np.random.default_rng(0)
    for px, caps in ((14, all_captions() * 2), (10, all_captions()[::9])):
        for cap in caps:
            scores = vb.score_clip(render_clip(*parse_caption(cap), rng, px=px), cap, px=px)
            assert set(scores) == set(vb.DIMENSIONS + vb.SCORES)
            assert min(scores.values()) >= 0.98, (cap, px, scores)


def draw(colour, shape, direction, speed=2.0, sides=None, wobble=None, size=32, t=8):
    """A clip as render_clip draws it, centred, with integer centres (so a shape is never re-rasterised to another
    size), and with the flaws render_clip never makes: a speed, a side per frame, a (t, 2) offset of the path."""
    dx, dy = DIRECTIONS[direction]
    x0, y0 = round(16 - dx * speed * (t - 1) / 2), round(16 - dy * speed * (t - 1) / 2)
    sides = [14] * t if sides is None else sides
    wobble = np.zeros((t, 2)) if wobble is None else wobble
    clip = np.zeros((t, size, size, 3), np.uint8)
    for i in range(t):
        clip[i][shape_mask(shape, x0 + dx * speed * i + wobble[i][0], y0 + dy * speed * i + wobble[i][1], sides[i],
                           size)] = COLOURS[colour]
    return clip


def blur(clip, sigma=1.0):
    """A Gaussian blur of std sigma px over each frame (separable, 7 taps)."""
    r = np.arange(-3, 4)
    k = np.exp(-r ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    x = clip.astype(np.float64)
    for axis in (1, 2):
        x = np.apply_along_axis(np.convolve, axis, x, k, mode="same")
    return np.clip(x.round(), 0, 255).astype(np.uint8)


def other(options, value):
    options = list(options)
    return options[(options.index(value) + 1) % len(options)]


TURN = {"left": "up", "up": "right", "right": "down", "down": "left"}
# flaw: (the dimension it breaks, how to draw it from (colour, shape, direction, a numpy Generator))
FLAWS = {
    "blurred": ("imaging quality", lambda c, s, d, g: blur(draw(c, s, d))),
    "noisy": ("background consistency", lambda c, s, d, g: np.clip(
        draw(c, s, d) + g.normal(0, 30, (8, 32, 32, 3)), 0, 255).astype(np.uint8)),
    "flickering": ("temporal flickering", lambda c, s, d, g: np.clip(
        draw(c, s, d) * g.uniform(0.85, 1.15, (8, 1, 1, 1)), 0, 255).astype(np.uint8)),
    "shrinking": ("subject consistency", lambda c, s, d, g: draw(c, s, d, sides=np.linspace(14, 8, 8).round())),
    "jerky": ("motion smoothness", lambda c, s, d, g: draw(c, s, d, wobble=g.choice([-1, 1], (8, 2)))),
    "slow": ("dynamic degree", lambda c, s, d, g: draw(c, s, d, speed=1.0)),
    "wrong shape": ("object class", lambda c, s, d, g: draw(c, other(SHAPES, s), d)),
    "wrong colour": ("color", lambda c, s, d, g: draw(other(COLOURS, c), s, d)),
    "wrong direction": ("temporal style", lambda c, s, d, g: draw(c, s, TURN[d])),
}


def flawed(flaw, caps, seed=1):
    """{dimension: score} of each caption's clip drawn with the flaw."""
    g = np.random.default_rng(seed)
    return [vb.score_clip(FLAWS[flaw][1](*parse_caption(c), g), c) for c in caps]


@pytest.mark.parametrize("flaw", FLAWS)
def test_each_flaw_lowers_the_dimension_it_breaks(flaw):
    """12 captions (every colour, shape and direction): the clean drawing scores >= 0.98 on the flaw's dimension,
    every flawed one <= 0.85, a margin far above float noise; the total drops too."""
    dim, caps = FLAWS[flaw][0], all_captions()[::7]
    clean, bad = [vb.score_clip(draw(*parse_caption(c)), c) for c in caps], flawed(flaw, caps)
    assert min(r[dim] for r in clean) >= 0.98
    assert max(r[dim] for r in bad) <= 0.85, [r[dim] for r in bad]
    assert all(f["total"] < c["total"] - 0.02 for c, f in zip(clean, bad))


def test_quality_flaws_leave_the_semantics_and_semantic_flaws_leave_the_quality():
    """The two halves measure different things: a wrong colour, shape or direction drawn cleanly keeps every
    quality dimension at 1, and the quality flaws that keep the subject whole keep the semantic score >= 0.85."""
    caps = all_captions()[::11]
    for flaw in ("wrong shape", "wrong colour", "wrong direction"):
        for c, r in zip(caps, flawed(flaw, caps)):
            assert min(r[k] for k in vb.QUALITY) >= 0.98 and r["quality"] >= 0.98, (flaw, c, r)
    for flaw in ("blurred", "noisy", "flickering", "jerky", "slow"):
        sem = [r["semantic"] for r in flawed(flaw, caps)]
        assert np.mean(sem) >= 0.85, (flaw, sem)


def test_a_video_without_a_subject_scores_zero_where_a_subject_is_needed():
    black = np.zeros((8, 32, 32, 3), np.uint8)
    r = vb.score_clip(black, "a red circle moving left")
    assert r["background consistency"] == 1 and r["temporal flickering"] == 1
    assert all(r[k] == 0 for k in vb.DIMENSIONS if k not in ("background consistency", "temporal flickering"))


# ----------------------------------------------------------------------------------------------------------------
# The scores: VBench's weights (scripts/cal_final_score.py), mean and standard error over videos


def test_scores_weigh_the_dimensions_as_vbench_does():
    """quality: weighted mean (dynamic degree 0.5, the rest 1); semantic: plain mean; total (4 Q + S) / 5."""
    dims = dict(zip(vb.DIMENSIONS, np.linspace(0.1, 0.9, len(vb.DIMENSIONS))))
    q = (sum(dims[k] for k in vb.QUALITY if k != "dynamic degree") + 0.5 * dims["dynamic degree"]) / 5.5
    s = np.mean([dims[k] for k in ("color", "object class", "temporal style")])
    assert vb.aggregate(dims) == pytest.approx({"quality": q, "semantic": s, "total": (4 * q + s) / 5})


def test_vbench_gives_each_score_its_mean_and_standard_error_over_videos():
    caps = ["a red circle moving left", "a blue square moving up", "a green triangle moving down"]
    clips = [draw(*parse_caption(caps[0])), blur(draw(*parse_caption(caps[1]))), draw("red", "square", "down")]
    res = vb.vbench(clips, caps)
    per_video = [vb.score_clip(c, t) for c, t in zip(clips, caps)]
    assert res["n"] == 3
    for k in vb.SCORES + vb.DIMENSIONS:
        assert (res[k], res[k + "_se"]) == pytest.approx(mean_se([r[k] for r in per_video]))
