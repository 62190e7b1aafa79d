"""The toy world's evaluator: sample a checkpoint on seen and held-out captions and score every video by pixels.

For each caption set it writes the samples exactly as `sample.py` does (a folder with prompts.jsonl) and scores
them two ways, neither learned: the toy VBench (toy/vbench.py: the paper's Table 1 measure, VBench's quality,
semantic and total scores over its dimensions, each from the world's spec) and toy.world.judge: a video counts as
correct when its colour, shape and direction all match the caption, and shape is also reported per shape of the
caption (a circle drawn as a square shows up by name).
The seen set is the 76 training captions, the held-out set the 8 captions no model ever saw in training.

    python -m toy.evaluate --ckpt runs/toy/turbo.safetensors    # 76 x 4 seen + 8 x 16 held out: runs/toy/eval_turbo
    python -m toy.evaluate --ckpt toy/assets/teacher.safetensors --per-seen 1 --per-heldout 8 --out runs/toy/eval
    python -m toy.evaluate --table runs/toy    # every checkpoint found there -> runs/toy/results.md (the toy's
                                               # Table 1: toy VBench; then judge and rewards), compare.gif, curves.png
    python -m toy.evaluate --table runs/toy --train    # from scratch: trains what is missing first (the toy table)
    python -m toy.evaluate --table runs/toy --tune-guidance    # each method at its own best guidance (below)
    python -m toy.evaluate --first-stage     # the first stage alone, per shape, at shapes of 10, 12 and 14 px

Guidance is a sampling knob of every method here (the teacher's CFG scale, a student's w), and the best value
differs between them: a toy teacher can score higher at a lower CFG scale than VC2's 12. `--tune-guidance` picks it
per checkpoint on VALIDATION samples (the seen captions, seeds from 5000, never the evaluation's seeds from 1000),
by judge + image reward + video reward, from one grid stated in VC2's convention g (a student gets w = g - 1, LCM's
convention for the same guidance strength), and writes the sweep to RUN_DIR/guidance.json.

Real models have their own evaluator, with T2V-Turbo's reward models as the measure: python -m vc2.evaluate.
"""

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import sample
from encoders import LinearAutoencoder, toy_linear_ae
from machinery.checkpoint import find_checkpoint, load_models, load_reward, read_meta
from machinery.cli import Parser, check_device, check_numbers, run_cli
from machinery.videoio import mean_se, read_samples, save_grid, to_uint8
from toy.vbench import DIMENSIONS as VBENCH_DIMENSIONS, vbench, vbench_dirs
from toy.world import (SHAPE_PX, SHAPES, TOY_MODELS, ToyWorld, correct, judge_dir, judge_videos, parse_caption,
                       render_clip, shape_mask, split_captions, to_tensor)


def evaluate(ckpt, out, per_seen=4, per_heldout=16, steps=None, guidance=None, seed=1000, device="cpu",
             px=SHAPE_PX):
    """-> {'seen': {...}, 'heldout': {...}} with the shares of correct videos, the toy VBench ('vbench': each score
    and dimension, mean and SE) and seconds per video; px: the shape size the judge and the toy VBench expect (a
    model of a world with other shapes, e.g. a teacher of the 10 px world)."""
    results = {}
    for split, per in (("seen", per_seen), ("heldout", per_heldout)):
        if per == 0:
            continue
        caps = split_captions("train" if split == "seen" else "heldout")
        d = Path(out) / split
        if d.exists():  # this evaluator's own samples from an earlier run: judge only what this run samples
            shutil.rmtree(d)
        prompts_file = d.parent / f"{split}_prompts.txt"
        d.parent.mkdir(parents=True, exist_ok=True)
        prompts_file.write_text("\n".join(caps) + "\n")
        argv = ["--ckpt", str(ckpt), "--prompts", str(prompts_file), "--num-per-prompt", str(per),
                "--out", str(d), "--seed", str(seed), "--device", device, "--quiet"]
        if steps is not None:
            argv += ["--steps", str(steps)]
        if guidance is not None:
            argv += ["--guidance", str(guidance)]
        t0 = time.time()
        sample.main(argv)
        seconds = (time.time() - t0) / (per * len(caps))                     # sampling and writing, not scoring
        results[split] = {**judge_dir(d, px), "vbench": vbench_dirs([d], px), "seconds_per_video": seconds}
    return results


@torch.no_grad()
def score_videos(videos, caps, image_reward=None, video_reward=None):
    """uint8 videos (n, t, h, w, 3) and their captions -> {'image': mean toy image reward over all frames,
    'video': mean video reward, 'image_se', 'video_se': their standard errors over the n videos}, None where a
    model is None."""
    video = torch.from_numpy(np.asarray(videos)).permute(0, 4, 1, 2, 3).float() / 255   # (n, 3, t, h, w) in [0, 1]
    n, c, t = video.shape[:3]
    per_video = {"image": None, "video": None}                                          # each (n,)
    if image_reward is not None:
        frames = video.transpose(1, 2).flatten(0, 1)                                  # (n t, 3, h, w)
        per_video["image"] = image_reward(frames, [cap for cap in caps for _ in range(t)]).view(n, t).mean(1)
    if video_reward is not None:
        per_video["video"] = video_reward(video, caps, generator=torch.Generator().manual_seed(0))
    out = {}
    for k, v in per_video.items():
        out[k], out[f"{k}_se"] = mean_se([] if v is None else v.tolist())
    return out


def share_se(right, n):
    """Standard error of a share of n videos judged right, Agresti-Coull style: computed at (right + 2) / (n + 4),
    so 16 of 16 still reads ± 0.067 rather than a misleading ± 0 (Agresti and Coull 1998)."""
    p = (right + 2) / (n + 4)
    return float(np.sqrt(p * (1 - p) / (n + 4)))


def load_reward_files(reward_dir):
    """{'image': model or None, 'video': ...} from reward_dir/reward_{image,video}.safetensors."""
    paths = {k: Path(reward_dir) / f"reward_{k}.safetensors" for k in ("image", "video")}
    return {k: load_reward(p)[0] if p.exists() else None for k, p in paths.items()}


def reward_scores(sample_dirs, reward_dir):
    """Mean toy image reward (over all 8 frames) and video reward of the videos in sample_dirs, each scored with
    its own caption, using the reward models saved in reward_dir (None where a model is missing)."""
    samples = [s for d in sample_dirs for s in read_samples(d)]                # [(row, (t, h, w, 3) video)]
    r = load_reward_files(reward_dir)
    return score_videos(np.stack([v for _, v in samples]), [row["prompt"] for row, _ in samples], r["image"],
                        r["video"])


# ----------------------------------------------------------------------------------------------------------------
# The quick comparison train.py and toy/prepare.py end with: in memory, a few captions, one line


def quick_captions():
    """8 seen captions (every 10th training caption: each colour, shape and direction appears) and the 8 held out."""
    return split_captions("train")[::10][:8], split_captions("heldout")


@torch.no_grad()
def toy_comparison(models, reward_dir, device="cpu", per_caption=1, seed=1000, grid=None):
    """models: {name: load_models(...) dict} -> {name: {'vbench' (toy VBench of all its videos), 'judge_seen',
    'judge_heldout', 'image', 'video', 's_per_video', 'steps'}}. Every model samples the same captions from the same
    seeds at its own default steps and guidance (teacher: 50-step DDIM + CFG; student: 4 steps); `grid`: a GIF, two
    rows per model (seen, held out)."""
    rewards = load_reward_files(reward_dir)            # reward_dir/reward_{image,video}.safetensors, None if absent
    seen, held = quick_captions()
    prompts = [c for c in seen + held for _ in range(per_caption)]
    seeds = list(range(seed, seed + len(prompts)))
    n_seen, results, rows = len(seen) * per_caption, {}, []
    for name, m in models.items():
        t0 = time.time()
        videos = sample.generate(m, prompts, seeds, device=device, progress=False)
        seconds = (time.time() - t0) / len(prompts)
        right = [correct(v, p)["all"] for v, p in zip(videos, prompts)]
        seen, held = right[:n_seen], right[n_seen:]
        results[name] = {"vbench": vbench(videos, prompts), "judge_seen": float(np.mean(seen)),
                         "judge_heldout": float(np.mean(held)),
                         "judge_seen_se": share_se(sum(seen), len(seen)),
                         "judge_heldout_se": share_se(sum(held), len(held)), "n_seen": len(seen),
                         "n_heldout": len(held), **score_videos(videos, prompts, rewards.get("image"),
                                                                rewards.get("video")),
                         "s_per_video": seconds, "steps": sample.sampler_settings(m["meta"])[1]}
        rows.append(videos)
    if grid:
        save_grid(np.concatenate(rows), grid, ncol=n_seen, scale=3)
    return results


def fmt(r, k):
    """r[k] with its standard error r[k + '_se']: '0.912 ± 0.004' ('-' for None, no ± where the SE is None)."""
    se = r.get(k + "_se")
    return "-" if r.get(k) is None else f"{r[k]:.3f}" + ("" if se is None else f" ± {se:.3f}")


def compare_line(results):
    """One line, each number with its standard error: 'teacher 50 steps: toy VBench total 0.912 ± 0.004, quality
    0.901 ± 0.005, semantic 0.957 ± 0.010 (32 videos), 1.95 s/video; judge seen 0.875 ± 0.089 (16 videos), held out
    0.750 ± 0.102 (16), image reward 0.912 ± 0.004, video reward 0.850 ± 0.006 | ...'."""
    return " | ".join(f"{name} {r['steps']} steps: toy VBench total {fmt(r['vbench'], 'total')}, quality "
                      f"{fmt(r['vbench'], 'quality')}, semantic {fmt(r['vbench'], 'semantic')} ({r['vbench']['n']} "
                      f"videos), {r['s_per_video']:.2f} s/video; judge seen {fmt(r, 'judge_seen')} ({r['n_seen']} "
                      f"videos), held out {fmt(r, 'judge_heldout')} ({r['n_heldout']}), image reward "
                      f"{fmt(r, 'image')}, video reward {fmt(r, 'video')}" for name, r in results.items())


def closing_comparison(teacher, student, name, reward_dir, per_caption=2, device="cpu", t0=None):
    """How train.py ends on the toy: the teacher's 50-step samples against the student's 4-step ones (checkpoint
    files), same captions and seeds; prints one line (compare_line: toy VBench, seconds per video, judge, rewards)
    and writes compare_<name>.gif beside the student, two rows per model (seen, held out): the very videos the line
    scores."""
    label = {"turbo": "T2V-Turbo", "vcm": "VCM"}.get(name, name)
    grid = Path(student).parent / f"compare_{name}.gif"
    models = {"teacher": load_models(teacher, device, dtype=torch.float32),
              label: load_models(student, device, dtype=torch.float32)}
    res = toy_comparison(models, reward_dir, device, per_caption=per_caption, grid=grid)
    print(f"wrote {grid} (rows: teacher seen, teacher held out, {label} seen, {label} held out)")
    print(compare_line(res) + (f"; {(time.time() - t0) / 60:.1f} minutes in all" if t0 else ""))
    return res


def quick_look(models, out_gif, device="cpu"):
    """A GIF grid for a person: 4 training captions (top row) and 4 held-out ones (bottom row), seeds 0-7."""
    seen, held = quick_captions()
    prompts = seen[:4] + held[:4]
    videos = sample.generate(models, prompts, list(range(len(prompts))), device=device, progress=False)
    save_grid(videos, out_gif, ncol=4, scale=3)


# ----------------------------------------------------------------------------------------------------------------
# Why shapes are 14 px: what the first stage alone does to each shape, before any teacher is trained


@torch.no_grad()
def first_stage_study(pxs=(10, 12, 14), channels=8, per_caption=3, noise=(0.0, 0.4), seed=1):
    """For each shape size: fit the toy's first stage as toy/prepare.py does (PCA of 4 x 4 patches of 512 training
    clips, `channels` kept), then judge real clips of every training caption and their reconstructions, clean and
    with Gaussian noise of std sigma added to the (unit-variance) latents, a stand-in for a teacher's error.
    -> {px: {'real': per-shape shares, 'sigma 0': ..., ...}}; each share is of clips judged their caption's shape."""
    caps = [c for c in split_captions("train") for _ in range(per_caption)]
    out = {}
    for px in pxs:
        sq, ci = (shape_mask(k, 16, 16, px, 32) for k in ("square", "circle"))     # centred templates, 32 px
        print(f"shapes {px} px: square {sq.sum()} pixels, circle {ci.sum()}; they differ in {(sq ^ ci).sum()} pixels "
              f"({(sq ^ ci).sum() / 4:g} a corner; a 4 x 4 latent cell is 16), IoU {(sq & ci).sum() / (sq | ci).sum():.2f}")
        ae = LinearAutoencoder(dataclasses.replace(toy_linear_ae(), latent_channels=channels))
        kept = ae.fit(ToyWorld(seed=3, px=px).batch(512)[0])                  # toy/prepare.py: fit_first_stage
        rng = np.random.default_rng(seed)
        clips = np.stack([render_clip(*parse_caption(c), rng, px=px) for c in caps])    # (n, t, h, w, 3) uint8
        z = ae.encode(to_tensor(clips))                                                 # (n, k, t, h/4, w/4)
        rows = {"real": judge_videos(clips, caps, px=px)["per_shape"]}
        for sigma in noise:
            zn = z + sigma * torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
            rows[f"sigma {sigma:g}"] = judge_videos(to_uint8(ae.decode(zn)), caps, px=px)["per_shape"]
        out[px] = rows
        for name, r in rows.items():
            print(f"shapes {px} px, {channels} latent channels ({kept:.1%} of the variance), {name:9s}: shape right "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r.items()) + f" ({len(caps)} clips)")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Guidance tuning: the same grid for every method, on validation seeds only
ROOT = Path(__file__).resolve().parents[1]  # the repository (train.py is there)
GUIDANCE_GRID = (2.0, 3.0, 5.0, 8.5, 12.0)  # CFG scale g, VC2's convention (1 = none); a student samples at w = g - 1
VALIDATION_SEED = 5000                       # the evaluation uses seeds from 1000; validation never overlaps it


def tune_guidance(ckpt, out, reward_dir, steps, grid=GUIDANCE_GRID, seed=VALIDATION_SEED, device="cpu"):
    """-> (best guidance in the checkpoint's own convention, sweep rows). Samples every seen caption once per grid
    value and keeps the value with the highest judge + image reward + video reward (missing reward models count 0).
    Held-out captions are not used: they stay a test of composition only."""
    student = sample.sampler_settings(read_meta(ckpt))[0]
    sweep = []
    for g in grid:
        value = g - 1 if student else g                    # LCM's w for a student, VC2's g for a teacher
        d = Path(out) / f"g{g:g}"
        res = evaluate(ckpt, d, per_seen=1, per_heldout=0, steps=steps, guidance=value, seed=seed, device=device)
        rw = reward_scores([d / "seen"], reward_dir)
        score = res["seen"]["all"] + sum(rw[k] for k in ("image", "video") if rw[k] is not None)
        sweep.append({"g": g, "guidance": value, "judge": res["seen"]["all"], **rw, "score": score})
        print(f"  {Path(ckpt).stem} g {g:g} ({'w' if student else 'CFG'} {value:g}): judge {res['seen']['all']:.3f}, "
              f"rewards {rw}, score {score:.3f}", flush=True)
    best = max(sweep, key=lambda r: r["score"])
    return best["guidance"], sweep


# the rows of the toy table: (checkpoint name, label, sampling steps); the paper's Table 1 methods and, as its
# Table 3, T2V-Turbo with each reward alone
ROWS = [("teacher", "teacher (DDIM + CFG)", 50), ("vcm", "VCM (no reward)", 4),
        ("turbo", "T2V-Turbo", 1), ("turbo", "T2V-Turbo", 2), ("turbo", "**T2V-Turbo**", 4),
        ("turbo", "T2V-Turbo", 8), ("turbo_image", "T2V-Turbo, image reward only", 4),
        ("turbo_video", "T2V-Turbo, video reward only", 4)]
TRAIN_ARGS = {"turbo": [], "vcm": ["--rewards", "none"], "turbo_image": ["--rewards", "image"],
              "turbo_video": ["--rewards", "video"]}


def train_missing(run_dir, toy_models, extra=()):
    """python train.py --out RUN_DIR [--rewards X] for every student of the table that is not there yet."""
    for name, args in TRAIN_ARGS.items():
        if not (Path(run_dir) / f"{name}.safetensors").exists():
            subprocess.run([sys.executable, str(ROOT / "train.py"), "--out", str(run_dir),
                            "--toy-models", str(toy_models), *args, *extra], check=True)


def table(run_dir, toy_models, per_seen=4, per_heldout=16, device="cpu", tune=False):
    """Evaluates every checkpoint of a run folder (ROWS) and writes run_dir/results.md: first the paper's Table 1 on
    the toy, method | steps | guidance | UNet evaluations per video | s/video | toy VBench total, quality, semantic
    (all videos), total on seen and on held-out captions, each mean ± SE over videos, and every toy VBench dimension;
    then method | steps | guidance | UNet evaluations per video | s/video | image reward | video reward | judge seen |
    judge held out, the judge per attribute and per shape; plus run_dir/compare.gif (same prompts and seeds, one row
    per method) and run_dir/curves.png (training curves).
    Guidance: each checkpoint's default (its training config: toy teacher CFG 5, students w 4), or with tune=True
    each checkpoint's best on validation seeds (tune_guidance, once per checkpoint at its default step count: 50
    teacher, 4 student; kept in run_dir/guidance.json and reused while the checkpoint, the reward models and the
    grid are unchanged). The teacher and the reward models are read from toy_models (toy/prepare.py's folder)."""
    run_dir, toy_models = Path(run_dir), Path(toy_models)
    rows, per_attr, per_shape, grid_rows, labels, vb_rows, vb_dims = [], [], [], [], [], [], []
    tuned_path = run_dir / "guidance.json"
    tuned = json.loads(tuned_path.read_text()) if tune and tuned_path.exists() else {}
    reward_files = sorted(toy_models.glob("reward_*.safetensors"))
    for name, label, steps in ROWS:
        ckpt = (toy_models if name == "teacher" else run_dir) / f"{name}.safetensors"
        if not ckpt.exists():
            continue
        stamp = {"files": [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in (ckpt, *reward_files)],
                 "grid": list(GUIDANCE_GRID), "seed": VALIDATION_SEED}   # what the sweep's scores depend on
        if tune and tuned.get(name, {}).get("stamp") != stamp:
            print(f"tuning the guidance of {ckpt} on validation seeds")
            best, sweep = tune_guidance(ckpt, run_dir / f"tune_{name}", toy_models, None, GUIDANCE_GRID, device=device)
            tuned[name] = {"best": best, "sweep": sweep, "stamp": stamp}
            tuned_path.write_text(json.dumps(tuned, indent=1))
        student, _, guidance = sample.sampler_settings(read_meta(ckpt), steps, tuned[name]["best"] if tune else None)
        d = run_dir / f"eval_{name}_{steps}"
        res = evaluate(ckpt, d, per_seen, per_heldout, steps, guidance, device=device)
        evals = steps if student else 2 * steps               # CFG: a conditional and an unconditional call
        rw = reward_scores([d / s for s in res], toy_models)
        vb = vbench_dirs([d / s for s in res])                # every video, seen and held out: the table's scores
        num = lambda v: "-" if v is None else f"{v:.3f}"
        knob = f"{'w' if student else 'CFG'} {guidance:g}"
        head = f"| {label} | {steps} | {knob} | {evals} | {res['seen']['seconds_per_video']:.3f} | "
        vb_rows.append(head + " | ".join([fmt(vb, k) for k in ("total", "quality", "semantic")]
                                         + [fmt(res[s]["vbench"], "total") for s in ("seen", "heldout")]) + " |")
        vb_dims.append(f"| {label} | {steps} | " + " | ".join(fmt(vb, k) for k in VBENCH_DIMENSIONS) + " |")
        rows.append(head + f"{num(rw['image'])} | {num(rw['video'])} | {res['seen']['all']:.3f} | "
                    f"{res['heldout']['all']:.3f} |")
        per_attr.append(f"| {label} | {steps} | " + " | ".join(
            f"{res[s][k]:.2f}" for s in ("seen", "heldout") for k in ("colour", "shape", "direction")) + " |")
        per_shape.append(f"| {label} | {steps} | " + " | ".join(
            shape_cell(res[s], shape) for s in ("seen", "heldout") for shape in SHAPES) + " |")
        (d / "results.json").write_text(json.dumps({**res, "vbench": vb, "rewards": rw, "guidance": guidance},
                                                   indent=1))
        print(vb_rows[-1], flush=True)
        if steps in (50, 4):
            grid_rows.append(compare_row(ckpt, steps, guidance, device))
            labels.append(f"{label.strip('*')}, {steps} steps")
    n = {s: r["vbench"]["n"] for s, r in res.items()} if rows else {}
    md = (f"Toy VBench (toy/vbench.py), mean ± standard error over videos ({n.get('seen', 0)} seen, "
          f"{n.get('heldout', 0)} held out):\n\n| method | steps | guidance | UNet evaluations / video | s / video "
          "(CPU) | total | quality | semantic | total: seen captions | total: held-out captions |\n"
          "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(vb_rows)
          + "\n\nToy VBench per dimension (all videos; quality: the first six, semantic: the last three):\n\n"
          "| method | steps | " + " | ".join(VBENCH_DIMENSIONS) + " |\n|---|---|" + "---|" * len(VBENCH_DIMENSIONS)
          + "\n" + "\n".join(vb_dims) + "\n\nJudge and the toy reward models (the students were trained on these "
          "rewards):\n\n"
          "| method | steps | guidance | UNet evaluations / video | s / video (CPU) | image reward | video reward | "
          "judge: seen captions | judge: held-out captions |\n|---|---|---|---|---|---|---|---|---|\n"
          + "\n".join(rows) + "\n\nPer attribute (share right):\n\n| method | steps | colour seen | shape seen | "
          "direction seen | colour held out | shape held out | direction held out |\n"
          "|---|---|---|---|---|---|---|---|\n" + "\n".join(per_attr)
          + "\n\nShape right, per shape of the caption (the confusion is in each eval_*/results.json):\n\n"
          "| method | steps | " + " | ".join(f"{shape} {s}" for s in ("seen", "held out") for shape in SHAPES)
          + " |\n|---|---|" + "---|" * 2 * len(SHAPES) + "\n" + "\n".join(per_shape) + "\n")
    (run_dir / "results.md").write_text(md)
    print(md)
    if grid_rows:
        save_grid(np.concatenate(grid_rows), run_dir / "compare.gif", ncol=len(compare_prompts()), scale=3)
        print(f"wrote {run_dir / 'compare.gif'}: rows {labels}; columns: {compare_prompts()}")
    plot_curves(run_dir, toy_models, run_dir / "curves.png")
    return md


def shape_cell(res, shape):
    """'0.96 (96/100)': the share of a split's videos of one shape judged that shape, with the count."""
    c = res["confusion"].get(shape)
    return "-" if not c else f"{c.get(shape, 0) / sum(c.values()):.2f} ({c.get(shape, 0)}/{sum(c.values())})"


def compare_prompts():
    """The columns of compare.gif: 4 training captions, then the first 4 held-out ones."""
    return ["a red circle moving left", "a green square moving up", "a blue triangle moving right",
            "a white circle moving down"] + split_captions("heldout")[:4]


@torch.no_grad()
def compare_row(ckpt, steps, guidance=None, device="cpu"):
    """One row of compare.gif: every method samples the same prompts from the same seed (7)."""
    prompts = compare_prompts()
    return sample.generate(load_models(ckpt, device, dtype=torch.float32), prompts, [7] * len(prompts), steps=steps,
                           guidance=guidance, device=device, progress=False)


def plot_curves(run_dir, toy_models, path, width=900, height=300):
    """Training curves from the checkpoints' logs, drawn with PIL (no plotting dependency): one panel per term
    (teacher loss, CD loss, image reward, video reward), one line per checkpoint, smoothed over 25 steps."""
    series = {}  # panel -> {checkpoint name: values}
    for name in ("teacher", "vcm", "turbo_image", "turbo_video", "turbo"):
        p = Path(toy_models if name == "teacher" else run_dir) / f"{name}.safetensors"
        if not p.exists():
            continue
        log = read_meta(p).get("stats", {}).get("log") or []
        for key, panel in (("loss", "teacher loss"), ("cd", "CD loss"), ("r_img", "image reward"),
                           ("r_vid", "video reward")):
            if name == "teacher" and key != "loss" or name != "teacher" and key == "loss":
                continue
            v = [l[key] for l in log if key in l]
            if v:
                k = min(25, len(v))
                series.setdefault(panel, {})[name] = np.convolve(v, np.ones(k) / k, mode="valid")
    if not series:
        return
    colours = {"teacher": (0, 0, 0), "vcm": (120, 120, 120), "turbo": (200, 30, 30), "turbo_image": (30, 90, 200),
               "turbo_video": (30, 150, 60)}
    pw = width // len(series)
    img = Image.new("RGB", (pw * len(series), height), "white")
    draw = ImageDraw.Draw(img)
    for i, (panel, lines) in enumerate(series.items()):
        x0, y0, x1, y1 = i * pw + 45, 25, (i + 1) * pw - 10, height - 45
        lo = min(float(v.min()) for v in lines.values())
        hi = max(float(v.max()) for v in lines.values())
        hi = hi if hi > lo else lo + 1
        draw.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
        draw.text((x0, 5), panel, fill=(0, 0, 0))
        draw.text((i * pw + 2, y0), f"{hi:.3g}", fill=(0, 0, 0))
        draw.text((i * pw + 2, y1 - 10), f"{lo:.3g}", fill=(0, 0, 0))
        n_max = max(len(v) for v in lines.values())
        for j, (name, v) in enumerate(lines.items()):
            xs = x0 + (x1 - x0) * np.arange(len(v)) / max(1, n_max - 1)
            ys = y1 - (y1 - y0) * (v - lo) / (hi - lo)
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=colours[name], width=2)
            draw.text((x0 + 5, y1 + 3 + 10 * j), name, fill=colours[name])
        draw.text((x1 - 60, y1 + 5), f"{n_max} steps", fill=(0, 0, 0))
    img.save(path)
    print(f"wrote {path}")


# ----------------------------------------------------------------------------------------------------------------
# Real-model evaluation: T2V-Turbo's reward models score real videos, per method, as mean +- standard error.
# Which frames: HPSv2.1 is an image model, so a video's HPS score is the mean over ALL its frames (training scores 5
# random ones, which is noise an evaluation does not need); the video model sees the 8 frames training feeds it
# (eval_video_frames). Preprocessing is each reward model's own (rewards.py / vc2/internvideo2.py), never redone here.
def check_args(args, error):
    """One line for every bad input, before anything is sampled or written."""
    if args.per_seen < 0 or args.per_heldout < 0 or args.per_seen + args.per_heldout == 0:
        error("--per-seen and --per-heldout must be >= 0, and not both 0")
    if not 4 <= args.shape_px <= 16:
        error("--shape-px must be in [4, 16] (a larger shape cannot travel 14 px inside a 32 px frame)")
    if args.steps is not None and args.steps < 1:
        error("--steps must be >= 1")
    check_numbers(args, error, {"guidance": "[0, inf)"})     # --guidance nan or inf: one line, not NaN videos
    args.device = check_device(args.device, error)
    if (args.train or args.tune_guidance) and not args.table:
        error("--train and --tune-guidance go with --table RUN_DIR")
    if args.table:
        if not args.train and not Path(args.table).is_dir():
            error(f"--table {args.table}: no such folder (train into it first: python train.py --out DIR, or add "
                  f"--train)")
        missing = [n for n in ("teacher", "reward_image", "reward_video")
                   if not (Path(args.toy_models) / f"{n}.safetensors").is_file()]
        if missing:
            error(f"--toy-models {args.toy_models}: no {missing[0]}.safetensors there (python -m toy.prepare writes "
                  f"the folder)")
    else:
        if args.ckpt and len(args.ckpt) > 1:
            error("the toy evaluator judges one --ckpt (python -m vc2.evaluate compares several on real prompts)")
        args.ckpt = find_checkpoint(args.ckpt[0] if args.ckpt else TOY_CKPT, error)


TOY_CKPT = "runs/toy/turbo.safetensors"     # the toy evaluator's --ckpt default


def main(argv=None):
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", action="append", help=f"a checkpoint to judge (default {TOY_CKPT})")
    p.add_argument("--out", default=None, help="sample folder (default: beside the checkpoint, eval_<name>)")
    p.add_argument("--per-seen", type=int, default=4, help="videos per training caption (76 captions)")
    p.add_argument("--per-heldout", type=int, default=16, help="videos per held-out caption (8 captions)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--seed", type=int, default=1000, help="evaluation seeds differ from train.py's quick look")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda")
    p.add_argument("--table", metavar="RUN_DIR", help="evaluate the teacher and every student in RUN_DIR, write "
                   "RUN_DIR/results.md")
    p.add_argument("--toy-models", default=str(TOY_MODELS), help="with --table: the teacher and reward models "
                   "(toy/prepare.py's folder; default: the shipped ones)")
    p.add_argument("--train", action="store_true", help="with --table: first train (train.py) every student of "
                   "the table that RUN_DIR lacks: T2V-Turbo, VCM, each reward alone")
    p.add_argument("--tune-guidance", action="store_true", help="with --table: sample each checkpoint at its own "
                   "best guidance, picked on validation seeds (RUN_DIR/guidance.json); default: its stored default")
    p.add_argument("--shape-px", type=int, default=SHAPE_PX, help=f"the shapes' size the judge expects (default "
                   f"{SHAPE_PX}, the world's; 10 judges a model of the earlier 10 px world)")
    p.add_argument("--first-stage", action="store_true", help="judge the first stage's reconstructions of real "
                   "clips per shape, at shapes of 10, 12 and 14 px (why the world's shapes are 14 px)")
    args = p.parse_args(argv)
    if args.first_stage:
        return first_stage_study()
    check_args(args, p.error)
    if args.table:
        if args.train:
            train_missing(args.table, args.toy_models)
        return table(args.table, args.toy_models, args.per_seen, args.per_heldout, args.device, tune=args.tune_guidance)
    ckpt = Path(args.ckpt)
    out = Path(args.out or ckpt.parent / f"eval_{ckpt.stem}")
    res = evaluate(ckpt, out, args.per_seen, args.per_heldout, args.steps, args.guidance, args.seed, args.device,
                   args.shape_px)
    for split, r in res.items():
        print(f"{split:8s} n={r['n']:4d}  all three right {r['all']:.3f}  (colour {r['colour']:.3f}, "
              f"shape {r['shape']:.3f}, direction {r['direction']:.3f})  {r['seconds_per_video']:.3f} s/video")
        print(f"{'':8s} shape right per shape: " + ", ".join(f"{shape} {shape_cell(r, shape)}" for shape in SHAPES)
              + f"; judged as: {r['confusion']}")
        print(f"{'':8s} toy VBench: " + ", ".join(f"{k} {fmt(r['vbench'], k)}" for k in ("total", "quality",
                                                                                     "semantic")))
    (out / "results.json").write_text(json.dumps(res, indent=1))
    print(f"wrote {out / 'results.json'}")
    return res


if __name__ == "__main__":
    run_cli(main)
