"""The figures a GPU gives: the vc2_256 step at 16 x 256 x 256, 4- against 50-step sampling latency at
16 x 320 x 512, and the toy main job's minutes.

    python -m benchmarks gpu         # --tiny: the same script with toy-size models on a CPU
"""

import dataclasses
import subprocess
import sys
import tempfile
import time

import torch

import sample
import train
from benchmarks.common import ROOT, gib, in_fresh_process
from benchmarks.vc2_step import vc2_configs, vc2_run
from encoders import AutoencoderKL, TextEncoder
from tiny_unet3d import UNet3D
from vc2.convert import VC2_TRAIN


def sampling_latency(device, tiny, frames, height, width, dtype):
    """Seconds for one video, text to pixels: the teacher's 50 DDIM steps with CFG (two UNet passes a step) against
    the student's 4 consistency steps, random weights (vc2_configs), after one warm-up call each."""
    c = vc2_configs(tiny)
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
    """The figures a GPU gives the README (`python -m benchmarks gpu` on a CUDA machine; not yet timed on a GPU):
      1. the vc2_256 training step at its real clip, 16 x 256 x 256: LoRA 64, bf16 autocast, every gradient
         checkpoint, CD + HPSv2.1 + ViCLIP, every model at full size with random weights (as bench vc2); peak GPU
         memory and s/step;
      2. 4-step T2V-Turbo against 50-step DDIM + CFG, one video of 16 x 320 x 512, text to pixels, fp16;
      3. the toy main job (`python train.py`: the student's 300 steps and the closing comparison), minutes.
    tiny=True (`python -m benchmarks gpu --tiny`): the same code with toy-size models and clips on the CPU, in seconds,
    to check the script where no GPU is at hand; its figures mean nothing."""
    if not tiny and not torch.cuda.is_available():
        raise SystemExit("benchmarks gpu: no CUDA device here (python -m benchmarks gpu --tiny checks the script on a "
                         "CPU)")
    device = "cpu" if tiny else "cuda"
    frames, size, f_sample, h_sample, w_sample = (8, 32, 4, 16, 24) if tiny else (16, 256, 16, 320, 512)
    out = {}
    if tiny:   # in this process (nothing to isolate); the real one in a fresh process: its peak is its own
        with tempfile.TemporaryDirectory() as d:
            r = vc2_run(frames, size, 1, "viclip", d, device, tiny=True)
    else:
        r = in_fresh_process("benchmarks.vc2_step", f"vc2_run({frames}, {size}, 3, 'viclip', sys.argv[1], 'cuda')",
                             "gpu (vc2_256 step)")
    out["gpu_vc2_256_step_s"] = r["step_s"][-1]                    # the last step: the first pays one-time costs
    out["gpu_vc2_256_peak_gb"] = gib(r["peak_gpu_bytes"])
    out["gpu_vc2_256_trainable_m"] = r["trainable"] / 1e6
    lat = sampling_latency(device, tiny, f_sample, h_sample, w_sample, torch.float32 if tiny else torch.float16)
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
