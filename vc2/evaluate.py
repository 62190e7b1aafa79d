"""Real-model evaluation, the real-world counterpart of the toy table (python -m toy.evaluate --table).

No pixel judge exists for real video, so T2V-Turbo's own reward models are the measure: every checkpoint samples the
same prompts from the same seeds, at its own default steps and guidance, and every video is scored by HPSv2.1 and
ViCLIP (or InternVideo2), reported per method as mean +- standard error over videos in OUT/real_eval.md and .json.
Without --hps/--viclip/--internvideo2 files it refuses to run.

    python -m vc2.evaluate --prompts prompts.txt --ckpt weights/vc2/teacher.safetensors \
        --ckpt weights/vc2/turbo.safetensors --num-per-prompt 4 --hps HPS_v2.1_compressed.pt \
        --viclip ViClip-InternVid-10M-FLT.pth --out runs/real_eval     # samples in runs/real_eval/samples/<method>
    python -m vc2.evaluate --samples runs/real_eval/samples/* --hps ... --viclip ...    # folders sample.py wrote
    python -m vc2.evaluate --prompts prompts.txt --ckpt weights/vc2/teacher.safetensors --teacher-sampler vc2 \
        --hps HPS_v2.1_compressed.pt --out runs/real_eval_vc2        # the teacher as VC2's own script samples it

--teacher-sampler vc2 samples every teacher with VideoCrafter2's own DDIM (vc2/ddim.py) instead of T2V-Turbo's
(turbo.py), for a baseline comparable with VC2's published numbers; students sample as always.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import sample
from machinery import videoio
from machinery.checkpoint import find_checkpoint, read_meta
from machinery.cli import Parser, check_device, one_line, run_cli
from machinery.videoio import mean_se, read_prompts, read_video
from vc2.internvideo2 import find_vocab
from vc2.release import RELEASE_FILES, find_file, load_real_reward

# Which frames: HPSv2.1 is an image model, so a video's HPS score is the mean over ALL its frames (training scores 5
# random ones, which is noise an evaluation does not need); the video model sees the 8 frames training feeds it
# (eval_video_frames). Preprocessing is each reward model's own (rewards.py / vc2/internvideo2.py), never redone here.

REAL_OUT = "runs/real_eval"             # --out's default
VIDEO_SCORE_FRAMES = 8                  # ViCLIP-L/14 and InternVideo2 (as T2V-Turbo sets it up) take 8 frames


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
    not speed, are the point here. python -m benchmarks eval swaps the file readers for random full-size models."""
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
        out["image"] = build(hps, "HPSv2.1", lambda p: load_real_reward("image", p))
    video = internvideo2 if internvideo2 is not None else viclip
    if video is not None:
        out["video"] = build(video, out["names"]["video"], lambda p: load_real_reward(
            "video", p, internvideo2 is not None, bert_vocab, torch.float32))
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
    sampler = lambda r: "" if r.get("teacher_sampler", "-") == "-" else f" ({r['teacher_sampler']} DDIM)"
    rows = [f"| {m} | {r['ckpt']} | {r['steps']}{sampler(r)} | {r['guidance']} | {r['videos']} | {fmt(r['hps'])} | "
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
                      "teacher_sampler": _values(rows, "teacher_sampler"),
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
        f"Each model's own preprocessing (vc2/evaluate.py: score_batch), on each video's MP4 where prompts.jsonl lists "
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


def sample_methods(ckpts, prompts, out, num_per_prompt=1, seed=1000, device="cpu", batch_size=8, dtype="fp32",
                   teacher_sampler="release"):
    """Each checkpoint samples every prompt with sample.py, at its own default steps and guidance (its meta: 50-step
    DDIM + CFG for a teacher, 4 consistency steps at its w for a T2V-Turbo student) and from the SAME seeds (seed + i
    for video i), into OUT/samples/<method> -> {method: folder}. Same seeds: the methods start from the same noise.
    teacher_sampler "vc2": the teachers sample with VC2's own DDIM (sample.py --teacher-sampler vc2)."""
    folders = {}
    for m, ckpt in method_names(ckpts).items():
        d = Path(out) / "samples" / m
        teacher = _kind(ckpt) != "turbo"
        sample.main(["--ckpt", str(ckpt), "--prompts", str(prompts), "--num-per-prompt", str(num_per_prompt),
                     "--seed", str(seed), "--out", str(d), "--device", device, "--batch-size", str(batch_size),
                     "--dtype", dtype, "--mp4", "--quiet"]                 # MP4s to score (video_file)
                    + (["--teacher-sampler", teacher_sampler] if teacher else []))
        folders[m] = d
    return folders


REAL_REWARD_FLAGS = ("hps", "viclip", "internvideo2")


def check_real_args(args, error):
    """One line for every bad input of the real-model evaluation, before anything is sampled, loaded or written.
    Fills in args.methods ({method: checkpoint or folder}) and the resolved reward file paths."""
    check_real_flags(args, error)
    if args.num_per_prompt < 1 or args.batch_size < 1:
        error("--num-per-prompt and --batch-size must be >= 1")
    args.device = check_device(args.device, error)
    out = Path(args.out)
    if args.samples:
        if args.ckpt:
            error("--ckpt goes with --prompts; --samples folders are already sampled")
        if args.teacher_sampler != "release":
            error("--teacher-sampler goes with --prompts; --samples folders are already sampled")
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
    if args.teacher_sampler == "vc2":
        if all(_kind(c) == "turbo" for c in args.methods.values()):
            error("--teacher-sampler vc2 samples teachers, and every --ckpt is a T2V-Turbo student: give a teacher "
                  "(teacher.safetensors) too, or drop the flag")
    for m in args.methods:
        if (out / "samples" / m / "prompts.jsonl").exists():
            error(f"{out / 'samples' / m} holds samples already: score them with --samples, or give a new --out")


def _kind(ckpt):
    """A checkpoint's kind ('teacher', 'turbo', ...), or None when its meta does not read (sampling says why)."""
    try:
        return read_meta(ckpt).get("kind")
    except (ValueError, OSError):
        return None


def check_real_flags(args, error):
    """The real mode's flags: which go together, and the reward files they name (a folder: the file in it)."""
    if not (args.prompts or args.samples):
        error("give --prompts FILE with --ckpt (sample each, then score), or --samples DIR (folders sample.py "
              "wrote)")
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
    out = Path(args.out)
    if args.prompts:
        folders = sample_methods(list(args.methods.values()), args.prompts, out, args.num_per_prompt, args.seed,
                                 args.device, args.batch_size, args.dtype, args.teacher_sampler)
    else:
        folders = args.methods
    try:
        rewards = load_real_rewards(args.hps, args.viclip, args.internvideo2, args.bert_vocab, args.device)
    except ValueError as e:
        kept = f" (the samples are kept in {out / 'samples'}: score them with --samples)" if args.prompts else ""
        raise SystemExit(f"vc2.evaluate: {one_line(e)}{kept}") from None
    return evaluate_real(folders, rewards, out, args.batch_size)


def main(argv=None):
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", help="a caption file; every --ckpt samples it, then the videos are scored")
    p.add_argument("--ckpt", action="append", help="with --prompts: a checkpoint to sample (repeatable, one method "
                   "each)")
    p.add_argument("--samples", nargs="+", metavar="DIR", help="score these sample folders (sample.py's, with "
                   "prompts.jsonl) instead of sampling; one method each")
    p.add_argument("--hps", help="HPS_v2.1_compressed.pt (or its Hugging Face folder), the image score")
    p.add_argument("--viclip", help="ViClip-InternVid-10M-FLT.pth (or its folder), the video score")
    p.add_argument("--internvideo2", help="InternVideo2-stage2_1b-224p-f4.pt, the video score instead of ViCLIP "
                   "(needs --bert-vocab)")
    p.add_argument("--bert-vocab", help="with --internvideo2: bert-large-uncased's vocab.txt or its folder")
    p.add_argument("--out", default=REAL_OUT, help="the folder for samples/<method> and real_eval.md / .json")
    p.add_argument("--num-per-prompt", type=int, default=1, help="with --prompts: videos per caption")
    p.add_argument("--batch-size", type=int, default=8, help="videos per sampling batch and per reward call")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="with --prompts: the "
                   "sampler's dtype (the rewards score in fp32)")
    p.add_argument("--seed", type=int, default=1000, help="video i of a method starts from seed + i")
    p.add_argument("--teacher-sampler", choices=["release", "vc2"], default="release", help="with --prompts: how "
                   "every teacher samples: release (default), T2V-Turbo's DDIM (turbo.py); vc2, VideoCrafter2's own "
                   "(vc2/ddim.py); students sample as always")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda")
    args = p.parse_args(argv)
    check_real_args(args, p.error)
    return real_main(args)


if __name__ == "__main__":
    run_cli(main)
