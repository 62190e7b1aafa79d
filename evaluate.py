"""The toy world's evaluator: sample a checkpoint on seen and held-out captions and judge every video by pixels.

For each caption set it writes the samples exactly as `sample.py` does (a folder with prompts.jsonl) and scores
them with toy.judge: a video counts as correct when its colour, shape and direction all match the caption.
The seen set is the 76 training captions, the held-out set the 8 captions no model ever saw in training.

    python evaluate.py --ckpt runs/toy/turbo.safetensors          # 76 x 1 seen + 8 x 8 held out: runs/toy/eval_turbo
    python evaluate.py --ckpt assets/toy/teacher.safetensors --per-seen 2 --per-heldout 16 --out runs/toy/eval
    python evaluate.py --table runs/toy        # every checkpoint found there -> runs/toy/results.md, compare.gif,
                                               # curves.png
    python evaluate.py --table runs/toy --train    # from scratch: trains what is missing first (the toy table)
    python evaluate.py --table runs/toy --tune-guidance    # each method at its own best guidance (below)

Guidance is a sampling knob of every method here (the teacher's CFG scale, a student's w), and the best value
differs between them: a toy teacher can score higher at a lower CFG scale than VC2's 12. `--tune-guidance` picks it
per checkpoint on VALIDATION samples (the seen captions, seeds from 5000, never the evaluation's seeds from 1000),
by judge + image reward + video reward, from one grid stated in VC2's convention g (a student gets w = g - 1, LCM's
convention for the same guidance strength), and writes the sweep to RUN_DIR/guidance.json.

Real models (the real-world counterpart of the toy table; no pixel judge exists there, so T2V-Turbo's own reward
models are the measure): every checkpoint samples the same prompts from the same seeds, at its own default steps and
guidance, and every video is scored by HPSv2.1 and ViCLIP (or InternVideo2), reported per method as mean +- standard
error over videos in OUT/real_eval.md and .json. Without --hps/--viclip/--internvideo2 files it refuses to run.

    python evaluate.py --prompts prompts.txt --ckpt weights/vc2/teacher.safetensors \
        --ckpt weights/vc2/turbo.safetensors --num-per-prompt 4 --hps HPS_v2.1_compressed.pt \
        --viclip ViClip-InternVid-10M-FLT.pth --out runs/real_eval     # samples in runs/real_eval/samples/<method>
    python evaluate.py --samples runs/real_eval/samples/* --hps ... --viclip ...    # folders sample.py wrote
"""

import argparse
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
from loop import Parser, check_device, one_line, run_cli
from sample import find_checkpoint
from checkpoint import RELEASE_FILES, find_file, load_models, read_meta
from internvideo2 import find_vocab, internvideo2_reward
from rewards import ImageTextReward, VideoTextReward, ViCLIP, load_reward, load_viclip, viclip_l14
from toy import TOY_MODELS, correct, judge_dir, split_captions
import videoio
from videoio import read_prompts, read_samples, read_video, save_grid


def evaluate(ckpt, out, per_seen=1, per_heldout=8, steps=None, guidance=None, seed=1000, device="cpu"):
    """-> {'seen': {...}, 'heldout': {...}} with the shares of correct videos and seconds per video."""
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
        results[split] = {**judge_dir(d), "seconds_per_video": (time.time() - t0) / (per * len(caps))}
    return results


@torch.no_grad()
def score_videos(videos, caps, image_reward=None, video_reward=None):
    """uint8 videos (n, t, h, w, 3) and their captions -> {'image': mean toy image reward over all frames,
    'video': mean video reward}, each None where its model is None."""
    video = torch.from_numpy(np.asarray(videos)).permute(0, 4, 1, 2, 3).float() / 255   # (n, 3, t, h, w) in [0, 1]
    n, c, t = video.shape[:3]
    out = {"image": None, "video": None}
    if image_reward is not None:
        frames = video.transpose(1, 2).flatten(0, 1)                                  # (n t, 3, h, w)
        out["image"] = float(image_reward(frames, [cap for cap in caps for _ in range(t)]).view(n, t).mean())
    if video_reward is not None:
        out["video"] = float(video_reward(video, caps, generator=torch.Generator().manual_seed(0)).mean())
    return out


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
# The quick comparison train.py and prepare_toy.py end with: in memory, a few captions, one line


def quick_captions():
    """8 seen captions (every 10th training caption: each colour, shape and direction appears) and the 8 held out."""
    return split_captions("train")[::10][:8], split_captions("heldout")


@torch.no_grad()
def toy_comparison(models, reward_dir, device="cpu", per_caption=1, seed=1000, grid=None):
    """models: {name: load_models(...) dict} -> {name: {'judge_seen', 'judge_heldout', 'image', 'video',
    's_per_video', 'steps'}}. Every model samples the same captions from the same seeds at its own default steps
    and guidance (teacher: 50-step DDIM + CFG; student: 4 steps); `grid`: a GIF, two rows per model (seen, held out)."""
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
        results[name] = {"judge_seen": float(np.mean(right[:n_seen])), "judge_heldout": float(np.mean(right[n_seen:])),
                         **score_videos(videos, prompts, rewards.get("image"), rewards.get("video")),
                         "s_per_video": seconds, "steps": sample.sampler_settings(m["meta"])[1]}
        rows.append(videos)
    if grid:
        save_grid(np.concatenate(rows), grid, ncol=n_seen, scale=3)
    return results


def compare_line(results):
    """One line: 'teacher 50 steps: judge seen 0.875, held out 0.750, image 0.912, video 0.850, 1.95 s/video | ...'."""
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    return " | ".join(f"{name} {r['steps']} steps: judge seen {r['judge_seen']:.3f}, held out {r['judge_heldout']:.3f}"
                      f", image reward {fmt(r['image'])}, video reward {fmt(r['video'])}, {r['s_per_video']:.2f} s/video"
                      for name, r in results.items())


def quick_look(models, out_gif, device="cpu"):
    """A GIF grid for a person: 4 training captions (top row) and 4 held-out ones (bottom row), seeds 0-7."""
    seen, held = quick_captions()
    prompts = seen[:4] + held[:4]
    videos = sample.generate(models, prompts, list(range(len(prompts))), device=device, progress=False)
    save_grid(videos, out_gif, ncol=4, scale=3)


# Guidance tuning: the same grid for every method, on validation seeds only
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
        score = res["seen"]["all"] + sum(v for v in rw.values() if v is not None)
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
            subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "train.py"), "--out", str(run_dir),
                            "--toy-models", str(toy_models), *args, *extra], check=True)


def table(run_dir, toy_models, per_seen=1, per_heldout=8, device="cpu", tune=False):
    """Evaluates every checkpoint of a run folder (ROWS) and writes run_dir/results.md: method | steps | guidance |
    UNet evaluations per video | s/video | image reward | video reward | judge seen | judge held out, plus
    run_dir/compare.gif (same prompts and seeds, one row per method) and run_dir/curves.png (training curves).
    Guidance: each checkpoint's default (its training config: toy teacher CFG 5, students w 4), or with tune=True
    each checkpoint's best on validation seeds (tune_guidance, once per checkpoint at its default step count: 50
    teacher, 4 student; kept in run_dir/guidance.json and reused while the checkpoint, the reward models and the
    grid are unchanged). The teacher and the reward models are read from toy_models (prepare_toy.py's folder)."""
    run_dir, toy_models = Path(run_dir), Path(toy_models)
    rows, per_attr, grid_rows, labels = [], [], [], []
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
        fmt = lambda v: "-" if v is None else f"{v:.3f}"
        knob = f"{'w' if student else 'CFG'} {guidance:g}"
        rows.append(f"| {label} | {steps} | {knob} | {evals} | {res['seen']['seconds_per_video']:.3f} | "
                    f"{fmt(rw['image'])} | {fmt(rw['video'])} | {res['seen']['all']:.3f} | {res['heldout']['all']:.3f} |")
        per_attr.append(f"| {label} | {steps} | " + " | ".join(
            f"{res[s][k]:.2f}" for s in ("seen", "heldout") for k in ("colour", "shape", "direction")) + " |")
        (d / "results.json").write_text(json.dumps({**res, "rewards": rw, "guidance": guidance}, indent=1))
        print(rows[-1], flush=True)
        if steps in (50, 4):
            grid_rows.append(compare_row(ckpt, steps, guidance, device))
            labels.append(f"{label.strip('*')}, {steps} steps")
    md = ("| method | steps | guidance | UNet evaluations / video | s / video (CPU) | image reward | video reward | "
          "judge: seen captions | judge: held-out captions |\n|---|---|---|---|---|---|---|---|---|\n"
          + "\n".join(rows) + "\n\nPer attribute (share right):\n\n| method | steps | colour seen | shape seen | "
          "direction seen | colour held out | shape held out | direction held out |\n|---|---|---|---|---|---|---|---|\n"
          + "\n".join(per_attr) + "\n")
    (run_dir / "results.md").write_text(md)
    print(md)
    if grid_rows:
        save_grid(np.concatenate(grid_rows), run_dir / "compare.gif", ncol=len(compare_prompts()), scale=3)
        print(f"wrote {run_dir / 'compare.gif'}: rows {labels}; columns: {compare_prompts()}")
    plot_curves(run_dir, toy_models, run_dir / "curves.png")
    return md


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
# (eval_video_frames). Preprocessing is each reward model's own (rewards.py / internvideo2.py), never redone here.

REAL_OUT = "runs/real_eval"             # --out's default in the real mode
VIDEO_SCORE_FRAMES = 8                  # ViCLIP-L/14 and InternVideo2 (as T2V-Turbo sets it up) take 8 frames


def mean_se(values):
    """Per-video scores -> (mean, standard error of the mean). SE = s / sqrt(n) with s the SAMPLE standard deviation
    (n - 1 in its denominator); None for fewer than 2 videos, where it is not defined (mean None for none)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return None, None
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else None


def eval_video_frames(t, n=VIDEO_SCORE_FRAMES):
    """The n frames of a t-frame video that the video score sees: training's stride t // n
    (turbo.video_reward_frames) from frame 0. Training draws the start at random (every frame gets gradients over
    time); an evaluation wants the same frames every run. VC2's 16 frames -> 0, 2, ..., 14; 8 frames -> all."""
    if t < n:
        raise ValueError(f"a video of {t} frames: the video reward scores {n}, so it needs at least {n}")
    return list(range(0, (t // n) * n, t // n))


def sample_rows(folder):
    """A sample folder (what sample.py writes) -> its prompts.jsonl rows (videoio.sample_rows: each with a prompt and
    a file), each with the file it is scored from ("scored", video_file) checked to exist. ValueError (one line)
    otherwise. Only the rows: the videos are read a batch at a time while scoring (a VBench folder of 4,730 VC2
    videos is 35 GiB of uint8)."""
    rows = videoio.sample_rows(folder)
    for row in rows:
        row["scored"] = video_file(row)
        if not (Path(folder) / row["scored"]).is_file():
            raise ValueError(f"{Path(folder) / 'prompts.jsonl'}: its video {Path(folder) / row['scored']} is missing")
    return rows


def video_file(row):
    """The file of a prompts.jsonl row that gets scored: its MP4 when it lists one (sample.py --mp4, --vbench), else
    its "file". A GIF holds at most 256 colours a frame, and the quantisation moves the scores; H.264 is lossy too,
    but keeps the colours."""
    return next((f for f in row.get("files") or [] if str(f).lower().endswith(".mp4")), row["file"])


def method_names(paths, name=lambda p: p.stem):
    """A display name per checkpoint or folder: its stem (turbo, teacher) or folder name, with the parent folder's
    name in front where two would clash. -> {name: Path}, in the order given."""
    paths = [Path(p) for p in paths]
    names = [name(p) for p in paths]
    names = [f"{p.parent.name}_{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]
    names = [f"{n}_{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]   # still the same: number them
    return dict(zip(names, paths))


def load_real_rewards(hps=None, viclip=None, internvideo2=None, bert_vocab=None, device="cpu"):
    """-> {'image': the HPSv2.1 reward or None, 'video': the ViCLIP or InternVideo2 reward or None, 'names': {...}}.
    Each of hps / viclip / internvideo2 is the released file (as train.py loads it: strictly, weights_only) or an
    already built reward module (the tests pass small ones), scored by the same code. fp32 on `device`: scores,
    not speed, are the point here. bench.py eval swaps the file readers for random full-size models."""
    def build(x, what, loader):
        if isinstance(x, torch.nn.Module):
            return x
        try:
            return loader(x)
        except (ValueError, OSError) as e:            # a truncated or foreign file: one line that names it
            raise ValueError(f"the {what} file {x} does not load: {one_line(e)}") from None
    out = {"image": None, "video": None, "names": {"image": "HPSv2.1", "video": "InternVideo2" if internvideo2
                                                  else "ViCLIP"}}
    if hps is not None:
        out["image"] = build(hps, "HPSv2.1", ImageTextReward.hpsv21)
    if internvideo2 is not None:
        out["video"] = build(internvideo2, "InternVideo2", lambda p: internvideo2_reward(
            p, bert_vocab, dtype=torch.float32, grad_checkpoint=False))
    elif viclip is not None:
        out["video"] = build(viclip, "ViCLIP", lambda p: VideoTextReward(load_viclip(ViCLIP(viclip_l14()), p)))
    for k in ("image", "video"):
        if out[k] is not None:
            out[k] = out[k].float().eval().to(device)
    return out


@torch.no_grad()
def score_batch(videos, prompts, image_reward=None, video_reward=None):
    """uint8 videos (b, t, h, w, 3) of one size and their b prompts -> ({'image': [b], 'video': [b]}, {seconds}).
    image: HPSv2.1 of every frame against the video's prompt, averaged over the t frames; video: the video model
    on eval_video_frames. Both in one call per batch, in the reward's own preprocessing (letterbox / resize + crop,
    normalisation), under no_grad."""
    device = next((image_reward if image_reward is not None else video_reward).parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(videos)).to(device)
    x = x.permute(0, 4, 1, 2, 3).float() / 255                           # (b, 3, t, h, w) in [0, 1], what rewards take
    b, _, t = x.shape[:3]
    scores, seconds = {}, {}
    if image_reward is not None:
        t0 = time.time()
        frames = x.transpose(1, 2).flatten(0, 1)                          # (b t, 3, h, w), clip-major
        # one prompt per clip: the reward pairs it with that clip's t consecutive frames (rewards._as_texts)
        scores["image"] = image_reward(frames, list(prompts)).view(b, t).mean(1).tolist()
        seconds["image"] = time.time() - t0
    if video_reward is not None:
        t0 = time.time()
        # the reward cuts ONE random 224 crop per call; a generator seeded afresh for every call draws the same
        # window for every batch of one frame size, so a video's score does not depend on the videos beside it
        crop = torch.Generator().manual_seed(0)
        scores["video"] = video_reward(x[:, :, eval_video_frames(t)], list(prompts), generator=crop).tolist()
        seconds["video"] = time.time() - t0
    return scores, seconds


def score_folder(folder, rewards, batch_size=8, rows=None):
    """Every video a sample folder lists, scored in batches of batch_size -> {'rows': rows with 'hps' / 'video'
    scores added, 'seconds': scoring seconds per reward}."""
    folder, rows = Path(folder), [dict(r) for r in (rows or sample_rows(folder))]
    seconds, batch = {}, []

    def flush():
        if not batch:
            return
        scores, secs = score_batch(np.stack([v for _, v in batch]), [r["prompt"] for r, _ in batch],
                                   rewards.get("image"), rewards.get("video"))
        for k, vals in scores.items():
            for (r, _), v in zip(batch, vals):
                r["hps" if k == "image" else "video"] = v
        for k, s in secs.items():
            seconds[k] = seconds.get(k, 0.0) + s
        batch.clear()

    for r in rows:
        v = read_video(folder / r["scored"])                            # uint8 (t, h, w, 3)
        if batch and (len(batch) == batch_size or v.shape != batch[0][1].shape):    # one size per batch
            flush()
        batch.append((r, v))
    flush()
    return {"rows": rows, "seconds": seconds}


def _values(rows, key):
    """The distinct values of a prompts.jsonl field over a folder's rows, as one table cell ('-' if none)."""
    vals = list(dict.fromkeys(str(r[key]) for r in rows if r.get(key) is not None))
    return ", ".join(vals) if vals else "-"


def real_table(results, names):
    """{method: evaluate_real's entry} -> the markdown table, one row per method."""
    fmt = lambda m: "-" if m["mean"] is None else f"{m['mean']:.4f}" + ("" if m["se"] is None else f" ± {m['se']:.4f}")
    head = (f"| method | checkpoint | steps | guidance | videos | {names['image']} (mean ± SE) | "
            f"{names['video']} (mean ± SE) | s / video (sampling) |\n|---|---|---|---|---|---|---|---|\n")
    rows = [f"| {m} | {r['ckpt']} | {r['steps']} | {r['guidance']} | {r['videos']} | {fmt(r['hps'])} | "
            f"{fmt(r['video'])} | {'-' if r['s_per_video'] is None else format(r['s_per_video'], '.3g')} |"
            for m, r in results.items()]
    return head + "\n".join(rows) + "\n"


def evaluate_real(folders, rewards, out, batch_size=8):
    """folders: {method: sample folder}; rewards: load_real_rewards' dict -> {method: {'videos', 'hps': {'mean',
    'se'}, 'video': {...}, 'ckpt', 'steps', 'guidance', 's_per_video', 'score_seconds', 'per_video'}}. Prints the
    table and writes it to OUT/real_eval.md, everything (per-video scores too) to OUT/real_eval.json (-2, -3, ...
    when taken: nothing is overwritten)."""
    checked = {m: sample_rows(d) for m, d in folders.items()}        # every folder checked before any scoring
    results = {}
    for m, d in folders.items():
        scored = score_folder(d, rewards, batch_size, checked[m])
        rows = scored["rows"]
        secs = [r["seconds_per_video"] for r in rows if r.get("seconds_per_video") is not None]
        results[m] = {"folder": str(d), "videos": len(rows), "ckpt": _values(rows, "ckpt"),
                      "steps": _values(rows, "steps"), "guidance": _values(rows, "guidance"),
                      "s_per_video": float(np.mean(secs)) if secs else None,
                      **{k: dict(zip(("mean", "se"), mean_se([r[k] for r in rows if k in r])))
                         for k in ("hps", "video")},
                      "score_seconds": scored["seconds"],
                      "per_video": [{"file": r["scored"], **{k: r.get(k) for k in ("prompt", "seed", "hps", "video")}}
                                    for r in rows]}
        print(f"scored {m}: {len(rows)} videos from {d}", flush=True)
    names = rewards["names"]
    md = real_table(results, names) + (
        f"\nMean ± standard error over videos (SE = sample standard deviation / sqrt(n)). Raw cosines (no x100). "
        f"{names['image']}: every frame of a video against its prompt, averaged over the frames. {names['video']}: "
        f"{VIDEO_SCORE_FRAMES} frames at stride T // {VIDEO_SCORE_FRAMES} from frame 0, one fixed 224 x 224 crop. "
        f"Each model's own preprocessing (evaluate.py: score_batch), on each video's MP4 where prompts.jsonl lists "
        f"one, else its GIF.\n")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem, n = "real_eval", 2
    while (out / f"{stem}.md").exists() or (out / f"{stem}.json").exists():
        stem, n = f"real_eval-{n}", n + 1
    (out / f"{stem}.md").write_text(md)
    (out / f"{stem}.json").write_text(json.dumps({"rewards": names, "methods": results}, indent=1))
    print(md)
    print(f"wrote {out / stem}.md and .json")
    return results


def sample_methods(ckpts, prompts, out, num_per_prompt=1, seed=1000, device="cpu", batch_size=8, dtype="fp32"):
    """Each checkpoint samples every prompt with sample.py, at its own default steps and guidance (its meta: 50-step
    DDIM + CFG for a teacher, 4 consistency steps at its w for a T2V-Turbo student) and from the SAME seeds (seed + i
    for video i), into OUT/samples/<method> -> {method: folder}. Same seeds: the methods start from the same noise."""
    folders = {}
    for m, ckpt in method_names(ckpts).items():
        d = Path(out) / "samples" / m
        sample.main(["--ckpt", str(ckpt), "--prompts", str(prompts), "--num-per-prompt", str(num_per_prompt),
                     "--seed", str(seed), "--out", str(d), "--device", device, "--batch-size", str(batch_size),
                     "--dtype", dtype, "--mp4", "--quiet"])                # MP4s to score (video_file)
        folders[m] = d
    return folders


REAL_REWARD_FLAGS = ("hps", "viclip", "internvideo2")


def is_real(args):
    """The real-model mode: any of its flags given (otherwise the toy evaluator runs, as before)."""
    return any(getattr(args, f) for f in ("prompts", "samples", "bert_vocab") + REAL_REWARD_FLAGS)


def check_real_args(args, error):
    """One line for every bad input of the real-model evaluation, before anything is sampled, loaded or written.
    Fills in args.methods ({method: checkpoint or folder}) and the resolved reward file paths."""
    check_real_flags(args, error)
    defaults = {"num_per_prompt": 1, "batch_size": 8, "dtype": "fp32"}     # None in the parser: the toy refuses them
    for k, v in defaults.items():
        setattr(args, k, v if getattr(args, k) is None else getattr(args, k))
    if args.num_per_prompt < 1 or args.batch_size < 1:
        error("--num-per-prompt and --batch-size must be >= 1")
    args.device = check_device(args.device, error)
    out = Path(args.out or REAL_OUT)
    if args.samples:
        if args.ckpt:
            error("--ckpt goes with --prompts; --samples folders are already sampled")
        args.methods = method_names(args.samples, name=lambda p: p.resolve().name)
        for d in args.methods.values():
            try:
                sample_rows(d)
            except (ValueError, OSError) as e:
                error(f"--samples {one_line(e)}")
        return
    if not Path(args.prompts).is_file():
        error(f"--prompts {args.prompts}: no such file")
    try:
        if not read_prompts(args.prompts):
            error(f"--prompts {args.prompts} has no captions (blank lines and '#' comments are skipped)")
    except (OSError, UnicodeDecodeError) as e:
        error(f"--prompts {args.prompts}: cannot read it as a text file ({type(e).__name__})")
    if not args.ckpt:
        error("--prompts samples every --ckpt: give --ckpt FILE (repeatable, one method each)")
    args.methods = method_names([find_checkpoint(c, error) for c in args.ckpt])
    for m in args.methods:
        if (out / "samples" / m / "prompts.jsonl").exists():
            error(f"{out / 'samples' / m} holds samples already: score them with --samples, or give a new --out")


def check_real_flags(args, error):
    """The real mode's flags: which go together, and the reward files they name (a folder: the file in it)."""
    if args.table or args.train or args.tune_guidance:
        error("--table/--train/--tune-guidance are the toy table's; the real-model evaluation takes --prompts FILE "
              "--ckpt ... or --samples DIR")
    if args.steps is not None or args.guidance is not None:
        error("--steps/--guidance: with --prompts every checkpoint samples at its own defaults; for other settings "
              "sample with sample.py and score the folders with --samples")
    if not (args.prompts or args.samples):
        error("--hps/--viclip/--internvideo2 score real videos: give --prompts FILE with --ckpt (sample each, then "
              "score), or --samples DIR (folders sample.py wrote)")
    if args.prompts and args.samples:
        error("give --prompts FILE (sample each --ckpt, then score) or --samples DIR (score those), not both")
    if not any(getattr(args, f) for f in REAL_REWARD_FLAGS):
        error("real-model evaluation needs the real reward models: --hps HPS_v2.1_compressed.pt and/or --viclip "
              "ViClip-InternVid-10M-FLT.pth (or --internvideo2 FILE --bert-vocab FILE); the toy rewards never score "
              "real video")
    if args.internvideo2 and args.viclip:
        error("--internvideo2 takes the place of --viclip: give one video reward")
    if args.bert_vocab and not args.internvideo2:
        error("--bert-vocab goes with --internvideo2")
    if args.internvideo2 and not (args.bert_vocab and find_vocab(args.bert_vocab, must=False)):
        error("--internvideo2 needs --bert-vocab (bert-large-uncased's vocab.txt or its Hugging Face folder)"
              + (f": none at {args.bert_vocab}" if args.bert_vocab else ""))
    for flag in REAL_REWARD_FLAGS:                      # a PATH is the file or a folder holding it (an HF snapshot)
        given = getattr(args, flag)
        if given:
            path = find_file(given, RELEASE_FILES[flag])
            if not path.is_file():
                error(f"--{flag.replace('_', '-')} {given}: no such file (nor {RELEASE_FILES[flag]} in it)")
            setattr(args, flag, str(path))


def real_main(args):
    """The real-model evaluation, its inputs checked: sample (with --prompts), then load the rewards, then score.
    The reward models load after sampling, so the sampler's memory is free again."""
    out = Path(args.out or REAL_OUT)
    if args.prompts:
        folders = sample_methods(list(args.methods.values()), args.prompts, out, args.num_per_prompt, args.seed,
                                 args.device, args.batch_size, args.dtype)
    else:
        folders = args.methods
    try:
        rewards = load_real_rewards(args.hps, args.viclip, args.internvideo2, args.bert_vocab, args.device)
    except ValueError as e:
        kept = f" (the samples are kept in {out / 'samples'}: score them with --samples)" if args.prompts else ""
        raise SystemExit(f"evaluate.py: {one_line(e)}{kept}") from None
    return evaluate_real(folders, rewards, out, args.batch_size)


def check_args(args, error):
    """One line for every bad input, before anything is sampled or written."""
    if args.per_seen < 0 or args.per_heldout < 0 or args.per_seen + args.per_heldout == 0:
        error("--per-seen and --per-heldout must be >= 0, and not both 0")
    if args.steps is not None and args.steps < 1:
        error("--steps must be >= 1")
    if args.num_per_prompt is not None or args.batch_size is not None or args.dtype is not None:
        error("--num-per-prompt/--batch-size/--dtype go with the real-model evaluation (--prompts or --samples)")
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
            error(f"--toy-models {args.toy_models}: no {missing[0]}.safetensors there (python prepare_toy.py writes "
                  f"the folder)")
    else:
        if args.ckpt and len(args.ckpt) > 1:
            error("the toy evaluator judges one --ckpt (several go with --prompts FILE and the real reward models)")
        args.ckpt = find_checkpoint(args.ckpt[0] if args.ckpt else TOY_CKPT, error)


TOY_CKPT = "runs/toy/turbo.safetensors"     # the toy evaluator's --ckpt default


def main(argv=None):
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", action="append", help=f"a checkpoint to judge (default {TOY_CKPT}); with --prompts: "
                   "repeatable, one method each")
    p.add_argument("--out", default=None, help="sample folder (default: beside the checkpoint, eval_<name>); real "
                   f"models: the folder for samples/<method> and real_eval.md / .json (default {REAL_OUT})")
    p.add_argument("--per-seen", type=int, default=1, help="videos per training caption")
    p.add_argument("--per-heldout", type=int, default=8, help="videos per held-out caption")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--seed", type=int, default=1000, help="evaluation seeds differ from train.py's quick look")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda")
    p.add_argument("--table", metavar="RUN_DIR", help="evaluate the teacher and every student in RUN_DIR, write "
                   "RUN_DIR/results.md")
    p.add_argument("--toy-models", default=str(TOY_MODELS), help="with --table: the teacher and reward models "
                   "(prepare_toy.py's folder; default: the shipped ones)")
    p.add_argument("--train", action="store_true", help="with --table: first train (train.py) every student of "
                   "the table that RUN_DIR lacks: T2V-Turbo, VCM, each reward alone")
    p.add_argument("--tune-guidance", action="store_true", help="with --table: sample each checkpoint at its own "
                   "best guidance, picked on validation seeds (RUN_DIR/guidance.json); default: its stored default")
    # the real-model evaluation (module docstring): its flags switch it on
    p.add_argument("--prompts", help="real models: a caption file; every --ckpt samples it, then the videos are "
                   "scored")
    p.add_argument("--samples", nargs="+", metavar="DIR", help="real models: score these sample folders (sample.py's, "
                   "with prompts.jsonl) instead of sampling; one method each")
    p.add_argument("--hps", help="real models: HPS_v2.1_compressed.pt (or its Hugging Face folder), the image score")
    p.add_argument("--viclip", help="real models: ViClip-InternVid-10M-FLT.pth (or its folder), the video score")
    p.add_argument("--internvideo2", help="real models: InternVideo2-stage2_1b-224p-f4.pt, the video score instead "
                   "of ViCLIP (needs --bert-vocab)")
    p.add_argument("--bert-vocab", help="real models, with --internvideo2: bert-large-uncased's vocab.txt or folder")
    p.add_argument("--num-per-prompt", type=int, help="real models, with --prompts: videos per caption (default 1)")
    p.add_argument("--batch-size", type=int, help="real models: videos per sampling batch and per reward call "
                   "(default 8)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="real models, with --prompts: the sampler's "
                   "dtype (default fp32; the rewards score in fp32)")
    args = p.parse_args(argv)
    if is_real(args):
        check_real_args(args, p.error)
        return real_main(args)
    check_args(args, p.error)
    if args.table:
        if args.train:
            train_missing(args.table, args.toy_models)
        return table(args.table, args.toy_models, args.per_seen, args.per_heldout, args.device, tune=args.tune_guidance)
    ckpt = Path(args.ckpt)
    out = Path(args.out or ckpt.parent / f"eval_{ckpt.stem}")
    res = evaluate(ckpt, out, args.per_seen, args.per_heldout, args.steps, args.guidance, args.seed, args.device)
    for split, r in res.items():
        print(f"{split:8s} n={r['n']:4d}  all three right {r['all']:.3f}  (colour {r['colour']:.3f}, "
              f"shape {r['shape']:.3f}, direction {r['direction']:.3f})  {r['seconds_per_video']:.3f} s/video")
    (out / "results.json").write_text(json.dumps(res, indent=1))
    print(f"wrote {out / 'results.json'}")
    return res


if __name__ == "__main__":
    run_cli(main)
