"""Prepare the toy world's pre-trained models, once: the toy's counterpart of downloading VideoCrafter2, HPSv2.1
and ViCLIP (like nanoGPT's prepare.py). T2V-Turbo never trains its teacher or its reward models; it starts from
pre-trained ones. So does the toy: the models this script writes ship in toy/assets/, and `python train.py` (the
paper's method, Algorithm 1) starts from them.

    python -m toy.prepare                          # -> runs/prepared/ (about 50 minutes on 2 cores)
    python -m toy.prepare --resume                 # after a kill: goes on from the newest saved state
    python train.py --toy-models runs/prepared     # distil from what it wrote instead of the shipped models

What it trains, in order (each stage writes one file into --out; with --resume a finished file is kept):
    1. first stage    a linear autoencoder on 4 x 4 patches, fitted by PCA in a second (plays VC2's KL-f8 VAE):
                      32 x 32 frames -> 8 x 8 x 8 latents (encoders.LinearAutoencoder)
    2. text tower     OpenCLIP-structured (encoders.TextEncoder), pre-trained contrastively against a tiny video
                      tower on the training captions, then frozen (plays VC2's frozen OpenCLIP ViT-H-14 text tower)
    3. teacher        the toy 3D UNet (tiny_unet3d.toy_unet: VC2's structure, 32 channels) trained with the diffusion
                      loss (toy/diffusion.py) and 10% caption dropout for classifier-free guidance; its EMA is
                      saved (teacher.safetensors, plays VideoCrafter2)
    4. reward models  a tiny CLIP (image-text, plays HPSv2.1) and a tiny ViCLIP (video-text, plays ViCLIP /
                      InternVideo2), trained contrastively on the training captions (train_toy_reward)
Then the three files are written in fp16 (--dtype), with the command, the recipe and the teacher's measured judge
and rewards in their metadata (python -m machinery.checkpoint FILE prints it).

Where the toy teacher departs from VC2, and why (RESULTS.md has the measurements):
  - v-prediction on a zero-terminal-SNR schedule (Lin et al. 2024). On VC2's schedule (abar_999 = 0.0047) a toy
    teacher reads the motion from the signal left in the noise and never learns the direction word;
  - VC1's relative temporal positions, and transformers at both UNet levels (without attention at the 8 x 8
    level the shapes stay poor);
  - half of the clips draw t from [800, 960) (--t-band, --band-share): on that schedule the caption decides the
    motion there, and uniform t gives that band 16% of the clips. The idea of P2 weighting (Choi et al. 2022) and
    SD3's timestep sampling (Esser et al. 2024): spend the loss where the content is decided.
"""

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors import safe_open
from tqdm import tqdm

import turbo
from encoders import LinearAutoencoder, TextConfig, TextEncoder, first_stage_from_config, toy_linear_ae, toy_text
from machinery.checkpoint import (load_models, model_meta, read_checkpoint, read_meta, save_checkpoint, save_reward,
                                  save_tensors)
from machinery.cli import check_fields, check_numbers, cli_config, run_cli
from machinery.loop import (Progress, accumulate, autocast_for, check_in_sync, check_optim, clipped, lr_at,
                            make_optimizer, resume, save_if_due, set_lr, setup_processes, skip_step, state_paths,
                            step_draws)
from rewards import toy_image_reward, toy_video_reward
from tiny_unet3d import UNet3D, toy_unet
from toy import diffusion
from toy.evaluate import compare_line, toy_comparison
from toy.world import (COLOURS, DIRECTIONS, SHAPES, ToyWorld, caption, frames_problem, parse_caption,
                       render_clip, split_captions, to_tensor)


@dataclass
class Config:
    out: str = "runs/prepared"     # where the prepared models go (toy/assets/ holds the shipped ones)
    seed: int = 0                  # every random draw of every stage derives from it
    device: str = "auto"           # auto (CUDA when available, else CPU), cpu, cuda
    threads: int = 0               # torch CPU threads; 0 = torch's default (all cores)
    resume: bool = False           # keep finished stages' files and go on from the newest saved state
    size: int = 32                 # frame side, pixels
    frames: int = 8                # frames per clip
    fps: int = 16                  # the fps condition (VC2 and T2V-Turbo always use 16)
    latent_channels: int = 8       # the first stage: principal components kept of the 48 values of a 4x4 patch
    # the text tower
    text_steps: int = 500          # contrastive pre-training steps against a tiny video tower
    text_batch: int = 64           # captions per contrastive batch
    text_lr: float = 2e-3          # AdamW lr, warm-up then cosine
    # the teacher
    teacher_steps: int = 4000      # optimizer steps of the teacher
    teacher_batch: int = 16        # clips per step and process
    teacher_lr: float = 1e-3       # AdamW lr, warm-up then cosine to 10%
    warmup: int = 100              # linear lr warm-up steps (at most a tenth of a stage), then cosine decay to 10%
    lr_schedule: str = "cosine"    # after the warm-up: cosine decay to 10% (loop.lr_at)
    caption_dropout: float = 0.1   # share of captions replaced by "" (classifier-free guidance training)
    t_band: str = "800,960"        # "lo,hi": a share of the clips draws t from [lo, hi) ("" = uniform t, as VC2)
    band_share: float = 0.5        # ... that share
    ema_decay: float = 0.995       # the saved teacher is the EMA of its weights
    temporal_dropout: float = 0.1  # dropout in the UNet's temporal convs while training (VC2 hard-codes 0.1)
    guidance: float = 5.0          # the CFG scale the teacher samples at (written into its metadata)
    # the reward models
    reward_steps: int = 0          # 0 = train_toy_reward's defaults (image 500, video 600)
    # the files
    dtype: str = "fp16"            # fp16, bf16 or fp32: the precision the finished models are written in
    eval_per_caption: int = 2      # teacher videos per caption for the metadata's judge and rewards (0: none)
    # what the loop's pieces read (machinery/loop.py: the plumbing both scripts share)
    grad_accum: int = 1            # micro-batches per optimizer step
    max_grad_norm: float = 1.0     # gradient clipping
    precision: str = "fp32"        # "bf16": bf16 autocast (where the device is fast at it)
    optim: str = "adamw"           # "adamw8bit": bitsandbytes' 8-bit AdamW, if installed
    save_every: int = 100          # steps between resumable states (OUT/teacher.state-<step>.safetensors)
    keep: int = 2                  # resumable states kept (older ones are deleted)
    max_bad_steps: int = 10        # consecutive non-finite steps before the run stops
    val_every: int = 0             # (unused by the teacher: its samples are measured at the end)


def check_config(cfg, error):
    """Every bad value gets one line (error(message) exits)."""
    check_fields(cfg, error, ("teacher_steps", "teacher_batch", "text_batch", "size", "frames", "save_every", "keep"),
                 {"dtype": tuple(DTYPES)})
    if cfg.text_steps < 0 or cfg.reward_steps < 0 or cfg.eval_per_caption < 0:
        error("--text-steps, --reward-steps and --eval-per-caption must be >= 0")
    if not 0 <= cfg.caption_dropout < 1:
        error("--caption-dropout must be in [0, 1)")
    if cfg.t_band:
        try:
            lo, hi = band(cfg)
        except ValueError:
            error("--t-band must be 'lo,hi', two timesteps, e.g. 800,960 (or '' for uniform t)")
        if not 0 <= lo < hi <= 1000:
            error("--t-band needs 0 <= lo < hi <= 1000")
    if not 0 <= cfg.band_share <= 1:
        error("--band-share must be in [0, 1]")
    check_numbers(cfg, error, {"text_lr": "(0, inf)", "teacher_lr": "(0, inf)", "ema_decay": "[0, 1)",
                               "temporal_dropout": "[0, 1)", "guidance": "[0, inf)", "max_grad_norm": "(0, inf)",
                               "warmup": "[0, inf)", "max_bad_steps": "[1, inf)"})   # (floats: finite, cli_config)
    if problem := frames_problem(cfg.frames, cfg.size):  # else the teacher stage's first clip fails in render_clip
        error(problem)
    check_optim(cfg, error)


DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def band(cfg):
    """--t-band "lo,hi" -> (lo, hi), or None."""
    lo, hi = (int(x) for x in cfg.t_band.split(","))
    return lo, hi


# ----------------------------------------------------------------------------------------------------------------
# Stages 1-2: the first stage and the text tower (VC2: SD's KL-f8 VAE and OpenCLIP's text tower, both frozen)


def fit_first_stage(cfg, run):
    """PCA of 4 x 4 patches of training clips (held-out captions never seen), whitened: a second on a CPU."""
    ae = LinearAutoencoder(dataclasses.replace(toy_linear_ae(), latent_channels=cfg.latent_channels))
    kept = ae.fit(ToyWorld(size=cfg.size, frames=cfg.frames, seed=cfg.seed + 3).batch(512)[0])
    if run.main:
        print(f"first stage: PCA of 4x4 patches keeps {ae.config.latent_channels} of 48 dims, {kept:.1%} of the "
              f"variance")
    return ae.to(run.device).eval()


def pretrain_text(cfg, run):
    """VC2 conditions on a *frozen* OpenCLIP text tower that contrastive pre-training taught to tell captions apart.
    The toy does the same: our OpenCLIP-structured TextEncoder (its pooled EOT feature) and a tiny ViCLIP video
    tower (thrown away afterwards) trained with CLIP's InfoNCE on toy clips of the training captions. Trained
    jointly with the UNet instead, the text tower gets almost no gradient for the direction words: "left" and
    "right" stay nearly the same vector and the teacher never learns direction (RESULTS.md)."""
    torch.manual_seed(cfg.seed)
    text, video_tower = TextEncoder(toy_text()).train(), toy_video_reward().requires_grad_(True).train()
    params = list(text.parameters()) + list(video_tower.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.text_lr, weight_decay=0.0)
    rng, captions = np.random.default_rng(cfg.seed + 4), split_captions("train")
    bar = tqdm(range(cfg.text_steps), desc="text tower", disable=not run.main)
    for step in bar:
        idx = rng.choice(len(captions), size=cfg.text_batch, replace=cfg.text_batch > len(captions))
        caps = [captions[i] for i in idx]
        feats = video_tower.encode_videos(render_captions(caps, rng))                        # (b, d)
        loss = contrastive_loss(feats, text.pooled(text.tokenize(caps)), 1 / video_tower.viclip.temp,
                                torch.from_numpy(idx))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.text_steps, cfg.text_lr, max(1, cfg.text_steps // 20))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            video_tower.viclip.temp.clamp_(min=0.01)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return text.eval().requires_grad_(False).to(run.device)


def text_and_first_stage(cfg, run, out):
    """-> (text tower, first stage), from OUT/text_ae.safetensors when --resume finds it, else trained and saved
    there (so a resumed teacher conditions on exactly the tower it started with)."""
    path = out / "text_ae.safetensors"
    if cfg.resume and path.exists():
        tensors, meta = read_checkpoint(path)
        text, ae = TextEncoder(TextConfig(**meta["text"])), first_stage_from_config(meta["ae"])
        for name, m in (("text", text), ("ae", ae)):
            m.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
        print(f"text tower and first stage: reusing {path}")
        return text.to(run.device).eval().requires_grad_(False), ae.to(run.device).eval()
    ae = fit_first_stage(cfg, run)
    text = pretrain_text(cfg, run)
    if run.main:
        save_checkpoint(path, {"text": text, "ae": ae},
                        {"text": dataclasses.asdict(text.config), "ae": dataclasses.asdict(ae.config), "kind": "text"})
    return text, ae


# ----------------------------------------------------------------------------------------------------------------
# Stage 3: the teacher (plays VideoCrafter2)


def train_teacher(cfg, run, ae, text):
    """The toy teacher: diffusion.diffusion_loss on toy clips, 10% of captions dropped (CFG), the frozen text tower.
    -> (EMA UNet, stats). Everything random in step k is drawn from generators seeded by (seed, "teacher", k)
    (machinery/loop.py: step_draws), so --resume replays exactly what the killed run would have done."""
    torch.manual_seed(cfg.seed)
    data = ToyWorld(size=cfg.size, frames=cfg.frames, seed=cfg.seed + 1)
    # the toy teacher's UNet (where it departs from VC2's: the module docstring), sized to this run's first stage,
    # clip length and text tower (with the defaults: exactly toy_unet())
    unet_cfg = dataclasses.replace(toy_unet(), in_channels=ae.config.embed_dim, out_channels=ae.config.embed_dim,
                                   temporal_length=cfg.frames, temporal_dropout=cfg.temporal_dropout,
                                   context_dim=text.config.width)
    unet = UNet3D(unet_cfg).to(run.device).train()
    ema_unet = UNet3D(unet_cfg).to(run.device).eval().requires_grad_(False)
    ema_unet.load_state_dict(unet.state_dict())
    unet_d = torch.nn.parallel.DistributedDataParallel(unet) if run.world > 1 else unet
    abar = turbo.diffusion_of(unet_cfg, run.device)[0]
    b, t_band = cfg.teacher_batch, band(cfg) if cfg.t_band else None
    if run.main:
        print(f"teacher: UNet {sum(p.numel() for p in unet.parameters()):,} params, {run.world} process(es) x {b} "
              f"clips, {cfg.teacher_steps} steps")

    def micro_step(step, micro):
        rng, gen, B, rows = step_draws(cfg, run, "teacher", step, micro, b)
        video, caps = data.batch(B, rng, rows)                                  # this process's b clips
        drop = rng.random(B)[rows.start:rows.stop] < cfg.caption_dropout
        caps = ["" if d else c for c, d in zip(caps, drop)]                     # CFG training: 10% unconditional
        with torch.no_grad():
            z0 = ae.encode(video.to(run.device))                                # (b, c, t, h, w)
            context = text(text.tokenize(caps).to(run.device))                  # (b, L, d)
        t = len(abar) - 1 - (torch.rand(B, generator=gen) * len(abar)).long()  # (B,) uniform over 0..999
        noise = torch.randn((B, *z0.shape[1:]), generator=gen)[rows.start:rows.stop]
        if t_band:  # the noise levels where the caption decides the motion get a share of the clips
            in_band = torch.rand(B, generator=gen) < cfg.band_share
            t = torch.where(in_band, t_band[0] + (torch.rand(B, generator=gen) * (t_band[1] - t_band[0])).long(), t)
        loss = diffusion.diffusion_loss(unet_d, z0, context, cfg.fps, abar, unet_cfg.prediction,
                                        t=t[rows.start:rows.stop], noise=noise)
        return loss, {}

    # the teacher's own loop, from the pieces train.py's Algorithm 1 uses (machinery/loop.py)
    params, modules, steps = list(unet.parameters()), {"unet": unet, "ema_unet": ema_unet}, cfg.teacher_steps
    opt = make_optimizer(cfg, params, cfg.teacher_lr)
    start, logs, bad = resume(cfg, run, "teacher", steps, modules, opt)
    progress = Progress(cfg, run, "teacher", start, steps, b)
    for step in progress:
        set_lr(opt, cfg, step, steps, cfg.teacher_lr)
        opt.zero_grad(set_to_none=True)
        ok, step_logs = accumulate(cfg, run, partial(micro_step, step), [unet_d] if run.world > 1 else [],
                                   autocast_for(cfg, run))
        if not clipped(ok, params, cfg.max_grad_norm):
            skip_step(cfg, opt, "teacher", step, bad)
            continue
        bad["in_a_row"] = 0
        opt.step()
        # the saved teacher is the EMA; short runs warm the rate up
        turbo.ema_update(ema_unet.parameters(), params, min(cfg.ema_decay, (1 + step) / (10 + step)))
        progress.log(step, step_logs, logs, bad)
        save_if_due(cfg, run, "teacher", step + 1, steps, modules, opt, logs, bad)
    check_in_sync(run, unet, "teacher")
    return ema_unet, {"final_loss": float(np.mean([l["loss"] for l in logs[-100:]])) if logs else None,
                      "bad_steps": bad["steps"], "log": logs}


# ----------------------------------------------------------------------------------------------------------------
# Stage 4: the reward models (play HPSv2.1 and ViCLIP): CLIP-style contrastive training on toy clips of the
# training captions only


def contrastive_loss(features, text_features, logit_scale, ids=None):
    """CLIP's symmetric InfoNCE: mean of the image->text and text->image cross-entropies of
    logit_scale · cos(features_i, text_j). `ids` (n,) marks which rows share a caption: all pairs with equal ids
    are positives (soft targets spread evenly over them), so duplicate captions in a batch are not negatives."""
    # cosine similarities times the learned inverse temperature, as the reward's score (which omits the scale)
    a, t = F.normalize(features, dim=-1), F.normalize(text_features, dim=-1)
    logits = logit_scale * a @ t.T                             # (n, n)
    if ids is None:
        ids = torch.arange(a.shape[0], device=a.device)
    pos = (ids[:, None] == ids[None, :]).float()               # (n, n), symmetric, diagonal is 1
    # with all ids distinct the targets are the identity and this is exactly CLIP's cross-entropy on arange(n)
    targets = pos / pos.sum(1, keepdim=True)
    loss_a = -(targets * logits.log_softmax(dim=1)).sum(1).mean()      # each clip picks its caption(s)
    loss_t = -(targets * logits.T.log_softmax(dim=1)).sum(1).mean()    # each caption picks its clip(s)
    return (loss_a + loss_t) / 2


def render_captions(captions, rng):
    """list of captions -> video (n, 3, 8, 32, 32) in [0, 1], the range the rewards take (the decoder's output
    (x + 1) / 2, as T2V-Turbo feeds its rewards)."""
    return (to_tensor([render_clip(*parse_caption(c), rng) for c in captions]) + 1) / 2


def train_toy_reward(model_kind, steps=None, batch=None, lr=2e-3, seed=0, captions=None, log_every=0):
    """Trains toy_image_reward() ('image') or toy_video_reward() ('video') with contrastive_loss on freshly rendered
    clips of `captions` (default: the 76 training captions; held-out ones are refused). A batch holds distinct
    captions while there are enough, so every caption's one-attribute neighbours are usually in-batch negatives.
    The image model sees ONE random frame per clip. -> (frozen reward module, stats dict)."""
    captions = list(captions if captions is not None else split_captions("train"))
    leaked = sorted(set(captions) & set(split_captions("heldout")))
    if leaked:
        raise ValueError(f"held-out captions must never train a reward model: {leaked}")
    # (steps, batch) measured on 1 thread of a busy 2-core machine: image ~50 s, video ~110 s (half with 2 threads).
    # The image loss cannot go below ~log 3.4: a single frame shows no motion, so the ~3.4 captions of a batch that
    # differ only in direction look alike to it (it still learns colour and shape perfectly).
    defaults = {"image": (500, 64), "video": (600, 64)}[model_kind]
    steps, batch = steps or defaults[0], batch or defaults[1]
    torch.manual_seed(seed)                                    # the model's init
    rng = np.random.default_rng(seed)                          # the data: captions, start positions, frames
    reward = toy_image_reward() if model_kind == "image" else toy_video_reward()
    reward.requires_grad_(True).train()                        # reward modules come frozen; unfreeze to train
    opt = torch.optim.AdamW(reward.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(            # linear warm-up over 5%, then cosine decay to 0
        opt, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    replace = batch > len(captions)                            # more clips than captions: duplicates are unavoidable
    losses, t0 = [], time.time()
    for step in range(steps):
        # 1. a batch of captions (distinct when possible) and a fresh clip for each: nothing is seen twice
        idx = rng.choice(len(captions), size=batch, replace=replace)
        caps = [captions[i] for i in idx]
        video = render_captions(caps, rng)                             # (b, 3, 8, 32, 32) in [0, 1]
        # 2. features with gradients for BOTH towers (the reward's forward would freeze the text side)
        if model_kind == "image":
            t_idx = torch.from_numpy(rng.integers(0, video.shape[2], batch))         # one random frame per clip
            feats = reward.encode_images(video[torch.arange(batch), :, t_idx])      # frames (b, 3, 32, 32) -> (b, d)
            scale = reward.clip.logit_scale.exp()              # open_clip stores log(1 / temperature)
        else:
            feats = reward.encode_videos(video)                # (b, d)
            scale = 1 / reward.viclip.temp                     # ViCLIP stores the temperature: logits = cos / temp
        # 3. symmetric InfoNCE; rows with the same caption index are positives of each other
        loss = contrastive_loss(feats, reward.encode_texts(caps), scale, torch.from_numpy(idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():                                  # the originals clamp in place: CLIP at scale 100,
            if model_kind == "image":                          # ViCLIP at temp_min = 0.01 (the same bound)
                reward.clip.logit_scale.clamp_(max=math.log(100))
            else:
                reward.viclip.temp.clamp_(min=0.01)
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"{model_kind} step {step:4d} loss {loss.item():.3f} scale {scale.item():.1f} "
                  f"{time.time() - t0:.0f}s")
    reward.requires_grad_(False).eval()
    stats = {"kind": model_kind, "steps": steps, "batch": batch, "lr": lr, "seed": seed,
             "n_captions": len(captions), "first_loss": losses[0], "final_loss": float(np.mean(losses[-20:])),
             "losses": losses, "seconds": time.time() - t0, "threads": torch.get_num_threads(),
             "params": sum(p.numel() for p in reward.parameters())}
    return reward, stats


def one_attribute_neighbours(text):
    """caption -> {'colour': [...], 'shape': [...], 'direction': [...]}: every caption differing in exactly that."""
    c, s, d = parse_caption(text)
    return {"colour": [caption(x, s, d) for x in COLOURS if x != c],
            "shape": [caption(c, x, d) for x in SHAPES if x != s],
            "direction": [caption(c, s, x) for x in DIRECTIONS if x != d]}


@torch.no_grad()
def discrimination(reward, kind, captions, n_clips=256, seed=0):
    """For n_clips clips of `captions` (cycled evenly), the share whose own caption scores above EVERY caption that
    differs from it in exactly one attribute: per attribute and 'all' (any neighbour). Neighbours range over all
    84 captions. The image reward scores each clip as the mean over its 8 frames; it cannot see motion, so its
    'direction' is None and its 'all' covers colour and shape only."""
    rng = np.random.default_rng(seed)
    caps = [captions[i % len(captions)] for i in range(n_clips)]          # every caption equally often
    attrs = ["colour", "shape"] + (["direction"] if kind == "video" else [])
    # the texts to score: each clip's caption and its one-attribute neighbours (6 colours, 2 shapes, 3 directions)
    vocab = sorted({n for c in set(caps) for a in attrs for n in one_attribute_neighbours(c)[a]} | set(caps))
    col = {c: i for i, c in enumerate(vocab)}
    txt = reward.encode_texts(vocab)                           # (V, d), normalised
    wins = {a: 0 for a in attrs + ["all"]}
    for i in range(0, n_clips, 64):                            # chunks of 64 clips
        chunk = caps[i:i + 64]
        video = render_captions(chunk, rng)                            # (b, 3, 8, 32, 32)
        if kind == "image":
            b, c, t, h, w = video.shape
            f = reward.encode_images(rearrange(video, "b c t h w -> (b t) c h w"))   # (b*t, d)
            s = (f @ txt.T).view(b, t, -1).mean(1)             # (b, V): mean cosine over frames, as J_img's mean
        else:
            s = reward.encode_videos(video) @ txt.T            # (b, V) cosines
        for row, cap in zip(s, chunk):
            own, nb = row[col[cap]], one_attribute_neighbours(cap)
            # strictly above every neighbour of that attribute: a tie (e.g. a collapsed model) counts as a loss
            beats = {a: bool((own > row[[col[x] for x in nb[a]]]).all()) for a in attrs}
            for a in attrs:
                wins[a] += beats[a]
            wins["all"] += all(beats.values())
    out = {a: wins[a] / n_clips for a in wins}
    out.setdefault("direction", None)
    return {"n": n_clips, **out}


def train_rewards(cfg, out):
    """The tiny CLIP and ViCLIP, trained contrastively on the training captions -> {kind: path}."""
    paths = {}
    for kind in ("image", "video"):
        path = paths[kind] = out / f"reward_{kind}.safetensors"
        if cfg.resume and path.exists():
            print(f"reward models: reusing {path}")
            continue
        model, stats = train_toy_reward(kind, steps=cfg.reward_steps or None, seed=cfg.seed)
        for split in ("train", "heldout"):
            stats[f"discrimination_{split}"] = discrimination(model, kind, split_captions(split), n_clips=128,
                                                              seed=cfg.seed + 9)
        save_reward(path, model, {k: v for k, v in stats.items() if k != "losses"})
        d = stats["discrimination_train"], stats["discrimination_heldout"]
        print(f"wrote {path} ({stats['seconds']:.0f} s): its own caption beats every one-attribute neighbour on "
              f"{d[0]['all']:.2f} of seen-caption clips, {d[1]['all']:.2f} of held-out ones")
    return paths


# ----------------------------------------------------------------------------------------------------------------
# The finished files: fp16, with the command and the teacher's measured quality in their metadata


def cast_file(path, dtype, extra):
    """Rewrites a safetensors file with its floating tensors in `dtype` and `extra` merged into each JSON entry
    of its metadata (the teacher's 't2v_turbo', a reward model's 'reward')."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    meta = {k: json.dumps({**json.loads(v), **extra}) for k, v in meta.items()}
    save_tensors(path, tensors, meta)


def cast_already(path):
    """True when cast_file has written its recipe (the command) into the file's metadata."""
    with safe_open(str(path), "pt") as f:
        return any("command" in json.loads(v) for v in (f.metadata() or {}).values())


def main(argv=None):
    cfg = cli_config(Config, argv, __doc__, check_config)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = setup_processes(cfg)
    out = Path(cfg.out)
    if run.main:
        out.mkdir(parents=True, exist_ok=True)
    command = "python -m toy.prepare " + " ".join(sys.argv[1:] if argv is None else argv)
    t0 = time.time()
    text, ae = text_and_first_stage(cfg, run, out)
    t_text = time.time() - t0
    teacher_path = out / "teacher.safetensors"
    kept = cfg.resume and teacher_path.exists()
    if kept:
        print(f"teacher: reusing {teacher_path}")
    else:
        unet, stats = train_teacher(cfg, run, ae, text)
    if run.main and not kept:
        meta = model_meta(unet, text, ae, kind="teacher", stats=stats, seconds=time.time() - t0,
                          train={**dataclasses.asdict(cfg), "height": cfg.size, "width": cfg.size})
        save_checkpoint(teacher_path, {"unet": unet, "text": text, "ae": ae}, meta)
        for p in state_paths(out, "teacher"):
            p.unlink()
        print(f"wrote {teacher_path} (text tower {t_text:.0f} s, teacher {time.time() - t0 - t_text:.0f} s)")
    if run.world > 1:
        return  # the reward models and the measurement are one process's work
    paths = train_rewards(cfg, out)
    recipe = {"command": command, "minutes": round((time.time() - t0) / 60, 1)}
    # the shipped precision: measure the teacher as it will be used, after the cast. A file that --resume kept
    # was cast by the run that wrote it (its metadata holds the command) and stays as it is
    for path in (teacher_path, *paths.values()):
        if not cast_already(path):
            cast_file(path, DTYPES[cfg.dtype], recipe)
    if cfg.eval_per_caption and "quality" not in read_meta(teacher_path):
        models = load_models(teacher_path, run.device, dtype=torch.float32)
        quality = toy_comparison({"teacher": models}, out, run.device, per_caption=cfg.eval_per_caption,
                                 grid=out / "teacher_samples.gif")["teacher"]
        cast_file(teacher_path, DTYPES[cfg.dtype], {"quality": quality})
        print(f"teacher (50 steps, CFG {cfg.guidance:g}): " + compare_line({"teacher": quality}))
    print(f"done in {(time.time() - t0) / 60:.1f} minutes: python train.py --toy-models {out}")


if __name__ == "__main__":
    run_cli(main)
