"""The toy world follows toy/world.py's docstring, and the judge that every accuracy figure rests on is right on real
clips."""
import numpy as np

from toy.world import (DIRECTIONS, SHAPES, ToyWorld, all_captions, correct, judge, parse_caption, render_clip,
                       shape_mask, split_captions)


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
