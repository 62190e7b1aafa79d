"""T2V-Turbo, the paper's Algorithm 1 and eq. 10 (Li et al., arXiv 2405.18750): on the toy world on a CPU in minutes,
or on VideoCrafter2 on GPUs with the same code.

A 4-step video consistency model (the student) is distilled from a frozen text-to-video diffusion teacher while two
differentiable rewards of the student's single-step prediction are maximised. turbo.py has every equation; this
file runs them in Algorithm 1's order (`distill`, lines numbered as the paper's):
    1. load the frozen teacher (its UNet, text tower and first stage) and the two reward models;
    2. distil the student: consistency distillation (turbo.cd_loss, eqs. 5-7) plus the mixed reward feedback on
       its single-step prediction (turbo.reward_terms and turbo.mixed_loss, eqs. 8-10); --rewards none: VCM;
    3. on the toy world, compare the teacher's 50-step DDIM + CFG samples with the student's 4-step ones, 2 videos of
       8 seen and 8 held-out captions (toy VBench, judge, rewards, s/video): OUT/compare_<name>.gif and one line.
The toy's teacher and reward models ship pre-trained in toy/assets/ (toy/prepare.py). The loop over the steps and
their micro-batches is written here (`distill`); machinery/loop.py has the plumbing it calls (processes, a step's
random draws and lr, clipping, resumable states, logging).

    python train.py                                  # T2V-Turbo from the shipped teacher -> runs/toy/turbo.safetensors
    python train.py --turbo-steps 20 --compare-per-caption 0 --out runs/quick     # a quick look at the loop (30 s)
    python train.py --rewards none                   # the VCM baseline, same teacher: runs/toy/vcm.safetensors
    python train.py --resume                         # after a kill: go on from the newest saved state
    torchrun --nproc_per_node=2 train.py --out runs/ddp      # the same on 2 processes (gloo on CPU, nccl on GPU)
    python train.py --preset vc2_256 --data videos/ --captions videos.csv --hps HPS.pt --viclip VICLIP.pth
"""

import copy
import dataclasses
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

import turbo
from lora import AdaptersOff, EMAAdapters, lora_tensors, make_student, merge_lora
from machinery.batches import StepLoader
from machinery.checkpoint import load_models, load_reward, model_meta, read_meta, save_checkpoint, save_lora
from machinery.cli import check_fields, check_numbers, cli_config, one_line, run_cli
from machinery.loop import (Progress, all_finite, autocast_for, barrier, check_in_sync, check_optim, clipped,
                            data_draws, make_optimizer, no_state, resume, save_if_due, set_lr, setup_processes,
                            skip_step, state_paths, step_draws, sum_over_processes)
from ms.models import MS_RECIPE, build_models
from toy.evaluate import closing_comparison, quick_look
from toy.world import TOY_MODELS, ToyWorld, frames_problem
from vc2.data import LatentCache, VideoFolder, cached_latents, check_train_data
from vc2.internvideo2 import find_vocab
from vc2.release import load_real_reward, resolve_release_files


@dataclass
class Config:
    # the method: Algorithm 1 and eq. 10 (turbo.py Parts 2-4); what a learner sets
    out: str = "runs/toy"          # where the student, its states and pictures go
    seed: int = 0                  # every random draw of the run derives from it (machinery/loop.py: step_seed)
    turbo_steps: int = 10000       # optimizer steps (the release: 10K)
    turbo_batch: int = 1           # clips per micro-batch and process (the release: 1 video per GPU, 8 GPUs)
    turbo_lr: float = 1e-5         # the release's lr on VC2
    lora_rank: int = 64            # LoRA rank of the student (the release: 64); 0 = fine-tune the whole student
    target: str = "ema"            # theta^-: "ema", the paper's EMA copy (eq. 6); "online", the release's student
    target_decay: float = 0.95     # mu, the EMA rate of theta^- (paper / LCM: 0.95)
    w_min: float = 5.0             # guidance scale w ~ U[w_min, w_max] per clip (paper Sec. 4)
    w_max: float = 15.0            # ... and its upper end
    huber_c: float = 0.001         # pseudo-Huber c of the CD distance (the release's)
    rewards: str = "image+video"   # the rewards maximised: image+video, image, video, or none (= VCM)
    beta_img: float = 1.0          # weight of J_img (paper, VC2)
    beta_vid: float = 2.0          # weight of J_vid (paper, VC2); the release's is in effect 0.67 (TUTORIAL.md sec. 9)
    reward_frames: int = 5         # M frames scored by the image reward (the release: 5; the paper: 6)
    turbo_w: float = 7.5           # w the student samples with (the release's default)
    turbo_sample_steps: int = 4    # steps the student samples with (the paper's 4)
    # the teacher, the reward models and the data: the toy world's shipped models, or VideoCrafter2, the real
    # reward models and a folder of videos
    toy_models: str = str(TOY_MODELS)  # folder with teacher.safetensors, reward_{image,video}.safetensors
    teacher: str = ""              # a teacher checkpoint (vc2/convert.py's output for VC2); "" = TOY_MODELS/teacher
    hps: str = ""                  # HPS_v2.1_compressed.pt: the real image reward instead of the toy's
    viclip: str = ""               # ViClip-InternVid-10M-FLT.pth: the real video reward instead of the toy's
    internvideo2: str = ""         # InternVideo2-stage2_1b-224p-f4.pt: the VC2 release's video reward (not ViCLIP)
    bert_vocab: str = ""           # bert-large-uncased's vocab.txt or its Hugging Face folder (for --internvideo2)
    data: str = ""                 # folder of videos; "" = the toy world (toy/world.py)
    captions: str = ""             # CSV or JSONL naming a video and its caption per row (vc2/data.py lists the columns)
    size: int = 32                 # frame side, pixels (toy); real data: height x width below
    height: int = 0                # 0 = size
    width: int = 0                 # 0 = size
    frames: int = 8                # frames per clip (the toy: 8; VC2: 16)
    fps: int = 16                  # clip sampling rate and the fps condition; VC2 and T2V-Turbo always use 16
    # the release's training details: the lr schedule, dropout
    lr_schedule: str = "constant"  # after the warm-up: constant (the release) or cosine (decay to 10% at the end)
    warmup: int = 0                # linear lr warm-up steps, at most a tenth of the run (the release: none)
    lora_dropout: float = 0.1      # dropout on the LoRA branch of Linear/Conv2d layers (the release: 0.1)
    temporal_dropout: float = 0.1  # dropout in the student's temporal convs while training (VC2 hard-codes 0.1)
    max_grad_norm: float = 1.0     # gradient clipping (the release: 1.0)
    # scale-up: processes and devices, data workers and a latent cache, memory, precision, the optimizer
    device: str = "auto"           # auto (CUDA when available, else CPU), cpu or cuda (torchrun: cuda:LOCAL_RANK)
    threads: int = 0               # torch CPU threads; 0 = torch's default (all cores)
    data_workers: int = 0          # processes decoding the coming steps' clips ahead (batches.StepLoader); 0: none
    cache: str = ""                # a latent cache (python -m vc2.data ... --cache DIR) to read instead of --data
    grad_accum: int = 1            # micro-batches per optimizer step
    precision: str = "fp32"        # "bf16": bf16 autocast for every model, fp32 weights (the release: bf16 mixed
                                   # precision, its teacher under fp16 autocast: TUTORIAL.md section 9)
    grad_ckpt_unet: bool = False   # recompute the student UNet's blocks in the backward pass
    grad_ckpt_decoder: bool = False  # ... the first-stage decoder on the reward path
    grad_ckpt_reward: bool = False   # ... the reward models' vision towers
    optim: str = "adamw"           # "adamw8bit": bitsandbytes' 8-bit AdamW (the release's choice), if installed
    # checkpoints, logging and the closing comparison
    fresh: bool = False            # train the student again even when OUT holds one
    save_every: int = 100          # optimizer steps between resumable states (OUT/<name>.state-<step>.safetensors)
    keep: int = 2                  # resumable states kept (older ones are deleted)
    resume: bool = False           # continue from the newest saved state of this run (OUT must hold one)
    max_bad_steps: int = 10        # consecutive steps with a non-finite loss or gradient before the run stops
    val_every: int = 0             # a GIF grid of the student every N steps (OUT/val/); 0 = none
    compare_per_caption: int = 2   # toy: videos per caption in the closing teacher-vs-student comparison (0: skip)


def toy():
    """The embedded default: T2V-Turbo on the moving-shapes world from the shipped teacher, on a CPU in minutes.
    The student is small (0.7 M parameters), so it is trained in full at lr 1e-4 rather than as LoRA at 1e-5, for
    300 steps of 8 clips, warmed up and decayed (cosine): a short run at a high lr ends best on a low one. Toy
    teachers sample best at CFG 2-5 (RESULTS.md), not VC2's 12, so the student is distilled at w ~ U[2, 6] around
    the teacher's CFG 5 (w = CFG - 1, LCM's convention; the paper's [5, 15] brackets VC2's 12 the same way) and
    samples at w 4."""
    return dataclasses.replace(Config(), turbo_steps=300, turbo_batch=8, turbo_lr=1e-4, lr_schedule="cosine",
                               warmup=30, lora_rank=0, w_min=2.0, w_max=6.0, turbo_w=4.0)


def vc2_256():
    """VideoCrafter2 -> T2V-Turbo on ONE GPU at reduced resolution: 16 frames at 256 x 256 (latents 4 x 16 x 32 x
    32), LoRA rank 64, bf16 autocast, gradient checkpointing everywhere (add --optim adamw8bit with bitsandbytes).
    Needs `python -m vc2.convert --vc2 model.ckpt --out weights/vc2`, --data/--captions, and --hps/--viclip for the
    rewards (or --rewards naming what you have). Memory: TUTORIAL.md section 10."""
    return dataclasses.replace(
        Config(), out="runs/vc2_256", teacher="weights/vc2/teacher.safetensors", height=256, width=256, frames=16,
        save_every=500, keep=5, val_every=500, precision="bf16", grad_ckpt_unet=True, grad_ckpt_decoder=True,
        grad_ckpt_reward=True, compare_per_caption=0)


def vc2():
    """The release's recipe: 16 x 320 x 512, 1 clip per GPU on 8 GPUs (torchrun), lr 1e-5, bf16, 8-bit AdamW."""
    return dataclasses.replace(vc2_256(), out="runs/vc2", height=320, width=512, save_every=2000, optim="adamw8bit")


PRESETS = {"toy": toy, "vc2_256": vc2_256, "vc2": vc2, "ms": lambda: dataclasses.replace(vc2_256(), **MS_RECIPE)}
CHOICES = {"rewards": ("image+video", "image", "video", "none"), "target": ("ema", "online"),
           "precision": ("fp32", "bf16"), "optim": ("adamw", "adamw8bit"), "lr_schedule": ("constant", "cosine")}


def check_config(cfg, error):
    """Every bad value of train.py's config gets one line before anything is loaded or written."""
    check_fields(cfg, error, ("turbo_steps", "turbo_batch", "size", "frames", "grad_accum", "save_every", "keep"),
                 CHOICES)
    if not 0 < cfg.w_min <= cfg.w_max:
        error("need 0 < --w-min <= --w-max")
    check_numbers(cfg, error, {  # every float is finite (cli_config); each number in its range, the first not named
        "turbo_lr": "(0, inf)", "target_decay": "[0, 1)", "huber_c": "(0, inf)", "beta_img": "[0, inf)",
        "beta_vid": "[0, inf)", "turbo_w": "[0, inf)", "temporal_dropout": "[0, 1)", "max_grad_norm": "(0, inf)",
        "warmup": "[0, inf)", "lora_rank": "[0, inf)", "reward_frames": "[1, inf)", "turbo_sample_steps": "[1, inf)",
        "max_bad_steps": "[1, inf)", "height": "[0, inf)", "width": "[0, inf)", "fps": "[1, inf)",
        "threads": "[0, inf)", "val_every": "[0, inf)", "lora_dropout": "[0, 1)", "compare_per_caption": "[0, inf)"})
    check_optim(cfg, error)                                 # --optim adamw8bit: bitsandbytes installed?
    if not (cfg.data or cfg.cache) and (cfg.height or cfg.size) != (cfg.width or cfg.size):
        error("the toy world is square: use --size, not --height/--width")
    problem = frames_problem(cfg.frames, cfg.height or cfg.size)        # clips the toy world cannot draw
    if problem and not (cfg.data or cfg.cache):
        error(f"{problem}, or real video (--data/--captions)")
    resolve_release_files(cfg)                              # --hps FOLDER: the file in it (or in its HF snapshot)
    check_train_data(cfg, teacher_path(cfg), error)         # --data/--captions, --cache, --data-workers
    teacher = teacher_path(cfg)
    try:
        meta = read_meta(teacher)
    except (OSError, ValueError) as e:
        hint = "python -m vc2.convert --vc2 model.ckpt --out DIR" if cfg.teacher else "python -m toy.prepare writes one"
        error(f"--teacher {teacher}: {e}" if teacher.is_file() else f"no teacher checkpoint at {teacher} ({hint})")
    if meta.get("kind") != "teacher":
        error(f"--teacher {teacher} is a {meta.get('kind')!r} checkpoint, not a teacher")
    if cfg.internvideo2 and (cfg.viclip or not find_vocab(cfg.bert_vocab, must=False)):
        error("--internvideo2 takes the place of --viclip, and needs --bert-vocab (bert-large-uncased's vocab.txt)")
    real = "real data" if cfg.data or cfg.cache else "a real teacher" if {"vc2", "ms"} & set(meta.get("source", {})) \
        else None
    for kind in wanted_rewards(cfg):
        flag = "--hps" if kind == "image" else "--viclip or --internvideo2"
        path, given = reward_file(cfg, kind)
        if real and not given:  # the toy's 32-pixel reward models mean nothing there
            error(f"{real} needs a real {kind} reward model: give {flag} PATH, or --rewards naming only the "
                  f"rewards you have (image, video, or none = VCM)")
        if not path.is_file():
            error(f"no {kind} reward model at {path}: give {flag} PATH, --toy-models DIR, or --rewards naming only "
                  f"what you have (none = VCM)")
    name = student_name(cfg)
    if cfg.resume and (cfg.fresh or not (Path(cfg.out) / f"{name}.safetensors").exists()):  # it would train
        runs = {student_name(dataclasses.replace(cfg, rewards=r)): r for r in CHOICES["rewards"]}
        missing = no_state(cfg.out, name, lambda other: f" (a run with --rewards {runs[other]})" * (other in runs))
        if missing:  # a mistyped --out or another --rewards would otherwise start over from step 0
            error(missing)


def parse_config(argv=None):
    """train.py's command line (argv; None = sys.argv) -> its checked Config, as main() reads it."""
    return cli_config(Config, argv, __doc__, check_config, PRESETS)


def teacher_path(cfg):
    return Path(cfg.teacher or Path(cfg.toy_models) / "teacher.safetensors")


def wanted_rewards(cfg):
    """--rewards image+video -> ['image', 'video'] (none -> [])."""
    return [k for k in ("image", "video") if k in cfg.rewards.split("+")]


def reward_file(cfg, kind):
    """The `kind` ('image', 'video') reward model's file -> (path, real): the real one its flag names (--hps;
    --internvideo2 or --viclip), else the toy's in --toy-models."""
    real = cfg.hps if kind == "image" else cfg.internvideo2 or cfg.viclip
    return Path(real or Path(cfg.toy_models) / f"reward_{kind}.safetensors"), bool(real)


def student_name(cfg):
    """turbo (both rewards), vcm (none: the paper's VCM baseline), or turbo_image / turbo_video (ablations)."""
    return {"image+video": "turbo", "none": "vcm"}.get(cfg.rewards, "turbo_" + cfg.rewards)


def meta_train(cfg):
    """The training config as checkpoints record it (sample.py reads height/width/frames/fps/turbo_w from it)."""
    return {**dataclasses.asdict(cfg), "height": cfg.height or cfg.size, "width": cfg.width or cfg.size}


def open_data(cfg):
    """What a training step draws from: a latent cache (--cache), a folder of videos (--data/--captions), or the
    toy world. Each gives batch(n, rng, rows) -> (video (n, 3, t, h, w) in [-1, 1], or the cache's x; captions).
    A bad folder or caption file: ValueError or OSError, one line."""
    height, width = cfg.height or cfg.size, cfg.width or cfg.size
    if cfg.cache:
        return LatentCache(cfg.cache)
    if cfg.data:
        return VideoFolder(cfg.data, cfg.captions, height=height, width=width, frames=cfg.frames, fps=cfg.fps)
    return ToyWorld(size=height, frames=cfg.frames, seed=cfg.seed + 1)


# ----------------------------------------------------------------------------------------------------------------
# 1. The frozen teacher, the reward models, the data, and the student built from the teacher


def reward_models(cfg, device):
    """-> (image_reward or None, video_reward or None): the real ones the flags name, else the toy's (TOY_MODELS)."""
    found = {}
    for kind in wanted_rewards(cfg):
        path, real = reward_file(cfg, kind)
        try:  # InternVideo2: bf16 as stored, or fp32 for an fp32 run
            found[kind] = (load_real_reward(kind, path, cfg.internvideo2, cfg.bert_vocab,
                                            None if cfg.precision == "bf16" else torch.float32)
                           if real else load_reward(path)[0])
        except (ValueError, OSError) as e:  # a truncated or foreign file: one line that names it
            raise SystemExit(f"train.py: the {kind} reward model {path} does not load: {one_line(e)}") from None
        found[kind].to(device).set_grad_checkpointing(cfg.grad_ckpt_reward)
    return found.get("image"), found.get("video")


def make_networks(cfg, run, unet):
    """Algorithm 1, line 1: the student theta, its trainable tensors, the target theta^- (eq. 6; "online": the student
    itself, as the release) and the teacher the ODE solver calls. With LoRA all three share ONE UNet (lora.py, exact);
    full fine-tuning keeps a separate teacher and an EMA copy of the whole student."""
    student, params = make_student(unet, cfg.lora_rank, cfg.temporal_dropout, cfg.grad_ckpt_unet, cfg.lora_dropout)
    student.to(run.device).train()                                           # fp32 master weights
    if cfg.lora_rank:
        target = EMAAdapters(student, params) if cfg.target == "ema" else student
        teacher = AdaptersOff(student)
    else:
        target = copy.deepcopy(student).eval().requires_grad_(False) if cfg.target == "ema" else student
        teacher = unet
    if run.main:
        kind = f"LoRA rank {cfg.lora_rank}" if cfg.lora_rank else "full"
        print(f"student: {sum(p.numel() for p in params):,} trainable parameters ({kind}), target network: "
              f"{cfg.target}, {run.world} process(es) x {cfg.turbo_batch} clips x {cfg.grad_accum} micro-batches")
    return student, params, target, teacher


# ----------------------------------------------------------------------------------------------------------------
# 2. Algorithm 1: consistency distillation with mixed reward feedback


def distill(cfg, run, data, teacher, image_reward=None, video_reward=None):
    """Trains the student (theta) from the frozen teacher, Algorithm 1 line by line; -> (student, stats, adapters).
    The student is the online one (merged when it is LoRA), which is what gets saved and sampled; adapters are its
    LoRA tensors on their own (lora.lora_tensors; {} without LoRA). stats: the logs, the bad steps, the trained
    numbers and each step's seconds."""
    text, ae, b = teacher["text"], teacher["ae"], cfg.turbo_batch
    name = student_name(cfg)                  # the run's name: OUT/<name>.safetensors, its states, its progress bar
    stream = name                             # the key of every random draw of the run (loop.py: step_seed)
    torch.manual_seed(cfg.seed)
    # line 1: theta <- the teacher's weights (+ the zero w-projection); theta^- <- theta. With LoRA the teacher's
    # UNet becomes the student's and teacher_unet is the same network with its adapters off (lora.py)
    student, params, target, teacher_unet = make_networks(cfg, run, teacher.pop("unet"))
    ddp_student = DistributedDataParallel(student) if run.world > 1 else student     # averages the gradients
    abar, split = turbo.diffusion_of(teacher_unet.config, run.device)    # the teacher's schedule, parameterisation
    loader = StepLoader(data, partial(data_draws, cfg, run, stream, b=b), cfg.data_workers, cfg.grad_accum)
    with torch.no_grad():
        uncond = text.encode_text([""]).float()                             # (1, L, d): the empty caption
    modules = {"student": student} if target is student else {"student": student, "target": target}
    opt = make_optimizer(cfg, params, cfg.turbo_lr)                         # line 10's optimizer: AdamW
    start, logs, bad = resume(cfg, run, name, cfg.turbo_steps, modules, opt)     # --resume: where a run stopped
    skipped = lambda: {"skipped": sum(getattr(data, "skipped", {}).values())}       # videos, in the progress bar
    progress, autocast = Progress(cfg, run, name, start, cfg.turbo_steps, b, skipped), autocast_for(cfg, run)
    for step in progress:                     # line 2: repeat, for cfg.turbo_steps optimizer steps
        set_lr(opt, cfg, step, cfg.turbo_steps, cfg.turbo_lr)
        opt.zero_grad(set_to_none=True)
        finite, step_logs = True, []
        for micro in range(cfg.grad_accum):   # lines 3-9 on each micro-batch of this process's share of the step
            last = micro == cfg.grad_accum - 1  # DDP averages the gradients across processes once, on the last
            with ddp_student.no_sync() if run.world > 1 and not last else nullcontext():
                with autocast:                 # --precision bf16: the forward pass in bf16, not the backward
                    _, gen, B, rows = step_draws(cfg, run, stream, step, micro, b)
                    x, caps = loader.batch(step, micro)  # line 3: a batch (x, c): x (b, 3, t, H, W) in [-1, 1]
                    # line 4: z0 = E(x) (b, c, t, h, w) and the text tower's embedding of c (b, L, d); --cache: read
                    with torch.no_grad():
                        z0 = cached_latents(ae, x, run.device) if cfg.cache else ae.encode(x.to(run.device)).float()
                        context = x["context"].to(run.device) if cfg.cache else text.encode_text(caps).float()
                    # lines 5-8: n ~ U{0..49}, w ~ U[w_min, w_max], eps ~ N(0, I) for the whole global batch (B clips),
                    # of which this process keeps its rows; then z_{t_{n+k}}, the solver's z_{t_n}, f_theta, the target
                    # f_{theta^-} and L_CD = d(f_theta, target) (eqs. 5-7)
                    draws = turbo.cd_draws(B, z0.shape[1:], cfg.w_min, cfg.w_max, generator=gen)
                    draws = {k: v[rows.start:rows.stop] for k, v in draws.items()}
                    loss_cd, f_theta, _ = turbo.cd_loss(ddp_student, target, teacher_unet, z0, context,
                                                        uncond.expand_as(context), cfg.fps, abar, draws, cfg.huber_c,
                                                        split=split)
                    # eqs. 8-9: decode f_theta's scored frames and reward them (J_img on M frames, J_vid on 8)
                    rewards = turbo.reward_terms(f_theta, ae, caps, image_reward, video_reward, cfg.reward_frames,
                                                 generator=gen, decode_checkpoint=cfg.grad_ckpt_decoder)
                    # eq. 10 (line 9): L = L_CD - beta_img J_img - beta_vid J_vid
                    loss = turbo.mixed_loss(loss_cd, rewards, cfg.beta_img, cfg.beta_vid)
                finite = all_finite(run, loss)  # every process must agree before any of them calls backward
                if not finite:
                    break
                (loss / cfg.grad_accum).backward()
            step_logs.append({"loss": loss.item(), "cd": loss_cd.item(), **{k: v.mean().item() for k, v in
                                                                             rewards.items()}})
            del loss, loss_cd, f_theta, rewards   # their graphs hold ~0.1 GiB: gone before the next forward pass
        if not clipped(finite, params, cfg.max_grad_norm):  # clip the gradient's norm; a non-finite one: no update
            skip_step(cfg, opt, name, step, bad)
            continue
        bad["in_a_row"] = 0
        opt.step()                            # line 10: theta <- theta - eta grad L
        if target is not student:             # line 11: theta^- <- stopgrad(mu theta^- + (1 - mu) theta)
            turbo.ema_update(target.parameters(), params, cfg.target_decay)
        progress.log(step, step_logs, logs, bad)
        save_if_due(cfg, run, name, step + 1, cfg.turbo_steps, modules, opt, logs, bad)
        if cfg.val_every and (step + 1) % cfg.val_every == 0 and run.main:
            validate(cfg, run, student, text, ae, step + 1)
    check_in_sync(run, student, name)
    return finished(student, params, logs, bad, progress.seconds)


def finished(student, params, logs, bad, seconds):
    """-> (the student as it is saved: LoRA merged, no checkpointing; its stats; its LoRA tensors alone)."""
    adapters = lora_tensors(student)                 # (merging leaves these tensors as they are)
    merge_lora(student.eval())
    student.config = dataclasses.replace(student.config, use_checkpoint=False)
    final = {k: float(np.mean([l[k] for l in logs[-100:]])) for k in logs[-1]} if logs else {}   # last 100 steps
    stats = {"final": final, "log": logs, "bad_steps": bad["steps"], "step_seconds": seconds,
             "trainable": sum(p.numel() for p in params)}
    return student, stats, adapters


def validate(cfg, run, student, text, ae, step):
    """--val-every: a look at the model that will be saved, the online student: OUT/val/<name>-<step>.gif."""
    val = {"unet": student.eval(), "text": text, "ae": ae, "meta": {"kind": "turbo", "train": meta_train(cfg)}}
    quick_look(val, Path(cfg.out) / "val" / f"{student_name(cfg)}-{step:06d}.gif", run.device)
    student.train()


# ----------------------------------------------------------------------------------------------------------------
# 3. main: train and save the student; on the toy, compare it with its teacher


def main(argv=None):
    cfg = parse_config(argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = setup_processes(cfg)
    t0, path = time.time(), Path(cfg.out) / f"{student_name(cfg)}.safetensors"
    if path.exists() and not cfg.fresh:
        if run.main:
            print(f"{path} exists: comparing it with its teacher (--fresh trains it again)")
    else:
        try:  # frozen, in eval mode (TUTORIAL.md section 9, "teacher mode"); fp32 weights (the toy files are fp16)
            teacher = load_models(teacher_path(cfg), run.device, dtype=torch.float32, build=build_models)
        except (ValueError, OSError) as e:
            raise SystemExit(f"train.py: the teacher {teacher_path(cfg)} does not load: {one_line(e)}") from None
        try:
            data = open_data(cfg)
        except (ValueError, OSError) as e:
            raise SystemExit(f"train.py: --data/--captions: {one_line(e)}") from None
        image_reward, video_reward = reward_models(cfg, run.device)
        if run.main:  # (OUT is made by the first file written into it: nothing is written before this point)
            rw = ", ".join(f"{k} reward from {reward_file(cfg, k)[0]}" for k in wanted_rewards(cfg))
            print(f"teacher {teacher_path(cfg)}; {rw or 'no rewards (VCM)'}")
        barrier(run)
        student, stats, adapters = distill(cfg, run, data, teacher, image_reward, video_reward)
        if hasattr(data, "skipped"):
            stats["skipped_videos"] = sum_over_processes(run, data.skipped - data.caption_skipped, data.caption_skipped)
            if run.main:
                print(f"skipped videos: {stats['skipped_videos'] or 'none'}")
        if run.main:
            meta = model_meta(student, teacher["text"], teacher["ae"], kind="turbo", train=meta_train(cfg),
                              stats=stats, seconds=time.time() - t0)
            save_checkpoint(path, {"unet": student, "text": teacher["text"], "ae": teacher["ae"]}, meta)
            save_lora(path.with_name(f"{path.stem}_lora.safetensors"), adapters, meta, cfg.lora_rank)  # LoRA: alone too
            for p in state_paths(cfg.out, student_name(cfg)):
                p.unlink()
            print(f"wrote {path} ({meta['seconds']:.0f} s)")
        barrier(run)
    if run.main and not cfg.data and cfg.compare_per_caption:   # the toy: one line and OUT/compare_<name>.gif
        closing_comparison(teacher_path(cfg), path, student_name(cfg), cfg.toy_models, cfg.compare_per_caption,
                           run.device, t0)
    if run.world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run_cli(main)
