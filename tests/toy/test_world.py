"""The toy world follows toy/world.py's docstring, and the judge that every accuracy figure rests on is right on real
clips."""
import numpy as np
import pytest

from toy.world import (DIRECTIONS, SHAPES, ToyWorld, all_captions, correct, judge, judge_videos, parse_caption,
                       render_clip, shape_mask, shape_size, split_captions)


def test_caption_files_split_the_world():
    assert split_captions("all") == all_captions() and len(all_captions()) == 84
    train, held = split_captions("train"), split_captions("heldout")
    assert len(train) == 76 and len(held) == 8 and not set(train) & set(held)
    # every colour, shape and direction of a held-out caption is seen in training, just not that combination
    seen = [set(x) for x in zip(*map(parse_caption, train))]
    for c in held:
        assert all(a in s for a, s in zip(parse_caption(c), seen))


def test_world_draws_only_training_captions():
    world = ToyWorld(seed=1)
    video, caps = world.batch(200)
    assert video.shape == (200, 3, 8, 32, 32) and video.min() == -1
    assert not set(caps) & set(split_captions("heldout"))


def test_shapes_follow_spec():
    assert shape_mask("square", 16, 16, 10, 32).sum() == 100           # 10 x 10 pixels
    circle = shape_mask("circle", 16, 16, 10, 32)
    assert abs(circle.sum() - np.pi * 5.5 ** 2) < 0.1 * np.pi * 5.5 ** 2  # a disc of radius s/2 + 0.5
    tri = shape_mask("triangle", 16, 16, 10, 32)
    rows = np.where(tri.any(1))[0]
    # height and base s + 2 = 12 (the apex row's pixel centres fall just outside), apex up
    assert rows[-1] - rows[0] + 1 == 11 and tri[rows[-1]].sum() == 12 and tri[rows[0]].sum() == 2


def test_clip_motion_and_bounds():
    rng = np.random.default_rng(0)
    for d, (dx, dy) in DIRECTIONS.items():
        for shape in SHAPES:
            for _ in range(20):
                clip = render_clip("white", shape, d, rng)
                fg = clip.max(-1) > 0
                ys, xs = np.mgrid[0:32, 0:32]
                cx = (fg * xs).sum((1, 2)) / fg.sum((1, 2))
                cy = (fg * ys).sum((1, 2)) / fg.sum((1, 2))
                assert np.allclose(np.diff(cx), 2 * dx) and np.allclose(np.diff(cy), 2 * dy)
                assert (fg.sum((1, 2)) == fg[0].sum()).all()  # never clipped by the border


def test_judge_is_right_on_real_clips_and_wrong_captions():
    rng = np.random.default_rng(0)
    for text in all_captions():
        clip = render_clip(*parse_caption(text), rng)
        assert correct(clip, text)["all"], (text, judge(clip))
    colour, shape, direction = "red", "circle", "left"
    clip = render_clip(colour, shape, direction, rng)
    assert not correct(clip, "a blue circle moving left")["all"]
    assert not correct(clip, "a red square moving left")["all"]
    assert not correct(clip, "a red circle moving right")["all"]
    assert judge(clip[[0] * 8])["direction"] == "static"       # a frozen shape shows no direction
    assert judge(np.zeros_like(clip))["colour"] is None          # an empty video shows nothing


def test_shapes_are_14_px_and_the_judge_names_each_shapes_confusion():
    """The world's shapes are SHAPE_PX = 14 px across at 32 px; judge_videos reports shape per shape of the caption,
    so a circle drawn as a square shows up by name."""
    assert shape_size(32) == 14 and shape_size(32, px=10) == 10 and shape_size(64) == 28
    rng = np.random.default_rng(2)
    circle, square = render_clip("red", "circle", "left", rng), render_clip("red", "square", "up", rng)
    res = judge_videos([circle, square, circle], ["a red circle moving left", "a red square moving up",
                                                  "a red square moving left"])          # the last one is wrong
    assert res["n"] == 3 and abs(res["shape"] - 2 / 3) < 1e-9 and res["colour"] == 1
    assert res["confusion"] == {"circle": {"circle": 1}, "square": {"square": 1, "circle": 1}}
    assert res["per_shape"] == {"circle": 1.0, "square": 0.5}
    # the size is one knob for rendering and judging alike: a 10 px clip is judged right at 10 px
    small = render_clip("blue", "triangle", "down", rng, px=10)
    assert small.max(-1).astype(bool).sum() < circle.max(-1).astype(bool).sum()
    assert judge_videos([small], ["a blue triangle moving down"], px=10)["all"] == 1


def test_first_stage_study_reads_every_shape_at_14_px():
    """python -m toy.evaluate --first-stage, on one clip per training caption: real clips and the first stage's
    reconstructions of 14 px shapes are all judged their caption's shape (RESULTS.md measured 228 clips a size)."""
    from toy.evaluate import first_stage_study

    res = first_stage_study(pxs=(14,), per_caption=1, noise=(0.0,))[14]
    assert set(res) == {"real", "sigma 0"} and res["real"] == {s: 1.0 for s in SHAPES}
    assert min(res["sigma 0"].values()) >= 0.95, res


def test_max_frames_is_where_a_shape_stops_fitting():
    """train.py and toy/prepare.py refuse --frames past max_frames at parse time: up to it every shape crosses the
    frame in every direction; one frame more and some start range is empty (numpy's 'low >= high')."""
    from toy.world import frames_problem, max_frames

    rng = np.random.default_rng(0)
    for size in (32, 64):
        most = max_frames(size)
        assert most >= 8                                   # the toy's 8 frames fit at every size it trains at
        assert frames_problem(most, size) is None and f"give --frames {most} or fewer" in frames_problem(most + 1, size)
        for shape in SHAPES:
            for direction in DIRECTIONS:
                assert render_clip("red", shape, direction, rng, size=size, frames=most).shape[0] == most
        with pytest.raises(ValueError):
            for shape in SHAPES:
                render_clip("red", shape, "left", rng, size=size, frames=most + 1)
