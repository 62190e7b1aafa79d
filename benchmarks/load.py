"""Loading a full-size VideoCrafter2 checkpoint: peak RSS over the file's size (load_models streams it).

    python -m benchmarks load
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks.common import ROOT, gib
from encoders import openclip_vit_h14, sd_kl_f8
from machinery.checkpoint import META_KEY, build_models, save_tensors
from tiny_unet3d import vc2
from vc2.convert import VC2_TRAIN

LOAD_CHILD = r"""
import json, re, resource, sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[2])
from machinery.checkpoint import load_models


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
    """Peak RSS of machinery.checkpoint.load_models on a synthetic full-size VC2 teacher checkpoint (what sample.py loads:
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
            raise RuntimeError(f"bench_load needs {gib(numel * dtype.itemsize):.1f} GiB free in {d}; "
                               f"{gib(free):.1f} GiB are")
        path = Path(d) / "teacher.safetensors"
        gen = torch.Generator().manual_seed(0)
        placeholders = {k: torch.empty(s, dtype=dtype, device="meta") for k, s in shapes.items()}
        t0 = time.time()
        save_tensors(path, placeholders, {META_KEY: json.dumps(meta)},
                     lambda k: torch.randn(shapes[k], generator=gen).to(dtype))  # one tensor at a time
        t_write, size = time.time() - t0, path.stat().st_size
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        run = subprocess.run([sys.executable, "-c", LOAD_CHILD, str(path), str(ROOT)],
                             capture_output=True, text=True, env=env)
        if run.returncode:
            raise RuntimeError(f"bench_load's loader failed:\n{run.stderr[-2000:]}")
        r = json.loads(run.stdout.strip().splitlines()[-1])
    return {"vc2_load_peak_rss_over_ckpt_bytes": (r["peak"] - r["base"]) / size, "vc2_load_ckpt_bytes": size,
            "vc2_load_peak_rss_bytes": r["peak"], "vc2_load_baseline_rss_bytes": r["base"],
            "vc2_load_s": r["seconds"], "vc2_load_write_s": t_write, "vc2_load_dtype_bytes": dtype.itemsize}
