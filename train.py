"""Train everything on the toy world, on a CPU, in minutes:  python train.py

The default run has these stages, each skipped when its checkpoint already exists (--fresh redoes them):
    1. teacher       a tiny VC2-structured 3D UNet + a tiny OpenCLIP-style text tower, trained jointly with the
                     eps-prediction loss (turbo.py Part 0) and 10% caption dropout for classifier-free guidance
The teacher plays VideoCrafter2's role: T2V-Turbo starts from a trained teacher and never updates it. The toy's
first stage is pixel space behind the autoencoder's interface (encoders.py: 32 x 32 frames -> 48 x 8 x 8 latents
by 4 x 4 space-to-depth), so nothing needs training there; VC2's is the SD KL-f8 autoencoder.

    python train.py                                  # all stages into runs/toy/
    python train.py --out runs/quick --teacher-steps 200      # a smoke run
    python train.py --help                           # every config field is a flag
"""

import argparse
import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import turbo
from checkpoint import load_models, model_meta, read_checkpoint, save_checkpoint
from encoders import PixelFirstStage, TextEncoder, toy_pixels, toy_text
from tiny_unet3d import UNet3D
from tiny_unet3d import toy as toy_unet
from toy import ToyWorld, split_captions


@dataclass
class Config:
    out: str = "runs/toy"          # where checkpoints and pictures go
    seed: int = 0
    device: str = "cpu"
    threads: int = 0               # torch CPU threads; 0 = torch's default (all cores)
    fresh: bool = False            # redo stages whose checkpoint exists
    # the world (../shared/toy/SPEC.md)
    size: int = 32                 # frame side, pixels
    frames: int = 8
    fps: int = 16                  # fps condition fed to the UNet; VC2 and T2V-Turbo always use 16
    # stage 1: teacher
    teacher_steps: int = 3000
    teacher_batch: int = 32        # clips per step
    teacher_lr: float = 1e-3
    warmup: int = 100              # linear lr warm-up steps, then cosine decay to 10%
    caption_dropout: float = 0.1   # share of captions replaced by "" (classifier-free guidance training)
    ema_decay: float = 0.995       # the saved teacher is the EMA of its weights
    guidance: float = 5.0          # default CFG scale for sampling the teacher (VC2 convention, 1 = none)


def toy():
    """The embedded default: everything on the moving-shapes world, CPU, minutes."""
    return Config()


PRESETS = {"toy": toy}


def parse_config(argv=None):
    """--preset NAME picks a preset function; every Config field is then a --flag that overrides it."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="toy", choices=sorted(PRESETS))
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool or f.type == "bool":
            p.add_argument(flag, action="store_true", default=None)
        else:
            p.add_argument(flag, type=type(f.default), default=None)
    args = vars(p.parse_args(argv))
    cfg = PRESETS[args.pop("preset")]()
    cfg = dataclasses.replace(cfg, **{k: v for k, v in args.items() if v is not None})
    for name in ("teacher_steps", "teacher_batch", "size", "frames"):
        if getattr(cfg, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 <= cfg.caption_dropout < 1:
        p.error("--caption-dropout must be in [0, 1)")
    return cfg


def lr_at(step, total, base, warmup):
    """Linear warm-up, then cosine decay to 10% of base."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


@torch.no_grad()
def ema_update(ema, model, decay):
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1 - decay)


# ----------------------------------------------------------------------------------------------------------------
# Stage 1: the teacher (plays VideoCrafter2)


def train_teacher(cfg, ae):
    torch.manual_seed(cfg.seed)
    world = ToyWorld(size=cfg.size, frames=cfg.frames, seed=cfg.seed + 1)
    unet_cfg = dataclasses.replace(toy_unet(), in_channels=ae.config.embed_dim, out_channels=ae.config.embed_dim,
                                   temporal_length=cfg.frames)
    text_cfg = toy_text()
    unet_cfg = dataclasses.replace(unet_cfg, context_dim=text_cfg.width)
    unet, text = UNet3D(unet_cfg).to(cfg.device).train(), TextEncoder(text_cfg).to(cfg.device).train()
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text).eval()
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.teacher_lr, weight_decay=0.0)
    abar = turbo.vc2_alphas_cumprod().to(cfg.device)
    gen = torch.Generator(cfg.device).manual_seed(cfg.seed)
    n_unet = sum(p.numel() for p in unet.parameters())
    n_text = sum(p.numel() for p in text.parameters())
    print(f"teacher: UNet {n_unet:,} params, text tower {n_text:,} params")
    bar = tqdm(range(cfg.teacher_steps), desc="stage 1/1: teacher")
    losses = []
    for step in bar:
        video, caps = world.batch(cfg.teacher_batch)
        caps = [("" if r < cfg.caption_dropout else c) for c, r in zip(caps, np.random.rand(len(caps)))]
        with torch.no_grad():
            z0 = ae.encode(video.to(cfg.device))                               # (b, 48, t, h/4, w/4)
        context = text.encode_text(caps)                                      # (b, L, d), trained jointly
        loss = turbo.diffusion_loss(unet, z0, context, cfg.fps, abar, generator=gen)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.teacher_steps, cfg.teacher_lr, cfg.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))                   # short runs: warm the EMA up
        ema_update(ema_unet, unet, decay)
        ema_update(ema_text, text, decay)
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    return ema_unet, ema_text, {"final_loss": float(np.mean(losses[-100:]))}


def main(argv=None):
    cfg = parse_config(argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    train_meta = dataclasses.asdict(cfg)

    ae = PixelFirstStage(toy_pixels())                 # the first stage: frozen, no weights

    teacher_path = out / "teacher.safetensors"
    if teacher_path.exists() and not cfg.fresh:
        print(f"stage 1/1: reusing {teacher_path}")
    else:
        t0 = time.time()
        unet, text, stats = train_teacher(cfg, ae)
        meta = model_meta(unet, text, ae, kind="teacher", train=train_meta, stats=stats,
                          seconds=time.time() - t0)
        save_checkpoint(teacher_path, {"unet": unet, "text": text, "ae": ae}, meta)
        print(f"wrote {teacher_path} ({time.time() - t0:.0f} s)")
        from sample import generate, save_grid
        models = load_models(teacher_path, cfg.device)
        prompts = split_captions("train")[:4] + split_captions("heldout")[:4]
        videos = generate(models, prompts, list(range(len(prompts))), steps=50, device=cfg.device)
        save_grid(videos, out / "teacher_samples.gif", ncol=4, scale=3)
        print(f"wrote {out / 'teacher_samples.gif'} (top row: training captions, bottom row: held-out captions)")


if __name__ == "__main__":
    main()
