"""toy/prepare.py: the toy world's teacher and reward models, the files train.py starts from."""
import json
import shutil

import pytest
import torch
from safetensors import safe_open

import sample
from conftest import mtimes
from machinery.checkpoint import load_models, read_checkpoint, read_meta
from toy import diffusion, prepare

FILES = ("text_ae", "teacher", "reward_image", "reward_video")


class Killed(Exception):
    """Stands for a kill in the middle of a training step."""


def metadata(path):
    """{metadata key: its JSON} and {tensor name: dtype} of a safetensors file."""
    with safe_open(str(path), "pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}, {k: f.get_tensor(k).dtype for k in f.keys()}


def test_the_written_files(toy_models, toy_flags):
    """Four files; the three that ship are fp16 (--dtype fp16) and carry their configs and the command that made
    them; the teacher is the toy's departure from VC2's UNet (v-prediction, zero-terminal SNR, relative positions,
    transformers at both levels), loads back in fp32 and samples."""
    assert sorted(p.name for p in toy_models.iterdir()) == sorted(f"{n}.safetensors" for n in FILES)
    command = "python -m toy.prepare " + " ".join([*toy_flags, "--out", str(toy_models)])
    for name in FILES[1:]:
        meta, dtypes = metadata(toy_models / f"{name}.safetensors")
        assert list(meta) == (["t2v_turbo"] if name == "teacher" else ["reward"])
        entry = next(iter(meta.values()))
        assert entry["command"] == command and entry["minutes"] >= 0
        assert {d for d in dtypes.values() if d.is_floating_point} == {torch.float16}
        if name != "teacher":
            assert entry["config"]["kind"] == name.split("_")[1] and "discrimination_train" in entry["stats"]
    text_meta, _ = metadata(toy_models / "text_ae.safetensors")
    assert text_meta["t2v_turbo"]["kind"] == "text" and {"text", "ae"} <= set(text_meta["t2v_turbo"])

    meta = read_meta(toy_models / "teacher.safetensors")
    assert meta["kind"] == "teacher" and {"unet", "text", "ae"} <= set(meta)
    assert (meta["train"]["teacher_steps"], meta["train"]["teacher_batch"], meta["train"]["text_steps"]) == (3, 2, 2)
    assert (meta["train"]["height"], meta["train"]["width"], meta["train"]["guidance"]) == (32, 32, 5.0)
    assert len(meta["stats"]["log"]) == 3 and meta["stats"]["bad_steps"] == 0
    u = meta["unet"]
    assert (u["prediction"], u["zero_terminal_snr"], u["use_relative_position"]) == ("v", True, True)
    assert tuple(u["attention_resolutions"]) == (1, 2) and u["guidance_embed_dim"] == 0
    # the frozen text tower and first stage the teacher was trained with are the ones in text_ae.safetensors
    teacher, _ = read_checkpoint(toy_models / "teacher.safetensors")
    text_ae, _ = read_checkpoint(toy_models / "text_ae.safetensors")
    assert set(text_ae) == {k for k in teacher if not k.startswith("unet.")}
    for k, v in text_ae.items():
        assert torch.equal(v.to(teacher[k].dtype), teacher[k]), k

    models = load_models(toy_models / "teacher.safetensors", dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in models["unet"].parameters())
    videos = sample.generate(models, ["a red circle moving left", "a blue square moving up"], [0, 1], steps=2,
                             progress=False)
    assert videos.shape == (2, 8, 32, 32, 3) and videos.dtype.name == "uint8"


def prepared_dir(path, toy_models, names=("text_ae", "reward_image", "reward_video")):
    """A copy of some of the test run's files (copy2 keeps their mtimes), for a run with --resume to keep."""
    path.mkdir()
    for n in names:
        shutil.copy2(toy_models / f"{n}.safetensors", path / f"{n}.safetensors")
    return path


def test_resume_keeps_finished_files_and_continues_the_teacher(tmp_path, toy_models, toy_flags, monkeypatch,
                                                              capsys):
    """A run that dies in the teacher's third step goes on, with --resume, from its newest state (step 2); it keeps
    the text tower and the reward models as they are (same file, same mtime) and ends with the very teacher of an
    uninterrupted run. A third run with --resume finds every file finished and rewrites none."""
    out = prepared_dir(tmp_path / "resumed", toy_models)
    kept = mtimes(out, [f"{n}.safetensors" for n in ("text_ae", "reward_image", "reward_video")])
    argv = [*toy_flags, "--out", str(out), "--resume", "--save-every", "1"]
    real, calls = diffusion.diffusion_loss, []

    def dies_in_step_2(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise Killed("in step 2")
        return real(*a, **k)

    monkeypatch.setattr(diffusion, "diffusion_loss", dies_in_step_2)
    with pytest.raises(Killed):
        prepare.main(argv)
    monkeypatch.setattr(diffusion, "diffusion_loss", real)
    assert sorted(p.name for p in out.glob("teacher*")) == ["teacher.state-0000001.safetensors",
                                                           "teacher.state-0000002.safetensors"]
    capsys.readouterr()

    prepare.main(argv)
    printed = capsys.readouterr().out
    assert f"teacher: resuming from {out / 'teacher.state-0000002.safetensors'} (step 2 of 3)" in printed
    assert "text tower and first stage: reusing" in printed and "reward models: reusing" in printed
    assert mtimes(out, kept) == kept
    assert not list(out.glob("*.state-*")), "a finished teacher drops its resumable states"
    resumed, resumed_meta = read_checkpoint(out / "teacher.safetensors")
    straight, straight_meta = read_checkpoint(toy_models / "teacher.safetensors")
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in straight)
    assert resumed_meta["stats"]["log"] == straight_meta["stats"]["log"]
    assert resumed_meta["command"].endswith("--resume --save-every 1")
    assert {d for d in metadata(out / "teacher.safetensors")[1].values() if d.is_floating_point} == {torch.float16}

    done = mtimes(out, [f"{n}.safetensors" for n in FILES])
    prepare.main(argv)
    assert "teacher: reusing" in capsys.readouterr().out and mtimes(out, done) == done


def test_t_band(tmp_path, toy_models, toy_flags, monkeypatch):
    """--t-band lo,hi and --band-share s: a share s of the teacher's clips draws t from [lo, hi); the others keep
    the uniform t they would have drawn without a band ('' = uniform t for all, as VC2). The default: half of the
    clips in [800, 960)."""
    real, seen = diffusion.diffusion_loss, []

    def spy(unet, z0, context, fps, abar, prediction, t=None, **kw):
        seen.append(t.clone())
        return real(unet, z0, context, fps, abar, prediction, t=t, **kw)

    monkeypatch.setattr(diffusion, "diffusion_loss", spy)
    drawn = {}
    for name, band in (("uniform", ["--t-band", ""]), ("all_in_band", ["--t-band", "500,510", "--band-share", "1"]),
                       ("default", [])):
        out = prepared_dir(tmp_path / name, toy_models)
        seen.clear()
        prepare.main([*toy_flags, "--out", str(out), "--resume", "--teacher-steps", "1", "--teacher-batch", "8",
                          *band])
        drawn[name] = torch.cat(seen)
        assert len(drawn[name]) == 8
        assert read_meta(out / "teacher.safetensors")["train"]["t_band"] == (band[1] if band else "800,960")
    in_band = lambda t, lo, hi: (lo <= t) & (t < hi)
    assert not in_band(drawn["uniform"], 500, 510).all() and in_band(drawn["all_in_band"], 500, 510).all()
    moved = drawn["default"] != drawn["uniform"]
    assert 0 < moved.sum() < 8 and in_band(drawn["default"][moved], 800, 960).all()


def test_defaults_and_bad_flags(tmp_path, capsys):
    """The toy recipe's defaults, and one line for each bad value before anything is written."""
    cfg = prepare.cli_config(prepare.Config, [], None, prepare.check_config)
    assert (cfg.t_band, cfg.band_share, cfg.guidance, cfg.dtype) == ("800,960", 0.5, 5.0, "fp16")
    assert (cfg.teacher_steps, cfg.teacher_batch, cfg.caption_dropout, cfg.eval_per_caption) == (4000, 16, 0.1, 2)
    out = ["--out", str(tmp_path / "never")]
    bad_values = {("--t-band", "800"): "--t-band must be 'lo,hi'", ("--t-band", "a,b"): "--t-band must be 'lo,hi'",
                  ("--t-band", "960,800"): "0 <= lo < hi <= 1000", ("--t-band", "0,1001"): "0 <= lo < hi <= 1000",
                  ("--band-share", "1.5"): "--band-share", ("--band-share", "-0.1"): "--band-share",
                  ("--dtype", "fp8"): "--dtype", ("--teacher-steps", "0"): "--teacher-steps",
                  ("--teacher-batch", "0"): "--teacher-batch", ("--text-steps", "-1"): "--text-steps",
                  ("--reward-steps", "-1"): "--reward-steps", ("--caption-dropout", "1"): "--caption-dropout",
                  ("--save-every", "0"): "--save-every", ("--device", "tpu"): "--device tpu",
                  ("--preset", "toy"): "unrecognized arguments"}
    for bad, says in bad_values.items():
        with pytest.raises(SystemExit) as e:
            prepare.main(out + list(bad))
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err, (bad, err)
    assert not (tmp_path / "never").exists()
