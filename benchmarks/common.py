"""What every benchmark shares: the timer, the GiB unit, whether this CPU runs bf16 fast, a call in a
fresh process (its peak memory its own), the matmul peak and a FLOP counter, and the toy teacher's UNet config.

    python -m benchmarks main     # uses them all
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import torch
from torch.utils.flop_counter import FlopCounterMode

from rewards import ImageTextReward
from tiny_unet3d import toy_unet

ROOT = Path(__file__).resolve().parents[1]   # the repository


def toy_teacher(**changes):
    """The toy teacher's UNet config (tiny_unet3d.toy_unet: the shipped teacher's), with `changes` overriding fields
    (e.g. model_channels=64)."""
    return dataclasses.replace(toy_unet(), **changes)


def timed(fn, repeats):
    fn()  # warm-up: first calls pay for allocation and kernel selection
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def bf16_fast():
    """bf16 autocast only where this CPU has bf16 instructions (otherwise a bf16 matmul is ~70x slower than fp32)."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return amx or getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()


def gib(n_bytes):  # GiB, 2**30 bytes: the unit of every size in this project (and of every name ending gib)
    return n_bytes / 2 ** 30


def in_fresh_process(module, call, what):
    """Runs `module.<call>` (an expression in which sys.argv[1] is a temporary folder) in a fresh Python process, so
    its peak RSS and GPU memory are that call's alone -> the dict it returns. A failure raises with its stderr."""
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); import {module} as m; "
            f"print('RESULT ' + json.dumps(m.{call}))")
    with tempfile.TemporaryDirectory() as d:
        run = subprocess.run([sys.executable, "-c", code, d], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    if run.returncode:
        raise RuntimeError(f"bench {what} failed:\n{run.stderr[-3000:]}")
    return json.loads(next(l for l in run.stdout.splitlines() if l.startswith("RESULT "))[7:])


def matmul_peak(n=1024, repeats=20):
    """GFLOP/s of an fp32 n x n matmul on this machine with torch's current threads: the ceiling to compare with."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / timed(lambda: a @ b, repeats) / 1e9


def flops_of(fn):
    """Floating-point operations of one call of fn (matmuls and convolutions, as torch's FlopCounterMode counts)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def random_hpsv21(seed=0):
    """HPSv2.1's architecture (open_clip ViT-H-14, 986M parameters) with RANDOM weights and no file: what the
    benchmarks score with when the 1.8 GiB release is not at hand. The same class and preprocessing as
    vc2/release.py's load_hpsv21(path); ~4 GiB."""
    with torch.random.fork_rng():                              # open_clip draws its init from the global RNG
        torch.manual_seed(seed)
        clip = open_clip.create_model("ViT-H-14", pretrained=None)       # pretrained=None: nothing is downloaded
    return ImageTextReward(clip, clip_cfg=open_clip.get_model_config("ViT-H-14"))
