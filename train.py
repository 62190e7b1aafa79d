"""Train everything on the toy world, on a CPU (about 70 minutes on 2 cores):  python train.py

The default run has these stages, each skipped when its checkpoint already exists (--fresh redoes them):
    1. teacher        a tiny OpenCLIP-style text tower, pre-trained contrastively and frozen (VC2's frozen OpenCLIP),
                      then a tiny VC2-structured 3D UNet trained with the diffusion loss (turbo.py Part 0; the toy
                      predicts v on a zero-terminal-SNR schedule where VC2 predicts eps: toy() says why) and
                      10% caption dropout for classifier-free guidance; on the toy, in two phases (train_teacher)
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
    torchrun --nproc_per_node=2 train.py --out runs/ddp      # the same on 2 processes (gloo on CPU, nccl on GPU)
    python train.py --resume ...                     # after a crash or kill: continue from the last saved state
    python train.py --out runs/toy_vd --teacher-init runs/toy_v/teacher.safetensors --teacher-t-band 800,960 \
        --teacher-band-share 1 --teacher-steps 900 --teacher-lr 3e-4 --teacher-band-steps 0   # go on training one
    python train.py --preset vc2_256 --data videos/ --captions videos.csv   # VideoCrafter2 on one GPU (README)
    python train.py --help                           # every config field is a flag

Processes, randomness and resuming (the plumbing section below). Everything random in training step k (which
clips, their noise, t, w, caption dropout, reward frames) is drawn from generators seeded by (seed, stage, k),
for the WHOLE batch of all processes; each process keeps its own rows. So N processes with batch b compute
exactly what one process with batch N*b would, and a resumed run replays exactly what the killed one would have
done: the step number is the RNG state and the data position. Only dropout inside the UNet (VC2's temporal
dropout) draws from the global RNG, seeded per (step, process).
"""

import argparse
import copy
import dataclasses
import json
import math
import os
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import turbo
from checkpoint import load_models, model_meta, read_meta, save_checkpoint, save_tensors
from encoders import LinearAutoencoder, TextEncoder, toy_linear_ae, toy_text
from lora import add_lora, merge_lora
from tiny_unet3d import UNet3D, UNetConfig
from tiny_unet3d import toy as toy_unet
from toy import ToyWorld, split_captions


@dataclass
class Config:
    out: str = "runs/toy"          # where checkpoints and pictures go
    seed: int = 0
    device: str = "cpu"            # cpu or cuda (under torchrun: each process takes cuda:LOCAL_RANK)
    threads: int = 0               # torch CPU threads; 0 = torch's default (all cores)
    fresh: bool = False            # redo stages whose checkpoint exists
    until: str = "student"         # the last stage to run: teacher, rewards or student
    # the data: the toy world (../shared/toy/SPEC.md), or a folder of videos with a caption file (data.py)
    data: str = ""                 # folder of videos; "" = the toy world
    captions: str = ""             # CSV or JSONL naming a video and its caption per row (data.py lists the columns)
    size: int = 32                 # frame side, pixels (toy); real data: height x width below
    height: int = 0                # 0 = size
    width: int = 0                 # 0 = size
    frames: int = 8
    fps: int = 16                  # clip sampling rate and the fps condition; VC2 and T2V-Turbo always use 16
    latent_channels: int = 8       # the toy first stage: principal components kept of the 48 values of a 4x4 patch
    latent_scale: float = 1.0      # ... and its scale factor (VC2's VAE: 0.18215): the std of the whitened latents
    # stage 1: the text encoder (plays OpenCLIP ViT-H-14's text tower: contrastively pre-trained, then frozen)
    text_steps: int = 500          # contrastive pre-training steps against a tiny video tower (0: train it jointly)
    text_batch: int = 64
    text_lr: float = 2e-3
    # stage 1: teacher
    teacher: str = ""              # a teacher checkpoint to distil (convert.py's output for VC2); "" = OUT/teacher
    teacher_init: str = ""         # a toy teacher checkpoint to go on training (its UNet, text tower, first stage)
    teacher_steps: int = 800       # (toy(): 2000)
    teacher_batch: int = 16        # clips per step and process
    teacher_lr: float = 1e-3
    warmup: int = 100              # linear lr warm-up steps, then cosine decay to 10%
    caption_dropout: float = 0.1   # share of captions replaced by "" (classifier-free guidance training)
    teacher_weighting: str = "eps" # "eps": VC2's plain eps MSE; "v": eps MSE / abar_t, capped (v-prediction's weighting)
    teacher_weight_max: float = 50.0
    teacher_t_power: float = 1.0   # t = 999 - floor(1000 u^p), u ~ U[0,1): 1 = uniform (VC2); > 1 favours high noise
    teacher_t_band: str = ""       # "lo,hi": a share of the clips draws t from [lo, hi) instead (train_teacher says
                                   # why; toy(): "800,960")
    teacher_band_share: float = 0.5  # ... that share
    teacher_band_steps: int = 0    # then a second phase: this many steps with EVERY clip in the band, from the first
                                   # phase's EMA weights, a fresh optimizer (train_teacher says why; toy(): 900)
    teacher_band_lr: float = 3e-4  # ... and its lr
    teacher_band_replay: float = 0.0  # ... except this share of its clips, which keep a uniform t (replay: without
                                   # it the second phase forgets the low noise levels; train_teacher; toy(): 0.5)
    prediction: str = "eps"        # the toy teacher's output: "eps" (VC2) or "v" (VideoCrafter's other option; toy())
    zero_terminal_snr: bool = False  # rescale the schedule so z_999 is pure noise (needs v; turbo.zero_terminal_snr;
                                   # toy(): on)
    relative_position: bool = False  # VC1's relative positions in the temporal attention (tiny_unet3d; toy(): on)
    attention_levels: str = "2"    # downsample factors with transformers: "2" = the 4x4 level only, "1,2" = both
                                   # (toy(): "1,2")
    ema_decay: float = 0.995       # the saved teacher is the EMA of its weights
    guidance: float = 12.0         # default CFG scale for sampling the teacher (VC2's scripts use 12; 1 = none;
                                   # toy(): 5)
    temporal_dropout: float = 0.1  # dropout in the UNet's temporal convs while training (VC2 hard-codes 0.1)
    # stage 3: the T2V-Turbo student, consistency distillation (turbo.py Part 2, Algorithm 1)
    turbo_steps: int = 600
    turbo_batch: int = 8           # clips per micro-batch and process (the release: 1 video per GPU, 8 GPUs)
    turbo_lr: float = 1e-4         # the release uses 1e-5 on VC2; the toy is 1000x smaller and trains 15x shorter
    lora_rank: int = 0             # 0: fine-tune the whole student; the release trains rank-64 LoRA (lora.py)
    target: str = "ema"            # "ema": the paper's target network theta^- (eq. 6); "online": the released code's
    target_decay: float = 0.95     # mu, the EMA rate of theta^- (paper / LCM: 0.95)
    w_min: float = 5.0             # guidance scale w ~ U[w_min, w_max] per sample (paper Sec. 4; toy(): [2, 6])
    w_max: float = 15.0
    huber_c: float = 0.001         # pseudo-Huber c of the CD distance (release default)
    turbo_w: float = 7.5           # w used when sampling the student (release default; toy(): 4)
    turbo_sample_steps: int = 4
    # mixed reward feedback (turbo.py Part 4, eq. 10); stage "reward models" trains the toy ones
    rewards: str = "image+video"   # which rewards the student maximises: image+video, image, video, or none (= VCM)
    beta_img: float = 1.0          # weight of J_img (paper, VC2)
    beta_vid: float = 2.0          # weight of J_vid (paper, VC2)
    reward_frames: int = 5         # M frames scored by the image reward (release 5; paper 6)
    reward_steps: int = 0          # toy reward-model training steps; 0 = rewards.train_toy_reward's defaults
    hps: str = ""                  # path to HPS_v2.1_compressed.pt: use the real image reward instead of the toy's
    viclip: str = ""               # path to ViClip-InternVid-10M-FLT.pth: use the real video reward
    # memory and precision (both stages)
    grad_accum: int = 1            # micro-batches per optimizer step
    max_grad_norm: float = 1.0     # gradient clipping (the release: 1.0)
    precision: str = "fp32"        # "bf16": autocast to bfloat16 (fp32 master weights; a frozen VC2 teacher in bf16)
    grad_ckpt_unet: bool = False   # recompute the student UNet's blocks in the backward pass
    grad_ckpt_decoder: bool = False  # ... the first-stage decoder on the reward path
    grad_ckpt_reward: bool = False   # ... the reward models' vision towers
    optim: str = "adamw"           # "adamw8bit": bitsandbytes' 8-bit AdamW (the release's choice), if installed
    # checkpoints and logging
    save_every: int = 100          # optimizer steps between resumable states (OUT/<stage>.state-<step>.safetensors)
    keep: int = 2                  # resumable states kept per stage (older ones are deleted)
    resume: bool = False           # continue each stage from its newest state instead of from step 0
    max_bad_steps: int = 10        # consecutive steps with a non-finite loss or gradient before the run stops
    val_every: int = 0             # a validation GIF grid every N steps (OUT/val/); 0 = only the final quick look


def toy():
    """The embedded default: everything on the moving-shapes world, CPU, about 70 minutes on 2 cores.

    The Config defaults are VC2's and the paper's; the toy departs from them where we measured that it must
    (README, "The toy teacher"), and only in how the TEACHER is trained and at which guidance it is used:
    - v-prediction on a zero-terminal-SNR schedule, VC1's relative temporal positions, transformers at both UNet
      levels: on VC2's schedule (abar_999 = 0.0047) a toy teacher reads the motion from the leftover signal in
      the noise and never learns the direction word; without attention at the 8 x 8 level its shapes stay poor;
    - half of the teacher's clips draw t from [800, 960), the noise levels where the caption decides the motion
      (uniform t gives them 16%), for 2000 steps, then a second phase of 900 steps at a lower lr, half of its
      clips in the band and half replaying uniform t so the low noise levels are not forgotten (train_teacher);
    - toy teachers sample best at CFG 2-5 (every validation sweep we ran), not VC2's 12, so the teacher samples
      at 5 and the students are distilled at w ~ U[2, 6] around it (w = CFG - 1, LCM's convention; the paper's
      [5, 15] brackets VC2's 12 the same way) and sample at w 4."""
    return dataclasses.replace(Config(), prediction="v", zero_terminal_snr=True, relative_position=True,
                               attention_levels="1,2", teacher_t_band="800,960", teacher_band_share=0.5,
                               teacher_steps=2000, teacher_band_steps=900, teacher_band_replay=0.5, guidance=5.0,
                               w_min=2.0, w_max=6.0, turbo_w=4.0)


def vc2_256():
    """VideoCrafter2 -> T2V-Turbo on ONE GPU at reduced resolution: 16 frames at 256 x 256 (latents 4 x 16 x 32 x
    32), LoRA rank 64, bf16 autocast, gradient checkpointing everywhere (add --optim adamw8bit with bitsandbytes).
    Needs `python convert.py --vc2 model.ckpt --out weights/vc2`, --data/--captions, and --hps/--viclip for the
    rewards (or --rewards none). Memory: see README ("Distilling VideoCrafter2")."""
    return dataclasses.replace(
        Config(), out="runs/vc2_256", device="cuda", teacher="weights/vc2/teacher.safetensors", height=256,
        width=256, frames=16, turbo_steps=10000, turbo_batch=1, turbo_lr=1e-5, lora_rank=64, warmup=0,
        save_every=500, keep=5, val_every=500, precision="bf16", grad_ckpt_unet=True, grad_ckpt_decoder=True,
        grad_ckpt_reward=True)


def vc2():
    """The release's recipe (digest section 3): 16 frames at 320 x 512, 1 clip per GPU on 8 GPUs
    (torchrun --nproc_per_node=8), lr 1e-5, 10K steps, LoRA rank 64, grad clip 1.0, bf16, 8-bit AdamW."""
    return dataclasses.replace(vc2_256(), out="runs/vc2", height=320, width=512, save_every=2000, optim="adamw8bit")


PRESETS = {"toy": toy, "vc2_256": vc2_256, "vc2": vc2}


def parse_config(argv=None):
    """--preset NAME picks a preset function; every Config field is then a --flag that overrides it."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="toy", choices=sorted(PRESETS))
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool or f.type == "bool":  # --flag / --no-flag: a preset may have turned it on
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument(flag, type=type(f.default), default=None)
    args = vars(p.parse_args(argv))
    cfg = PRESETS[args.pop("preset")]()
    given = {k: v for k, v in args.items() if v is not None}
    cfg = dataclasses.replace(cfg, **given)
    for name in ("teacher_steps", "teacher_batch", "turbo_batch", "text_batch", "size", "frames", "grad_accum",
                 "save_every", "keep"):
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
    if cfg.precision not in ("fp32", "bf16"):
        p.error("--precision must be fp32 or bf16")
    if cfg.prediction not in ("eps", "v"):
        p.error("--prediction must be eps (VC2) or v")
    if cfg.zero_terminal_snr and cfg.prediction != "v":
        p.error("--zero-terminal-snr (on in the toy preset) needs --prediction v; for VC2's eps-prediction add "
                "--no-zero-terminal-snr")
    if not re.fullmatch(r"[12](,[12])*", cfg.attention_levels):  # the toy UNet has two levels: factors 1 and 2
        p.error("--attention-levels must list the toy UNet's downsample factors (1, 2), e.g. 2 or 1,2")
    if cfg.teacher_t_band and not re.fullmatch(r"\d+,\d+", cfg.teacher_t_band):
        p.error("--teacher-t-band must be 'lo,hi', two timesteps, e.g. 800,960")
    if cfg.teacher_t_band and not 0 <= (band := teacher_band(cfg))[0] < band[1] <= 1000:
        p.error("--teacher-t-band needs 0 <= lo < hi <= 1000")
    if not 0 <= cfg.teacher_band_share <= 1:
        p.error("--teacher-band-share must be in [0, 1]")
    if cfg.teacher_band_steps < 0:
        p.error("--teacher-band-steps must be >= 0")
    if not 0 <= cfg.teacher_band_replay < 1:
        p.error("--teacher-band-replay must be in [0, 1)")
    if cfg.teacher_band_steps and not cfg.teacher_t_band:
        p.error("--teacher-band-steps trains on --teacher-t-band only: give the band (e.g. 800,960), or "
                "--teacher-band-steps 0")
    if not cfg.teacher_t_power > 0:
        p.error("--teacher-t-power must be > 0")
    if cfg.until not in ("teacher", "rewards", "student"):
        p.error("--until must be teacher, rewards or student")
    if cfg.teacher_init:
        if cfg.teacher:
            p.error("--teacher uses a finished teacher as it is; --teacher-init trains one further: pick one")
        if not Path(cfg.teacher_init).is_file():
            p.error(f"--teacher-init {cfg.teacher_init}: no such file")
        try:
            meta = read_meta(cfg.teacher_init)
            init_unet = UNetConfig(**meta["unet"])  # lists back to tuples, old checkpoints get the defaults
        except (ValueError, KeyError, TypeError) as e:
            p.error(f"--teacher-init {cfg.teacher_init}: not a checkpoint of this repo ({e})")
        if meta.get("kind") != "teacher":
            p.error(f"--teacher-init {cfg.teacher_init} is a {meta.get('kind')!r} checkpoint, not a teacher")
        wanted = teacher_unet_options(cfg)
        for flag, field in TEACHER_UNET_FLAGS.items():  # the init's UNet is what gets trained: flags may only repeat it
            if flag in given and wanted[field] != getattr(init_unet, field):
                p.error(f"--{flag.replace('_', '-')} {given[flag]}: the UNet of --teacher-init has "
                        f"{getattr(init_unet, field)}")
        # the saved config says what is trained: the init's UNet options, not the preset's
        cfg = dataclasses.replace(cfg, prediction=init_unet.prediction, zero_terminal_snr=init_unet.zero_terminal_snr,
                                  relative_position=init_unet.use_relative_position,
                                  attention_levels=",".join(str(a) for a in init_unet.attention_resolutions))
    if cfg.teacher_weighting not in ("eps", "v"):
        p.error("--teacher-weighting must be eps (VC2) or v")
    if cfg.optim not in ("adamw", "adamw8bit"):
        p.error("--optim must be adamw or adamw8bit")
    if bool(cfg.data) != bool(cfg.captions):
        p.error("--data and --captions go together (a folder of videos and its caption file)")
    return cfg


# the toy-teacher flags that set a field of the UNet config: flag -> field
TEACHER_UNET_FLAGS = {"prediction": "prediction", "zero_terminal_snr": "zero_terminal_snr",
                      "relative_position": "use_relative_position", "attention_levels": "attention_resolutions"}


def teacher_unet_options(cfg):
    """-> {UNet config field: value} of the toy-teacher flags (TEACHER_UNET_FLAGS)."""
    return {"prediction": cfg.prediction, "zero_terminal_snr": cfg.zero_terminal_snr,
            "use_relative_position": cfg.relative_position,
            "attention_resolutions": tuple(int(a) for a in cfg.attention_levels.split(","))}


def teacher_band(cfg):
    """--teacher-t-band "lo,hi" -> (lo, hi), or None."""
    return tuple(int(x) for x in cfg.teacher_t_band.split(",")) if cfg.teacher_t_band else None


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
# Plumbing: processes, randomness, precision, resumable state, and the one training loop both stages share


def setup_processes(cfg):
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without it this is one process. -> run (rank, world, device)."""
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = torch.device(cfg.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda, but torch sees no CUDA GPU")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        # the teacher and reward stages can keep the other processes waiting for minutes: a long timeout
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    return SimpleNamespace(rank=rank, world=world, device=device, main=rank == 0)


def barrier(run):
    if run.world > 1:
        dist.barrier()


def step_seed(cfg, stage, step, micro=0, rank=0):
    """A 63-bit seed for (seed, stage, step, micro-batch, process); rank 0 for what every process draws alike."""
    words = [cfg.seed, sum(map(ord, stage)), step, micro, rank]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> np.uint64(1))


def step_draws(cfg, run, stage, step, micro, b):
    """-> (numpy rng, torch CPU generator, B, rows). The generators are seeded by the step alone, so every process
    and micro-batch draws the same global batch of B = b * world * grad_accum clips; `rows` are the b of them this
    (process, micro-batch) trains on. Also seeds the global RNG (dropout) per step, micro-batch and process."""
    s = step_seed(cfg, stage, step)
    torch.manual_seed(step_seed(cfg, stage, step, micro, run.rank + 1))
    first = (micro * run.world + run.rank) * b
    return np.random.default_rng(s), torch.Generator().manual_seed(s), b * run.world * cfg.grad_accum, \
        range(first, first + b)


def all_finite(run, loss):
    """True when the loss is finite on every process: all must agree before anyone calls backward."""
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
    if run.world > 1:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return bad.item() == 0


def mean_over_processes(run, logs):
    if run.world == 1 or not logs:
        return logs
    keys = sorted(logs)
    v = torch.tensor([logs[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(v)
    return {k: float(x) / run.world for k, x in zip(keys, v)}


def make_optimizer(cfg, params, lr):
    if cfg.optim == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise SystemExit("--optim adamw8bit needs bitsandbytes (pip install bitsandbytes); or use --optim adamw")
        return bnb.optim.AdamW8bit(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8)
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8)


def state_paths(out, stage):
    """Resumable states of a stage, oldest first."""
    return sorted(Path(out).glob(f"{stage}.state-*.safetensors"))


def save_state(run, out, stage, step, modules, opt, extra, keep):
    """OUT/<stage>.state-<step>.safetensors: the weights of `modules`, the optimizer's state and, in the metadata,
    the step, the logs so far and `extra`. Written by process 0 to a temporary file and renamed (atomic), so a
    kill never leaves a half-written state; then all but the newest `keep` are deleted. Refuses NaN weights."""
    if not run.main:
        return
    tensors, opt_meta = {}, {}
    for name, m in modules.items():
        for k, v in m.state_dict().items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise RuntimeError(f"refusing to save non-finite weights ({name}.{k}) at step {step}")
            tensors[f"{name}.{k}"] = v
    sd = opt.state_dict()
    for i, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{i}.{k}"] = v
            else:
                opt_meta[f"{i}.{k}"] = v
    meta = {"step": step, "param_groups": sd["param_groups"], "optim_other": opt_meta, **extra}
    path = Path(out) / f"{stage}.state-{step:07d}.safetensors"
    save_tensors(path, tensors, {"t2v_turbo_state": json.dumps(meta)})
    for old in state_paths(out, stage)[:-keep]:
        old.unlink()
    return path


def load_state(path, modules, opt, device):
    """The inverse of save_state -> meta. Weights and optimizer moments land on `device`."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["t2v_turbo_state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a readable training state ({e}): delete it to resume from an older one, "
                         f"or run without --resume") from None
    for name, m in modules.items():
        m.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
    state = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, key = k.split(".", 2)
            state.setdefault(int(i), {})[key] = v.to(device) if key != "step" else v
    for ik, v in meta["optim_other"].items():
        i, key = ik.split(".", 1)
        state.setdefault(int(i), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


def tensorboard(run, out):
    """A SummaryWriter under OUT/tb when TensorBoard is installed (optional), else None."""
    if not run.main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(Path(out) / "tb"))


def fit(cfg, run, stage, steps, lr, params, micro_step, modules, synced=(), emas=(), validate=None, counters=None,
        batch=1):
    """The training loop of both stages: warm-up + cosine lr, grad accumulation, bf16 autocast, DDP gradient
    averaging, clipping, non-finite steps skipped and counted, EMA updates, tqdm, resumable states.

    micro_step(step, micro) -> (loss, {name: float}): this process's share of a micro-batch (mean over its rows).
    modules: {name: module} saved in the resumable state (the trained weights and their EMA copies).
    synced: the DDP-wrapped modules (their gradients are averaged on the last micro-batch only).
    emas: [(ema_module, module, decay_fn(step))] updated after every optimizer step.
    counters(): -> {name: number} shown in the progress bar (e.g. skipped videos); batch: clips per micro-batch
    and process (for clips/s)."""
    opt = make_optimizer(cfg, params, lr)
    start, logs, n_bad = 0, [], 0
    found = state_paths(cfg.out, stage) if cfg.resume else []
    if found:
        meta = load_state(found[-1], modules, opt, run.device)
        start, logs, n_bad = meta["step"], meta["logs"], meta["bad_steps"]
        print(f"{stage}: resuming from {found[-1]} (step {start} of {steps})")
    autocast = torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    writer, consecutive = tensorboard(run, cfg.out), 0
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=stage, disable=not run.main)
    for step in bar:
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, min(cfg.warmup, steps // 10))
        opt.zero_grad(set_to_none=True)
        ok, step_logs = True, []
        for micro in range(cfg.grad_accum):
            with ExitStack() as stack:
                if micro < cfg.grad_accum - 1:  # accumulate locally; average across processes once, at the end
                    for m in synced:
                        stack.enter_context(m.no_sync())
                with autocast:
                    loss, info = micro_step(step, micro)
                if not all_finite(run, loss):
                    ok = False
                    break
                (loss / cfg.grad_accum).backward()
            step_logs.append({"loss": loss.item(), **info})
        if ok:  # gradients are averaged by now: every process sees the same norm and takes the same decision
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            ok = bool(torch.isfinite(norm))
        if not ok:
            n_bad, consecutive = n_bad + 1, consecutive + 1
            opt.zero_grad(set_to_none=True)
            if consecutive >= cfg.max_bad_steps:
                raise RuntimeError(f"{stage}: {consecutive} steps in a row with a non-finite loss or gradient (step "
                                   f"{step}); stopping without saving. The newest good state is in {cfg.out} "
                                   f"(--resume); try a lower lr or --precision fp32")
            continue
        consecutive = 0
        opt.step()
        for ema, m, decay in emas:
            ema_update(ema, m, decay(step))
        rec = mean_over_processes(run, {k: float(np.mean([l[k] for l in step_logs])) for k in step_logs[0]})
        logs.append(rec)
        if run.main:
            extra = counters() if counters else {}
            clips_s = cfg.grad_accum * run.world * batch / (time.time() - t0)
            recent = logs[-20:]
            bar.set_postfix({**{k: f"{np.mean([l[k] for l in recent]):.4f}" for k in rec},
                             "clips/s": f"{clips_s:.1f}", "bad": n_bad, **extra})
            if writer:
                for k, v in rec.items():
                    writer.add_scalar(f"{stage}/{k}", v, step)
        done = step + 1
        if done % cfg.save_every == 0 and done < steps:
            save_state(run, cfg.out, stage, done, modules, opt,
                       {"logs": logs, "bad_steps": n_bad, "config": dataclasses.asdict(cfg)}, cfg.keep)
        if validate and cfg.val_every and done % cfg.val_every == 0 and run.main:
            validate(done)
    if writer:
        writer.close()
    return logs, n_bad


def check_in_sync(run, module, what):
    """After DDP training every process must hold the same weights; a cheap fingerprint proves it."""
    if run.world == 1:
        return True
    with torch.no_grad():
        v = torch.stack([p.double().sum() for p in module.parameters()]).cpu()
    got = [torch.zeros_like(v) for _ in range(run.world)]
    dist.all_gather(got, v)
    if not all(torch.equal(g, got[0]) for g in got):
        raise RuntimeError(f"{what}: the {run.world} processes ended with different weights")
    return True


def make_data(cfg):
    """The toy world, or a folder of videos (data.VideoFolder); both give batch(n, rng, rows)."""
    height, width = cfg.height or cfg.size, cfg.width or cfg.size
    if not cfg.data:
        if height != width:
            raise SystemExit("the toy world is square: use --size, not --height/--width")
        return ToyWorld(size=height, frames=cfg.frames, seed=cfg.seed + 1)
    from data import VideoFolder
    return VideoFolder(cfg.data, cfg.captions, height=height, width=width, frames=cfg.frames, fps=cfg.fps)


def skipped_videos(data):
    return lambda: ({"skipped": sum(data.skipped.values())} if hasattr(data, "skipped") else {})


# ----------------------------------------------------------------------------------------------------------------
# Stage 1: the text encoder and the teacher (play OpenCLIP's text tower and VideoCrafter2)


def pretrain_text(cfg, run):
    """VC2 conditions on a *frozen* OpenCLIP text tower that contrastive pre-training taught to tell captions apart.
    The toy does the same: our OpenCLIP-structured TextEncoder (its pooled EOT feature) and a tiny ViCLIP video
    tower (rewards.toy_video_reward, thrown away afterwards) trained with CLIP's InfoNCE on toy clips of the
    training captions. Why not just train the text tower jointly with the UNet (text_steps 0)? We did: the
    UNet's loss gives direction words almost no gradient, so "left" and "right" stayed nearly the same vector
    (max |difference| 0.03 at their token) and the teacher never learned direction (judge at chance)."""
    from rewards import _render, contrastive_loss, toy_video_reward
    torch.manual_seed(cfg.seed)
    text, video_tower = TextEncoder(toy_text()).train(), toy_video_reward().requires_grad_(True).train()
    params = list(text.parameters()) + list(video_tower.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.text_lr, weight_decay=0.0)
    rng, captions = np.random.default_rng(cfg.seed + 4), split_captions("train")
    bar = tqdm(range(cfg.text_steps), desc="stage 1/3: text encoder", disable=not run.main)
    for step in bar:
        idx = rng.choice(len(captions), size=cfg.text_batch, replace=cfg.text_batch > len(captions))
        caps = [captions[i] for i in idx]
        feats = video_tower.encode_videos(_render(caps, rng))                        # (b, d)
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


def train_teacher(cfg, run, data, ae, text=None, init=None, stage="teacher"):
    """The toy teacher; `text` is the pre-trained, frozen text encoder (None: a fresh one, trained jointly);
    `init` a trained teacher UNet to go on from (--teacher-init: its config and weights), None = from scratch.

    Which noise levels t the clips get (VC2: uniform over 0..999). The caption's colour and shape are learned at
    every t, but its *direction* only matters where the noisy clip no longer shows where the shape goes: on the
    zero-terminal-SNR schedule, t in about [800, 960). Below it the clip itself tells the motion; above it the
    input is nearly pure noise and the caption's mean video is a faint smear. Uniform t gives that band 16% of the
    clips, and a teacher trained so ignores the direction word (a diffusion-classifier probe of its denoiser picks
    the right direction at chance) and draws the motion from the noise. --teacher-t-band 800,960 gives the band a
    share of the clips (--teacher-band-share; the idea of P2 weighting, Choi et al. 2022, and SD3's mid-noise
    timestep sampling, Esser et al. 2024: spend the loss where the content is decided). What we measured (README,
    the toy teacher, findings 6-7): the toy preset, half of the clips in the band from the first step on a v /
    zero-terminal-SNR teacher, 2000 steps, learns direction on 0.59 of seen-caption clips, 0.51 of held-out ones
    (chance: 0.25); a second phase from its EMA weights (--teacher-band-steps 900, a fresh optimizer at lr 3e-4)
    with every clip in the band takes it to 1.00 / 1.00 (runs/toy7, runs/toy8), but forgets the low noise levels
    that phase 1 had learned: the 50-step samples come out speckled (sampling with phase 1's weights below t = 600
    and phase 2's above lifts the judge from 0.75 to 0.84 and the image reward from 0.854 to 0.870 on validation
    seeds). So, as when fine-tuning on any narrower distribution, part of the old one is replayed:
    --teacher-band-replay 0.5 (the toy preset) gives half of phase 2's clips a uniform t (README, finding 8).
    The second phase needs the first: from a teacher that does not yet draw clean shapes it did not help. An eps
    teacher on VC2's schedule did not learn direction from the band, from scratch or in a second phase. `stage`
    names the resumable states and seeds the draws ("teacher", "teacher_band")."""
    torch.manual_seed(cfg.seed)
    text_cfg = toy_text()
    if init is not None:  # go on training a teacher: its own architecture, prediction and schedule
        unet_cfg = dataclasses.replace(init.config, temporal_dropout=cfg.temporal_dropout)
    else:
        unet_cfg = dataclasses.replace(toy_unet(), in_channels=ae.config.embed_dim, out_channels=ae.config.embed_dim,
                                       temporal_length=cfg.frames, temporal_dropout=cfg.temporal_dropout,
                                       context_dim=text_cfg.width, **teacher_unet_options(cfg))
    joint = text is None
    unet = UNet3D(unet_cfg).to(run.device).train()
    if init is not None:
        unet.load_state_dict(init.state_dict())
    text = TextEncoder(text_cfg).to(run.device).train() if joint else text
    ema_unet = copy.deepcopy(unet).eval()
    ema_text = copy.deepcopy(text).eval() if joint else text           # a frozen tower needs no EMA
    # DDP averages the gradients of both trained modules across processes (plain modules on one process); the
    # text tower's last block and projection are unused (VC2 reads the penultimate layer): find_unused_parameters
    ddp = torch.nn.parallel.DistributedDataParallel
    unet_d, text_d = (ddp(unet), ddp(text, find_unused_parameters=True) if joint else text) if run.world > 1 \
        else (unet, text)
    abar = turbo.schedule(unet_cfg).to(run.device)
    b = cfg.teacher_batch
    band = teacher_band(cfg)
    if run.main:
        n_unet, n_text = (sum(p.numel() for p in m.parameters()) for m in (unet, text))
        print(f"teacher: UNet {n_unet:,} params, text tower {n_text:,} params, {run.world} process(es) x {b} clips")

    def micro_step(step, micro):
        rng, gen, B, rows = step_draws(cfg, run, stage, step, micro, b)
        video, caps = data.batch(B, rng, rows)                                  # this process's b clips
        drop = rng.random(B)[rows.start:rows.stop] < cfg.caption_dropout
        caps = ["" if d else c for c, d in zip(caps, drop)]                     # CFG training: 10% unconditional
        with torch.no_grad():
            z0 = ae.encode(video.to(run.device))                                # (b, c, t, h, w)
        u = torch.rand(B, generator=gen) ** cfg.teacher_t_power
        t = (len(abar) - 1 - (u * len(abar)).long()).clamp(0, len(abar) - 1)
        noise = torch.randn((B, *z0.shape[1:]), generator=gen)[rows.start:rows.stop]
        if band:  # the noise levels where the caption decides the motion get a larger share of the clips
            in_band = torch.rand(B, generator=gen) < cfg.teacher_band_share
            t = torch.where(in_band, band[0] + (torch.rand(B, generator=gen) * (band[1] - band[0])).long(), t)
        t = t[rows.start:rows.stop]
        with torch.set_grad_enabled(joint):
            context = text_d(text.tokenize(caps).to(run.device))                # (b, L, d)
        weight = None if cfg.teacher_weighting == "eps" else (1 / abar[t.to(abar.device)]).clamp(
            max=cfg.teacher_weight_max)
        loss = turbo.diffusion_loss(unet_d, z0, context, cfg.fps, abar, t=t, noise=noise, weight=weight)
        return loss, {}

    warm = lambda step: min(cfg.ema_decay, (1 + step) / (10 + step))           # short runs: warm the EMA up
    trained = {"unet": unet, "ema_unet": ema_unet, **({"text": text, "ema_text": ema_text} if joint else {})}
    logs, n_bad = fit(cfg, run, stage, cfg.teacher_steps, cfg.teacher_lr, list(unet.parameters()) +
                      (list(text.parameters()) if joint else []), micro_step, trained,
                      synced=[m for m in (unet_d, text_d) if m is not unet and m is not text],
                      emas=[(ema_unet, unet, warm)] + ([(ema_text, text, warm)] if joint else []),
                      counters=skipped_videos(data), batch=b)
    check_in_sync(run, unet, stage)
    return ema_unet, ema_text, {"final_loss": float(np.mean([l["loss"] for l in logs[-100:]])) if logs else None,
                                "bad_steps": n_bad, "log": logs}


# ----------------------------------------------------------------------------------------------------------------
# Stage 3: the T2V-Turbo student, distilled from the frozen teacher


def make_student(teacher_unet, lora_rank, temporal_dropout=0.1, grad_ckpt=False):
    """Student = teacher + the w-embedding projection (zero-initialised: at step 0 it predicts exactly what the
    teacher predicts), optionally with LoRA on every Linear/Conv. Returns (student, trainable parameters)."""
    student = UNet3D(dataclasses.replace(teacher_unet.config, guidance_embed_dim=256,
                                         temporal_dropout=temporal_dropout, use_checkpoint=grad_ckpt))
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


def train_turbo(cfg, run, data, teacher_path, image_reward=None, video_reward=None):
    torch.manual_seed(cfg.seed)
    name = student_name(cfg)
    # the frozen teacher, text encoder and first stage
    models = load_models(teacher_path, run.device)
    teacher, text, ae = models["unet"], models["text"], models["ae"]
    student, params = make_student(teacher, cfg.lora_rank, cfg.temporal_dropout, cfg.grad_ckpt_unet)
    student.to(run.device).train()                                   # fp32 master weights
    if cfg.precision == "bf16":
        teacher.to(torch.bfloat16)                                   # frozen: half the memory, runs under autocast
    # the target network theta^-: an EMA copy (paper eq. 6), or the online student itself under no_grad (release)
    target = copy.deepcopy(student).eval().requires_grad_(False) if cfg.target == "ema" else student
    student_d = torch.nn.parallel.DistributedDataParallel(student) if run.world > 1 else student
    for r in (image_reward, video_reward):
        if r is not None:
            r.to(run.device)
            set_reward_checkpointing(r, cfg.grad_ckpt_reward)
    abar = turbo.schedule(teacher.config).to(run.device)        # the student inherits the teacher's schedule
    with torch.no_grad():
        uncond1 = text.encode_text([""])                             # (1, L, d): the empty caption
    b = cfg.turbo_batch
    if run.main:
        n_train = sum(p.numel() for p in params)
        print(f"student: {n_train:,} trainable parameters ({'LoRA rank %d' % cfg.lora_rank if cfg.lora_rank else 'full'}),"
              f" target network: {cfg.target}, {run.world} process(es) x {b} clips x {cfg.grad_accum} micro-batches")

    def micro_step(step, micro):
        rng, gen, B, rows = step_draws(cfg, run, name, step, micro, b)
        video, caps = data.batch(B, rng, rows)
        with torch.no_grad():
            z0 = ae.encode(video.to(run.device)).float()            # (b, c, t, h, w)
            context = text.encode_text(caps).float()                 # (b, L, d)
        d = turbo.cd_draws(B, z0.shape[1:], cfg.w_min, cfg.w_max, generator=gen)        # the whole batch's draws
        d = {k: v[rows.start:rows.stop] for k, v in d.items()}                          # ... this process's rows
        loss_cd, f_theta, info = turbo.cd_loss(student_d, target, teacher, z0, context, uncond1.float().expand_as(
            context), cfg.fps, abar, huber_c=cfg.huber_c, draws=d)
        r = turbo.reward_terms(f_theta, ae, caps, image_reward, video_reward, cfg.reward_frames, generator=gen,
                               decode_checkpoint=cfg.grad_ckpt_decoder)
        loss = turbo.mixed_loss(loss_cd, r, cfg.beta_img, cfg.beta_vid)      # eq. 10, every term on every process
        return loss, {"cd": loss_cd.item(), **{k: v.mean().item() for k, v in r.items()}}

    def validate(step):
        val = {"unet": target.eval(), "text": text, "ae": ae, "meta": {"kind": "turbo", "train": meta_train(cfg)}}
        quick_look_models(val, Path(cfg.out) / "val" / f"{name}-{step:06d}.gif", run.device)
        student.train()

    modules = {"student": student} if target is student else {"student": student, "target": target}
    emas = [] if target is student else [(target, student, lambda step: cfg.target_decay)]
    logs, n_bad = fit(cfg, run, name, cfg.turbo_steps, cfg.turbo_lr, params, micro_step, modules,
                      synced=[student_d] if student_d is not student else [], emas=emas, validate=validate,
                      counters=skipped_videos(data), batch=b)
    check_in_sync(run, student, name)
    student.eval()
    if cfg.lora_rank:
        merge_lora(student)
    student.config = dataclasses.replace(student.config, use_checkpoint=False)
    final = {k: float(np.mean([l[k] for l in logs[-100:]])) for k in logs[-1]} if logs else {}
    return student, text, ae, {"final": final, "log": logs, "bad_steps": n_bad}


def set_reward_checkpointing(reward, on):
    """Gradient checkpointing in a reward model's vision tower (open_clip for HPS, ours for ViCLIP)."""
    if hasattr(reward, "clip") and hasattr(reward.clip, "set_grad_checkpointing"):
        reward.clip.set_grad_checkpointing(on)
    if hasattr(reward, "viclip"):
        reward.viclip.vision_encoder.cfg.grad_checkpoint = on


def meta_train(cfg):
    """The training config as checkpoints record it (sample.py reads height/width/frames/fps/turbo_w from it)."""
    return {**dataclasses.asdict(cfg), "height": cfg.height or cfg.size, "width": cfg.width or cfg.size}


# ----------------------------------------------------------------------------------------------------------------
# Stage 2: the reward models. T2V-Turbo uses HPSv2.1 (image-text) and InternVideo2 / ViCLIP (video-text); the toy
# trains a tiny CLIP and a tiny ViCLIP (the same classes, rewards.py) contrastively on the training captions.


def reward_models(cfg, out, quiet=False):
    """-> (image_reward or None, video_reward or None), training and saving the toy ones when needed."""
    from rewards import ImageTextReward, VideoTextReward, ViCLIP, discrimination, load_reward, load_viclip, \
        save_reward, train_toy_reward, viclip_l14
    want = set(cfg.rewards.split("+")) - {"none"}
    found, print_ = {}, (lambda *a: None) if quiet else print
    for kind in ("image", "video"):
        if kind not in want:
            continue
        real = cfg.hps if kind == "image" else cfg.viclip
        if real:
            found[kind] = (ImageTextReward.hpsv21(real) if kind == "image"
                           else VideoTextReward(load_viclip(ViCLIP(viclip_l14()), real)))
            print_(f"stage 2/3: {kind} reward from {real}")
            continue
        path = out / f"reward_{kind}.safetensors"
        if path.exists() and not cfg.fresh:
            found[kind] = load_reward(path)[0]
            print_(f"stage 2/3: reusing {path}")
            continue
        print_(f"stage 2/3: training the toy {kind} reward model")
        model, stats = train_toy_reward(kind, steps=cfg.reward_steps or None, seed=cfg.seed)
        for split in ("train", "heldout"):
            stats[f"discrimination_{split}"] = discrimination(model, kind, split_captions(split), n_clips=128,
                                                              seed=cfg.seed + 9)
        save_reward(path, model, {k: v for k, v in stats.items() if k != "losses"})
        d = stats["discrimination_train"], stats["discrimination_heldout"]
        print_(f"wrote {path} ({stats['seconds']:.0f} s): own caption beats every one-attribute neighbour on "
              f"{d[0]['all']:.2f} of seen-caption clips, {d[1]['all']:.2f} of held-out ones")
        found[kind] = model
    return tuple(found.get(k) for k in ("image", "video"))


def quick_look_models(models, out_gif, device):
    """A GIF grid for a person: 4 training captions (top row) and 4 held-out ones (bottom row)."""
    from sample import generate, save_grid
    prompts = split_captions("train")[:4] + split_captions("heldout")[:4]
    videos = generate(models, prompts, list(range(len(prompts))), device=device, progress=False)
    save_grid(videos, out_gif, ncol=4, scale=3)
    print(f"wrote {out_gif} (top row: training captions, bottom row: held-out captions)")


def quick_look(ckpt, out_gif, device):
    quick_look_models(load_models(ckpt, device), out_gif, device)


def finish_stage(run, cfg, stage, path, modules, meta, states=None):
    """Process 0 writes the stage's checkpoint and drops the resumable states of `states` (default: the stage's
    own); everyone waits for the file."""
    if run.main:
        save_checkpoint(path, modules, meta)
        for p in [p for s in (states or [stage]) for p in state_paths(cfg.out, s)]:
            p.unlink()
        print(f"wrote {path} ({meta['seconds']:.0f} s)")
        quick_look(path, Path(cfg.out) / f"{stage}_samples.gif", run.device)
    barrier(run)


def main(argv=None):
    cfg = parse_config(argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = setup_processes(cfg)
    run_stages(cfg, run)
    if run.world > 1:  # on every way out of the stages, --until and reused checkpoints included
        dist.destroy_process_group()


def teacher_first_phase(cfg, run, data):
    """The toy teacher's first (or only) phase: from scratch (the first stage fitted, the text tower pre-trained)
    or from --teacher-init (which brings both). -> (EMA UNet, text tower, first stage, stats)."""
    init = None
    if cfg.teacher_init:  # going on: the first stage and the frozen text tower come with the teacher
        init = load_models(cfg.teacher_init, run.device)  # parse_config checked that it is a teacher
        ae, text = init["ae"], init["text"]
        if run.main:
            print(f"stage 1/3: going on from the teacher {cfg.teacher_init}")
    else:
        # the first stage, fitted by PCA on training clips (held-out captions never seen); saved with the teacher
        ae = LinearAutoencoder(dataclasses.replace(toy_linear_ae(), latent_channels=cfg.latent_channels,
                                                   scale_factor=cfg.latent_scale))
        kept = ae.fit(ToyWorld(size=cfg.size, frames=cfg.frames, seed=cfg.seed + 3).batch(512)[0])
        ae.to(run.device).eval()
        if run.main:
            print(f"first stage: PCA of 4x4 patches keeps {ae.config.latent_channels} of 48 dims, "
                  f"{kept:.1%} of the variance")
        text = pretrain_text(cfg, run) if cfg.text_steps else None
    unet, text, stats = train_teacher(cfg, run, data, ae, text, init=init and init["unet"])
    return unet, text, ae, stats


def run_stages(cfg, run):
    """Teacher -> reward models -> student, each skipped when its checkpoint exists, up to --until."""
    out = Path(cfg.out)
    if run.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    barrier(run)
    data = make_data(cfg)

    # stage 1: the teacher. The toy trains one (all processes, DDP); the real world brings VC2 (convert.py)
    teacher_path = Path(cfg.teacher) if cfg.teacher else out / "teacher.safetensors"
    if cfg.teacher and not teacher_path.exists():
        raise SystemExit(f"--teacher {teacher_path}: no such checkpoint (python convert.py --vc2 model.ckpt --out DIR)")
    if teacher_path.exists() and not (cfg.fresh and not cfg.teacher):
        if run.main:
            print(f"stage 1/3: using the teacher {teacher_path}")
    else:
        if cfg.data:
            raise SystemExit("training a teacher on your videos is not what this repo does: pass --teacher "
                             "(a VideoCrafter2 checkpoint converted by convert.py)")
        t0 = time.time()
        phase1_path = out / "teacher_phase1.safetensors"  # kept between the two phases: a rerun goes on from it
        if cfg.teacher_band_steps and phase1_path.exists() and not cfg.fresh:
            first = load_models(phase1_path, run.device)
            unet, text, ae = first["unet"], first["text"], first["ae"]
            first_meta = read_meta(phase1_path)
            stats, t0 = first_meta["stats"], t0 - first_meta.get("seconds", 0)  # the time counts both phases
            if run.main:
                print(f"stage 1/3: phase 1 of the teacher is done ({phase1_path})")
        else:
            unet, text, ae, stats = teacher_first_phase(cfg, run, data)
            if cfg.teacher_band_steps:
                meta = model_meta(unet, text, ae, kind="teacher", train=meta_train(cfg), stats=stats,
                                  seconds=time.time() - t0)
                finish_stage(run, cfg, "teacher_phase1", phase1_path, {"unet": unet, "text": text, "ae": ae}, meta,
                             states=["teacher"])
        if cfg.teacher_band_steps:
            # phase 2 (train_teacher): from phase 1's EMA weights, a fresh optimizer, t in the band except for the
            # replayed share (uniform t)
            if run.main:
                print(f"stage 1/3: phase 2 of the teacher, {cfg.teacher_band_steps} steps at t in "
                      f"[{cfg.teacher_t_band.replace(',', ', ')}), {cfg.teacher_band_replay:.0%} of the clips at "
                      f"uniform t")
            band_cfg = dataclasses.replace(cfg, teacher_steps=cfg.teacher_band_steps, teacher_lr=cfg.teacher_band_lr,
                                           teacher_band_share=1.0 - cfg.teacher_band_replay)
            unet, text, second = train_teacher(band_cfg, run, data, ae, text, init=unet, stage="teacher_band")
            stats = {**second, "bad_steps": stats["bad_steps"] + second["bad_steps"],
                     "log": stats["log"] + second["log"],  # one loss curve over both phases
                     "phase1": {"steps": cfg.teacher_steps, "final_loss": stats["final_loss"]}}
        meta = model_meta(unet, text, ae, kind="teacher", train=meta_train(cfg), stats=stats, seconds=time.time() - t0)
        finish_stage(run, cfg, "teacher", teacher_path, {"unet": unet, "text": text, "ae": ae}, meta,
                     states=["teacher", "teacher_band"])

    if cfg.until == "teacher":
        return
    # stage 2: reward models (process 0 trains the toy ones while the others wait), then stage 3: the student
    name = student_name(cfg)
    turbo_path = out / f"{name}.safetensors"
    if turbo_path.exists() and not cfg.fresh and cfg.until == "student":
        if run.main:
            print(f"stage 3/3: reusing {turbo_path}")
        return
    if run.main:
        image_reward, video_reward = reward_models(cfg, out)
    barrier(run)
    if cfg.until == "rewards":
        return
    if not run.main:  # the others load what process 0 wrote
        image_reward, video_reward = reward_models(dataclasses.replace(cfg, fresh=False), out, quiet=True)
    t0 = time.time()
    student, text, ae, stats = train_turbo(cfg, run, data, teacher_path, image_reward, video_reward)
    if hasattr(data, "skipped"):  # summed over processes, by reason
        counts = [dict(data.skipped)]
        if run.world > 1:
            counts = [None] * run.world
            dist.all_gather_object(counts, dict(data.skipped))
        stats["skipped_videos"] = {k: sum(c.get(k, 0) for c in counts) for c in counts for k in c}
        if run.main:
            print(f"skipped videos: {stats['skipped_videos'] or 'none'}")
    meta = model_meta(student, text, ae, kind="turbo", train=meta_train(cfg), stats=stats, seconds=time.time() - t0)
    finish_stage(run, cfg, name, turbo_path, {"unet": student, "text": text, "ae": ae}, meta)


if __name__ == "__main__":
    main()
