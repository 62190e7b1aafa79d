"""T2V-Turbo (MS)'s training step without a GPU: `train.py --preset ms` through train.py's distill, every model at
ModelScopeT2V size with random weights (diffusers' UNet3DConditionModel and AutoencoderKL, transformers'
CLIPTextModel, HPSv2.1 and ViCLIP-L/14), at a reduced clip: the step's seconds, its peak RSS, the trained numbers.

    python -m benchmarks ms          # --tiny: toy-size models of the same classes, a check of the script in seconds
"""

import dataclasses
import json
import re
import tempfile
from dataclasses import asdict
from pathlib import Path

import open_clip
import torch

import train
from benchmarks import common
from benchmarks.common import gib, in_fresh_process, random_hpsv21
from benchmarks.vc2_step import vc2_inputs
from machinery.checkpoint import META_KEY, save_tensors
from machinery.loop import setup_processes
from ms.convert import MS_TRAIN
from ms.models import MSVAE, MSText, MSTextConfig, MSUNet, MSVAEConfig, ms_unet, tiny_ms_unet
from rewards import ImageTextReward, ViCLIP, VideoTextReward, toy_clip_cfg, toy_viclip, viclip_l14
from train import open_data

# ModelScope's text tower (OpenCLIP ViT-H-14's, 23 layers as diffusers converted it) and SD's KL-f8 VAE, as their
# text_encoder/ and vae/ config.json describe them; the real files have not been read here (TUTORIAL.md section 10)
MS_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
               max_position_embeddings=77, hidden_act="gelu", projection_dim=512)
MS_VAE = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
              up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, latent_channels=4, norm_num_groups=32,
              sample_size=256, scaling_factor=0.18215)


def ms_configs(tiny=False):
    """The configs of the models the step builds with random weights; tiny: toy-size ones with the rewards' 224 px."""
    if not tiny:
        return {"unet": ms_unet(), "text": MSTextConfig(transformers=MS_TEXT), "ae": MSVAEConfig(diffusers=MS_VAE),
                "clip": None, "viclip": viclip_l14()}
    clip = toy_clip_cfg()
    clip["vision_cfg"] = {**clip["vision_cfg"], "image_size": 224, "patch_size": 32}
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
    vae = dict(MS_VAE, block_out_channels=[32, 32], down_block_types=["DownEncoderBlock2D"] * 2,
               up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1)
    return {"unet": tiny_ms_unet(), "text": MSTextConfig(transformers=text), "ae": MSVAEConfig(diffusers=vae),
            "clip": clip, "viclip": dataclasses.replace(toy_viclip(), image_size=224, patch_size=32)}


def ms_run(frames, size, steps, workdir, tiny=False):
    """`--preset ms` at frames x size x size through train.py's own functions (its checked config, processes, data
    and distill), handed ModelScope-size models with random weights where train.main would load files."""
    d, c = Path(workdir), ms_configs(tiny)
    argv = vc2_inputs(d, frames, size, "viclip")              # a video folder, captions, placeholder reward files
    meta = {"kind": "teacher", **{k: asdict(c[k]) for k in ("unet", "text", "ae")}, "train": MS_TRAIN,
            "source": {"ms": "random weights (python -m benchmarks ms)"}}
    save_tensors(d / "teacher.safetensors", {}, {META_KEY: json.dumps(meta)})
    bf16 = common.bf16_fast()
    cfg = train.parse_config(argv + ["--preset", "ms", "--frames", str(frames), "--height", str(size), "--width",
                                     str(size), "--turbo-steps", str(steps), "--out", str(d / "out"), "--device", "cpu",
                                     "--precision", "bf16" if bf16 else "fp32", "--save-every", "1000", "--val-every",
                                     "0"] + (["--lora-rank", "4"] if tiny else []))
    run = setup_processes(cfg)
    torch.manual_seed(0)
    teacher = {"unet": MSUNet(c["unet"]), "text": MSText(c["text"]), "ae": MSVAE(c["ae"])}
    teacher = {**{k: m.eval().requires_grad_(False) for k, m in teacher.items()}, "meta": meta}
    image_reward = ImageTextReward(open_clip.CLIP(**c["clip"]), clip_cfg=c["clip"]) if c["clip"] else random_hpsv21()
    video_reward = VideoTextReward(ViCLIP(c["viclip"]))
    for reward in (image_reward, video_reward):             # as train.reward_models sets them up
        reward.set_grad_checkpointing(cfg.grad_ckpt_reward)
    sizes = {k: sum(p.numel() for p in m.parameters()) for k, m in
             {"unet": teacher["unet"], "text": teacher["text"], "ae": teacher["ae"], "hps": image_reward,
              "viclip": video_reward}.items()}
    _, stats, _ = train.distill(cfg, run, open_data(cfg), teacher, image_reward, video_reward)
    return {"step_s": stats["step_seconds"], "trainable": stats["trainable"], "sizes": sizes,
            "peak_rss_bytes": int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read())[1]) * 1024,
            "precision": "bf16" if bf16 else "fp32"}


def bench_ms(frames=8, size=64, steps=2, tiny=False):
    """2 steps of --preset ms (LoRA rank 32 on one UNet shared by the student, its teacher and its EMA target; CD +
    HPSv2.1 + ViCLIP with the paper's betas; every gradient checkpoint) at frames x size x size, every model at its
    real size with random weights, in a fresh process. tiny: one step at toy size in this process (a check)."""
    if tiny:
        with tempfile.TemporaryDirectory() as d:
            r = ms_run(frames, 32, 1, d, tiny=True)
    else:
        r = in_fresh_process("benchmarks.ms_step", f"ms_run({frames}, {size}, {steps}, sys.argv[1])", "ms")
    print(f"\nms: {frames} frames at {size} x {size}, {r['precision']}, {torch.get_num_threads()} threads; parameters: "
          + ", ".join(f"{k} {n / 1e6:.1f} M" for k, n in r["sizes"].items()))
    print(f"  step times {', '.join(f'{s:.1f}' for s in r['step_s'])} s (the first pays one-time costs)")
    return {"ms_train_step_s": r["step_s"][-1], "ms_train_peak_rss_gb": gib(r["peak_rss_bytes"]),
            "ms_train_trainable_m": r["trainable"] / 1e6}
