"""Sample videos from a checkpoint and write them the way every evaluation here reads them.

A teacher checkpoint samples with 50-step DDIM and classifier-free guidance (turbo.py, Part 1). Each video is seeded
on its own (seed + index), so the same seed gives the same video whatever the batch.

Writes DIR/{prompt-slug}-{i}.gif (and .mp4 with --mp4), DIR/prompts.jsonl (one {"file", "prompt", "seed",
"steps"} a line: what evaluate.py and toy.py --judge read) and DIR/grid.gif, every video side by side for a quick look.

    python sample.py --prompt "a red circle moving left" --num-per-prompt 4      # the student train.py wrote
    python sample.py --ckpt assets/toy/teacher.safetensors --prompts assets/toy/prompts_heldout.txt --out samples
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import turbo
from checkpoint import load_models, resolve_device
from videoio import read_prompts, save_grid, save_video, slug, to_uint8


def sampler_settings(meta, steps=None, guidance=None):
    """-> (is_student, steps, guidance) with a checkpoint's defaults filled in."""
    if meta.get("kind") == "turbo":
        return True, steps or meta["train"].get("turbo_sample_steps", 4), \
            meta["train"].get("turbo_w", 7.5) if guidance is None else guidance
    return False, steps or 50, meta["train"].get("guidance", 5.0) if guidance is None else guidance


@torch.no_grad()
def generate(models, prompts, seeds, steps=None, guidance=None, device="cpu", batch_size=16, progress=True):
    """-> uint8 (n, t, h, w, 3) videos, one per (prompt, seed). A teacher samples with DDIM + CFG (default 50
    steps, `guidance` = CFG scale); a T2V-Turbo student with the multistep consistency sampler (default 4 steps,
    `guidance` = the w fed to its embedding, no CFG)."""
    unet, text, ae, meta = models["unet"], models["text"], models["ae"], models["meta"]
    frames = meta["train"]["frames"]
    f = 2 ** (len(ae.config.ch_mult) - 1)                  # the first stage's downsampling factor
    height = meta["train"].get("height") or meta["train"]["size"]
    width = meta["train"].get("width") or meta["train"]["size"]
    abar = turbo.schedule(unet.config).to(device)   # VC2's, or the toy teacher's zero-terminal-SNR variant
    fps = meta["train"].get("fps", 16)
    student, steps, guidance = sampler_settings(meta, steps, guidance)
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
            z0 = turbo.consistency_sample(unet, noise, context, fps, abar, steps=steps, w=guidance, generator=gens)
        else:
            uncond = text.encode_text([""] * len(ps))      # the empty caption, VC2's unconditional embedding
            z0 = turbo.ddim_sample(unet, noise, context, uncond, fps, abar, steps=steps, guidance=guidance)
        out.append(to_uint8(ae.decode(z0).float()))        # (b, c, t, h, w) latents -> uint8 (b, t, h, w, 3)
    return np.concatenate(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="runs/toy", help="a checkpoint written by train.py or convert.py, or its "
                   "folder (then turbo.safetensors if present, else teacher.safetensors)")
    p.add_argument("--prompt", action="append", help="a caption (repeatable)")
    p.add_argument("--prompts", help="a file with one caption a line")
    p.add_argument("--num-per-prompt", type=int, default=1)
    p.add_argument("--steps", type=int, default=None, help="default: 50 (teacher, DDIM) or 4 (student)")
    p.add_argument("--guidance", type=float, default=None,
                   help="teacher: CFG scale (VC2 convention); student: w of its embedding; default from ckpt")
    p.add_argument("--seed", type=int, default=0, help="video i of the run uses seed + i")
    p.add_argument("--out", default="samples")
    p.add_argument("--mp4", action="store_true", help="also write MP4 (needs imageio-ffmpeg)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="weights and sampling dtype")
    p.add_argument("--vbench", action="store_true", help="VBench naming: {prompt}-{i}.mp4 (MP4 only)")
    p.add_argument("--fps-out", type=int, default=8, help="frame rate of the written files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    prompts = list(args.prompt or [])
    if args.prompts:
        prompts += read_prompts(args.prompts)
    if not prompts:
        p.error("give --prompt TEXT or --prompts FILE")
    if args.num_per_prompt < 1 or (args.steps is not None and args.steps < 1):
        p.error("--num-per-prompt and --steps must be >= 1")
    ckpt = Path(args.ckpt)
    if ckpt.is_dir():  # a run or converted folder: prefer the student
        ckpt = next((ckpt / n for n in ("turbo.safetensors", "teacher.safetensors") if (ckpt / n).exists()), ckpt)
    args.device = resolve_device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    models = load_models(ckpt, args.device, dtype=dtype)
    _, steps, _ = sampler_settings(models["meta"], args.steps, args.guidance)
    jobs = [(pr, k) for pr in prompts for k in range(args.num_per_prompt)]
    seeds = [args.seed + i for i in range(len(jobs))]
    t0 = time.time()
    videos = generate(models, [j[0] for j in jobs], seeds, args.steps, args.guidance, args.device,
                      args.batch_size, progress=not args.quiet)
    dt = time.time() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "prompts.jsonl", "w") as f:
        for (prompt, k), seed, video in zip(jobs, seeds, videos):
            if args.vbench:  # VBench reads videos named by their full prompt
                name = f"{prompt}-{k}.mp4"
            else:
                name = f"{slug(prompt)}-{k}.gif"
                if args.mp4:
                    save_video(video, out / f"{slug(prompt)}-{k}.mp4", args.fps_out)
            save_video(video, out / name, args.fps_out)
            f.write(json.dumps({"file": name, "prompt": prompt, "seed": seed, "steps": steps}) + "\n")
    save_grid(videos[:64], out / "grid.gif", ncol=min(8, len(videos)))
    print(f"wrote {len(videos)} videos to {out}/ ({dt / len(videos):.3f} s per video), grid at {out}/grid.gif")


if __name__ == "__main__":
    main()
