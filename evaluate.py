"""The toy world's evaluator: sample a checkpoint on seen and held-out captions and judge every video by pixels.

For each caption set it writes the samples exactly as `sample.py` does (a folder with prompts.jsonl) and scores
them with toy.judge: a video counts as correct when its colour, shape and direction all match the caption.
The seen set is the 76 training captions, the held-out set the 8 captions no model ever saw in training.

    python evaluate.py --ckpt runs/toy/teacher.safetensors                  # 76 x 1 seen + 8 x 8 held out
    python evaluate.py --ckpt runs/toy/teacher.safetensors --per-seen 2 --per-heldout 16 --out runs/toy/eval
    python evaluate.py --table runs/toy        # teacher, VCM and T2V-Turbo found there -> runs/toy/results.md
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import sample
from toy import judge_dir, split_captions


def evaluate(ckpt, out, per_seen=1, per_heldout=8, steps=None, guidance=None, seed=1000, device="cpu"):
    """-> {'seen': {...}, 'heldout': {...}} with the shares of correct videos and seconds per video."""
    results = {}
    for split, per in (("seen", per_seen), ("heldout", per_heldout)):
        if per == 0:
            continue
        caps = split_captions("train" if split == "seen" else "heldout")
        d = Path(out) / split
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
def reward_scores(sample_dirs, run_dir):
    """Mean toy image reward (over all 8 frames) and video reward of the videos in sample_dirs, each scored with
    its own caption, using the reward models saved in run_dir (None where a model is missing)."""
    from rewards import load_reward
    import imageio.v3 as iio
    videos, caps = [], []
    for d in sample_dirs:
        for line in (Path(d) / "prompts.jsonl").read_text().splitlines():
            r = json.loads(line)
            videos.append(np.asarray(iio.imread(Path(d) / r["file"], index=None))[..., :3])
            caps.append(r["prompt"])
    video = torch.from_numpy(np.stack(videos)).permute(0, 4, 1, 2, 3).float() / 255    # (n, 3, t, h, w) in [0, 1]
    out = {}
    for kind in ("image", "video"):
        path = Path(run_dir) / f"reward_{kind}.safetensors"
        if not path.exists():
            out[kind] = None
            continue
        model = load_reward(path)[0]
        if kind == "image":
            n, c, t = video.shape[:3]
            frames = video.transpose(1, 2).flatten(0, 1)                                  # (n t, 3, h, w)
            out[kind] = float(model(frames, caps).view(n, t).mean())
        else:
            out[kind] = float(model(video, caps, generator=torch.Generator().manual_seed(0)).mean())
    return out


def table(run_dir, per_seen=1, per_heldout=8, device="cpu"):
    """Evaluates every checkpoint of a run folder (teacher 50-step CFG, then each student at 4 steps) and writes
    run_dir/results.md: method | steps | UNet evaluations per video | s/video | seen | held out."""
    run_dir = Path(run_dir)
    rows = []
    for name, label in (("teacher", "teacher (DDIM + CFG)"), ("vcm", "VCM (no reward)"),
                        ("turbo_image", "T2V-Turbo, image reward only"), ("turbo_video", "T2V-Turbo, video reward only"),
                        ("turbo", "T2V-Turbo (image + video reward)")):
        ckpt = run_dir / f"{name}.safetensors"
        if not ckpt.exists():
            continue
        steps = 50 if name == "teacher" else 4
        res = evaluate(ckpt, run_dir / f"eval_{name}", per_seen, per_heldout, steps, device=device)
        evals = 2 * steps if name == "teacher" else steps
        rw = reward_scores([run_dir / f"eval_{name}" / s for s in res], run_dir)
        fmt = lambda v: "-" if v is None else f"{v:.3f}"
        rows.append(f"| {label} | {steps} | {evals} | {res['seen']['seconds_per_video']:.3f} | {fmt(rw['image'])} | "
                    f"{fmt(rw['video'])} | {res['seen']['all']:.3f} | {res['heldout']['all']:.3f} |")
        (run_dir / f"eval_{name}" / "results.json").write_text(json.dumps({**res, "rewards": rw}, indent=1))
        print(rows[-1], flush=True)
    md = ("| method | steps | UNet evaluations / video | s / video (CPU) | image reward | video reward | "
          "judge: seen captions | judge: held-out captions |\n|---|---|---|---|---|---|---|---|\n"
          + "\n".join(rows) + "\n")
    (run_dir / "results.md").write_text(md)
    print(md)
    return md


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="runs/toy/teacher.safetensors")
    p.add_argument("--out", default=None, help="sample folder (default: beside the checkpoint, eval_<name>)")
    p.add_argument("--per-seen", type=int, default=1, help="videos per training caption")
    p.add_argument("--per-heldout", type=int, default=8, help="videos per held-out caption")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--seed", type=int, default=1000, help="evaluation seeds differ from train.py's quick look")
    p.add_argument("--device", default="cpu")
    p.add_argument("--table", metavar="RUN_DIR", help="evaluate every checkpoint in RUN_DIR, write results.md")
    args = p.parse_args(argv)
    if args.table:
        return table(args.table, args.per_seen, args.per_heldout, args.device)
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
    main()
