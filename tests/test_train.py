"""End to end on a tiny budget: train.py distils students from toy/prepare.py's models into checkpoints that
sample.py, the judge and the evaluator read back; every bad flag or missing model stops train.py before it starts.
Most tests of the trained student share one run (the `run` fixture: trained once per test process)."""
import dataclasses
import json
import re
import shutil
from types import SimpleNamespace

import imageio.v3 as iio
import pytest
import torch

import sample
import train
import turbo
from conftest import TRAIN_CPU, mtimes
from lora import make_student
from machinery.checkpoint import load_models, model_meta, read_checkpoint, read_meta, save_checkpoint, save_tensors
from tiny_unet3d import UNet3D
from toy import evaluate
from vc2 import convert

FAST = ["--turbo-batch", "2", "--warmup", "1", *TRAIN_CPU]


def test_a_seed_gives_the_same_video_alone_and_in_a_batch(toy_models):
    """sample.generate seeds every video on its own: its starting noise AND a multistep student's re-injected noise
    come from that video's seed, so the batch around it changes nothing (up to float rounding: 1 level of 255)."""
    teacher = load_models(toy_models / "teacher.safetensors", dtype=torch.float32)
    torch.manual_seed(0)
    student, _ = make_student(teacher["unet"], lora_rank=0)
    torch.nn.init.normal_(student.w_proj.weight, std=0.05)      # a student whose w-embedding does something
    models = {**teacher, "unet": student.eval(), "meta": {"kind": "turbo", "train": teacher["meta"]["train"]}}
    prompts = ["a red circle moving left", "a blue square moving up", "a green triangle moving right"]
    batch = sample.generate(models, prompts, [5, 6, 7], steps=4, progress=False)
    alone = sample.generate(models, prompts[1:2], [6], steps=4, progress=False)
    assert int(abs(batch[1].astype(int) - alone[0].astype(int)).max()) <= 1
    other = sample.generate(models, prompts[1:2], [8], steps=4, progress=False)    # another seed: another video
    assert abs(other[0].astype(int) - alone[0].astype(int)).max() > 10


def test_videos_play_at_16_fps_and_a_student_takes_the_release_apps_grid(tmp_path, monkeypatch, toy_models):
    """sample.py writes at the checkpoint's fps (16, the release's), GIF and MP4 alike; --origin-steps 200 makes a
    student sample at the release app's t = 999, 749, 499, 249 (and prompts.jsonl says so)."""
    d = tmp_path / "s"
    rows = sample.main(["--ckpt", str(toy_models / "teacher.safetensors"), "--prompt", "a red circle moving left",
                        "--steps", "2", "--out", str(d), "--device", "cpu", "--quiet", "--mp4"])
    gif, mp4 = (d / f for f in rows[0]["files"])
    assert iio.immeta(gif)["duration"] == 60                  # 1/100 s units: 16 fps is stored as 60 ms a frame
    assert iio.immeta(mp4, plugin="FFMPEG")["fps"] == 16 and "origin_steps" not in rows[0]   # (a teacher: none)
    teacher = load_models(toy_models / "teacher.safetensors", dtype=torch.float32)
    student, _ = make_student(teacher["unet"], lora_rank=0)
    models = {**teacher, "unet": student.eval(), "meta": {"kind": "turbo", "train": teacher["meta"]["train"]}}
    grids, real = [], turbo.consistency_timesteps
    monkeypatch.setattr(turbo, "consistency_timesteps", lambda *a: grids.append(real(*a)) or grids[-1])
    sample.generate(models, ["a red circle moving left"], [0], steps=4, progress=False, origin_steps=200)
    sample.generate(models, ["a red circle moving left"], [0], steps=4, progress=False)
    assert grids == [[999, 749, 499, 249], [999, 759, 519, 279]]


# ----------------------------------------------------------------------------------------------------------------
# One toy run: train.py's student, the VCM baseline beside it, then what reads them (sample.py, the evaluator, the
# table with its guidance tuning)


@pytest.fixture(scope="module")
def run(tmp_path_factory, toy_models):
    """train.py's student (3 steps) into a new folder, then in the same folder the VCM baseline (--rewards none)
    and train.py once more without --fresh; made once per test process. What the tests check about the runs
    themselves is recorded on the way: {out: the folder, states_left: its resumable states after the first run,
    student_mtime_ns: the student's mtime after the first run and after the last, shipped_mtimes: the toy models'
    before and after}. The tests read the folder; only the table's (tuned, below) writes into it."""
    out = tmp_path_factory.mktemp("pipeline") / "run"
    shipped = mtimes(toy_models)
    base = ["--toy-models", str(toy_models), "--out", str(out), "--turbo-steps", "3"] + FAST
    train.main(base)
    states_left = list(out.glob("*.state-*"))
    first = (out / "turbo.safetensors").stat().st_mtime_ns
    train.main(base + ["--rewards", "none"])
    train.main(base)
    return SimpleNamespace(out=out, states_left=states_left,
                           student_mtime_ns=(first, (out / "turbo.safetensors").stat().st_mtime_ns),
                           shipped_mtimes=(shipped, mtimes(toy_models)))


def test_training_writes_the_student_with_its_config_and_log(run, toy_models):
    _, meta = read_checkpoint(run.out / "turbo.safetensors")
    assert meta["kind"] == "turbo" and meta["train"]["turbo_steps"] == 3 and "unet" in meta
    assert meta["train"]["toy_models"] == str(toy_models)
    assert len(meta["stats"]["log"]) == 3 and {"cd", "r_img", "r_vid", "loss"} <= set(meta["stats"]["final"])


def test_the_student_is_the_teachers_unet_plus_a_w_projection(run, toy_models):
    tensors, meta = read_checkpoint(run.out / "turbo.safetensors")
    assert meta["unet"]["guidance_embed_dim"] == 256          # the student carries its w-projection by name
    assert "unet.w_proj.weight" in tensors
    teacher_meta = read_meta(toy_models / "teacher.safetensors")
    training_only = ("temporal_dropout", "use_checkpoint", "guidance_embed_dim")
    assert {k: v for k, v in meta["unet"].items() if k not in training_only} == \
        {k: v for k, v in teacher_meta["unet"].items() if k not in training_only}   # the teacher's UNet, plus w


def test_a_finished_run_drops_its_resumable_states(run):
    assert not run.states_left, "a finished run drops its resumable states"


def test_rewards_none_distils_the_vcm_baseline_beside_the_student(run):
    _, vcm = read_checkpoint(run.out / "vcm.safetensors")
    assert vcm["train"]["rewards"] == "none" and set(vcm["stats"]["final"]) == {"cd", "loss"}


def test_an_existing_student_is_not_trained_again_without_fresh(run):
    first, last = run.student_mtime_ns
    assert last == first


def test_training_only_reads_the_teacher_and_reward_models(run):
    before, after = run.shipped_mtimes
    assert after == before


@pytest.mark.parametrize("which, steps", [("teacher", 2), ("student", None)])
def test_a_checkpoint_samples_a_video_per_seed_at_its_steps(which, steps, tmp_path, toy_models, request):
    """sample.py --seed 7 --num-per-prompt 2: seeds 7 and 8, 8 frames of 32 x 32 each, at the steps given (the
    teacher) or the checkpoint's own (the student: 4)."""
    # the teacher's case needs no trained run: it is only made for the student's
    ckpt = toy_models / "teacher.safetensors" if which == "teacher" else \
        request.getfixturevalue("run").out / "turbo.safetensors"
    d = tmp_path / f"samples_{ckpt.stem}"
    argv = ["--ckpt", str(ckpt), "--prompt", "a red circle moving left", "--num-per-prompt", "2",
            "--out", str(d), "--seed", "7", "--device", "cpu", "--quiet"]
    sample.main(argv + (["--steps", str(steps)] if steps else []))
    rows = [json.loads(l) for l in (d / "prompts.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [7, 8] and rows[0]["steps"] == (steps or 4)
    clip = iio.imread(d / rows[0]["file"], index=None)
    assert clip.shape[1:] == (32, 32, 3) and clip.shape[0] == 8


def test_vbench_names_each_mp4_by_its_full_prompt_alone_in_its_folder(run, tmp_path):
    """--vbench, here in half precision (--dtype bf16) and from a run folder (which means its student)."""
    d = tmp_path / "vbench"
    sample.main(["--ckpt", str(run.out), "--prompt", "a red circle moving left", "--out", str(d), "--dtype", "bf16",
                 "--vbench", "--device", "cpu", "--quiet"])
    mp4 = d / "videos" / "a red circle moving left-0.mp4"
    assert mp4.exists() and iio.imread(mp4, index=None).shape[0] == 8
    assert [p.name for p in (d / "videos").iterdir()] == [mp4.name]          # VBench's folder: its MP4s alone


def test_the_evaluator_judges_the_captions_asked_for_then_the_toy_rewards_score_them(run, tmp_path, toy_models):
    """Held-out captions only (1 video each: 8), 2 steps; then the toy rewards of what it sampled."""
    res = evaluate.evaluate(run.out / "turbo.safetensors", tmp_path / "eval", per_seen=0, per_heldout=1, steps=2)
    assert set(res) == {"heldout"} and res["heldout"]["n"] == 8 and (res["heldout"]["all"] * 8).is_integer()
    rw = evaluate.reward_scores([tmp_path / "eval" / "heldout"], toy_models)
    assert -1 <= rw["image"] <= 1 and -1 <= rw["video"] <= 1


def small_table(mp):
    """The table on 3 seen and 3 held-out captions, a guidance grid of 2 values and one row (T2V-Turbo, 1 step):
    fast. mp: a pytest.MonkeyPatch, which undoes it."""
    few = {split: evaluate.split_captions(split)[:3] for split in ("train", "heldout")}
    mp.setattr(evaluate, "split_captions", few.get)
    mp.setattr(evaluate, "GUIDANCE_GRID", (2.0, 6.0))
    mp.setattr(evaluate, "ROWS", [("turbo", "T2V-Turbo", 1)])


@pytest.fixture(scope="module")
def tuned(run, toy_models):
    """evaluate.table(tune=True) on the run, once: its guidance sweep for the student, as guidance.json keeps it."""
    with pytest.MonkeyPatch.context() as mp:
        small_table(mp)
        evaluate.table(run.out, toy_models, per_seen=1, per_heldout=1, tune=True)
    return json.loads((run.out / "guidance.json").read_text())["turbo"]


def test_guidance_tuning_keeps_the_best_scoring_grid_value_in_the_students_convention(tuned):
    """The student's own convention: w = g - 1 (the grid is g 2 and 6); the score: judge + image + video reward."""
    assert [r["guidance"] for r in tuned["sweep"]] == [1.0, 5.0]
    assert tuned["best"] == max(tuned["sweep"], key=lambda r: r["score"])["guidance"]
    for r in tuned["sweep"]:
        assert r["score"] == pytest.approx(r["judge"] + r["image"] + r["video"])


def test_guidance_tuning_samples_seen_captions_only_from_validation_seeds(run, tuned):
    """Validation seeds (5000 on) never overlap the evaluation's; held-out captions stay a test of composition."""
    tune_dir = run.out / "tune_turbo" / "g2"
    seeds = [json.loads(l)["seed"] for l in (tune_dir / "seen" / "prompts.jsonl").read_text().splitlines()]
    assert seeds[0] == evaluate.VALIDATION_SEED and not (tune_dir / "heldout").exists()


def test_the_table_samples_at_the_tuned_guidance_and_says_so(run, tuned):
    res = json.loads((run.out / "eval_turbo_1" / "results.json").read_text())
    md = (run.out / "results.md").read_text()
    assert res["guidance"] == tuned["best"] and f"| w {tuned['best']:g} |" in md


def test_the_table_opens_with_the_toy_vbench_of_every_video_each_with_its_standard_error(run, tuned):
    """The paper's Table 1 on the toy: total, quality, semantic over all videos (3 seen + 3 held out here), total
    per split, then every dimension, each 'mean ± SE'; results.json keeps the same numbers; the judge and reward
    table follows."""
    res = json.loads((run.out / "eval_turbo_1" / "results.json").read_text())
    md = (run.out / "results.md").read_text()
    assert md.startswith("Toy VBench (toy/vbench.py), mean ± standard error over videos (3 seen, 3 held out)")
    assert md.index("| total | quality | semantic |") < md.index("| image reward | video reward |")
    cell = r"[01]\.\d{3} ± \d\.\d{3}"
    table1, dims = (part.split("|---|\n")[1].splitlines()[0] for part in md.split("\n\n")[1:4:2])
    head = r"\| T2V-Turbo \| 1 \| w [\d.]+ \| 1 \| \d+\.\d{3} \| "      # method, steps, guidance, evaluations, s
    assert re.fullmatch(head + rf"({cell} \| ){{5}}", table1 + " "), table1
    assert re.fullmatch(rf"\| T2V-Turbo \| 1 \| ({cell} \| ){{9}}", dims + " "), dims
    assert res["vbench"]["n"] == 6 and f"{res['vbench']['total']:.3f} ± {res['vbench']['total_se']:.3f}" in table1
    for split in ("seen", "heldout"):
        vb = res[split]["vbench"]
        assert vb["n"] == 3 and f"{vb['total']:.3f} ± {vb['total_se']:.3f}" in table1


def test_the_table_reports_shape_per_shape_with_counts(run, tuned):
    """The first 3 seen captions (red squares) and the first 3 held-out ones (a red triangle, a green circle, a blue
    square), one video each: a shape's cell is 'share (right/n)', '-' where the split has none of it."""
    res = json.loads((run.out / "eval_turbo_1" / "results.json").read_text())
    md = (run.out / "results.md").read_text()
    assert "| method | steps | square seen | circle seen | triangle seen | square held out |" in md
    row = md.split("Shape right, per shape")[1].strip().splitlines()[-1].strip(" |").split(" | ")[2:]
    assert row[1:3] == ["-", "-"] and re.fullmatch(r"(0\.00 \(0|0\.33 \(1|0\.67 \(2|1\.00 \(3)/3\)", row[0]), row
    assert all(re.fullmatch(r"[01]\.00 \([01]/1\)", c) for c in row[3:]), row
    for split in ("seen", "heldout"):
        assert sum(sum(c.values()) for c in res[split]["confusion"].values()) == res[split]["n"] == 3


def test_a_second_table_reuses_the_sweep_while_what_it_depends_on_is_unchanged(run, tuned, toy_models):
    """guidance.json's stamp: the checkpoint and the reward models (name, size, mtime), the grid and the seed."""
    with pytest.MonkeyPatch.context() as mp:
        small_table(mp)
        mp.setattr(evaluate, "tune_guidance", lambda *a, **k: pytest.fail("tuned again"))
        evaluate.table(run.out, toy_models, per_seen=1, per_heldout=1, tune=True)


def test_sample_names_never_collide_and_prompts_jsonl_appends(tmp_path, toy_models):
    """Two captions with the same slug, the same caption twice, and a second run into the same folder: every video
    has a file of its own, prompts.jsonl lists each once (with its checkpoint, steps and guidance) and keeps the
    first run's lines."""
    out = tmp_path / "s"
    teacher = toy_models / "teacher.safetensors"
    argv = ["--ckpt", str(teacher), "--prompt", "a red circle moving left", "--prompt",
            "A red circle moving left!", "--prompt", "a red circle moving left", "--steps", "2", "--out", str(out),
            "--device", "cpu", "--quiet", "--mp4"]
    first = sample.main(argv)
    second = sample.main(argv)
    rows = [json.loads(l) for l in (out / "prompts.jsonl").read_text().splitlines()]
    assert rows == first + second and len(rows) == 6
    files_written = [f for r in rows for f in r["files"]]
    assert len(set(files_written)) == 12 and all((out / f).exists() for f in files_written)
    assert {r["steps"] for r in rows} == {2} and {r["ckpt"] for r in rows} == {str(teacher)}
    assert all(r["guidance"] == 5.0 for r in rows) and len(list(out.glob("grid*.gif"))) == 2
    shutil.rmtree(out)


# ----------------------------------------------------------------------------------------------------------------
# Other runs, and what stops train.py before it starts


def test_closing_comparison(tmp_path, monkeypatch, capsys, toy_models):
    """--compare-per-caption N: after training, the teacher and the student sample the same captions from the same
    seeds (evaluate.toy_comparison): one printed line and OUT/compare_vcm.gif, two rows (seen, held out) per model:
    the videos the line scores (toy VBench of both, judge, rewards). Here 1 seen and 1 held-out caption, and the
    teacher at 2 DDIM steps instead of 50, to keep it fast."""
    monkeypatch.setattr(evaluate, "quick_captions", lambda: (["a red circle moving left"],
                                                             evaluate.split_captions("heldout")[:1]))
    real = sample.sampler_settings
    monkeypatch.setattr(sample, "sampler_settings", lambda meta, steps=None, guidance=None: real(
        meta, steps or (None if meta.get("kind") == "turbo" else 2), guidance))
    out = tmp_path / "run"
    train.main(["--toy-models", str(toy_models), "--out", str(out), "--turbo-steps", "1", "--rewards", "none"]
               + FAST + ["--compare-per-caption", "1"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    teacher, student = line.split(" | ")
    assert teacher.startswith("teacher 2 steps: toy VBench total ") and " 4 steps: toy VBench total " in student
    for part in (teacher, student):
        # every number with its standard error; 1 of 1 or 0 of 1 videos right is ± 0.219 (Agresti-Coull), never ± 0;
        # the toy VBench is of both videos (seen and held out)
        assert re.fullmatch(r"\S+ \d steps: toy VBench total [01]\.\d{3} ± \d\.\d{3}, quality [01]\.\d{3} ± \d\.\d{3}, "
                            r"semantic [01]\.\d{3} ± \d\.\d{3} \(2 videos\), \d+\.\d\d s/video; "
                            r"judge seen [01]\.000 ± 0\.219 \(1 videos\), held out [01]\.000 ± 0\.219 \(1\), "
                            r"image reward -?\d\.\d{3} ± \d\.\d{3}, video reward -?\d\.\d{3} ± \d\.\d{3}"
                            r"(; [\d.]+ minutes in all)?", part), part
    grid = iio.imread(out / "compare_vcm.gif", index=None)
    assert grid.shape[:3] == (8, 4 * 34 * 3, 34 * 3)          # 4 rows of one 32-px video (1-px border, x3)


def test_presets(toy_models):
    """The toy preset departs from the paper / VC2 in its student's size (full fine-tuning at lr 1e-4) and its
    guidance range; the VC2 presets keep the paper's w ~ U[5, 15] and sample at w 7.5; a preset's switch can be
    turned off (--no-...); a flag overrides the preset."""
    models = ["--toy-models", str(toy_models)]
    # (8 frames: the toy world draws no 16-frame clip, and train.py refuses one at parse time)
    as_vc2 = models + ["--preset", "vc2_256", "--teacher", str(toy_models / "teacher.safetensors"), "--frames", "8"]
    toy, vc2 = train.parse_config(models), train.parse_config(as_vc2)
    assert (toy.w_min, toy.w_max, toy.turbo_w, toy.lora_rank, toy.turbo_lr) == (2.0, 6.0, 4.0, 0, 1e-4)
    assert (toy.turbo_steps, toy.turbo_batch, toy.device, toy.compare_per_caption) == (300, 8, "auto", 2)
    assert (vc2.w_min, vc2.w_max, vc2.turbo_w, vc2.beta_img, vc2.beta_vid, vc2.lora_rank) == (5.0, 15.0, 7.5, 1.0,
                                                                                             2.0, 64)
    assert (vc2.precision, vc2.grad_ckpt_unet, vc2.compare_per_caption) == ("bf16", True, 0)
    off = train.parse_config(as_vc2 + ["--no-grad-ckpt-unet", "--turbo-w", "6"])
    assert (off.grad_ckpt_unet, off.grad_ckpt_decoder, off.turbo_w) == (False, True, 6.0)
    assert train.parse_config(models) == train.cli_config(train.Config, models, train.__doc__, train.check_config,
                                                          train.PRESETS)


def test_vc2_style_teacher(tmp_path, toy_models):
    """A teacher's UNet options (here VC2's own: eps-prediction on VC2's schedule, no relative positions,
    transformers at the 4x4 level only) travel in its checkpoint's UNet config: the student inherits them and
    sample.py reads them back. No toy reward models are needed for --rewards none."""
    toy = load_models(toy_models / "teacher.safetensors", dtype=torch.float32)
    assert toy["unet"].config.prediction == "v"
    torch.manual_seed(0)
    unet = UNet3D(dataclasses.replace(toy["unet"].config, prediction="eps", zero_terminal_snr=False,
                                      use_relative_position=False, attention_resolutions=(2,)))
    teacher = tmp_path / "eps" / "teacher.safetensors"
    save_checkpoint(teacher, {"unet": unet, "text": toy["text"], "ae": toy["ae"]},
                    model_meta(unet, toy["text"], toy["ae"], kind="teacher", train=toy["meta"]["train"]))
    out = tmp_path / "vcm"
    train.main(["--teacher", str(teacher), "--toy-models", str(tmp_path / "nothing_here"), "--out", str(out),
                "--turbo-steps", "2", "--rewards", "none"] + FAST)
    u = read_meta(out / "vcm.safetensors")["unet"]
    assert u["prediction"] == "eps" and not u["zero_terminal_snr"] and not u["use_relative_position"]
    assert tuple(u["attention_resolutions"]) == (2,) and u["guidance_embed_dim"] == 256
    models = sample.load_models(out / "vcm.safetensors")
    vids = sample.generate(models, ["a red circle moving left"], [0], progress=False)
    assert vids.shape == (1, 8, 32, 32, 3)


def test_a_bad_flag_stops_train_py_with_one_line_before_anything_is_written(tmp_path, capsys, toy_models):
    """Each bad value stops train.py with one line naming it, before anything is loaded or written."""
    models = ["--toy-models", str(toy_models), "--out", str(tmp_path / "never")]
    bad_values = {
        ("--target", "nonsense"): "--target", ("--rewards", "all"): "--rewards", ("--w-min", "0"): "--w-min",
        ("--w-min", "7", "--w-max", "6"): "--w-max", ("--precision", "fp8"): "--precision",
        ("--optim", "sgd"): "--optim", ("--turbo-steps", "0"): "--turbo-steps", ("--turbo-batch", "0"): "--turbo-batch",
        ("--grad-accum", "0"): "--grad-accum", ("--save-every", "0"): "--save-every", ("--keep", "0"): "--keep",
        ("--size", "0"): "--size", ("--frames", "0"): "--frames", ("--compare-per-caption", "-1"): "--compare",
        ("--data", "videos"): "--captions", ("--device", "tpu"): "--device tpu", ("--preset", "vc3"): "--preset",
        ("--no-such-flag", "1"): "unrecognized arguments",
    }
    for bad, says in bad_values.items():
        with pytest.raises(SystemExit) as e:
            train.main(models + list(bad))
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and "Traceback" not in err, (bad, err)
    assert not (tmp_path / "never").exists()


def only_teacher(tmp_path, toy_models):
    """A toy-models folder with the teacher and no reward model."""
    folder = tmp_path / "only_teacher"
    folder.mkdir()
    shutil.copy(toy_models / "teacher.safetensors", folder / "teacher.safetensors")
    return folder


def test_a_missing_corrupt_or_wrong_kind_model_file_stops_train_py(tmp_path, capsys, toy_models):
    """The teacher and reward model files: missing, corrupt, or the wrong kind."""
    models = ["--toy-models", str(toy_models), "--out", str(tmp_path / "never")]
    tensors, meta = read_checkpoint(toy_models / "teacher.safetensors")
    student = tmp_path / "student.safetensors"
    save_tensors(student, tensors, {"t2v_turbo": json.dumps({**meta, "kind": "turbo"})})
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a checkpoint at all")
    teacher_only = only_teacher(tmp_path, toy_models)
    cases = [(["--teacher", str(tmp_path / "missing.safetensors")], "no teacher checkpoint at"),
             (["--toy-models", str(tmp_path / "empty")], "no teacher checkpoint at"),
             (["--teacher", str(student)], "is a 'turbo' checkpoint, not a teacher"),
             (["--teacher", str(corrupt)], "not a readable safetensors"),
             (["--toy-models", str(teacher_only)], "no image reward model at"),
             (["--toy-models", str(teacher_only), "--rewards", "video"], "no video reward model at"),
             (["--hps", str(tmp_path / "HPS.pt")], "no image reward model at")]
    for argv, says in cases:
        with pytest.raises(SystemExit) as e:
            train.parse_config(models + argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err, (argv, err)


def test_the_vcm_baseline_needs_no_reward_model(tmp_path, toy_models):
    models = ["--toy-models", str(toy_models), "--out", str(tmp_path / "never")]
    teacher_only = only_teacher(tmp_path, toy_models)
    assert train.parse_config(models + ["--toy-models", str(teacher_only), "--rewards", "none"]).rewards == "none"


def test_read_checkpoint_refuses_a_corrupt_file_and_a_missing_one(tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        read_checkpoint(corrupt)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.safetensors")


def test_a_lora_student_trains_on_one_unet(tmp_path, toy_models, capsys):
    """--lora-rank: the student, its EMA target (adapters only) and its teacher (adapters off) share one UNet; the
    saved student has its LoRA merged and samples like any checkpoint."""
    out = tmp_path / "lora"
    train.main(["--toy-models", str(toy_models), "--out", str(out), "--lora-rank", "4", "--turbo-steps", "2",
                "--rewards", "none"] + FAST)
    assert "trainable parameters (LoRA rank 4), target network: ema" in capsys.readouterr().out
    tensors, meta = read_checkpoint(out / "vcm.safetensors")
    assert not any(".down." in k or ".up." in k or ".base." in k for k in tensors) and len(meta["stats"]["log"]) == 2
    assert sample.generate(load_models(out / "vcm.safetensors"), ["a red circle moving left"], [0],
                           progress=False).shape == (1, 8, 32, 32, 3)
    # its LoRA on its own -> the release's unet_lora.pt -> back onto the teacher as vc2/convert.py --lora does (the
    # release's order, the zero w_proj base, W + up @ down): the saved student, bit for bit
    convert.main(["--export-release-lora", str(out / "vcm_lora.safetensors"), "--out", str(out / "unet_lora.pt")])
    release = torch.load(out / "unet_lora.pt", weights_only=True)
    assert isinstance(release, list) and len(release) == 2 * sum(k.endswith(".up.weight") for k in
                                                                 read_checkpoint(out / "vcm_lora.safetensors")[0])
    teacher = load_models(toy_models / "teacher.safetensors")["unet"]
    student = UNet3D(dataclasses.replace(teacher.config, guidance_embed_dim=256)).eval()
    student.load_state_dict({**teacher.state_dict(), "w_proj.weight": torch.zeros_like(student.w_proj.weight)})
    assert convert.load_release_lora(student, release, rank=4) == len(release)
    placeholders, materialize = convert.merged_tensors(student)           # vc2/convert.py --lora's merge, as it writes
    merged = {k: materialize(k) if v.is_meta else v for k, v in placeholders.items()}
    assert list(merged) == [k.removeprefix("unet.") for k in tensors if k.startswith("unet.")]
    assert all(torch.equal(v, tensors[f"unet.{k}"]) for k, v in merged.items())
    assert merged["w_proj.weight"].abs().max() > 0       # the w-conditioning travelled too (its LoRA trained)
