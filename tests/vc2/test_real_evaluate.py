"""The real-model evaluation, vc2/evaluate.py (--prompts / --samples with --hps / --viclip / --internvideo2): mean +-
standard error by hand, the scores equal to each reward model's own call on VC2-sized frames (320 x 512 -> 224, the
real preprocessing), a video's score independent of its batch, the CLI end to end through the real file loaders, and
its bad inputs as one line each. The reward towers here are tiny (width 32, 1 layer) but take 224 px inputs, so every
preprocessing step runs at the real size; the full-size models (random weights) are timed by `python -m benchmarks
eval`."""
import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from cases import REAL_EVAL_CASES
from conftest import CLIP_224, FIXTURES, TOY, VICLIP_224, run_main, snapshot
from machinery.checkpoint import META_KEY, read_checkpoint, save_tensors
from rewards import ImageTextReward, ViCLIP, VideoTextReward
from vc2 import evaluate, internvideo2, release

PROMPTS = ["a corgi running on the beach", "a red car at night", "fireworks over a city"]

# the CLIP vocabulary and contexts of the real models (77 for HPS's ViT-H-14, 32 for ViCLIP), 224 px inputs; tiny
# towers so a forward pass costs milliseconds
def tiny_rewards(seed=0):
    torch.manual_seed(seed)
    return {"image": ImageTextReward(open_clip.CLIP(**CLIP_224), clip_cfg=CLIP_224),
            "video": VideoTextReward(ViCLIP(VICLIP_224)), "names": {"image": "HPSv2.1", "video": "ViCLIP"}}


def write_samples(d, n=3, frames=16, hw=(320, 512), seed=0, **row):
    """A folder as sample.py writes it: n GIFs of frames x 320 x 512 (VC2's size) and prompts.jsonl. Each frame is
    random indices into one random 256-colour palette, written by PIL as it is: a GIF that imageio would have to
    quantise takes seconds to encode at this size, this one milliseconds, and it reads back exactly."""
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        palette = rng.integers(0, 256, 768, dtype=np.uint8).tobytes()
        images = [Image.fromarray(f, mode="P") for f in rng.integers(0, 256, (frames, *hw), dtype=np.uint8)]
        for im in images:
            im.putpalette(palette)
        images[0].save(d / f"v{i}.gif", save_all=True, append_images=images[1:], duration=62, loop=0)
        rows.append({"file": f"v{i}.gif", "files": [f"v{i}.gif"], "prompt": PROMPTS[i % len(PROMPTS)],
                     "seed": 1000 + i, **row})
    (d / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("real")
    return {"a": write_samples(d / "a", steps=4, guidance=7.5, ckpt="turbo.safetensors", seconds_per_video=0.5),
            "b": write_samples(d / "b", n=2, frames=8, hw=(256, 256), seed=1, steps=50, guidance=12.0,
                               ckpt="teacher.safetensors")}


def test_mean_and_standard_error_by_hand():
    # [0.2, 0.4, 0.9]: mean 0.5; deviations -0.3, -0.1, 0.4; sample variance (0.09 + 0.01 + 0.16) / (3 - 1) = 0.13;
    # SE = sqrt(0.13) / sqrt(3) = 0.3605551 / 1.7320508 = 0.2081666
    mean, se = evaluate.mean_se([0.2, 0.4, 0.9])
    assert mean == pytest.approx(0.5) and se == pytest.approx(0.2081666, abs=1e-7)
    assert evaluate.mean_se([0.3]) == (pytest.approx(0.3), None) and evaluate.mean_se([]) == (None, None)


def test_video_score_frames():
    assert evaluate.eval_video_frames(16) == [0, 2, 4, 6, 8, 10, 12, 14]     # VC2: training's stride 2, phase 0
    assert evaluate.eval_video_frames(8) == list(range(8))
    assert evaluate.eval_video_frames(17) == [0, 2, 4, 6, 8, 10, 12, 14]
    with pytest.raises(ValueError, match="needs at least 8"):
        evaluate.eval_video_frames(7)


def test_scores_are_the_reward_models_own_and_batch_independent(folders, monkeypatch):
    """score_folder at batch 2 (so a batch of 2 and one of 1) == each video scored alone by the reward modules'
    own forward (HPS: all 16 frames, averaged; ViCLIP: frames 0, 2, ..., 14 with the crop seeded 0); the frames
    reach the towers at 224 x 224 and under no_grad."""
    r = tiny_rewards()
    seen = []                                    # (input shape, grad enabled) of every call of either tower

    def spy(orig):
        return lambda x, *a, **k: seen.append((tuple(x.shape), torch.is_grad_enabled())) or orig(x, *a, **k)
    for tower, fn in ((r["image"].clip, "encode_image"), (r["video"].viclip, "encode_video")):
        monkeypatch.setattr(tower, fn, spy(getattr(tower, fn)))
    got = evaluate.score_folder(folders["a"], r, batch_size=2)["rows"]
    assert [s for s, _ in seen] == [(32, 3, 224, 224), (2, 3, 8, 224, 224), (16, 3, 224, 224), (1, 3, 8, 224, 224)]
    assert [r["file"] for r in got] == ["v0.gif", "v1.gif", "v2.gif"]
    assert not any(g for _, g in seen)
    for row in got:
        v = torch.from_numpy(evaluate.read_video(folders["a"] / row["file"])).permute(3, 0, 1, 2)[None] / 255
        with torch.no_grad():
            hps = r["image"](v[0].transpose(0, 1), [row["prompt"]] * 16).mean()
            vid = r["video"](v[:, :, ::2], [row["prompt"]], generator=torch.Generator().manual_seed(0))[0]
        assert row["hps"] == pytest.approx(float(hps), abs=1e-6) and row["video"] == pytest.approx(float(vid), abs=1e-6)


def test_cli_scores_sample_folders_through_the_file_loaders(folders, tmp_path, monkeypatch, capsys):
    """--samples A B --hps FILE --viclip FILE: the files go through the real loaders (safe torch.load, strict key
    check), with only the architecture swapped for the tiny one; the table holds both methods with their steps,
    guidance and mean ± SE of the per-video scores in the JSON; an earlier real_eval.md is not overwritten."""
    src = tiny_rewards(seed=1)
    torch.save({"state_dict": {k: v.half() for k, v in src["image"].clip.state_dict().items()}}, tmp_path / "hps.pt")
    torch.save({"model": src["video"].viclip.state_dict()}, tmp_path / "viclip.pth")
    real_hps = release.load_hpsv21
    monkeypatch.setattr(release, "load_hpsv21", lambda p: real_hps(p, clip_cfg=CLIP_224))
    monkeypatch.setattr(release, "viclip_l14", lambda: VICLIP_224)
    out = tmp_path / "out"
    out.mkdir()
    (out / "real_eval.md").write_text("an earlier evaluation")
    argv = ["--samples", str(folders["a"]), str(folders["b"]), "--hps", str(tmp_path / "hps.pt"), "--viclip",
            str(tmp_path / "viclip.pth"), "--out", str(out), "--device", "cpu", "--batch-size", "4"]
    res = evaluate.main(argv)
    printed = capsys.readouterr().out
    assert (out / "real_eval.md").read_text() == "an earlier evaluation" and not (out / "real_eval.json").exists()
    saved = json.loads((out / "real_eval-2.json").read_text())
    md = (out / "real_eval-2.md").read_text()
    assert list(res) == ["a", "b"] and md in printed and saved["rewards"] == {"image": "HPSv2.1", "video": "ViCLIP"}
    for m, n, steps, g in (("a", 3, "4", "7.5"), ("b", 2, "50", "12.0")):
        r = saved["methods"][m]
        assert r["videos"] == n == len(r["per_video"]) and (r["steps"], r["guidance"]) == (steps, g)
        for k in ("hps", "video"):
            mean, se = evaluate.mean_se([v[k] for v in r["per_video"]])
            assert (r[k]["mean"], r[k]["se"]) == (pytest.approx(mean), pytest.approx(se))
            assert f"{mean:.4f} ± {se:.4f}" in md.splitlines()[2 if m == "a" else 3]
    assert "| a | turbo.safetensors | 4 | 7.5 | 3 |" in md and md.splitlines()[2].endswith("| 0.5 |")
    # the same weights built directly score the same: the loaders changed nothing (fp16 storage aside)
    direct = evaluate.score_folder(folders["b"], {"image": src["image"], "video": src["video"]})["rows"]
    assert [d["video"] for d in direct] == pytest.approx([v["video"] for v in saved["methods"]["b"]["per_video"]])


def test_internvideo2_as_the_video_score(folders, tmp_path, monkeypatch):
    """--internvideo2 FILE --bert-vocab DIR (the VC2 release's video reward) through its real loader, with the tiny
    parity fixture's model standing in for the 1B one: the table names it, and every video gets a cosine."""
    fix = FIXTURES / "internvideo2_tiny_parity"
    monkeypatch.setattr(internvideo2, "internvideo2_1b", lambda num_frames=8: internvideo2.tiny_internvideo2())
    res = evaluate.main(["--samples", str(folders["b"]), "--internvideo2", str(fix / "ckpt.pt"), "--bert-vocab",
                         str(fix), "--out", str(tmp_path), "--device", "cpu"])
    head = (tmp_path / "real_eval.md").read_text().splitlines()[0]
    assert "| HPSv2.1 (mean ± SE) | InternVideo2 (mean ± SE) |" in head and res["b"]["hps"]["mean"] is None
    assert all(-1 <= v["video"] <= 1 for v in res["b"]["per_video"]) and res["b"]["video"]["se"] is not None


def toy_student(path, steps, w=4.0):
    """A T2V-Turbo student checkpoint made from the shipped toy teacher (its w projection zero, so it predicts what
    the teacher does) whose meta says to sample in `steps` consistency steps at guidance w."""
    tensors, meta = read_checkpoint(TOY / "teacher.safetensors")
    meta = {**meta, "kind": "turbo", "unet": {**meta["unet"], "guidance_embed_dim": 256},
            "train": {**meta["train"], "turbo_sample_steps": steps, "turbo_w": w}}
    tensors["unet.w_proj.weight"] = torch.zeros(meta["unet"]["model_channels"], 256)
    path.parent.mkdir(parents=True)
    save_tensors(path, tensors, {META_KEY: json.dumps(meta)})
    return path


def test_prompts_samples_every_checkpoint_then_scores(tmp_path, monkeypatch):
    """--prompts FILE --ckpt A --ckpt B: each checkpoint samples with sample.py at its own defaults (from its meta:
    here 1 and 2 steps at w 4 and 6) from the same seeds into OUT/samples/<method>, then every video is scored."""
    toy_student(tmp_path / "x" / "turbo.safetensors", 1)
    toy_student(tmp_path / "y" / "turbo.safetensors", 2, w=6.0)
    (tmp_path / "p.txt").write_text("a red circle moving left\n")
    monkeypatch.setattr(evaluate, "load_real_rewards", lambda *a, **k: {**tiny_rewards(), "video": None})
    hps = tmp_path / "hps.pt"
    hps.write_bytes(b"not read: load_real_rewards is replaced")
    res = evaluate.main(["--prompts", str(tmp_path / "p.txt"), "--ckpt", str(tmp_path / "x" / "turbo.safetensors"),
                         "--ckpt", str(tmp_path / "y"), "--num-per-prompt", "2", "--hps", str(hps), "--out",
                         str(tmp_path / "out"), "--device", "cpu"])
    assert list(res) == ["x_turbo", "y_turbo"]                # same stem: the folder's name in front
    rows = [evaluate.sample_rows(tmp_path / "out" / "samples" / m) for m in res]
    assert [r["seed"] for r in rows[0]] == [r["seed"] for r in rows[1]] == [1000, 1001]
    assert {(r["steps"], r["guidance"]) for r in rows[0]} == {(1, 4.0)}
    assert {(r["steps"], r["guidance"]) for r in rows[1]} == {(2, 6.0)}
    assert all(res[m]["videos"] == 2 and res[m]["hps"]["se"] is not None and res[m]["video"]["mean"] is None
               for m in res)
    # sampled as GIF and MP4; the MP4 is what gets scored (a GIF's 256-colour palette would move the scores)
    assert all(v["file"].endswith(".mp4") for m in res for v in res[m]["per_video"])
    assert all(r["files"][0].endswith(".gif") and evaluate.video_file(r) == r["files"][1] for r in rows[0])


@pytest.fixture(scope="module")
def bad(tmp_path_factory, folders):
    d = tmp_path_factory.mktemp("bad")
    f = {"dir": d, "a": folders["a"], "empty": d / "empty", "missing": d / "missing",
         "teacher": TOY / "teacher.safetensors", "prompts": d / "p.txt", "hps": d / "hps.pt",
         "garbage": d / "garbage.pt", "vocab": d / "vocab.txt", "no_video": d / "no_video", "used": d / "used"}
    f["empty"].mkdir()
    f["prompts"].write_text("a cat\n")
    f["hps"].write_bytes(b"placeholder")
    f["garbage"].write_bytes(bytes(range(256)) * 4)
    f["vocab"].write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n")
    f["no_video"].mkdir()
    (f["no_video"] / "prompts.jsonl").write_text(json.dumps({"file": "gone.gif", "prompt": "a cat"}) + "\n")
    (f["used"] / "samples" / "teacher").mkdir(parents=True)
    (f["used"] / "samples" / "teacher" / "prompts.jsonl").write_text("")
    return f


# the cases: cases.REAL_EVAL_CASES (a new one is one line there)
@pytest.mark.parametrize("i", range(len(REAL_EVAL_CASES)), ids=[f"real-{i}" for i in range(len(REAL_EVAL_CASES))])
def test_bad_real_input_is_one_line(i, bad, capsys):
    argv, code, phrase = REAL_EVAL_CASES[i]
    fill = lambda s: s.format(**{k: str(v) for k, v in bad.items()})
    before = snapshot(bad["dir"], bad["a"])
    got, _, err = run_main(evaluate.main, [fill(a) for a in argv] + ["--device", "cpu"], capsys)
    lines = [l for l in err.splitlines() if l.strip()]
    assert got == code and len(lines) == 1 and fill(phrase) in lines[0], (argv, got, err)
    assert "Traceback" not in err
    assert snapshot(bad["dir"], bad["a"]) == before, "a file changed"
