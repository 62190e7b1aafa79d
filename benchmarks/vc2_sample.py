"""sample.py on full-size checkpoints (random weights, written as vc2/convert.py writes them): teacher and student,
one step each, at each precision this CPU runs.

    python -m benchmarks vc2_sample
"""

import dataclasses
import json
import re
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

import sample
from benchmarks import common
from encoders import AutoencoderKL, TextEncoder, openclip_vit_h14, sd_kl_f8
from machinery.checkpoint import META_KEY, save_tensors
from machinery.videoio import read_video
from tiny_unet3d import UNet3D, vc2
from vc2.convert import VC2_TRAIN


def bench_vc2_sample(frames=8, size=64):
    """sample.py on full-size checkpoints (VC2's UNet, text tower and VAE with random weights, written as
    safetensors exactly as vc2/convert.py writes a converted model.ckpt, then read back by load_models): the teacher at
    1 DDIM step with CFG and the student at 1 consistency step, at frames x size x size, in fp32 (and bf16 / fp16
    where this CPU has bf16 instructions). Needs ~14 GiB of disk and ~8 GiB of RAM; a few minutes."""
    out = {}
    train_meta = {**VC2_TRAIN, "frames": frames, "height": size, "width": size}
    with tempfile.TemporaryDirectory() as d:
        torch.manual_seed(0)
        models = {"unet": UNet3D(vc2()), "text": TextEncoder(openclip_vit_h14()), "ae": AutoencoderKL(sd_kl_f8())}
        meta = {"kind": "teacher", "unet": asdict(vc2()), "text": asdict(openclip_vit_h14()), "ae": asdict(sd_kl_f8()),
                "train": train_meta, "source": {"vc2": "random weights (python -m benchmarks vc2_sample)"}}
        tensors = {f"{p}.{k}": v for p, m in models.items() for k, v in m.state_dict().items()}
        save_tensors(Path(d) / "teacher.safetensors", tensors, {META_KEY: json.dumps(meta)})
        student = dataclasses.replace(vc2(), guidance_embed_dim=256)     # + the zero w projection: the fresh student
        tensors["unet.w_proj.weight"] = torch.zeros(student.model_channels, 256)
        save_tensors(Path(d) / "turbo.safetensors", tensors,
                     {META_KEY: json.dumps({**meta, "kind": "turbo", "unet": asdict(student)})})
        del models, tensors
        dtypes = ["fp32"] + (["bf16", "fp16"] if common.bf16_fast() else [])
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
