"""vc2/ddim.py against VideoCrafter2's own DDIMSampler: the fixture (tests/fixtures/vc2_ddim_sampler/, README.md says
how the original made it) holds its inputs, the noise it drew at every step and its outputs for a tiny stand-in
eps-model, with and without CFG and scale_arr, eta 1 (its script's) and 0, 50 steps and 7 (an 8-point grid). The
same stand-in, rewritten here from config.json, runs through vc2_ddim_sample on the same inputs and noise.
Then the option around it: sample.py --teacher-sampler vc2 and vc2/evaluate.py's flag of the same name.

    python -m pytest -q tests/vc2/test_ddim.py -p no:xdist
"""
import json

import pytest
import torch
from safetensors.torch import load_file

import sample
import turbo
from conftest import FIXTURES, TOY, run_main, snapshot
from machinery.checkpoint import META_KEY, read_meta, save_tensors
from vc2 import ddim
from vc2 import evaluate

FIX = FIXTURES / "vc2_ddim_sampler"
TOL = 1e-4          # max abs, on latents of magnitude ~1: fp32 rounding over 50 steps, with room for other CPUs


@pytest.fixture(scope="module")
def fixture():
    return json.loads((FIX / "config.json").read_text()), load_file(str(FIX / "data.safetensors"))


def stand_in(coef):
    """The fixture's eps-model in turbo.ddim_sample's UNet interface: unet(z, t, context, fps) ->
    K z + tanh(A z + A2 mean_c(z) + B t / 1000 + C mean(context) + D fps / 30) (config.json "eps")."""
    def unet(x, t, context, fps):
        v = lambda s: torch.as_tensor(s).float().view(-1, 1, 1, 1, 1)      # (b or 1, 1, 1, 1, 1)
        return coef["K"] * x + torch.tanh(coef["A"] * x + coef["A2"] * x.mean(1, keepdim=True) + coef["B"] * v(t) / 1000
                          + coef["C"] * v(context.mean(dim=(1, 2))) + coef["D"] * v(fps) / 30)
    return unet


def test_grid_and_scale_are_vc2s(fixture):
    cfg, _ = fixture
    assert ddim.vc2_timesteps(50) == list(range(1, 982, 20)) != sorted(turbo.ddim_timesteps(50))
    assert all(ddim.vc2_timesteps(c["steps"]) == c["grid"] for c in cfg["cases"])    # 7 steps: 8 points, as VC2
    s = ddim.vc2_scale_arr()
    assert s.shape == (1400,) and s[0] == 1 and s[399] == pytest.approx(0.7) and (s[400:] == 0.7).all()
    assert (s[1:400] < s[:399]).all()                    # falling from 1 to 0.7 over t = 0..399
    for steps in (3, 501):                               # 1000 // 3 = 333 and 1000 // 501 = 1 divide 999
        with pytest.raises(ValueError, match="reaches t = 1000"):
            ddim.vc2_timesteps(steps)


@pytest.mark.parametrize("case", range(6))
def test_matches_videocrafter2s_ddim_sampler(fixture, case):
    """Every case of the fixture to <= 1e-4 (max abs), the noise VC2 drew replayed step by step."""
    cfg, data = fixture
    c = cfg["cases"][case]
    g = lambda k: data[f"{c['name']}.{k}"]
    z = ddim.vc2_ddim_sample(stand_in(cfg["coef"]), g("x_T"), g("context"),
                             g("uncond") if c["guidance"] != 1.0 else None, c["fps"], turbo.vc2_alphas_cumprod(),
                             steps=c["steps"], guidance=c["guidance"], eta=c["eta"],
                             scale_arr=ddim.vc2_scale_arr() if c["use_scale"] else None,
                             step_noise=g("noise") if c["eta"] > 0 else None)
    err = (z - g("samples")).abs().max().item()
    print(f"{c['name']}: max abs {err:.2e} (|samples| up to {g('samples').abs().max():.2f})")
    assert err <= TOL, (c["name"], err)


def test_the_parts_matter(fixture):
    """The fixture tells the variants apart: no scale_arr, no CFG, eta 0 or the noise in another order would
    each fail it."""
    cfg, data = fixture
    g = lambda k: data[f"script.{k}"]
    run = lambda **kw: ddim.vc2_ddim_sample(stand_in(cfg["coef"]), g("x_T"), g("context"), g("uncond"), 28,
                                            turbo.vc2_alphas_cumprod(), **kw)
    want = g("samples")
    assert (run(scale_arr=ddim.vc2_scale_arr(), step_noise=g("noise")) - want).abs().max() <= TOL
    assert (run(scale_arr=None, step_noise=g("noise")) - want).abs().max() > 100 * TOL
    assert (run(scale_arr=ddim.vc2_scale_arr(), step_noise=g("noise").flip(0)) - want).abs().max() > 100 * TOL
    assert (run(scale_arr=ddim.vc2_scale_arr(), step_noise=g("noise"), guidance=1.0) - want).abs().max() > 100 * TOL
    assert (run(scale_arr=ddim.vc2_scale_arr(), eta=0.0) - want).abs().max() > 100 * TOL


def test_per_video_generators_make_a_video_independent_of_its_batch(fixture):
    """eta 1 draws fresh noise every step: with one generator per video (as sample.py passes them), a video is the
    same alone and in a batch; another seed gives another video."""
    cfg, data = fixture
    x, ctx, unc = data["script.x_T"], data["script.context"], data["script.uncond"]
    run = lambda sl, seeds: ddim.vc2_ddim_sample(
        stand_in(cfg["coef"]), x[sl], ctx[sl], unc[sl], 28, turbo.vc2_alphas_cumprod(), steps=5,
        scale_arr=ddim.vc2_scale_arr(), generator=[torch.Generator().manual_seed(s) for s in seeds])
    both, alone, other = run(slice(0, 2), [3, 4]), run(slice(1, 2), [4]), run(slice(1, 2), [5])
    assert torch.allclose(both[1:], alone, atol=1e-6) and not torch.allclose(alone, other, atol=1e-2)


def test_settings_follow_the_checkpoint():
    """scale_arr and fps 28 for a teacher converted from VC2 (its meta's source), neither for any other."""
    vc2 = ddim.vc2_settings({"source": {"vc2": "model.ckpt"}, "train": {"fps": 16}})
    assert vc2["fps"] == 28 and vc2["scale_arr"].equal(ddim.vc2_scale_arr())
    assert ddim.vc2_settings(read_meta(TOY / "teacher.safetensors")) == {"scale_arr": None, "fps": 16}


def student_file(path):
    """A file whose meta says T2V-Turbo student: sample.py refuses the flag before reading any weight."""
    meta = {**read_meta(TOY / "teacher.safetensors"), "kind": "turbo"}
    save_tensors(path, {"x": torch.zeros(1)}, {META_KEY: json.dumps(meta)})
    return path


def test_sample_py_option(tmp_path, capsys):
    """--teacher-sampler vc2 samples the toy teacher with VC2's sampler (prompts.jsonl says so, and the videos
    differ from the release sampler's from the same seed); a student is refused in one line, writing nothing."""
    argv = ["--ckpt", str(TOY / "teacher.safetensors"), "--prompt", "a red circle moving left", "--steps", "2",
            "--device", "cpu", "--quiet"]
    vc2 = sample.main(argv + ["--out", str(tmp_path / "vc2"), "--teacher-sampler", "vc2"])
    release = sample.main(argv + ["--out", str(tmp_path / "release")])
    assert vc2[0]["teacher_sampler"] == "vc2" and "teacher_sampler" not in release[0]
    assert (tmp_path / "vc2" / vc2[0]["file"]).read_bytes() != (tmp_path / "release" / release[0]["file"]).read_bytes()
    student = student_file(tmp_path / "s" / "turbo.safetensors")
    before = snapshot(tmp_path)
    code, _, err = run_main(sample.main, ["--ckpt", str(student.parent), "--prompt", "x", "--teacher-sampler", "vc2",
                                          "--out", str(tmp_path / "none")], capsys)
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and "is a T2V-Turbo student" in lines[0] and snapshot(tmp_path) == before


def test_evaluate_passes_the_flag_to_teachers_only(tmp_path, monkeypatch):
    """vc2/evaluate.py --teacher-sampler vc2: every teacher's sample.py call gets it, a student's does not."""
    calls = []
    monkeypatch.setattr(sample, "main", lambda argv: calls.append(argv))
    student = student_file(tmp_path / "s" / "turbo.safetensors")
    evaluate.sample_methods([TOY / "teacher.safetensors", student], "p.txt", tmp_path, teacher_sampler="vc2")
    assert [a[-2:] == ["--teacher-sampler", "vc2"] for a in calls] == [True, False]
    assert "--teacher-sampler" not in calls[1]


def test_evaluate_refuses_the_flag_when_every_checkpoint_is_a_student(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a cat\n")
    (tmp_path / "hps.pt").write_bytes(b"placeholder")
    student = student_file(tmp_path / "s" / "turbo.safetensors")
    before = snapshot(tmp_path)
    code, _, err = run_main(evaluate.main, ["--prompts", str(tmp_path / "p.txt"), "--ckpt", str(student), "--hps",
                                            str(tmp_path / "hps.pt"), "--teacher-sampler", "vc2", "--out",
                                            str(tmp_path / "out"), "--device", "cpu"], capsys)
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and "every --ckpt is a T2V-Turbo student" in lines[0]
    assert snapshot(tmp_path) == before
