"""The full-size training step without a GPU: the vc2_256 recipe through train.py's distill, every model at
VideoCrafter2 size with random weights, at a reduced clip, with its memory accounting.

    python -m benchmarks vc2          # --tiny: toy-size models, a check of the script in seconds
"""

import dataclasses
import json
import re
import tempfile
from dataclasses import asdict
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import open_clip
import torch

import train
from benchmarks import common
from benchmarks.common import gib, in_fresh_process, random_hpsv21
from encoders import AutoencoderKL, TextEncoder, openclip_vit_h14, sd_kl_f8, toy_ae, toy_text
from machinery.checkpoint import META_KEY, save_tensors
from machinery.loop import setup_processes
from rewards import ImageTextReward, ViCLIP, VideoTextReward, toy_clip_cfg, toy_viclip, viclip_l14
from tiny_unet3d import UNet3D, toy_unet, vc2
from train import open_data
from vc2 import internvideo2
from vc2.convert import VC2_TRAIN


def vc2_configs(tiny=False):
    """The models bench vc2 / gpu build with random weights: VC2's UNet, OpenCLIP ViT-H-14 text tower, KL-f8 VAE,
    HPSv2.1's ViT-H-14 and ViCLIP-L/14; tiny=True: toy-size models of the same classes with the rewards' real 224 px
    input (python -m benchmarks gpu --tiny checks the GPU script on a CPU in seconds)."""
    if not tiny:
        return {"unet": vc2(), "text": openclip_vit_h14(), "ae": sd_kl_f8(), "clip": None, "viclip": viclip_l14()}
    clip = toy_clip_cfg()
    clip["vision_cfg"] = {**clip["vision_cfg"], "image_size": 224, "patch_size": 32}
    unet = dataclasses.replace(toy_unet(), in_channels=4, out_channels=4, addition_attention=True,   # VC2's latent,
                               prediction="eps", zero_terminal_snr=False)           # init_attn, eps on its schedule
    return {"unet": unet, "text": toy_text(), "ae": toy_ae(), "clip": clip,
            "viclip": dataclasses.replace(toy_viclip(), image_size=224, patch_size=32)}


def vc2_inputs(d, frames, size, video_reward, configs=None):
    """The files train.py's flags need, in folder d: a video folder and its captions, a teacher checkpoint that
    holds only the configs (full size by default; its weights are drawn at random in vc2_run), and placeholder
    reward files."""
    configs = configs or vc2_configs()
    (d / "videos").mkdir()
    for i, colour in enumerate(((220, 40, 40), (40, 200, 60))):
        clip = np.zeros((2 * frames, size, size, 3), np.uint8)
        for k in range(2 * frames):                           # a square sliding right
            clip[k, size // 4:size // 2, (2 * k) % size:(2 * k) % size + size // 4] = colour
        iio.imwrite(d / "videos" / f"{i}.gif", clip, extension=".gif", duration=62, loop=0)   # 16 fps
    (d / "videos.csv").write_text("path,caption\n0.gif,a red square moving right\n1.gif,a green square moving right\n")
    meta = {"kind": "teacher", **{k: asdict(configs[k]) for k in ("unet", "text", "ae")},
            "train": VC2_TRAIN, "source": {"vc2": "random weights (python -m benchmarks vc2)"}}
    save_tensors(d / "teacher.safetensors", {}, {META_KEY: json.dumps(meta)})
    for name in ("HPS_v2.1_compressed.pt", "ViClip-InternVid-10M-FLT.pth", "InternVideo2-stage2_1b-224p-f4.pt"):
        (d / name).write_bytes(b"random weights are drawn instead")
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "green",
                                            "square", "moving", "right"]))
    video = ["--internvideo2", str(d / "InternVideo2-stage2_1b-224p-f4.pt"), "--bert-vocab", str(d)] \
        if video_reward == "internvideo2" else ["--viclip", str(d / "ViClip-InternVid-10M-FLT.pth")]
    return ["--preset", "vc2_256", "--teacher", str(d / "teacher.safetensors"), "--data", str(d / "videos"),
            "--captions", str(d / "videos.csv"), "--hps", str(d / "HPS_v2.1_compressed.pt"), *video]


def vc2_run(frames, size, steps, video_reward_name, workdir, device="cpu", tiny=False):
    """The vc2_256 recipe at frames x size x size through train.py's own functions: its checked config (from
    vc2_inputs' files), its processes and data, and train.distill, Algorithm 1, handed models of the real classes
    with random weights where train.main would load files (tiny: vc2_configs(tiny)). Run in a fresh process by
    bench vc2 and gpu, so that its peak memory is the step's alone. -> {name: value}."""
    d, c = Path(workdir), vc2_configs(tiny)
    bf16 = device.startswith("cuda") or common.bf16_fast()
    cfg = train.parse_config(vc2_inputs(d, frames, size, video_reward_name, c) + [
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
    videos = open_data(cfg)
    _, stats, _ = train.distill(cfg, run, videos, teacher, image_reward, video_reward)
    out["step_s"], out["trainable"] = stats["step_seconds"], stats["trainable"]
    out["ema_bytes"] = 4 * stats["trainable"] if cfg.target == "ema" else 0    # theta^-: the trained tensors, fp32
    out["peak_rss_bytes"] = int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read())[1]) * 1024
    out["peak_gpu_bytes"] = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
    out["precision"] = "bf16" if bf16 else "fp32"
    return out


def bench_vc2(frames=8, size=64, steps=2, video_reward="viclip", tiny=False):
    """2 steps of the vc2_256 recipe (LoRA 64 student sharing one UNet with its teacher and EMA target, CD + HPSv2.1
    + the video reward, every gradient checkpoint, bf16 autocast where the CPU has bf16) at a reduced clip, every
    model at its real size with random weights, through train.py's distill. Prints the accounting and an
    extrapolation to 16 x 256 x 256; returns {name: value}. Nothing is saved (the merged student would be 5.3 GiB,
    its LoRA alone 0.44 GiB).
    tiny=True (`python -m benchmarks vc2 --tiny`): one step with toy-size models (LoRA rank 4) in this process, in
    seconds: a check of the script, its figures mean nothing."""
    if tiny:
        with tempfile.TemporaryDirectory() as d:
            r = vc2_run(frames, 32, 1, video_reward, d, tiny=True)
    else:
        r = in_fresh_process("benchmarks.vc2_step",
                             f"vc2_run({frames}, {size}, {steps}, {video_reward!r}, sys.argv[1])", "vc2")
    tag = "vc2" if video_reward == "viclip" else "vc2_iv2"
    print(f"\n{tag}: {frames} frames at {size} x {size} (latents 4 x {frames} x {size // 8} x {size // 8}), "
          f"{r['precision']}, {torch.get_num_threads()} threads; the models, all at full size:")
    static = 0
    for name, (n, nbytes) in r["models"].items():
        print(f"  {name:60s} {n / 1e6:9.1f} M parameters {gib(nbytes):7.2f} GiB")
        static += nbytes
    lora = 4 * r["trainable"]
    optim = 2 * lora                                          # AdamW: two fp32 moments per trainable number
    ema = r["ema_bytes"]
    print(f"  {'trainable: LoRA rank 64 (w projection included), fp32':60s} {r['trainable'] / 1e6:9.1f} M parameters "
          f"{gib(lora):7.2f} GiB, its gradients {gib(lora):.2f} GiB, AdamW moments {gib(optim):.2f} GiB")
    print(f"  {'EMA target theta^- (the trained tensors only)':60s} {'':9s}   {'':10s} {gib(ema):7.2f} GiB")
    unet = next(v[1] for k, v in r["models"].items() if k.startswith("UNet"))
    print(f"  not held: a separate teacher UNet ({gib(unet):.2f} GiB) and a full EMA copy of the student "
          f"({gib(unet + lora):.2f} GiB): {gib(2 * unet + lora - ema):.2f} GiB saved by sharing one UNet")
    fixed = static + 3 * lora + ema
    peak = r["peak_rss_bytes"]
    rest = peak - fixed
    scale = (16 * 32 * 32) / (frames * (size // 8) ** 2)
    print(f"  weights + gradients + optimizer = {gib(fixed):.2f} GiB; peak RSS {gib(peak):.2f} GiB; the rest "
          f"(activations, workspaces, the interpreter) {gib(rest):.2f} GiB")
    print(f"  16 x 256 x 256 on a GPU, extrapolated: the UNet and decoder activations grow with the latent "
          f"voxels, 16*32*32 / ({frames}*{size // 8}*{size // 8}) = {scale:.0f}x; the reward towers see 224 px "
          f"either way. Upper bound {gib(fixed):.2f} + {scale:.0f} x {gib(rest):.2f} = {gib(fixed + scale * rest):.1f} "
          f"GiB; bf16 weights for the frozen models would save about {gib(static / 2):.1f} GiB, leaving "
          f"{gib(fixed - static / 2):.1f} GiB of weights and optimizer (an estimate)")
    steps_s = r["step_s"]
    print(f"  step times {', '.join(f'{s:.1f}' for s in steps_s)} s (the first pays one-time costs)")
    return {f"{tag}_train_step_s": steps_s[-1], f"{tag}_train_peak_rss_gb": gib(peak),
            f"{tag}_train_trainable_m": r["trainable"] / 1e6, f"{tag}_train_fixed_gb": gib(fixed),
            f"{tag}_train_saved_gb": gib(2 * unet + lora - ema)}


def bench_vc2_iv2():
    """bench_vc2 with InternVideo2-Stage2 1B (the VC2 release's video reward) in place of ViCLIP."""
    return bench_vc2(video_reward="internvideo2")
