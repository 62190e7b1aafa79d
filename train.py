"""T2V-Turbo on the toy world, on a CPU, in minutes:  python train.py

Distils a 4-step video consistency model (the student) from a frozen text-to-video diffusion teacher while
maximising two differentiable rewards of the student's single-step prediction: the paper's Algorithm 1 and
eq. 10 (turbo.py has every equation). The toy world's teacher and reward models are pre-trained and ship in
assets/toy/ (prepare_toy.py made them, as VideoCrafter2, HPSv2.1 and ViCLIP come pre-trained), so this script
is the method and nothing else:
    1. load the frozen teacher (its UNet, text tower and first stage) and the two reward models;
    2. distil the student: consistency distillation (turbo.cd_loss, eq. 6-8) plus the mixed reward feedback on
       its single-step prediction (turbo.reward_terms, eq. 9-10); --rewards none gives the VCM baseline;
    3. compare: the teacher's 50-step DDIM + CFG samples vs the student's 4-step samples on 8 seen and 8 held-out
       captions (judge, both rewards, seconds per video), OUT/compare.gif, and one printed line.

    python train.py                                  # T2V-Turbo from the shipped teacher -> runs/toy/turbo.safetensors
    python train.py --rewards none                   # the VCM baseline, same teacher: runs/toy/vcm.safetensors
    python train.py --toy-models runs/toy_models     # from models that prepare_toy.py wrote
    python train.py --resume                         # after a kill: go on from the newest saved state
    torchrun --nproc_per_node=2 train.py --out runs/ddp      # the same on 2 processes (gloo on CPU, nccl on GPU)
    python train.py --preset vc2_256 --data videos/ --captions videos.csv --hps HPS.pt --viclip VICLIP.pth
    python train.py --help                           # every config field is a flag

Processes, randomness and resuming (the plumbing section below). Everything random in training step k (which
clips, their noise, t, w, reward frames) is drawn from generators seeded by (seed, stage, k), for the WHOLE batch
of all processes; each process keeps its own rows. So N processes with batch b compute exactly what one process
with batch N*b would, and a resumed run replays exactly what the killed one would have done: the step number is
the RNG state and the data position. Only dropout inside the UNet (VC2's temporal dropout) draws from the global
RNG, seeded per (step, process).
"""

import argparse
import copy
import dataclasses
import inspect
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
from checkpoint import load_models, model_meta, read_meta, resolve_device, save_checkpoint, save_tensors
from lora import add_lora, merge_lora
from tiny_unet3d import UNet3D
from toy import ToyWorld

TOY_MODELS = Path(__file__).resolve().parent / "assets" / "toy"  # the shipped teacher and reward models


@dataclass
class Config:
    out: str = "runs/toy"          # where the student, its states and pictures go
    seed: int = 0
    device: str = "auto"           # auto (CUDA when available, else CPU), cpu or cuda (torchrun: cuda:LOCAL_RANK)
    threads: int = 0               # torch CPU threads; 0 = torch's default (all cores)
    fresh: bool = False            # train the student again even when OUT holds one
    # the teacher and the data: the toy world's shipped models, or VideoCrafter2 and a folder of videos
    toy_models: str = str(TOY_MODELS)  # folder with teacher.safetensors, reward_{image,video}.safetensors
    teacher: str = ""              # a teacher checkpoint (convert.py's output for VC2); "" = TOY_MODELS/teacher
    data: str = ""                 # folder of videos; "" = the toy world (toy.py)
    captions: str = ""             # CSV or JSONL naming a video and its caption per row (data.py lists the columns)
    size: int = 32                 # frame side, pixels (toy); real data: height x width below
    height: int = 0                # 0 = size
    width: int = 0                 # 0 = size
    frames: int = 8
    fps: int = 16                  # clip sampling rate and the fps condition; VC2 and T2V-Turbo always use 16
    temporal_dropout: float = 0.1  # dropout in the student's temporal convs while training (VC2 hard-codes 0.1)
    warmup: int = 100              # linear lr warm-up steps, then cosine decay to 10%
    # the T2V-Turbo student, consistency distillation (turbo.py Part 2, Algorithm 1)
    turbo_steps: int = 10000       # optimizer steps (toy(): 300)
    turbo_batch: int = 1           # clips per micro-batch and process (the release: 1 video per GPU, 8 GPUs)
    turbo_lr: float = 1e-5         # the release's lr on VC2 (toy(): 1e-4, a 1000x smaller model, 30x fewer steps)
    lora_rank: int = 64            # 0: fine-tune the whole student (toy()); the release trains rank-64 LoRA
    target: str = "ema"            # "ema": the paper's target network theta^- (eq. 6); "online": the released code's
    target_decay: float = 0.95     # mu, the EMA rate of theta^- (paper / LCM: 0.95)
    w_min: float = 5.0             # guidance scale w ~ U[w_min, w_max] per sample (paper Sec. 4; toy(): [2, 6])
    w_max: float = 15.0
    huber_c: float = 0.001         # pseudo-Huber c of the CD distance (release default)
    turbo_w: float = 7.5           # w used when sampling the student (release default; toy(): 4)
    turbo_sample_steps: int = 4
    # mixed reward feedback (turbo.py Part 4, eq. 10)
    rewards: str = "image+video"   # which rewards the student maximises: image+video, image, video, or none (= VCM)
    beta_img: float = 1.0          # weight of J_img (paper, VC2)
    beta_vid: float = 2.0          # weight of J_vid (paper, VC2)
    reward_frames: int = 5         # M frames scored by the image reward (release 5; paper 6)
    hps: str = ""                  # path to HPS_v2.1_compressed.pt: the real image reward instead of the toy's
    viclip: str = ""               # path to ViClip-InternVid-10M-FLT.pth: the real video reward instead of the toy's
    # memory and precision
    grad_accum: int = 1            # micro-batches per optimizer step
    max_grad_norm: float = 1.0     # gradient clipping (the release: 1.0)
    precision: str = "fp32"        # "bf16": autocast to bfloat16 (fp32 master weights; a frozen VC2 teacher in bf16)
    grad_ckpt_unet: bool = False   # recompute the student UNet's blocks in the backward pass
    grad_ckpt_decoder: bool = False  # ... the first-stage decoder on the reward path
    grad_ckpt_reward: bool = False   # ... the reward models' vision towers
    optim: str = "adamw"           # "adamw8bit": bitsandbytes' 8-bit AdamW (the release's choice), if installed
    # checkpoints, logging and the closing comparison
    save_every: int = 100          # optimizer steps between resumable states (OUT/<stage>.state-<step>.safetensors)
    keep: int = 2                  # resumable states kept per stage (older ones are deleted)
    resume: bool = False           # continue from the newest saved state instead of from step 0
    max_bad_steps: int = 10        # consecutive steps with a non-finite loss or gradient before the run stops
    val_every: int = 0             # a validation GIF grid every N steps (OUT/val/); 0 = none
    compare_per_caption: int = 2   # toy: videos per caption in the closing teacher-vs-student comparison (0: skip)


def toy():
    """The embedded default: T2V-Turbo on the moving-shapes world from the shipped teacher, on a CPU in minutes.
    The student is small (0.7 M parameters), so it is trained in full at lr 1e-4 rather than as LoRA at 1e-5,
    for 300 steps of 8 clips. Toy teachers sample best at CFG 2-5 (RESULTS.md), not VC2's 12, so the student is
    distilled at w ~ U[2, 6] around the teacher's CFG 5 (w = CFG - 1, LCM's convention; the paper's [5, 15]
    brackets VC2's 12 the same way) and samples at w 4."""
    return dataclasses.replace(Config(), turbo_steps=300, turbo_batch=8, turbo_lr=1e-4, lora_rank=0, w_min=2.0,
                               w_max=6.0, turbo_w=4.0)


def vc2_256():
    """VideoCrafter2 -> T2V-Turbo on ONE GPU at reduced resolution: 16 frames at 256 x 256 (latents 4 x 16 x 32 x
    32), LoRA rank 64, bf16 autocast, gradient checkpointing everywhere (add --optim adamw8bit with bitsandbytes).
    Needs `python convert.py --vc2 model.ckpt --out weights/vc2`, --data/--captions, and --hps/--viclip for the
    rewards (or --rewards none). Memory: TUTORIAL.md section 10."""
    return dataclasses.replace(
        Config(), out="runs/vc2_256", teacher="weights/vc2/teacher.safetensors", height=256, width=256, frames=16,
        warmup=0, save_every=500, keep=5, val_every=500, precision="bf16", grad_ckpt_unet=True,
        grad_ckpt_decoder=True, grad_ckpt_reward=True, compare_per_caption=0)


def vc2():
    """The release's recipe (digest section 3): 16 frames at 320 x 512, 1 clip per GPU on 8 GPUs
    (torchrun --nproc_per_node=8), lr 1e-5, 10K steps, LoRA rank 64, grad clip 1.0, bf16, 8-bit AdamW."""
    return dataclasses.replace(vc2_256(), out="runs/vc2", height=320, width=512, save_every=2000, optim="adamw8bit")


PRESETS = {"toy": toy, "vc2_256": vc2_256, "vc2": vc2}


def field_help(cls):
    """{field: its comment} read from the dataclass's source: each flag's one-line help is the comment beside it."""
    return {m[1]: m[2] for m in re.finditer(r"^\s+(\w+): [^#\n]*#\s*(.*)$", inspect.getsource(cls), re.M)}


def cli_config(cls, argv=None, doc=None, check=None, presets=None):
    """A dataclass config from the command line: --preset NAME picks a preset function (when `presets` is given),
    then every field is a --flag that overrides it. check(cfg, error) validates; error(msg) exits with code 2."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if presets:
        p.add_argument("--preset", default=next(iter(presets)), choices=list(presets), help="a preset function")
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        flag, h = "--" + f.name.replace("_", "-"), helps.get(f.name, "")
        if f.type is bool or f.type == "bool":  # --flag / --no-flag: a preset may have turned it on
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=h)
        else:
            p.add_argument(flag, type=type(f.default), default=None, help=f"{h} (default {f.default})")
    args = vars(p.parse_args(argv))
    cfg = presets[args.pop("preset")]() if presets else cls()
    cfg = dataclasses.replace(cfg, **{k: v for k, v in args.items() if v is not None})
    if cfg.device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", cfg.device):
        p.error(f"--device {cfg.device}: use auto, cpu, cuda or cuda:N")
    if check:
        check(cfg, p.error)
    return cfg


def check_config(cfg, error):
    """Every bad value of train.py's config gets one line before anything is loaded or written."""
    for name in ("turbo_steps", "turbo_batch", "size", "frames", "grad_accum", "save_every", "keep"):
        if getattr(cfg, name) < 1:
            error(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.rewards not in ("image+video", "image", "video", "none"):
        error("--rewards must be image+video, image, video or none")
    if cfg.target not in ("ema", "online"):
        error("--target must be 'ema' (paper) or 'online' (released code)")
    if not 0 < cfg.w_min <= cfg.w_max:
        error("need 0 < --w-min <= --w-max")
    if cfg.precision not in ("fp32", "bf16"):
        error("--precision must be fp32 or bf16")
    if cfg.optim not in ("adamw", "adamw8bit"):
        error("--optim must be adamw or adamw8bit")
    if bool(cfg.data) != bool(cfg.captions):
        error("--data and --captions go together (a folder of videos and its caption file)")
    if cfg.compare_per_caption < 0:
        error("--compare-per-caption must be >= 0")
    teacher = teacher_path(cfg)
    if not teacher.is_file():
        hint = "python prepare_toy.py writes one" if not cfg.teacher else "python convert.py --vc2 model.ckpt --out DIR"
        error(f"no teacher checkpoint at {teacher} ({hint})")
    try:
        kind = read_meta(teacher).get("kind")
    except ValueError as e:
        error(f"--teacher {teacher}: {e}")
    if kind != "teacher":
        error(f"--teacher {teacher} is a {kind!r} checkpoint, not a teacher")
    for kind in wanted_rewards(cfg):
        path = Path(cfg.hps if kind == "image" else cfg.viclip) if real_reward(cfg, kind) else toy_reward_path(cfg, kind)
        if not path.is_file():
            error(f"no {kind} reward model at {path}: give --{'hps' if kind == 'image' else 'viclip'} PATH, "
                  f"--toy-models DIR, or --rewards naming only what you have (none = VCM)")


def parse_config(argv=None):
    """train.py's command line (argv; None = sys.argv) -> its checked Config, as main() reads it."""
    return cli_config(Config, argv, __doc__, check_config, PRESETS)


def teacher_path(cfg):
    return Path(cfg.teacher) if cfg.teacher else Path(cfg.toy_models) / "teacher.safetensors"


def wanted_rewards(cfg):
    """--rewards image+video -> ['image', 'video'] (none -> [])."""
    return [k for k in ("image", "video") if k in cfg.rewards.split("+")]


def real_reward(cfg, kind):
    return bool(cfg.hps if kind == "image" else cfg.viclip)


def toy_reward_path(cfg, kind):
    return Path(cfg.toy_models) / f"reward_{kind}.safetensors"


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
    device = torch.device(resolve_device(cfg.device))
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
    try:
        models = load_models(teacher_path, run.device, dtype=torch.float32)  # the shipped toy files are fp16
    except (ValueError, OSError) as e:
        raise SystemExit(f"train.py: the teacher {teacher_path} does not load: {one_line(e)}") from None
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
        from evaluate import quick_look
        val = {"unet": target.eval(), "text": text, "ae": ae, "meta": {"kind": "turbo", "train": meta_train(cfg)}}
        quick_look(val, Path(cfg.out) / "val" / f"{name}-{step:06d}.gif", run.device)
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


def one_line(e):
    """An exception as one line: its first line, and how many more it had (e.g. a list of missing keys)."""
    lines = str(e).strip().splitlines() or [type(e).__name__]
    return lines[0] + (f" (and {len(lines) - 1} more lines)" if len(lines) > 1 else "")


def reward_models(cfg):
    """-> (image_reward or None, video_reward or None): the real HPSv2.1 / ViCLIP where --hps / --viclip name them,
    else the toy ones that prepare_toy.py trained (TOY_MODELS/reward_{image,video}.safetensors)."""
    from rewards import ImageTextReward, VideoTextReward, ViCLIP, load_reward, load_viclip, viclip_l14
    found = {}
    for kind in wanted_rewards(cfg):
        if kind == "image" and cfg.hps:
            found[kind] = ImageTextReward.hpsv21(cfg.hps)
        elif kind == "video" and cfg.viclip:
            found[kind] = VideoTextReward(load_viclip(ViCLIP(viclip_l14()), cfg.viclip))
        else:
            path = toy_reward_path(cfg, kind)
            try:
                found[kind] = load_reward(path)[0]
            except Exception as e:  # a truncated or foreign file: one line that names it
                raise SystemExit(f"train.py: the {kind} reward model {path} does not load: {one_line(e)}") from None
    return found.get("image"), found.get("video")


def main(argv=None):
    cfg = parse_config(argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = setup_processes(cfg)
    t0 = time.time()
    out, teacher = Path(cfg.out), teacher_path(cfg)
    name = student_name(cfg)
    path = out / f"{name}.safetensors"
    if run.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    barrier(run)
    if path.exists() and not cfg.fresh:
        if run.main:
            print(f"{path} exists: comparing it with its teacher (--fresh trains it again)")
    else:
        # 1. the frozen teacher (loaded in train_turbo) and the reward models
        data = make_data(cfg)
        image_reward, video_reward = reward_models(cfg)
        if run.main:
            rw = ", ".join(f"{k} reward from {cfg.hps or cfg.viclip if real_reward(cfg, k) else toy_reward_path(cfg, k)}"
                           for k in wanted_rewards(cfg)) or "no rewards (VCM)"
            print(f"teacher {teacher}; {rw}")
        # 2. distil the student
        student, text, ae, stats = train_turbo(cfg, run, data, teacher, image_reward, video_reward)
        if hasattr(data, "skipped"):  # summed over processes, by reason
            counts = [dict(data.skipped)]
            if run.world > 1:
                counts = [None] * run.world
                dist.all_gather_object(counts, dict(data.skipped))
            stats["skipped_videos"] = {k: sum(c.get(k, 0) for c in counts) for c in counts for k in c}
            if run.main:
                print(f"skipped videos: {stats['skipped_videos'] or 'none'}")
        if run.main:
            meta = model_meta(student, text, ae, kind="turbo", train=meta_train(cfg), stats=stats,
                              seconds=time.time() - t0)
            save_checkpoint(path, {"unet": student, "text": text, "ae": ae}, meta)
            for p in state_paths(cfg.out, name):
                p.unlink()
            print(f"wrote {path} ({meta['seconds']:.0f} s)")
        barrier(run)
    # 3. the closing comparison on the toy world: teacher 50 steps vs student 4 steps, one line and a GIF grid
    if run.main and not cfg.data and cfg.compare_per_caption:
        from evaluate import compare_line, toy_comparison
        label = {"turbo": "T2V-Turbo", "vcm": "VCM"}.get(name, name)
        models = {"teacher": load_models(teacher, run.device, dtype=torch.float32),
                  label: load_models(path, run.device, dtype=torch.float32)}
        res = toy_comparison(models, cfg.toy_models, run.device,
                             per_caption=cfg.compare_per_caption, grid=out / "compare.gif")
        print(f"wrote {out / 'compare.gif'} (rows: teacher on seen captions, teacher on held-out ones, {label} on "
              f"seen, {label} on held out)")
        print(compare_line(res) + f"; {(time.time() - t0) / 60:.1f} minutes in all")
    if run.world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
