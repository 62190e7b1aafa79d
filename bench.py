"""Benchmarks (not tests): figures measured in one run on this machine, printed as a table and as `name: value` lines.

    python bench.py            # main, sample and train (a few minutes)
    python bench.py main       # the main job: teacher and student step, GFLOP/s vs a matmul peak, minutes
    python bench.py sample     # 50-step CFG teacher vs 4-step T2V-Turbo student, end to end (text -> pixels)
    python bench.py train      # a student step with the mixed reward vs CD alone
    python bench.py load       # peak RSS of loading a full-size VC2 checkpoint over its size (~2 min, 6.9 GiB)
    python bench.py ddp        # toy student steps with train.py on 1 process and under torchrun on 2 (~2 min)
    python bench.py vc2        # 2 vc2_256 training steps, every model at full size with random weights (CPU: minutes)
    python bench.py vc2_iv2    # the same with InternVideo2-Stage2 1B as the video reward
    python bench.py vc2_sample # sample.py on full-size checkpoints (random weights): teacher and student, 1 step
    python bench.py eval       # evaluate.py --samples scored by full-size HPSv2.1 and ViCLIP (random weights)
    python bench.py data       # clips/s of the data path: seek vs sequential decode, 1 and N workers, a latent cache
    python bench.py gpu        # on a CUDA machine: the vc2_256 step, 4- vs 50-step latency, the toy main job (--tiny:
                               # the same script with toy-size models on a CPU, a check)

Sections are functions named bench_<section>; each returns {name: value}. Ratios are measured in the same run on
the same model size, so they travel between machines better than the absolute seconds do.
"""

import argparse
import dataclasses
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import data
import evaluate
import internvideo2
import open_clip
import sample
import train
import turbo
from checkpoint import META_KEY, build_models, read_meta, save_tensors
from convert import VC2_TRAIN
from encoders import (AutoencoderKL, LinearAutoencoder, TextEncoder, openclip_vit_h14, sd_kl_f8, toy_ae,
                      toy_linear_ae, toy_text)
from data import open_data
from loop import Parser, data_draws, setup_processes
from prepare_toy import TEACHER_UNET
from rewards import (ImageTextReward, VideoTextReward, ViCLIP, random_hpsv21, toy_clip_cfg, toy_image_reward,
                     toy_video_reward, toy_viclip, viclip_l14)
from tiny_unet3d import UNet3D, toy_unet, vc2
from toy import ToyWorld
from videoio import read_video

ROOT = Path(__file__).resolve().parent


def toy_teacher(**changes):
    """The toy teacher's UNet config, as prepare_toy.py trains it (TEACHER_UNET: v-prediction, zero-terminal SNR,
    relative positions, transformers at both levels); `changes` override fields (e.g. model_channels=64)."""
    return dataclasses.replace(toy_unet(), **TEACHER_UNET, **changes)


def _timed(fn, repeats):
    fn()  # warm-up: first calls pay for allocation and kernel selection
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


@torch.no_grad()
def bench_sample(batch=8, repeats=3):
    """End-to-end sampling of `batch` toy videos: text encoding, the sampler's UNet calls, decoding to pixels.
    The teacher makes 2 x 50 UNet evaluations per video (CFG doubles them), the student 4: the limit is 25x."""
    torch.manual_seed(0)
    ae, text = LinearAutoencoder(toy_linear_ae()), TextEncoder(toy_text()).eval()
    teacher = UNet3D(toy_teacher()).eval()
    student = UNet3D(dataclasses.replace(toy_teacher(), guidance_embed_dim=256)).eval()
    abar = turbo.schedule(teacher.config)
    prompts = ["a red circle moving left"] * batch
    noise = torch.randn(batch, toy_teacher().in_channels, 8, 8, 8)

    def teacher50():
        ctx, unc = text.encode_text(prompts), text.encode_text([""] * batch)
        return ae.decode(turbo.ddim_sample(teacher, noise, ctx, unc, 16, abar, steps=50, guidance=5.0))

    def turbo4():
        ctx = text.encode_text(prompts)
        return ae.decode(turbo.consistency_sample(student, noise, ctx, 16, abar, steps=4, w=4.0))

    t_teacher, t_turbo = _timed(teacher50, repeats), _timed(turbo4, repeats)
    return {"sample_teacher50_s_per_video": t_teacher / batch, "sample_turbo4_s_per_video": t_turbo / batch,
            "sample_unet_evals_teacher50": 100, "sample_unet_evals_turbo4": 4,
            "sample_speedup_teacher50_over_turbo4": t_teacher / t_turbo}


def bench_train(batch=8, repeats=5):
    """One student training step on the toy preset, CD only vs CD + both rewards (same batch, same models):
    the reward terms decode 5 + 8 frames of f_theta and run two reward models forward and backward."""
    torch.manual_seed(0)
    ae, text = LinearAutoencoder(toy_linear_ae()), TextEncoder(toy_text()).eval()
    world = ToyWorld(seed=0)
    ae.fit(world.batch(64)[0])
    teacher = UNet3D(toy_teacher()).eval().requires_grad_(False)
    student = UNet3D(dataclasses.replace(toy_teacher(), guidance_embed_dim=256)).train()
    student.load_state_dict(teacher.state_dict(), strict=False)
    target = UNet3D(student.config).eval().requires_grad_(False)
    target.load_state_dict(student.state_dict())
    image_reward, video_reward = toy_image_reward(), toy_video_reward()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5)
    abar = turbo.schedule(teacher.config)
    video, caps = world.batch(batch)
    with torch.no_grad():
        z0, ctx = ae.encode(video), text.encode_text(caps)
        unc = text.encode_text([""] * batch)

    def step(with_rewards):
        def run():
            loss, f, _ = turbo.cd_loss(student, target, teacher, z0, ctx, unc, 16, abar,
                                       turbo.cd_draws(z0.shape[0], z0.shape[1:]))
            if with_rewards:
                r = turbo.reward_terms(f, ae, caps, image_reward, video_reward)
                loss = turbo.mixed_loss(loss, r)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    t_cd = _timed(step(False), repeats)
    t_rw = _timed(step(True), repeats)
    return {"train_step_cd_s": t_cd, "train_step_cd_reward_s": t_rw,
            "train_step_ratio_cd_reward_over_cd": t_rw / t_cd,
            "train_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


_BENCH_CHILD = r"""
import json, re, resource, sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[2])
from checkpoint import load_models


def peak_rss():
    # VmHWM is this process's own peak. ru_maxrss would also count the parent that spawned it: Linux keeps the
    # high-water mark of the pre-exec copy of the parent across exec. ru_maxrss is the fallback off Linux.
    try:
        return int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


base = peak_rss()  # an interpreter that has imported torch and this repo
t0 = time.time()
models = load_models(sys.argv[1])
seconds = time.time() - t0
# read every number once, so that memory which is only mapped, not yet resident, would count too
params = [p for k in ("unet", "text", "ae") for p in models[k].parameters()]
checksum = sum(float(p.sum()) for p in params)
print(json.dumps({"base": base, "peak": peak_rss(), "seconds": seconds, "numbers": sum(p.numel() for p in params)}))
"""


def bench_load(workdir=None):
    """Peak RSS of checkpoint.load_models on a synthetic full-size VC2 teacher checkpoint (what sample.py loads:
    our safetensors file, 2026 tensors of the real shapes, random values; 1.85 B numbers, 6.9 GiB in fp32), over the
    file's size. The load runs in a fresh interpreter; its peak RSS after importing torch and this repo is subtracted.
    Needs ~6.9 GiB of disk (a temporary folder in `workdir`) and of RAM; where RAM is short it measures fp16 instead
    (a 3.4 GiB file) and says so. Takes a minute or two, most of it writing the file."""
    meta = {"kind": "teacher", "unet": asdict(vc2()), "text": asdict(openclip_vit_h14()), "ae": asdict(sd_kl_f8()),
            "train": VC2_TRAIN, "source": {"vc2": "synthetic (bench_load)"}}
    shapes = {f"{p}.{k}": v.shape for p, m in build_models(meta).items() for k, v in m.state_dict().items()}
    numel = sum(math.prod(s) for s in shapes.values())
    avail = next((int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemAvailable")), None) \
        if os.path.exists("/proc/meminfo") else None
    dtype = torch.float32 if avail is None or avail > 1.5 * 4 * numel else torch.float16
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        free = os.statvfs(d).f_bavail * os.statvfs(d).f_frsize
        if free < 1.1 * numel * dtype.itemsize:
            raise RuntimeError(f"bench_load needs {_gb(numel * dtype.itemsize):.1f} GiB free in {d}; "
                               f"{_gb(free):.1f} GiB are")
        path = Path(d) / "teacher.safetensors"
        gen = torch.Generator().manual_seed(0)
        placeholders = {k: torch.empty(s, dtype=dtype, device="meta") for k, s in shapes.items()}
        t0 = time.time()
        save_tensors(path, placeholders, {META_KEY: json.dumps(meta)},
                     lambda k: torch.randn(shapes[k], generator=gen).to(dtype))  # one tensor at a time
        t_write, size = time.time() - t0, path.stat().st_size
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        run = subprocess.run([sys.executable, "-c", _BENCH_CHILD, str(path), str(ROOT)],
                             capture_output=True, text=True, env=env)
        if run.returncode:
            raise RuntimeError(f"bench_load's loader failed:\n{run.stderr[-2000:]}")
        r = json.loads(run.stdout.strip().splitlines()[-1])
    return {"vc2_load_peak_rss_over_ckpt_bytes": (r["peak"] - r["base"]) / size, "vc2_load_ckpt_bytes": size,
            "vc2_load_peak_rss_bytes": r["peak"], "vc2_load_baseline_rss_bytes": r["base"],
            "vc2_load_s": r["seconds"], "vc2_load_write_s": t_write, "vc2_load_dtype_bytes": dtype.itemsize}


# ----------------------------------------------------------------------------------------------------------------



def bench_ddp(steps=30, batch=4):
    """The toy student stage of train.py (CD + both rewards, fresh toy teacher and reward models) run for `steps`
    steps on 1 process with `batch` clips, and under torchrun on 2 processes with batch/2 clips each (the same
    global batch), 1 thread per process. Step time = the stage's wall time over its steps; peak memory = the
    largest RSS of any process of the run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    tiny = ["--warmup", "1", "--threads", "1", "--device", "cpu"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"   # tiny random-ish toy models: the step costs the same as with the shipped ones
        subprocess.run([sys.executable, str(ROOT / "prepare_toy.py"), "--out", str(base), "--teacher-steps", "1",
                        "--text-steps", "1", "--reward-steps", "1", "--eval-per-caption", "0", *tiny], check=True,
                       env=env, capture_output=True)
        for procs in (1, 2):
            d = Path(tmp) / f"p{procs}"
            d.mkdir()
            launcher = [sys.executable] if procs == 1 else \
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
            # a fresh parent per run, so that its RUSAGE_CHILDREN peak covers this run's processes only
            peak_of = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
                       "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            r = subprocess.run([sys.executable, "-c", peak_of, *launcher, str(ROOT / "train.py"), "--toy-models",
                                str(base), "--out", str(d), "--turbo-steps", str(steps), "--compare-per-caption",
                                "0", "--turbo-batch", str(batch // procs), *tiny], check=True, env=env,
                               capture_output=True, text=True)
            meta = read_meta(d / "turbo.safetensors")
            out[f"ddp_toy_step_s_{procs}proc"] = meta["seconds"] / steps
            out[f"ddp_toy_peak_rss_gb_per_process_{procs}proc"] = int(r.stdout.split()[-1]) / 2 ** 20
    out["ddp_toy_step_time_2proc_over_1proc"] = out["ddp_toy_step_s_2proc"] / out["ddp_toy_step_s_1proc"]
    return out


# ----------------------------------------------------------------------------------------------------------------
# The real-size training step (bench.py vc2): every model at VideoCrafter2 size with random weights, through train.py


def _bf16_fast():
    """bf16 autocast only where this CPU has bf16 instructions (otherwise a bf16 matmul is ~70x slower than fp32)."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return amx or getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()


def _gb(n_bytes):  # GiB, 2**30 bytes: the unit of every size in this project (and of every name ending _gb)
    return n_bytes / 2 ** 30


def _vc2_configs(tiny=False):
    """The models bench vc2 / gpu build with random weights: VC2's UNet, OpenCLIP ViT-H-14 text tower, KL-f8 VAE,
    HPSv2.1's ViT-H-14 and ViCLIP-L/14; tiny=True: toy-size models of the same classes with the rewards' real 224 px
    input (bench.py gpu --tiny checks the GPU script on a CPU in seconds)."""
    if not tiny:
        return {"unet": vc2(), "text": openclip_vit_h14(), "ae": sd_kl_f8(), "clip": None, "viclip": viclip_l14()}
    clip = toy_clip_cfg()
    clip["vision_cfg"] = {**clip["vision_cfg"], "image_size": 224, "patch_size": 32}
    unet = dataclasses.replace(toy_unet(), in_channels=4, out_channels=4, addition_attention=True,   # VC2's latent
                               use_relative_position=True)                                        # and layout
    return {"unet": unet, "text": toy_text(), "ae": toy_ae(), "clip": clip,
            "viclip": dataclasses.replace(toy_viclip(), image_size=224, patch_size=32)}


def _vc2_inputs(d, frames, size, video_reward, configs=None):
    """The files train.py's flags need, in folder d: a video folder and its captions, a teacher checkpoint that
    holds only the configs (full size by default; its weights are drawn at random in _vc2_run), and placeholder
    reward files."""
    configs = configs or _vc2_configs()
    (d / "videos").mkdir()
    for i, colour in enumerate(((220, 40, 40), (40, 200, 60))):
        clip = np.zeros((2 * frames, size, size, 3), np.uint8)
        for k in range(2 * frames):                           # a square sliding right
            clip[k, size // 4:size // 2, (2 * k) % size:(2 * k) % size + size // 4] = colour
        iio.imwrite(d / "videos" / f"{i}.gif", clip, extension=".gif", duration=62, loop=0)   # 16 fps
    (d / "videos.csv").write_text("path,caption\n0.gif,a red square moving right\n1.gif,a green square moving right\n")
    meta = {"kind": "teacher", **{k: asdict(configs[k]) for k in ("unet", "text", "ae")},
            "train": VC2_TRAIN, "source": {"vc2": "random weights (bench.py vc2)"}}
    save_tensors(d / "teacher.safetensors", {}, {META_KEY: json.dumps(meta)})
    for name in ("HPS_v2.1_compressed.pt", "ViClip-InternVid-10M-FLT.pth", "InternVideo2-stage2_1b-224p-f4.pt"):
        (d / name).write_bytes(b"random weights are drawn instead")
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "green",
                                            "square", "moving", "right"]))
    video = ["--internvideo2", str(d / "InternVideo2-stage2_1b-224p-f4.pt"), "--bert-vocab", str(d)] \
        if video_reward == "internvideo2" else ["--viclip", str(d / "ViClip-InternVid-10M-FLT.pth")]
    return ["--preset", "vc2_256", "--teacher", str(d / "teacher.safetensors"), "--data", str(d / "videos"),
            "--captions", str(d / "videos.csv"), "--hps", str(d / "HPS_v2.1_compressed.pt"), *video]


def _vc2_run(frames, size, steps, video_reward_name, workdir, device="cpu", tiny=False):
    """The vc2_256 recipe at frames x size x size through train.py's own functions: its checked config (from
    _vc2_inputs' files), its processes and data, and train.distill, Algorithm 1, handed models of the real classes
    with random weights where train.main would load files (tiny: _vc2_configs(tiny)). Run in a fresh process by
    bench vc2 and gpu, so that its peak memory is the step's alone. -> {name: value}."""
    d, c = Path(workdir), _vc2_configs(tiny)
    bf16 = device.startswith("cuda") or _bf16_fast()
    cfg = train.parse_config(_vc2_inputs(d, frames, size, video_reward_name, c) + [
        "--frames", str(frames), "--height", str(size), "--width", str(size), "--turbo-steps", str(steps),
        "--out", str(d / "out"), "--device", device, "--precision", "bf16" if bf16 else "fp32",
        "--save-every", "1000", "--val-every", "0"] + (["--lora-rank", "4"] if tiny else []))
    run = setup_processes(cfg)
    teacher = {"unet": UNet3D(c["unet"]), "text": TextEncoder(c["text"]), "ae": AutoencoderKL(c["ae"])}
    teacher = {**{k: m.to(run.device).eval().requires_grad_(False) for k, m in teacher.items()}, "meta": {}}
    image_reward = ImageTextReward(open_clip.CLIP(**c["clip"]), clip_cfg=c["clip"]) if c["clip"] else random_hpsv21()
    if video_reward_name == "internvideo2":
        with torch.device("meta"):
            model = internvideo2.InternVideo2(internvideo2.internvideo2_1b(8))
        model = internvideo2.init_weights(model.to_empty(device="cpu"), torch.Generator().manual_seed(0))
        video_reward = internvideo2.InternVideo2Reward(model, internvideo2.load_tokenizer(cfg.bert_vocab))
    else:
        video_reward = VideoTextReward(ViCLIP(c["viclip"]))
    for reward in (image_reward, video_reward):             # as train.reward_models sets them up
        reward.to(run.device).set_grad_checkpointing(cfg.grad_ckpt_reward)
    video = "InternVideo2-S2 1B" if video_reward_name == "internvideo2" else "ViCLIP-L/14"
    models = {"UNet (teacher weights = the student's frozen base)": teacher["unet"],
              "text tower (OpenCLIP ViT-H-14)": teacher["text"], "first stage (KL-f8 VAE)": teacher["ae"],
              "image reward (HPSv2.1, ViT-H-14)": image_reward, f"video reward ({video})": video_reward}
    out = {"models": {k: (sum(p.numel() for p in m.parameters()),
                          sum(t.numel() * t.element_size() for t in m.state_dict().values()))
                      for k, m in models.items()}}
    videos = open_data(cfg.data, cfg.captions, cfg.height, cfg.width, cfg.frames, cfg.fps, cfg.seed + 1)
    _, stats, _ = train.distill(cfg, run, videos, teacher, image_reward, video_reward)
    out["step_s"], out["trainable"] = stats["step_seconds"], stats["trainable"]
    out["ema_bytes"] = 4 * stats["trainable"] if cfg.target == "ema" else 0    # theta^-: the trained tensors, fp32
    out["peak_rss_bytes"] = int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read())[1]) * 1024
    out["peak_gpu_bytes"] = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
    out["precision"] = "bf16" if bf16 else "fp32"
    return out


def _in_fresh_process(call, what):
    """Runs `bench.<call>` (an expression in which sys.argv[1] is a temporary folder) in a fresh Python process, so
    its peak RSS and GPU memory are that call's alone -> the dict it returns. A failure raises with its stderr."""
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); import bench; "
            f"print('RESULT ' + json.dumps(bench.{call}))")
    with tempfile.TemporaryDirectory() as d:
        run = subprocess.run([sys.executable, "-c", code, d], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    if run.returncode:
        raise RuntimeError(f"bench {what} failed:\n{run.stderr[-3000:]}")
    return json.loads(next(l for l in run.stdout.splitlines() if l.startswith("RESULT "))[7:])


def bench_vc2(frames=8, size=64, steps=2, video_reward="viclip", tiny=False):
    """2 steps of the vc2_256 recipe (LoRA 64 student sharing one UNet with its teacher and EMA target, CD + HPSv2.1
    + the video reward, every gradient checkpoint, bf16 autocast where the CPU has bf16) at a reduced clip, every
    model at its real size with random weights, through train.py's distill. Prints the accounting and an
    extrapolation to 16 x 256 x 256; returns {name: value}. Nothing is saved (the merged student would be 5.3 GiB,
    its LoRA alone 0.44 GiB).
    tiny=True (`python bench.py vc2 --tiny`): one step with toy-size models (LoRA rank 4) in this process, in
    seconds: a check of the script, its figures mean nothing."""
    if tiny:
        with tempfile.TemporaryDirectory() as d:
            r = _vc2_run(frames, 32, 1, video_reward, d, tiny=True)
    else:
        r = _in_fresh_process(f"_vc2_run({frames}, {size}, {steps}, {video_reward!r}, sys.argv[1])", "vc2")
    tag = "vc2" if video_reward == "viclip" else "vc2_iv2"
    print(f"\n{tag}: {frames} frames at {size} x {size} (latents 4 x {frames} x {size // 8} x {size // 8}), "
          f"{r['precision']}, {torch.get_num_threads()} threads; the models, all at full size:")
    static = 0
    for name, (n, nbytes) in r["models"].items():
        print(f"  {name:60s} {n / 1e6:9.1f} M parameters {_gb(nbytes):7.2f} GiB")
        static += nbytes
    lora = 4 * r["trainable"]
    optim = 2 * lora                                          # AdamW: two fp32 moments per trainable number
    ema = r["ema_bytes"]
    print(f"  {'trainable: LoRA rank 64 (w projection included), fp32':60s} {r['trainable'] / 1e6:9.1f} M parameters "
          f"{_gb(lora):7.2f} GiB, its gradients {_gb(lora):.2f} GiB, AdamW moments {_gb(optim):.2f} GiB")
    print(f"  {'EMA target theta^- (the trained tensors only)':60s} {'':9s}   {'':10s} {_gb(ema):7.2f} GiB")
    unet = next(v[1] for k, v in r["models"].items() if k.startswith("UNet"))
    print(f"  not held: a separate teacher UNet ({_gb(unet):.2f} GiB) and a full EMA copy of the student "
          f"({_gb(unet + lora):.2f} GiB): {_gb(2 * unet + lora - ema):.2f} GiB saved by sharing one UNet")
    fixed = static + 3 * lora + ema
    peak = r["peak_rss_bytes"]
    rest = peak - fixed
    scale = (16 * 32 * 32) / (frames * (size // 8) ** 2)
    print(f"  weights + gradients + optimizer = {_gb(fixed):.2f} GiB; peak RSS {_gb(peak):.2f} GiB; the rest "
          f"(activations, workspaces, the interpreter) {_gb(rest):.2f} GiB")
    print(f"  16 x 256 x 256 on a GPU, extrapolated: the UNet and decoder activations grow with the latent "
          f"voxels, 16*32*32 / ({frames}*{size // 8}*{size // 8}) = {scale:.0f}x; the reward towers see 224 px "
          f"either way. Upper bound {_gb(fixed):.2f} + {scale:.0f} x {_gb(rest):.2f} = {_gb(fixed + scale * rest):.1f} "
          f"GiB; bf16 weights for the frozen models would save about {_gb(static / 2):.1f} GiB, leaving "
          f"{_gb(fixed - static / 2):.1f} GiB of weights and optimizer (an estimate)")
    steps_s = r["step_s"]
    print(f"  step times {', '.join(f'{s:.1f}' for s in steps_s)} s (the first pays one-time costs)")
    return {f"{tag}_train_step_s": steps_s[-1], f"{tag}_train_peak_rss_gb": _gb(peak),
            f"{tag}_train_trainable_m": r["trainable"] / 1e6, f"{tag}_train_fixed_gb": _gb(fixed),
            f"{tag}_train_saved_gb": _gb(2 * unet + lora - ema)}


def bench_vc2_sample(frames=8, size=64):
    """sample.py on full-size checkpoints (VC2's UNet, text tower and VAE with random weights, written as
    safetensors exactly as convert.py writes a converted model.ckpt, then read back by load_models): the teacher at
    1 DDIM step with CFG and the student at 1 consistency step, at frames x size x size, in fp32 (and bf16 / fp16
    where this CPU has bf16 instructions). Needs ~14 GiB of disk and ~8 GiB of RAM; a few minutes."""
    out = {}
    train_meta = {**VC2_TRAIN, "frames": frames, "height": size, "width": size}
    with tempfile.TemporaryDirectory() as d:
        torch.manual_seed(0)
        models = {"unet": UNet3D(vc2()), "text": TextEncoder(openclip_vit_h14()), "ae": AutoencoderKL(sd_kl_f8())}
        meta = {"kind": "teacher", "unet": asdict(vc2()), "text": asdict(openclip_vit_h14()), "ae": asdict(sd_kl_f8()),
                "train": train_meta, "source": {"vc2": "random weights (bench.py vc2_sample)"}}
        tensors = {f"{p}.{k}": v for p, m in models.items() for k, v in m.state_dict().items()}
        save_tensors(Path(d) / "teacher.safetensors", tensors, {META_KEY: json.dumps(meta)})
        student = dataclasses.replace(vc2(), guidance_embed_dim=256)     # + the zero w projection: the fresh student
        tensors["unet.w_proj.weight"] = torch.zeros(student.model_channels, 256)
        save_tensors(Path(d) / "turbo.safetensors", tensors,
                     {META_KEY: json.dumps({**meta, "kind": "turbo", "unet": asdict(student)})})
        del models, tensors
        dtypes = ["fp32"] + (["bf16", "fp16"] if _bf16_fast() else [])
        for name in ("teacher", "turbo"):
            for dt in dtypes:
                t0 = time.time()
                rows = sample.main(["--ckpt", str(Path(d) / f"{name}.safetensors"), "--prompt", "a corgi running",
                                    "--steps", "1", "--out", str(Path(d) / f"s_{name}_{dt}"), "--device", "cpu",
                                    "--dtype", dt, "--quiet"])
                clip = read_video(Path(d) / f"s_{name}_{dt}" / rows[0]["file"])
                assert clip.shape == (frames, size, size, 3), clip.shape
                out[f"vc2_sample_{name}_1step_{dt}_s"] = time.time() - t0
    out["vc2_sample_peak_rss_gb"] = int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read())[1]) / 2 ** 20
    return out


def bench_vc2_iv2():
    """bench_vc2 with InternVideo2-Stage2 1B (the VC2 release's video reward) in place of ViCLIP."""
    return bench_vc2(video_reward="internvideo2")


def _sampling_latency(device, tiny, frames, height, width, dtype):
    """Seconds for one video, text to pixels: the teacher's 50 DDIM steps with CFG (two UNet passes a step) against
    the student's 4 consistency steps, random weights (_vc2_configs), after one warm-up call each."""
    c = _vc2_configs(tiny)
    torch.manual_seed(0)
    text, ae = TextEncoder(c["text"]), AutoencoderKL(c["ae"])
    train_meta = {**VC2_TRAIN, "frames": frames, "height": height, "width": width}
    out = {}
    for kind, unet_cfg, steps in (("teacher", c["unet"], 50),
                                  ("turbo", dataclasses.replace(c["unet"], guidance_embed_dim=256), 4)):
        models = {"unet": UNet3D(unet_cfg), "text": text, "ae": ae}
        models = {**{k: m.to(device, dtype).eval() for k, m in models.items()},
                  "meta": {"kind": kind, "train": train_meta}}
        sample.generate(models, ["a corgi running on the beach"], [0], steps=1, device=device, progress=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.time()
        video = sample.generate(models, ["a corgi running on the beach"], [0], steps=steps, device=device,
                                progress=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out[kind] = time.time() - t0
        assert video.shape == (1, frames, height, width, 3), video.shape
        del models
    return out


def bench_gpu(tiny=False):
    """The figures a GPU gives the README (`python bench.py gpu` on a CUDA machine; not yet timed on a GPU):
      1. the vc2_256 training step at its real clip, 16 x 256 x 256: LoRA 64, bf16 autocast, every gradient
         checkpoint, CD + HPSv2.1 + ViCLIP, every model at full size with random weights (as bench vc2); peak GPU
         memory and s/step;
      2. 4-step T2V-Turbo against 50-step DDIM + CFG, one video of 16 x 320 x 512, text to pixels, fp16;
      3. the toy main job (`python train.py`: the student's 300 steps and the closing comparison), minutes.
    tiny=True (`python bench.py gpu --tiny`): the same code with toy-size models and clips on the CPU, in seconds,
    to check the script where no GPU is at hand; its figures mean nothing."""
    if not tiny and not torch.cuda.is_available():
        raise SystemExit("bench.py gpu: no CUDA device here (python bench.py gpu --tiny checks the script on a CPU)")
    device = "cpu" if tiny else "cuda"
    frames, size, f_sample, h_sample, w_sample = (8, 32, 4, 16, 24) if tiny else (16, 256, 16, 320, 512)
    out = {}
    if tiny:   # in this process (nothing to isolate); the real one in a fresh process: its peak is its own
        with tempfile.TemporaryDirectory() as d:
            r = _vc2_run(frames, size, 1, "viclip", d, device, tiny=True)
    else:
        r = _in_fresh_process(f"_vc2_run({frames}, {size}, 3, 'viclip', sys.argv[1], 'cuda')", "gpu (vc2_256 step)")
    out["gpu_vc2_256_step_s"] = r["step_s"][-1]                    # the last step: the first pays one-time costs
    out["gpu_vc2_256_peak_gb"] = _gb(r["peak_gpu_bytes"])
    out["gpu_vc2_256_trainable_m"] = r["trainable"] / 1e6
    lat = _sampling_latency(device, tiny, f_sample, h_sample, w_sample, torch.float32 if tiny else torch.float16)
    out["gpu_sample_teacher_50step_s"], out["gpu_sample_turbo_4step_s"] = lat["teacher"], lat["turbo"]
    out["gpu_sample_speedup"] = lat["teacher"] / lat["turbo"]
    with tempfile.TemporaryDirectory() as d:
        t0 = time.time()
        if tiny:   # 1 step, no comparison, in this process: the flags are checked, the minutes mean nothing
            train.main(["--out", d, "--device", device, "--turbo-steps", "1", "--compare-per-caption", "0"])
            last = "(--tiny)"
        else:      # what a user runs and waits for, start-up included
            run = subprocess.run([sys.executable, str(ROOT / "train.py"), "--out", d, "--device", device],
                                 capture_output=True, text=True, cwd=ROOT)
            if run.returncode:
                raise RuntimeError(f"bench gpu (python train.py) failed:\n{run.stderr[-3000:]}")
            last = run.stdout.strip().splitlines()[-1]
        out["gpu_toy_main_job_minutes"] = (time.time() - t0) / 60
    print(f"\ngpu: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu (--tiny: a check, not figures)'}, "
          f"vc2_256 step at {frames} x {size} x {size}, sampling at {f_sample} x {h_sample} x {w_sample}; the "
          f"toy main job's last line: {last}")
    return out


def _eval_run(workdir, videos=2, frames=16, height=320, width=512):
    """In a fresh process (its peak RSS is the evaluation's alone): what `evaluate.py --samples DIR --hps --viclip`
    does after loading its files (evaluate.evaluate_real), on `videos` clips of VC2's size, with random full-size
    reward models in place of the files (rewards.random_hpsv21; ViCLIP(viclip_l14()) at its init). -> {name: value}."""
    d = Path(workdir)
    (d / "samples").mkdir()
    rows = []
    for i in range(videos):                       # a square sliding right over a grey ramp, as sample.py's MP4s
        clip = np.tile(np.linspace(0, 255, width, dtype=np.uint8)[None, None, :, None], (frames, height, 1, 3))
        for k in range(frames):
            clip[k, height // 3:height // 2, 20 * k + 40 * i:20 * k + 40 * i + height // 6] = (220, 40 + 80 * i, 40)
        iio.imwrite(d / "samples" / f"{i}.mp4", clip, extension=".mp4", fps=16, codec="libx264", macro_block_size=1)
        rows.append({"file": f"{i}.mp4", "files": [f"{i}.mp4"], "prompt": "a red square sliding right", "seed": i})
    (d / "samples" / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    t0 = time.time()
    hps = random_hpsv21()                          # the release's HPSv2.1 file would fill these same modules
    t_hps = time.time() - t0
    viclip = VideoTextReward(ViCLIP(viclip_l14()))
    t_viclip = time.time() - t0 - t_hps
    rewards = evaluate.load_real_rewards(hps, viclip)          # (built modules are taken as they are)
    res = evaluate.evaluate_real({"samples": d / "samples"}, rewards, d / "out", batch_size=videos)["samples"]
    return {"eval_videos": videos, "eval_frames": frames, "eval_threads": torch.get_num_threads(),
            "eval_total_s": time.time() - t0,
            "eval_build_hps_s": t_hps, "eval_build_viclip_s": t_viclip,
            "eval_hps_s_per_video": res["score_seconds"]["image"] / videos,
            "eval_viclip_s_per_video": res["score_seconds"]["video"] / videos,
            "eval_hps_mean": res["hps"]["mean"], "eval_viclip_mean": res["video"]["mean"],
            "eval_peak_rss_gb": int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read())[1]) / 2 ** 20}


def bench_eval(videos=2, frames=16):
    """evaluate.py's real-model scores on full-size reward models with random weights (HPSv2.1 = OpenCLIP ViT-H-14,
    ViCLIP-L/14), `videos` clips of frames x 320 x 512 read from a sample folder: HPS on every frame (letterbox to
    224), ViCLIP on 8 (resize + crop to 224), fp32, in a fresh process. ~6 GiB of RAM; minutes on one CPU thread."""
    r = _in_fresh_process(f"_eval_run(sys.argv[1], {videos}, {frames})", "eval")
    print(f"\neval: {videos} videos of {frames} x 320 x 512, fp32, {r['eval_threads']} threads: HPSv2.1 "
          f"{r['eval_hps_s_per_video']:.1f} s/video ({frames} frames), ViCLIP-L/14 {r['eval_viclip_s_per_video']:.1f} "
          f"s/video (8 frames); building them {r['eval_build_hps_s']:.1f} + {r['eval_build_viclip_s']:.1f} s; "
          f"peak RSS {r['eval_peak_rss_gb']:.2f} GiB")
    return r


def matmul_peak(n=1024, repeats=20):
    """GFLOP/s of an fp32 n x n matmul on this machine with torch's current threads: the ceiling to compare with."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / _timed(lambda: a @ b, repeats) / 1e9


def _flops(fn):
    """Floating-point operations of one call of fn (matmuls and convolutions, as torch's FlopCounterMode counts)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bench_main(repeats=3):
    """What the main job costs and what its design bought: the teacher's training step (prepare_toy.py, batch 16)
    and the student's step (train.py, batch 8, CD + both rewards) for the toy UNet at width 32 and, for
    comparison, at the earlier width 64; the FLOPs each step does and the GFLOP/s it achieves, against a matmul
    peak measured in the same run; and the main job's minutes estimated from the measured student step."""
    torch.manual_seed(0)
    world = ToyWorld(seed=0)
    ae, text = LinearAutoencoder(toy_linear_ae()), TextEncoder(toy_text()).eval()
    ae.fit(world.batch(64)[0])
    image_reward, video_reward = toy_image_reward(), toy_video_reward()
    video, caps = world.batch(16)
    with torch.no_grad():
        z0, ctx, unc = ae.encode(video), text.encode_text(caps), text.encode_text([""] * 8)
    out = {"main_matmul_peak_gflops": matmul_peak()}
    for label, cfg in (("w32", toy_teacher()), ("w64", toy_teacher(model_channels=64))):
        teacher = UNet3D(cfg).train()
        abar = turbo.schedule(cfg)
        opt = torch.optim.AdamW(teacher.parameters(), lr=1e-4)

        def teacher_step():
            loss = turbo.diffusion_loss(teacher, z0, ctx, 16, abar)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        teacher.eval().requires_grad_(False)
        student, _ = train.make_student(teacher, lora_rank=0)
        teacher.train().requires_grad_(True)
        target = UNet3D(student.config).eval().requires_grad_(False)
        target.load_state_dict(student.state_dict())
        frozen = UNet3D(cfg).eval().requires_grad_(False)
        frozen.load_state_dict(teacher.state_dict())
        sopt = torch.optim.AdamW(student.parameters(), lr=1e-4)

        def student_step():
            loss, f, _ = turbo.cd_loss(student.train(), target, frozen, z0[:8], ctx[:8], unc, 16, abar,
                                       turbo.cd_draws(8, z0.shape[1:]))
            loss = turbo.mixed_loss(loss, turbo.reward_terms(f, ae, caps[:8], image_reward, video_reward))
            sopt.zero_grad(set_to_none=True)
            loss.backward()
            sopt.step()
        for name, fn in (("teacher", teacher_step), ("student", student_step)):
            s, flops = _timed(fn, repeats), _flops(fn)
            out[f"main_{name}_step_s_{label}"] = s
            out[f"main_{name}_step_gflop_{label}"] = flops / 1e9
            out[f"main_{name}_gflops_achieved_{label}"] = flops / s / 1e9
            out[f"main_{name}_share_of_peak_{label}"] = flops / s / 1e9 / out["main_matmul_peak_gflops"]
    for name in ("teacher", "student"):
        out[f"main_{name}_step_ratio_w32_over_w64"] = out[f"main_{name}_step_s_w32"] / out[f"main_{name}_step_s_w64"]
    # the main job: the toy preset's student steps, plus the closing comparison (16 teacher videos at 50 steps with
    # CFG, about 2 x 50 / 3 student steps' worth of forward passes each; measured as part of `time python train.py`)
    out["main_job_student_minutes_est"] = train.toy().turbo_steps * out["main_student_step_s_w32"] / 60
    return out


def bench_data(videos=12, seconds=8, batches=8, batch=4):
    """data.py's path on `videos` synthetic mp4s (320 x 512, 25 fps, `seconds` s, H.264 as imageio writes it, in a
    temporary folder): clips/s of the vc2 preset's clips (16 frames at 16 fps, 320 x 512: 31 frames of the file)
    over `batches` batches of `batch`, decoded in this process with ffmpeg's seek and from the first frame, and by
    data.StepLoader in 1 and in N worker processes (N = min(4, the cores this process may run on), when N > 1; the
    time includes starting them); then the clips/s read from a latent cache of VC2-shaped tensors (random values: a read
    costs the same; just written, so from the page cache, not the disk). The batches are the same in every case."""
    out, n = {}, min(4, len(os.sched_getaffinity(0)))
    draws = partial(data_draws, SimpleNamespace(seed=0, grad_accum=1), SimpleNamespace(world=1, rank=0), "bench",
                    b=batch)                                 # train.py's draws: step k's batch from k's seed
    with tempfile.TemporaryDirectory() as d:
        d, rng = Path(d), np.random.default_rng(0)
        y, x = np.mgrid[0:320, 0:512]
        for i in range(videos):  # a smooth picture drifting sideways, with a little noise: compresses like video
            base = np.sin(x / (20 + i) + y / 31)[..., None] * [60, 40, 80] + 128 + rng.normal(0, 6, (320, 512, 3))
            base = base.clip(0, 255).astype(np.uint8)
            frames = np.stack([np.roll(base, 4 * k, axis=1) for k in range(25 * seconds)])     # (t, 320, 512, 3)
            iio.imwrite(d / f"{i}.mp4", frames, fps=25)
        (d / "c.csv").write_text("path,caption\n" + "".join(f"{i}.mp4,video {i}\n" for i in range(videos)))
        runs = [("seek", 0, True), ("sequential", 0, False), ("1_worker", 1, True)]
        runs += [(f"{n}_workers", n, True)] if n > 1 else []
        for name, workers, seek in runs:
            loader = data.StepLoader(data.VideoFolder(d, d / "c.csv", 320, 512, 16, 16, seek=seek), draws, workers)
            t0 = time.perf_counter()
            for step in range(batches):
                loader.batch(step, 0)
            out[f"data_clips_per_s_{name}"] = batches * batch / (time.perf_counter() - t0)
            loader.close()
        out["data_seek_speedup"] = out["data_clips_per_s_seek"] / out["data_clips_per_s_sequential"]
        out["data_workers_n"] = n
        # the latent cache: VC2's posterior mean and log-variance (4 x 16 x 40 x 64 each) and text (77 x 1024)
        rows, shape = 64, (4, 16, 40, 64)
        tensors = {"mean": torch.randn(rows, *shape), "logvar": torch.randn(rows, *shape),
                   "context": torch.randn(rows, 77, 1024)}
        (d / "cache").mkdir()
        shards = [data.save_shard(d / "cache", k, {name: t[k * 16:(k + 1) * 16] for name, t in tensors.items()},
                                  [f"video {j}" for j in range(16)], [str(j) for j in range(16)]) for k in range(4)]
        clip = {"frames": 16, "height": 320, "width": 512, "fps": 16, "seed": 0}
        data.save_index(d / "cache", clip, "random", {"ae": {}, "text": {}}, shards, {})
        cache = data.LatentCache(d / "cache")
        t0 = time.perf_counter()
        for step in range(4 * batches):
            cache.batch(batch, np.random.default_rng(step))
        out["data_cache_clips_per_s"] = 4 * batches * batch / (time.perf_counter() - t0)
        out["data_cache_mb_per_clip"] = sum(t[0].numel() * 4 for t in tensors.values()) / 2 ** 20
    return out


SECTIONS = {"main": bench_main, "sample": bench_sample, "train": bench_train, "load": bench_load, "ddp": bench_ddp,
            "vc2": bench_vc2, "vc2_iv2": bench_vc2_iv2, "vc2_sample": bench_vc2_sample, "gpu": bench_gpu,
            "eval": bench_eval, "data": bench_data}
TINY = ("gpu", "vc2")                       # the sections --tiny checks at toy size on a CPU
DEFAULT = ["main", "sample", "train"]       # the quick ones; load, ddp and the vc2 ones take minutes: name them


def main(argv=None):
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sections", nargs="*", help=f"any of {sorted(SECTIONS)}; default: all")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--tiny", action="store_true", help="gpu, vc2: toy-size models on the CPU, a check of the script")
    args = p.parse_args(argv)
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {sorted(unknown)}; choose from {sorted(SECTIONS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name in args.sections or DEFAULT:
        results.update(SECTIONS[name](tiny=args.tiny) if name in TINY else SECTIONS[name]())
    gpu = torch.cuda.get_device_name() if "gpu" in args.sections and not args.tiny else "none"
    print(f"device: cpu, torch {torch.__version__}, {torch.get_num_threads()} threads; GPU: {gpu}")
    print("| figure | value |\n|---|---|")
    for k, v in results.items():
        print(f"| {k} | {v:.4g} |")
    for k, v in results.items():
        print(f"{k}: {v:.6g}")
    return results


if __name__ == "__main__":
    main()
