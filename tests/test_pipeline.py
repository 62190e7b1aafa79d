"""End to end on a tiny budget: train.py's stages write checkpoints that sample.py and the judge read back."""
import json
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch

import evaluate
import sample
import train
from checkpoint import read_checkpoint


def test_train_then_sample(tmp_path, monkeypatch):
    out = tmp_path / "run"
    small = ["--teacher-batch", "2", "--turbo-batch", "2", "--warmup", "1", "--reward-steps", "2", "--text-steps", "2",
             "--text-batch", "4", "--teacher-band-steps", "0"]
    train.main(["--out", str(out), "--teacher-steps", "3", "--turbo-steps", "3"] + small)
    assert (out / "reward_image.safetensors").exists() and (out / "reward_video.safetensors").exists()
    for name in ("teacher", "turbo"):
        tensors, meta = read_checkpoint(out / f"{name}.safetensors")
        assert meta["kind"] == name and meta["train"]["teacher_steps"] == 3 and "unet" in meta
        assert (out / f"{name}_samples.gif").exists()
    _, meta = read_checkpoint(out / "turbo.safetensors")
    assert meta["unet"]["guidance_embed_dim"] == 256          # the student carries its w-projection by name
    assert any(k == "unet.w_proj.weight" for k in tensors)
    # a second run reuses the teacher and reward models; --rewards none distils the VCM baseline beside it
    before = (out / "teacher.safetensors").stat().st_mtime_ns
    train.main(["--out", str(out), "--teacher-steps", "3", "--turbo-steps", "3", "--rewards", "none"] + small)
    assert (out / "teacher.safetensors").stat().st_mtime_ns == before
    _, vcm = read_checkpoint(out / "vcm.safetensors")
    assert vcm["train"]["rewards"] == "none" and all(k in vcm["stats"]["final"] for k in ("cd", "loss"))
    _, t2v = read_checkpoint(out / "turbo.safetensors")
    assert {"r_img", "r_vid"} <= set(t2v["stats"]["final"])     # every term logged
    # --until rewards trains a missing reward model even though the student exists, and stops there
    (out / "reward_video.safetensors").unlink()
    before = (out / "turbo.safetensors").stat().st_mtime_ns
    train.main(["--out", str(out), "--until", "rewards"] + small)
    assert (out / "reward_video.safetensors").exists() and (out / "turbo.safetensors").stat().st_mtime_ns == before

    for name, steps in (("teacher", 2), ("turbo", None)):
        d = tmp_path / f"samples_{name}"
        argv = ["--ckpt", str(out / f"{name}.safetensors"), "--prompt", "a red circle moving left",
                "--num-per-prompt", "2", "--out", str(d), "--seed", "7", "--quiet"]
        sample.main(argv + (["--steps", str(steps)] if steps else []))
        rows = [json.loads(l) for l in (d / "prompts.jsonl").read_text().splitlines()]
        assert [r["seed"] for r in rows] == [7, 8] and rows[0]["steps"] == (steps or 4)
        clip = iio.imread(d / rows[0]["file"], index=None)
        assert clip.shape[1:] == (32, 32, 3) and clip.shape[0] == 8

    # half precision and VBench naming (MP4 named by the full prompt)
    d = tmp_path / "vbench"
    sample.main(["--ckpt", str(out), "--prompt", "a red circle moving left", "--out", str(d), "--dtype", "bf16",
                 "--vbench", "--quiet"])
    mp4 = d / "a red circle moving left-0.mp4"
    assert mp4.exists() and iio.imread(mp4, index=None).shape[0] == 8

    # the evaluator: held-out captions only, 2 steps, then the toy rewards of what it sampled
    res = evaluate.evaluate(out / "turbo.safetensors", tmp_path / "eval", per_seen=0, per_heldout=1, steps=2)
    assert set(res) == {"heldout"} and res["heldout"]["n"] == 8 and 0 <= res["heldout"]["all"] <= 1
    rw = evaluate.reward_scores([tmp_path / "eval" / "heldout"], out)
    assert -1 <= rw["image"] <= 1 and -1 <= rw["video"] <= 1

    # guidance tuning: validation seeds (5000 on), seen captions only, the best-scoring grid value, in the student's
    # own convention (w = g - 1); the table then samples at it and says so
    few = {split: evaluate.split_captions(split)[:3] for split in ("train", "heldout")}    # 3 captions: fast
    monkeypatch.setattr(evaluate, "split_captions", few.get)
    monkeypatch.setattr(evaluate, "GUIDANCE_GRID", (2.0, 6.0))
    monkeypatch.setattr(evaluate, "ROWS", [("turbo", "T2V-Turbo", 1)])
    evaluate.table(out, per_seen=1, per_heldout=1, tune=True)
    tuned = json.loads((out / "guidance.json").read_text())["turbo"]
    assert [r["guidance"] for r in tuned["sweep"]] == [1.0, 5.0]
    assert tuned["best"] == max(tuned["sweep"], key=lambda r: r["score"])["guidance"]
    for r in tuned["sweep"]:
        assert r["score"] == pytest.approx(r["judge"] + r["image"] + r["video"])
    tune_dir = out / "tune_turbo" / "g2"
    seeds = [json.loads(l)["seed"] for l in (tune_dir / "seen" / "prompts.jsonl").read_text().splitlines()]
    assert seeds[0] == evaluate.VALIDATION_SEED and not (tune_dir / "heldout").exists()
    assert json.loads((out / "eval_turbo_1" / "results.json").read_text())["guidance"] == tuned["best"]
    assert f"| w {tuned['best']:g} |" in (out / "results.md").read_text()
    # a second table reuses the sweep while the checkpoint and reward models are unchanged
    monkeypatch.setattr(evaluate, "tune_guidance", lambda *a, **k: pytest.fail("tuned again"))
    evaluate.table(out, per_seen=1, per_heldout=1, tune=True)


def test_presets():
    """The toy preset departs from the paper / VC2 only in its teacher recipe and guidance; the VC2 presets keep
    the paper's w ~ U[5, 15] and sample at w 7.5; a preset's switch can be turned off (--no-...)."""
    toy, vc2 = train.parse_config([]), train.parse_config(["--preset", "vc2_256"])
    assert (toy.prediction, toy.zero_terminal_snr, toy.relative_position, toy.attention_levels) == ("v", True, True,
                                                                                                     "1,2")
    assert (toy.teacher_t_band, toy.guidance, toy.w_min, toy.w_max, toy.turbo_w) == ("800,960", 5.0, 2.0, 6.0, 4.0)
    assert (toy.teacher_steps, toy.teacher_band_steps, toy.teacher_band_replay, vc2.teacher_band_steps) == (2000, 900,
                                                                                                        0.5, 0)
    assert (vc2.w_min, vc2.w_max, vc2.turbo_w, vc2.guidance, vc2.beta_img, vc2.beta_vid) == (5.0, 15.0, 7.5, 12.0,
                                                                                              1.0, 2.0)
    off = train.parse_config(["--prediction", "eps", "--no-zero-terminal-snr", "--no-relative-position"])
    assert (off.prediction, off.zero_terminal_snr, off.relative_position) == ("eps", False, False)


def test_vc2_style_teacher_run(tmp_path):
    """The toy teacher's options (here VC2's own: eps-prediction on VC2's schedule, no relative positions,
    transformers at the 4x4 level only) travel in the UNet config: the student inherits them and sample.py reads
    them back."""
    out = tmp_path / "eps"
    train.main(["--out", str(out), "--teacher-steps", "2", "--turbo-steps", "2", "--teacher-batch", "2",
                "--turbo-batch", "2", "--warmup", "1", "--text-steps", "2", "--text-batch", "4", "--rewards", "none",
                "--teacher-band-steps", "0",
                "--prediction", "eps", "--no-zero-terminal-snr", "--no-relative-position", "--attention-levels", "2"])
    for name in ("teacher", "vcm"):
        _, meta = read_checkpoint(out / f"{name}.safetensors")
        u = meta["unet"]
        assert u["prediction"] == "eps" and not u["zero_terminal_snr"] and not u["use_relative_position"]
        assert tuple(u["attention_resolutions"]) == (2,)
    models = sample.load_models(out / "vcm.safetensors")
    vids = sample.generate(models, ["a red circle moving left"], [0], progress=False)
    assert vids.shape == (1, 8, 32, 32, 3)

    # a second phase: --teacher-init goes on training that teacher, every clip's t drawn from --teacher-t-band
    for clash in (["--attention-levels", "1,2"], ["--teacher", str(out / "teacher.safetensors")]):
        with pytest.raises(SystemExit):  # flags may repeat the init's UNet, not change it; --teacher is final
            train.parse_config(["--teacher-init", str(out / "teacher.safetensors")] + clash)
    with pytest.raises(SystemExit):  # a student is not a teacher to go on from
        train.parse_config(["--teacher-init", str(out / "vcm.safetensors")])
    seen_t = []
    def spy(unet, z0, context, fps, abar, t=None, **kw):
        seen_t.append(t.clone())
        return real(unet, z0, context, fps, abar, t=t, **kw)
    real, train.turbo.diffusion_loss = train.turbo.diffusion_loss, spy
    try:
        out2 = tmp_path / "v2"
        train.main(["--out", str(out2), "--teacher-init", str(out / "teacher.safetensors"), "--teacher-steps", "2",
                    "--teacher-batch", "3", "--warmup", "1", "--teacher-t-band", "500,510", "--teacher-band-share",
                    "1", "--until", "teacher", "--attention-levels", "2", "--teacher-band-steps", "0"])
    finally:
        train.turbo.diffusion_loss = real
    assert sorted(p.name for p in out2.glob("*.safetensors")) == ["teacher.safetensors"]  # --until teacher
    t = torch.cat(seen_t)
    assert len(t) == 6 and ((500 <= t) & (t < 510)).all()
    first, second = read_checkpoint(out / "teacher.safetensors"), read_checkpoint(out2 / "teacher.safetensors")
    assert second[1]["unet"] == first[1]["unet"] and second[1]["train"]["teacher_init"].endswith("teacher.safetensors")
    assert second[1]["train"]["prediction"] == "eps" and not second[1]["train"]["zero_terminal_snr"]  # the init's
    for k, v in first[0].items():  # the frozen text tower and first stage come along; the UNet moved on
        assert torch.equal(v, second[0][k]) != k.startswith("unet."), k


def test_teacher_band_phase(tmp_path, monkeypatch):
    """The toy teacher's second phase (--teacher-band-steps): every clip's t in the band, from phase 1's weights;
    phase 1 is kept as OUT/teacher_phase1.safetensors, and a run that stopped between the phases goes on from it."""
    looks = []
    monkeypatch.setattr(train, "quick_look", lambda ckpt, gif, device: looks.append(Path(gif).name))  # 50-step GIFs
    seen_t = []
    def spy(unet, z0, context, fps, abar, t=None, **kw):
        seen_t.append(t.clone())
        return real(unet, z0, context, fps, abar, t=t, **kw)
    out = tmp_path / "two"
    argv = ["--out", str(out), "--until", "teacher", "--teacher-steps", "2", "--teacher-band-steps", "2",
            "--teacher-batch", "4", "--warmup", "1", "--text-steps", "2", "--text-batch", "4",
            "--teacher-t-band", "500,510", "--teacher-band-share", "0", "--save-every", "1",
            "--teacher-band-replay", "0"]
    real, train.turbo.diffusion_loss = train.turbo.diffusion_loss, spy
    try:
        train.main(argv)
        first_t, seen_t[:] = torch.cat(seen_t), []
        (out / "teacher.safetensors").unlink()       # as if stopped after phase 1: it is not trained again
        before = (out / "teacher_phase1.safetensors").stat().st_mtime_ns
        train.main(argv)
        second_t, seen_t[:] = torch.cat(seen_t), []
        (out / "teacher.safetensors").unlink()       # phase 2 again, with half of its clips replaying uniform t
        train.main(argv + ["--teacher-band-replay", "0.5", "--teacher-band-steps", "4"])  # the last flag counts
        replay_t = torch.cat(seen_t)
    finally:
        train.turbo.diffusion_loss = real
    in_band = lambda t: (500 <= t) & (t < 510)
    assert len(first_t) == 16 and not in_band(first_t[:8]).all()                        # share 0: uniform t
    assert in_band(first_t[8:]).all() and in_band(second_t).all()                       # phase 2: all in band
    assert len(replay_t) == 16 and 0 < in_band(replay_t).sum() < 16                     # replay: some outside
    assert len(second_t) == 8 and (out / "teacher_phase1.safetensors").stat().st_mtime_ns == before
    one, one_meta = read_checkpoint(out / "teacher_phase1.safetensors")
    two, two_meta = read_checkpoint(out / "teacher.safetensors")
    assert len(two_meta["stats"]["log"]) == 6 and two_meta["stats"]["phase1"]["steps"] == 2  # 2 + 4 steps
    for k, v in one.items():  # phase 2 moved the UNet only
        assert torch.equal(v, two[k]) != k.startswith("unet."), k
    assert not list(out.glob("*.state-*"))
    assert looks == ["teacher_phase1_samples.gif"] + ["teacher_samples.gif"] * 3


def test_bad_flags_and_checkpoints(tmp_path):
    for bad in (["--target", "nonsense"], ["--prediction", "eps", "--zero-terminal-snr"], ["--prediction", "eps"],
                ["--prediction", "x0"],
                ["--attention-levels", "3"], ["--attention-levels", "4"], ["--teacher-t-band", "800"],
                ["--teacher-t-band", "960,800"], ["--teacher-t-band", "0,1001"], ["--teacher-band-share", "1.5"],
                ["--teacher-band-steps", "-1"], ["--teacher-t-band", ""],  # the second phase needs a band
                ["--teacher-band-replay", "1"], ["--teacher-band-replay", "-0.1"],
                ["--teacher-t-power", "0"], ["--teacher-init", str(tmp_path / "missing.safetensors")],
                ["--until", "sampling"]):
        with pytest.raises(SystemExit):
            train.parse_config(bad)
    with pytest.raises(SystemExit):
        train.parse_config(["--no-such-flag", "1"])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        read_checkpoint(bad)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(SystemExit):
        train.parse_config(["--teacher-init", str(bad)])
