"""Sample videos from a checkpoint and write them the way every evaluation here reads them.

A teacher samples with 50-step DDIM and classifier-free guidance (turbo.py Part 1), a T2V-Turbo student with 4
consistency steps at its w (Part 3); --teacher-sampler vc2 samples a teacher with VideoCrafter2's own DDIM instead
(vc2/ddim.py), the sampler VC2's published numbers come from. Each video is seeded on its own (seed + index): the
same seed gives the same video whatever the batch. Writes DIR/{prompt-slug}-{i}-seed{seed}.gif (.mp4 too with --mp4),
a GIF grid of the first 64 (DIR/grid.gif), and one line per video in DIR/prompts.jsonl ({"file", "files", "prompt",
"seed", "steps", "guidance", "ckpt", "seconds_per_video"}, a student's "origin_steps" too: what the evaluators and
toy/world.py --judge read); a taken name gets -2, -3, ...: nothing is overwritten. --vbench writes VBench's layout
instead: DIR/videos/{prompt}-{i}.mp4 and nothing else there, the folder VBench's --videos_path takes (it reads the
suffix off the first file it lists); a taken name is refused.

    python sample.py --prompt "a red circle moving left" --num-per-prompt 4      # the student train.py wrote
    python sample.py --ckpt toy/assets/teacher.safetensors --prompts toy/assets/prompts_heldout.txt --out samples
    python sample.py --ckpt weights/vc2 --prompts all_dimension.txt --num-per-prompt 5 --vbench --out runs/vbench
    python sample.py --ckpt weights/vc2/teacher.safetensors --teacher-sampler vc2 --prompts all_dimension.txt \
        --num-per-prompt 5 --vbench --out runs/vbench_vc2                     # VC2 as its own script samples it
"""

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import turbo
from machinery.checkpoint import find_checkpoint, load_models, read_meta
from machinery.cli import Parser, check_device, check_fields, check_numbers, one_line, run_cli
from machinery.videoio import read_prompts, save_grid, save_video, slug, to_uint8, unique_path
from ms.models import build_models
from vc2 import ddim as vc2_ddim


def sampler_settings(meta, steps=None, guidance=None):
    """-> (is_student, steps, guidance) with a checkpoint's defaults filled in."""
    if meta.get("kind") == "turbo":
        return True, steps or meta["train"].get("turbo_sample_steps", 4), \
            meta["train"].get("turbo_w", 7.5) if guidance is None else guidance
    return False, steps or 50, meta["train"].get("guidance", 5.0) if guidance is None else guidance


@torch.no_grad()
def generate(models, prompts, seeds, steps=None, guidance=None, device="cpu", batch_size=16, progress=True,
             origin_steps=50, teacher_sampler="release"):
    """-> uint8 (n, t, h, w, 3) videos, one per (prompt, seed). A teacher samples with DDIM + CFG (default 50
    steps, `guidance` = CFG scale): teacher_sampler "release" is turbo.ddim_sample (T2V-Turbo's grid, eta 0),
    "vc2" VideoCrafter2's own sampler (vc2/ddim.py: its grid, eta 1, scale_arr and fps 28 for a VC2 checkpoint;
    the z at abar_0 it ends on is decoded, as VC2 does). A T2V-Turbo student samples with the multistep
    consistency sampler (default 4 steps, `guidance` = the w fed to its embedding, no CFG; its steps picked from
    the `origin_steps` grid: 50, the grid it was distilled on, or 200, the release app's)."""
    unet, text, ae, meta = models["unet"], models["text"], models["ae"], models["meta"]
    frames = meta["train"]["frames"]
    f = 2 ** (len(ae.config.ch_mult) - 1)                  # the first stage's downsampling factor
    height = meta["train"].get("height") or meta["train"]["size"]
    width = meta["train"].get("width") or meta["train"]["size"]
    abar, split = turbo.diffusion_of(unet.config, device)   # VC2's, or the toy teacher's (v, zero terminal SNR)
    fps = meta["train"].get("fps", 16)
    student, steps, guidance = sampler_settings(meta, steps, guidance)
    if teacher_sampler not in ("release", "vc2") or (student and teacher_sampler == "vc2"):
        raise ValueError(f"teacher_sampler {teacher_sampler!r}: 'release' or 'vc2', and 'vc2' only for a teacher")
    vc2 = vc2_ddim.vc2_settings(meta) if teacher_sampler == "vc2" else None     # its scale_arr and fps
    out = []
    for i in tqdm(range(0, len(prompts), batch_size), desc=f"sampling ({steps} steps)", disable=not progress):
        ps, ss = prompts[i:i + batch_size], seeds[i:i + batch_size]
        # one CPU generator per video, seeded by that video's seed: its starting noise (and a student's re-injected
        # noise between steps) depends on nothing else, so a video is the same alone, in any batch, on any device
        gens = [torch.Generator().manual_seed(s) for s in ss]
        shape = (len(ps), unet.config.in_channels, frames, height // f, width // f)       # (b, c, t, h, w)
        noise = turbo.fresh_noise(shape, gens, device, next(unet.parameters()).dtype)
        context = text.encode_text(ps)                     # (b, L, d)
        if student:
            z0 = turbo.consistency_sample(unet, noise, context, fps, abar, steps=steps, w=guidance, generator=gens,
                                          origin_steps=origin_steps, split=split)
        else:
            uncond = text.encode_text([""] * len(ps))      # the empty caption, VC2's unconditional embedding
            if vc2:  # ends on z at abar_0, not x0_hat: VC2 decodes that z as it is
                z0 = vc2_ddim.vc2_ddim_sample(unet, noise, context, uncond, vc2["fps"], abar, steps, guidance,
                                              scale_arr=vc2["scale_arr"], generator=gens, split=split)
            else:
                z0 = turbo.ddim_sample(unet, noise, context, uncond, fps, abar, steps, guidance, split)
        out.append(to_uint8(ae.decode(z0).float()))        # (b, c, t, h, w) latents -> uint8 (b, t, h, w, 3)
    return np.concatenate(out)


def parse_args(argv=None):
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="runs/toy", help="a checkpoint written by train.py or vc2/convert.py, or its "
                   "folder (then turbo.safetensors if present, else teacher.safetensors)")
    p.add_argument("--prompt", action="append", help="a caption (repeatable)")
    p.add_argument("--prompts", help="a file with one caption a line ('#' comments and blank lines skipped)")
    p.add_argument("--num-per-prompt", type=int, default=1, help="videos per caption (default 1)")
    p.add_argument("--steps", type=int, default=None, help="default: 50 (teacher, DDIM) or 4 (student)")
    p.add_argument("--guidance", type=float, default=None,
                   help="teacher: CFG scale (VC2 convention); student: w of its embedding; default from ckpt")
    p.add_argument("--seed", type=int, default=0, help="video i of the run uses seed + i (default 0)")
    p.add_argument("--out", default="samples", help="folder for the videos and prompts.jsonl (default samples)")
    p.add_argument("--mp4", action="store_true", help="also write MP4 (needs imageio-ffmpeg)")
    p.add_argument("--batch-size", type=int, default=16, help="videos sampled at once (default 16)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="weights and sampling dtype")
    p.add_argument("--vbench", action="store_true", help="VBench's layout: OUT/videos/{prompt}-{i}.mp4 only (give "
                   "VBench --videos_path OUT/videos); prompts.jsonl and the grid stay in OUT")
    p.add_argument("--fps-out", type=int, default=None, help="frame rate of the written files (default: the "
                   "checkpoint's fps, 16 for VC2, T2V-Turbo and the toy, as the release writes them)")
    p.add_argument("--origin-steps", type=int, default=None, help="a student's steps are picked from this DDIM grid: "
                   "50 (default), the grid it was distilled on; 200, the release app's (4 steps: t = 999, 749, 499, "
                   "249)")
    p.add_argument("--teacher-sampler", choices=["release", "vc2"], default="release", help="a teacher's sampler: "
                   "release (default), DDIM on T2V-Turbo's grid 999..19 with eta 0 (turbo.py); vc2, VideoCrafter2's "
                   "own DDIM: grid 981..1, eta 1, scale_arr and fps 28 for a VC2 checkpoint (vc2/ddim.py)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    check_fields(args, p.error, ["num_per_prompt", "batch_size"] + [
        n for n in ("steps", "fps_out", "origin_steps") if getattr(args, n) is not None])
    check_numbers(args, p.error, {"guidance": "[0, inf)"})   # --guidance nan or inf: one line, not a NaN video
    if args.origin_steps and not (args.steps or 4) <= args.origin_steps <= turbo.NUM_TRAIN_TIMESTEPS:
        p.error(f"--origin-steps {args.origin_steps}: need --steps ({args.steps or 4}) <= it <= "
                f"{turbo.NUM_TRAIN_TIMESTEPS}")
    args.origin_steps = args.origin_steps or 50
    args.prompt_list = list(args.prompt or [])
    if args.prompts:
        if not Path(args.prompts).is_file():
            p.error(f"--prompts {args.prompts}: no such file")
        try:
            args.prompt_list += read_prompts(args.prompts)
        except (OSError, UnicodeDecodeError) as e:
            p.error(f"--prompts {args.prompts}: cannot read it as a text file ({type(e).__name__})")
        if not args.prompt_list:
            p.error(f"--prompts {args.prompts} has no captions (blank lines and '#' comments are skipped)")
    if not args.prompt_list:
        p.error("give --prompt TEXT or --prompts FILE")
    args.ckpt = find_checkpoint(args.ckpt, p.error)
    if args.teacher_sampler == "vc2":
        check_vc2_sampler(args, p.error)
    args.device = check_device(args.device, p.error)
    return args


def check_vc2_sampler(args, error):
    """--teacher-sampler vc2 is a teacher's sampler, on a grid some step counts push past t = 999 (vc2/ddim.py).
    args.ckpt is find_checkpoint's: a file whose metadata reads."""
    try:
        vc2_ddim.vc2_timesteps(args.steps or 50)
    except ValueError as e:
        error(f"--steps {args.steps} with --teacher-sampler vc2: {e}")
    if read_meta(args.ckpt).get("kind") == "turbo":
        error(f"--teacher-sampler vc2 samples a teacher, and {args.ckpt} is a T2V-Turbo student (4 consistency "
              f"steps): give the teacher's checkpoint (teacher.safetensors), or drop the flag")


VBENCH_DIR = "videos"  # --vbench: the MP4s alone in OUT/videos (VBench's --videos_path reads every file there)


def vbench_name(prompt, k):
    """VBench's name for video k of a prompt, under OUT: videos/{prompt}-{k}.mp4."""
    return f"{VBENCH_DIR}/{prompt}-{k}.mp4"


def write_videos(args, videos, jobs, seeds, steps, guidance, seconds, origin=None):
    """Every video under a name of its own, and one prompts.jsonl line each, appended: its files, prompt, seed, steps,
    guidance and checkpoint (a student's origin grid too; "teacher_sampler": "vc2" for VC2's own sampler)."""
    out = Path(args.out)
    (out / VBENCH_DIR if args.vbench else out).mkdir(parents=True, exist_ok=True)
    rows = []
    for (prompt, k), seed, video in zip(jobs, seeds, videos):
        if args.vbench:  # VBench reads videos named by their full prompt and index: refused rather than renamed
            names = [vbench_name(prompt, k)]
        else:
            first = unique_path(out / f"{slug(prompt)}-{k}-seed{seed}.gif")
            names = [first.name] + ([unique_path(first.with_suffix(".mp4")).name] if args.mp4 else [])
        for name in names:
            save_video(video, out / name, args.fps_out)
        rows.append({"file": names[0], "files": names, "prompt": prompt, "seed": seed, "steps": steps,
                     "guidance": guidance, "ckpt": str(args.ckpt), "seconds_per_video": seconds / len(videos),
                     **({"origin_steps": origin} if origin else {}),
                     **({"teacher_sampler": "vc2"} if args.teacher_sampler == "vc2" else {})})
    with open(out / "prompts.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    grid = unique_path(out / "grid.gif")
    save_grid(videos[:64], grid, ncol=min(8, len(videos)), fps=args.fps_out)
    return rows, grid


def main(argv=None):
    """-> the prompts.jsonl rows this run wrote."""
    args = parse_args(argv)
    jobs, counts = [], Counter()  # (prompt, its index among this run's videos of that prompt)
    for pr in args.prompt_list:
        jobs += [(pr, counts[pr] + k) for k in range(args.num_per_prompt)]
        counts[pr] += args.num_per_prompt
    if args.vbench:
        taken = [vbench_name(pr, k) for pr, k in jobs if (Path(args.out) / vbench_name(pr, k)).exists()]
        if taken:
            raise SystemExit(f"sample.py: {args.out}/{taken[0]} exists ({len(taken)} of the VBench names are taken): "
                             f"give a new --out")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    try:
        models = load_models(args.ckpt, args.device, dtype=dtype, build=build_models)   # any world's checkpoint
    except (ValueError, OSError) as e:
        raise SystemExit(f"sample.py: {args.ckpt} does not load: {one_line(e)}") from None
    student, steps, guidance = sampler_settings(models["meta"], args.steps, args.guidance)
    args.fps_out = args.fps_out or models["meta"]["train"].get("fps", 16)
    seeds = [args.seed + i for i in range(len(jobs))]
    t0 = time.time()
    videos = generate(models, [j[0] for j in jobs], seeds, args.steps, args.guidance, args.device,
                      args.batch_size, progress=not args.quiet, origin_steps=args.origin_steps,
                      teacher_sampler=args.teacher_sampler)
    rows, grid = write_videos(args, videos, jobs, seeds, steps, guidance, time.time() - t0,
                              args.origin_steps if student else None)
    print(f"wrote {len(videos)} videos to {args.out}/ ({rows[0]['seconds_per_video']:.3f} s per video), listed in "
          f"{args.out}/prompts.jsonl; grid at {grid}")
    return rows


if __name__ == "__main__":
    run_cli(main)
