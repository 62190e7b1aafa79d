"""Train everything on the toy world, on a CPU, in minutes:  python train.py

The default run has these stages, each skipped when its checkpoint already exists (--fresh redoes them):
    1. teacher        a tiny VC2-structured 3D UNet + a tiny OpenCLIP-style text tower, trained jointly with the
                      eps-prediction loss (turbo.py Part 0) and 10% caption dropout for classifier-free guidance
    2. reward models  a tiny CLIP (image-text, stands in for HPSv2.1) and a tiny ViCLIP (video-text), trained
                      contrastively on the training captions (rewards.py)
    3. student        T2V-Turbo: consistency distillation from the frozen teacher (turbo.py Part 2) plus the mixed
                      reward feedback on the single-step prediction (Part 4, eq. 10); --rewards none gives VCM
The teacher plays VideoCrafter2's role: T2V-Turbo starts from a trained teacher and never updates it. Before it,
the toy's first stage (VC2: SD's KL-f8 autoencoder) is fitted in closed form: a linear autoencoder on 4 x 4 patches
(PCA, encoders.LinearAutoencoder): 32 x 32 frames -> 16 x 8 x 8 latents, in a second.

    python train.py                                  # all stages into runs/toy/
    python train.py --rewards none                   # the VCM baseline (runs/toy/vcm.safetensors), same teacher
    python train.py --out runs/quick --teacher-steps 200 --turbo-steps 50 --reward-steps 50   # a smoke run
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
from tqdm import tqdm

import turbo
from checkpoint import load_models, model_meta, save_checkpoint
from lora import add_lora, merge_lora
from encoders import LinearAutoencoder, TextEncoder, toy_linear_ae, toy_text
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
    teacher_steps: int = 1500
    teacher_batch: int = 16        # clips per step
    teacher_lr: float = 1e-3
    warmup: int = 100              # linear lr warm-up steps, then cosine decay to 10%
    caption_dropout: float = 0.1   # share of captions replaced by "" (classifier-free guidance training)
    ema_decay: float = 0.995       # the saved teacher is the EMA of its weights
    guidance: float = 5.0          # default CFG scale for sampling the teacher (VC2 convention, 1 = none)
    # stage 2: the T2V-Turbo student, consistency distillation (turbo.py Part 2, Algorithm 1)
    turbo_steps: int = 600
    turbo_batch: int = 8           # clips per step (the release: 1 video per GPU, 8 GPUs)
    turbo_lr: float = 1e-4         # the release uses 1e-5 on VC2; the toy is 1000x smaller and trains 15x shorter
    lora_rank: int = 0             # 0: fine-tune the whole student; the release trains rank-64 LoRA (lora.py)
    target: str = "ema"            # "ema": the paper's target network theta^- (eq. 6); "online": the released code's
    target_decay: float = 0.95     # mu, the EMA rate of theta^- (paper / LCM: 0.95)
    w_min: float = 5.0             # guidance scale w ~ U[w_min, w_max] per sample (paper Sec. 4)
    w_max: float = 15.0
    huber_c: float = 0.001         # pseudo-Huber c of the CD distance (release default)
    turbo_w: float = 7.5           # w used when sampling the student (release default)
    turbo_sample_steps: int = 4
    # mixed reward feedback (turbo.py Part 4, eq. 10); stage "reward models" trains the toy ones
    rewards: str = "image+video"   # which rewards the student maximises: image+video, image, video, or none (= VCM)
    beta_img: float = 1.0          # weight of J_img (paper, VC2)
    beta_vid: float = 2.0          # weight of J_vid (paper, VC2)
    reward_frames: int = 5         # M frames scored by the image reward (release 5; paper 6)
    reward_steps: int = 0          # toy reward-model training steps; 0 = rewards.train_toy_reward's defaults
    hps: str = ""                  # path to HPS_v2.1_compressed.pt: use the real image reward instead of the toy's
    viclip: str = ""               # path to ViClip-InternVid-10M-FLT.pth: use the real video reward


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
    if cfg.rewards not in ("image+video", "image", "video", "none"):
        p.error("--rewards must be image+video, image, video or none")
    if cfg.target not in ("ema", "online"):
        p.error("--target must be 'ema' (paper) or 'online' (released code)")
    if not 0 < cfg.w_min <= cfg.w_max:
        p.error("need 0 < --w-min <= --w-max")
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
    bar = tqdm(range(cfg.teacher_steps), desc="stage 1/3: teacher")
    losses = []
    for step in bar:
        video, caps = world.batch(cfg.teacher_batch)
        caps = [("" if r < cfg.caption_dropout else c) for c, r in zip(caps, world.rng.random(len(caps)))]
        with torch.no_grad():
            z0 = ae.encode(video.to(cfg.device))                               # (b, 16, t, h/4, w/4)
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


# ----------------------------------------------------------------------------------------------------------------
# Stage 2: the T2V-Turbo student, distilled from the frozen teacher


def make_student(teacher_unet, lora_rank):
    """Student = teacher + the w-embedding projection (zero-initialised: at step 0 it predicts exactly what the
    teacher predicts), optionally with LoRA on every Linear/Conv. Returns (student, trainable parameters)."""
    student = UNet3D(dataclasses.replace(teacher_unet.config, guidance_embed_dim=256))
    missing, unexpected = student.load_state_dict(teacher_unet.state_dict(), strict=False)
    assert missing == ["w_proj.weight"] and not unexpected, (missing, unexpected)
    if lora_rank:
        loras = add_lora(student, lora_rank)
        # w_proj is new, so it is trained in full (the release wraps a frozen *random* w_proj in LoRA and never
        # saves its base weight; ours starts at zero and is saved with the rest)
        student.w_proj.base.weight.requires_grad_(True)
        params = [p for l in loras for p in (l.down.weight, l.up.weight)] + [student.w_proj.base.weight]
    else:
        params = list(student.parameters())
    return student, params


def student_name(cfg):
    """turbo (both rewards), vcm (none: the paper's VCM baseline), or turbo_image / turbo_video (ablations)."""
    return {"image+video": "turbo", "none": "vcm"}.get(cfg.rewards, "turbo_" + cfg.rewards)


def train_turbo(cfg, teacher_path, image_reward=None, video_reward=None):
    torch.manual_seed(cfg.seed)
    models = load_models(teacher_path, cfg.device)                  # frozen, eval mode
    teacher, text, ae = models["unet"], models["text"], models["ae"]
    student, params = make_student(teacher, cfg.lora_rank)
    student.to(cfg.device).train()
    # the target network theta^-: an EMA copy (paper eq. 6), or the online student itself under no_grad (release)
    target = copy.deepcopy(student).eval().requires_grad_(False) if cfg.target == "ema" else student
    opt = torch.optim.AdamW(params, lr=cfg.turbo_lr, weight_decay=0.0)
    world = ToyWorld(size=cfg.size, frames=cfg.frames, seed=cfg.seed + 2)
    abar = turbo.vc2_alphas_cumprod().to(cfg.device)
    gen = torch.Generator(cfg.device).manual_seed(cfg.seed + 2)
    with torch.no_grad():
        uncond1 = text.encode_text([""])                             # (1, L, d): the empty caption
    n_train = sum(p.numel() for p in params)
    print(f"student: {n_train:,} trainable parameters ({'LoRA rank %d' % cfg.lora_rank if cfg.lora_rank else 'full'}),"
          f" target network: {cfg.target}")
    bar = tqdm(range(cfg.turbo_steps), desc=f"stage 3/3: {student_name(cfg)} student")
    logs = []
    for step in bar:
        video, caps = world.batch(cfg.turbo_batch)
        with torch.no_grad():
            z0 = ae.encode(video.to(cfg.device))                     # (b, c, t, h, w)
            context = text.encode_text(caps)                         # (b, L, d)
        uncond = uncond1.expand_as(context)
        loss_cd, f_theta, info = turbo.cd_loss(student, target, teacher, z0, context, uncond, cfg.fps, abar,
                                               cfg.w_min, cfg.w_max, cfg.huber_c, generator=gen)
        r = turbo.reward_terms(f_theta, ae, caps, image_reward, video_reward, cfg.reward_frames, generator=gen)
        loss = turbo.mixed_loss(loss_cd, r, cfg.beta_img, cfg.beta_vid)      # eq. 10
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.turbo_steps, cfg.turbo_lr, min(cfg.warmup, cfg.turbo_steps // 10))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if target is not student:
            ema_update(target, student, cfg.target_decay)           # theta^- <- mu theta^- + (1 - mu) theta
        logs.append({"loss": loss.item(), "cd": loss_cd.item(), **{k: v.mean().item() for k, v in r.items()}})
        if step % 10 == 0:
            recent = logs[-50:]
            bar.set_postfix({k: f"{np.mean([l[k] for l in recent]):.4f}" for k in recent[-1]})
    student.eval()
    if cfg.lora_rank:
        merge_lora(student)
    final = {k: float(np.mean([l[k] for l in logs[-100:]])) for k in logs[-1]}
    return student, text, ae, {"final": final, "log": logs}


# ----------------------------------------------------------------------------------------------------------------
# Stage 2: the reward models. T2V-Turbo uses HPSv2.1 (image-text) and InternVideo2 / ViCLIP (video-text); the toy
# trains a tiny CLIP and a tiny ViCLIP (the same classes, rewards.py) contrastively on the training captions.


def reward_models(cfg, out):
    """-> (image_reward or None, video_reward or None), training and saving the toy ones when needed."""
    from rewards import ImageTextReward, VideoTextReward, ViCLIP, discrimination, load_reward, load_viclip, \
        save_reward, train_toy_reward, viclip_l14
    want = set(cfg.rewards.split("+")) - {"none"}
    found = {}
    for kind in ("image", "video"):
        if kind not in want:
            continue
        real = cfg.hps if kind == "image" else cfg.viclip
        if real:
            found[kind] = (ImageTextReward.hpsv21(real) if kind == "image"
                           else VideoTextReward(load_viclip(ViCLIP(viclip_l14()), real)))
            print(f"stage 2/3: {kind} reward from {real}")
            continue
        path = out / f"reward_{kind}.safetensors"
        if path.exists() and not cfg.fresh:
            found[kind] = load_reward(path)[0]
            print(f"stage 2/3: reusing {path}")
            continue
        print(f"stage 2/3: training the toy {kind} reward model")
        model, stats = train_toy_reward(kind, steps=cfg.reward_steps or None, seed=cfg.seed)
        for split in ("train", "heldout"):
            stats[f"discrimination_{split}"] = discrimination(model, kind, split_captions(split), n_clips=128,
                                                              seed=cfg.seed + 9)
        save_reward(path, model, {k: v for k, v in stats.items() if k != "losses"})
        d = stats["discrimination_train"], stats["discrimination_heldout"]
        print(f"wrote {path} ({stats['seconds']:.0f} s): own caption beats every one-attribute neighbour on "
              f"{d[0]['all']:.2f} of seen-caption clips, {d[1]['all']:.2f} of held-out ones")
        found[kind] = model
    return tuple(found.get(k) for k in ("image", "video"))


def quick_look(ckpt, out_gif, device):
    """A GIF grid for a person: 4 training captions (top row) and 4 held-out ones (bottom row)."""
    from sample import generate, save_grid
    models = load_models(ckpt, device)
    prompts = split_captions("train")[:4] + split_captions("heldout")[:4]
    videos = generate(models, prompts, list(range(len(prompts))), device=device, progress=False)
    save_grid(videos, out_gif, ncol=4, scale=3)
    print(f"wrote {out_gif} (top row: training captions, bottom row: held-out captions)")


def main(argv=None):
    cfg = parse_config(argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    train_meta = dataclasses.asdict(cfg)

    # the first stage, fitted by PCA on training clips (held-out captions never seen); saved in every checkpoint
    ae = LinearAutoencoder(toy_linear_ae())
    kept = ae.fit(ToyWorld(size=cfg.size, frames=cfg.frames, seed=cfg.seed + 3).batch(512)[0])
    ae.to(cfg.device).eval()
    print(f"first stage: PCA of 4x4 patches keeps {ae.config.latent_channels} of 48 dims, {kept:.1%} of the variance")

    teacher_path = out / "teacher.safetensors"
    if teacher_path.exists() and not cfg.fresh:
        print(f"stage 1/3: reusing {teacher_path}")
    else:
        t0 = time.time()
        unet, text, stats = train_teacher(cfg, ae)
        meta = model_meta(unet, text, ae, kind="teacher", train=train_meta, stats=stats,
                          seconds=time.time() - t0)
        save_checkpoint(teacher_path, {"unet": unet, "text": text, "ae": ae}, meta)
        print(f"wrote {teacher_path} ({time.time() - t0:.0f} s)")
        quick_look(teacher_path, out / "teacher_samples.gif", cfg.device)

    turbo_path = out / f"{student_name(cfg)}.safetensors"
    if turbo_path.exists() and not cfg.fresh:
        print(f"stage 3/3: reusing {turbo_path}")
    else:
        image_reward, video_reward = reward_models(cfg, out)
        t0 = time.time()
        student, text, ae, stats = train_turbo(cfg, teacher_path, image_reward, video_reward)
        meta = model_meta(student, text, ae, kind="turbo", train=train_meta, stats=stats, seconds=time.time() - t0)
        save_checkpoint(turbo_path, {"unet": student, "text": text, "ae": ae}, meta)
        print(f"wrote {turbo_path} ({time.time() - t0:.0f} s)")
        quick_look(turbo_path, out / f"{student_name(cfg)}_samples.gif", cfg.device)


if __name__ == "__main__":
    main()
