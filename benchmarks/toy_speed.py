"""The toy's speed: what the main job costs (its teacher and student steps, their FLOPs against a matmul
peak), sampling (50-step DDIM + CFG against 4 consistency steps) and the price of the reward terms in a step.

    python -m benchmarks main sample train
"""

import dataclasses
import resource

import torch

import train
import turbo
from benchmarks.common import flops_of, matmul_peak, timed, toy_teacher
from encoders import LinearAutoencoder, TextEncoder, toy_linear_ae, toy_text
from lora import make_student
from rewards import toy_image_reward, toy_video_reward
from tiny_unet3d import UNet3D
from toy.diffusion import diffusion_loss
from turbo import diffusion_of
from toy.world import ToyWorld


@torch.no_grad()
def bench_sample(batch=8, repeats=3):
    """End-to-end sampling of `batch` toy videos: text encoding, the sampler's UNet calls, decoding to pixels.
    The teacher makes 2 x 50 UNet evaluations per video (CFG doubles them), the student 4: the limit is 25x."""
    torch.manual_seed(0)
    ae, text = LinearAutoencoder(toy_linear_ae()), TextEncoder(toy_text()).eval()
    teacher = UNet3D(toy_teacher()).eval()
    student = UNet3D(dataclasses.replace(toy_teacher(), guidance_embed_dim=256)).eval()
    abar, split = diffusion_of(teacher.config)
    prompts = ["a red circle moving left"] * batch
    noise = torch.randn(batch, toy_teacher().in_channels, 8, 8, 8)

    def teacher50():
        ctx, unc = text.encode_text(prompts), text.encode_text([""] * batch)
        return ae.decode(turbo.ddim_sample(teacher, noise, ctx, unc, 16, abar, 50, 5.0, split))

    def turbo4():
        ctx = text.encode_text(prompts)
        return ae.decode(turbo.consistency_sample(student, noise, ctx, 16, abar, 4, 4.0, split=split))

    t_teacher, t_turbo = timed(teacher50, repeats), timed(turbo4, repeats)
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
    abar, split = diffusion_of(teacher.config)
    video, caps = world.batch(batch)
    with torch.no_grad():
        z0, ctx = ae.encode(video), text.encode_text(caps)
        unc = text.encode_text([""] * batch)

    def step(with_rewards):
        def run():
            loss, f, _ = turbo.cd_loss(student, target, teacher, z0, ctx, unc, 16, abar,
                                       turbo.cd_draws(z0.shape[0], z0.shape[1:]), split=split)
            if with_rewards:
                r = turbo.reward_terms(f, ae, caps, image_reward, video_reward)
                loss = turbo.mixed_loss(loss, r)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    t_cd = timed(step(False), repeats)
    t_rw = timed(step(True), repeats)
    return {"train_step_cd_s": t_cd, "train_step_cd_reward_s": t_rw,
            "train_step_ratio_cd_reward_over_cd": t_rw / t_cd,
            "train_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def bench_main(repeats=3):
    """What the main job costs and what its design bought: the teacher's training step (toy/prepare.py, batch 16)
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
        abar, split = diffusion_of(cfg)
        opt = torch.optim.AdamW(teacher.parameters(), lr=1e-4)

        def teacher_step():
            loss = diffusion_loss(teacher, z0, ctx, 16, abar, cfg.prediction)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        teacher.eval().requires_grad_(False)
        student, _ = make_student(teacher, lora_rank=0)
        teacher.train().requires_grad_(True)
        target = UNet3D(student.config).eval().requires_grad_(False)
        target.load_state_dict(student.state_dict())
        frozen = UNet3D(cfg).eval().requires_grad_(False)
        frozen.load_state_dict(teacher.state_dict())
        sopt = torch.optim.AdamW(student.parameters(), lr=1e-4)

        def student_step():
            loss, f, _ = turbo.cd_loss(student.train(), target, frozen, z0[:8], ctx[:8], unc, 16, abar,
                                       turbo.cd_draws(8, z0.shape[1:]), split=split)
            loss = turbo.mixed_loss(loss, turbo.reward_terms(f, ae, caps[:8], image_reward, video_reward))
            sopt.zero_grad(set_to_none=True)
            loss.backward()
            sopt.step()
        for name, fn in (("teacher", teacher_step), ("student", student_step)):
            s, flops = timed(fn, repeats), flops_of(fn)
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
