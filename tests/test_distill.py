"""Consistency distillation (turbo.py Parts 2-3) and LoRA: the properties the paper's method rests on. (That a student
starts as its teacher is tiny_unet3d's: test_unet3d.py.)"""
import copy
from dataclasses import replace

import pytest
import torch

import turbo
from conftest import tiny_unet
from encoders import LinearAutoencoder, toy_linear_ae
from lora import AdaptersOff, EMAAdapters, add_lora, make_student, merge_lora
from rewards import toy_image_reward, toy_video_reward
from tiny_unet3d import UNet3D

AB = turbo.vc2_alphas_cumprod()


def test_boundary_condition():
    c_skip, c_out = turbo.boundary_scalings(torch.tensor([0, 1, 19, 999]))
    assert c_skip[0] == 1 and c_out[0] == 0
    assert abs(c_skip[1].item() - 0.25 / (100 + 0.25)) < 1e-7 and c_skip[2] < 1e-5
    student = tiny_unet(guidance_embed_dim=256)
    z = torch.randn(2, 4, 4, 8, 8)
    f = turbo.consistency_fn(student, z, torch.tensor([0, 0]), torch.randn(2, 16, 64), 16, torch.tensor([5.0, 9.0]), AB)
    assert torch.equal(f, z)                      # f(x, 0) = x exactly


def test_consistency_timesteps_golden():
    assert turbo.consistency_timesteps(4) == [999, 759, 519, 279]
    assert turbo.consistency_timesteps(8) == [999, 879, 759, 639, 519, 399, 279, 159]
    assert turbo.consistency_timesteps(2) == [999, 499] and turbo.consistency_timesteps(1) == [999]
    assert turbo.consistency_timesteps(4, origin_steps=200) == [999, 749, 499, 249]     # the release app's grid
    with pytest.raises(ValueError):
        turbo.consistency_timesteps(0)


def test_guided_ode_step_is_cfg_then_ddim():
    """With the LCM convention, w = 0 is the conditional DDIM step, and the step is linear in w."""
    teacher = tiny_unet()
    z, ctx, unc = torch.randn(2, 4, 4, 8, 8), torch.randn(2, 16, 64), torch.randn(2, 16, 64)
    t1, t0 = torch.tensor([999, 39]), torch.tensor([979, 19])
    out0 = turbo.guided_ode_step(teacher, z, t1, t0, ctx, unc, 16, torch.zeros(2), AB)
    with torch.no_grad():
        eps = teacher(z, t1, ctx, 16)
    x0 = turbo.split_eps(eps, z, t1, AB)[0]
    ab0 = AB[t0].float().view(-1, 1, 1, 1, 1)
    assert torch.allclose(out0, ab0.sqrt() * x0 + (1 - ab0).sqrt() * eps, atol=1e-5)
    out1 = turbo.guided_ode_step(teacher, z, t1, t0, ctx, unc, 16, torch.ones(2), AB)
    out2 = turbo.guided_ode_step(teacher, z, t1, t0, ctx, unc, 16, 2 * torch.ones(2), AB)
    assert torch.allclose(out2 - out1, out1 - out0, atol=1e-4)
    assert (out1 - out0).abs().max() > 1e-4       # guidance moves the step (by about 2e-3 here)


def test_lora_starts_at_zero_and_merges_exactly():
    unet = tiny_unet(guidance_embed_dim=256)
    x, t, ctx, w = torch.randn(2, 4, 4, 8, 8), torch.tensor([10, 700]), torch.randn(2, 16, 64), torch.tensor([6.0, 8.0])
    with torch.no_grad():
        y0 = unet(x, t, ctx, 16, w=w)
    loras = add_lora(unet, rank=4)
    n_layers = sum(isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d)) for m in tiny_unet().modules())
    assert len(loras) == n_layers + 1                  # every Linear/Conv, plus w_proj
    with torch.no_grad():
        assert torch.equal(unet(x, t, ctx, 16, w=w), y0)  # up = 0: LoRA starts as a no-op
        for l in loras:
            torch.nn.init.normal_(l.up.weight, std=0.05)
        y1 = unet(x, t, ctx, 16, w=w)
    assert not torch.allclose(y1, y0, atol=1e-4)
    trainable = [p for p in unet.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == sum(l.up.weight.numel() + l.down.weight.numel() for l in loras)
    merged = merge_lora(copy.deepcopy(unet))
    assert not any("down" in k for k in merged.state_dict())
    with torch.no_grad():
        assert torch.allclose(merged(x, t, ctx, 16, w=w), y1, atol=1e-5)


def test_cd_loss_decreases_on_a_fixed_batch():
    """A few CD steps on one batch of latents reduce the loss (the student can fit its target). In eval mode (no
    dropout) and at a small lr: Adam's first steps move every weight by about lr, and on this tiny random UNet an lr
    of 1e-4 or more first raises the loss for some steps. 12 steps at 3e-5 leave 0.45-0.46 of it (5 seeds)."""
    torch.manual_seed(0)
    teacher = tiny_unet()
    student = UNet3D(replace(teacher.config, guidance_embed_dim=256)).eval()
    student.load_state_dict(teacher.state_dict(), strict=False)
    target = copy.deepcopy(student).eval()
    opt = torch.optim.Adam(student.parameters(), lr=3e-5)
    z0, ctx, unc = torch.randn(2, 4, 4, 8, 8) * 0.5, torch.randn(2, 16, 64), torch.randn(2, 16, 64)

    def loss_at(seed):
        return turbo.cd_loss(student, target, teacher, z0, ctx, unc, 16, AB,
                             turbo.cd_draws(z0.shape[0], z0.shape[1:], generator=torch.Generator().manual_seed(seed)))

    with torch.no_grad():
        before = sum(loss_at(s)[0].item() for s in range(4))
    for i in range(12):
        loss, f, info = loss_at(i % 4)
        assert f.shape == z0.shape and f.requires_grad and (info["w"] >= 5).all() and (info["w"] <= 15).all()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = sum(loss_at(s)[0].item() for s in range(4))
    assert after < 0.7 * before, (before, after)


def test_consistency_sampler_recovers_a_point_mass():
    """A student that is an exact consistency function of a one-point data set returns that point in any steps."""
    target = torch.randn(1, 4, 3, 4, 4)

    def exact(z, t, ctx, fps, w=None):
        a = AB[t].float().view(-1, 1, 1, 1, 1)
        return (z - a.sqrt() * target) / (1 - a).sqrt()

    for steps in (1, 2, 4, 8):
        out = turbo.consistency_sample(exact, torch.randn(1, 4, 3, 4, 4), torch.zeros(1, 2, 8), 16, AB, steps=steps)
        assert torch.allclose(out, target, atol=1e-3)


def test_reward_gradients_reach_the_student_through_mixed_loss():
    """Eq. 10 end to end: L_CD - beta_img J_img - beta_vid J_vid, where J is computed on the decoded single-step
    prediction f_theta. The rewards change the student's gradient by exactly -beta x their own gradient."""
    torch.manual_seed(0)
    student, teacher = tiny_unet(guidance_embed_dim=256).train(), tiny_unet().eval()
    ae = LinearAutoencoder(replace(toy_linear_ae(), latent_channels=4))
    image_reward, video_reward = toy_image_reward(), toy_video_reward()
    z0, ctx = torch.randn(2, 4, 8, 8, 8), torch.randn(2, 16, 64)
    caps = ["a red circle moving left", "a blue square moving up"]

    def grads(beta_img, beta_vid):
        student.zero_grad()
        torch.manual_seed(1)                          # the same dropout masks in every call
        draws = turbo.cd_draws(z0.shape[0], z0.shape[1:], generator=torch.Generator().manual_seed(0))
        loss, f, _ = turbo.cd_loss(student, student, teacher, z0, ctx, torch.zeros_like(ctx), 16, AB, draws)
        r = turbo.reward_terms(f, ae, caps, image_reward, video_reward, generator=torch.Generator().manual_seed(0))
        turbo.mixed_loss(loss, r, beta_img, beta_vid).backward()
        return torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])

    cd_only, img, both = grads(0.0, 0.0), grads(1.0, 0.0), grads(1.0, 2.0)
    assert cd_only.abs().sum() > 0 and (img - cd_only).abs().max() > 1e-6 and (both - img).abs().max() > 1e-6
    # linear in beta: twice the weight, twice the change
    assert torch.allclose(grads(1.0, 4.0) - img, 2 * (both - img), rtol=1e-3, atol=1e-7)


def test_one_unet_is_teacher_student_and_target_with_lora():
    """With LoRA the teacher is the student with its adapters off and its w projection zeroed, and theta^- is the
    student's base plus EMA adapters: both EXACT (bit for bit) against a separate teacher and a deep-copied EMA
    student, so a LoRA run needs one UNet, not three."""

    teacher = tiny_unet().eval()
    student, params = make_student(teacher, lora_rank=4, temporal_dropout=0.1)
    student.train()
    torch.manual_seed(3)
    for p in params:                                   # a student that has moved away from its teacher
        torch.nn.init.normal_(p, std=0.05)
    copy_target = copy.deepcopy(student).eval()
    ema = EMAAdapters(student, params)
    x, t, ctx = torch.randn(2, 4, 4, 8, 8), torch.tensor([999, 39]), torch.randn(2, 16, 64)
    w = torch.tensor([3.0, 7.0])
    with torch.no_grad():
        assert torch.equal(AdaptersOff(student)(x, t, ctx, 16), teacher(x, t, ctx, 16))
        assert torch.equal(ema(x, t, ctx, 16, w=w), copy_target(x, t, ctx, 16, w=w))
    assert student.training and all(p.requires_grad for p in params)     # the views leave the student as it was
    f = turbo.consistency_fn(student, x, t, ctx, 16, w, AB)               # a graph built before a view is used ...
    with torch.no_grad():
        ema(x, t, ctx, 16, w=w)
    f.sum().backward()                                                    # ... stays valid
    for p in params:
        torch.nn.init.normal_(p, std=0.05)
    turbo.ema_update(ema.parameters(), params, 0.5)
    turbo.ema_update(copy_target.parameters(), student.parameters(), 0.5)
    with torch.no_grad():
        assert torch.equal(ema(x, t, ctx, 16, w=w), copy_target(x, t, ctx, 16, w=w))


def bf16_views(dropout=0.0):
    """A LoRA student moved away from its teacher, its EMA target moved away from it, and the teacher read off it:
    the three networks of a LoRA run, on one UNet."""

    teacher = tiny_unet().eval()
    student, params = make_student(teacher, lora_rank=4, temporal_dropout=dropout, lora_dropout=dropout)
    student.train()
    torch.manual_seed(3)
    for p in params:
        torch.nn.init.normal_(p, std=0.05)
    target = EMAAdapters(student, params)
    for e in target.ema:                                   # theta^- != theta: the target must see ITS tensors
        e.data.add_(torch.randn_like(e) * 0.3)
    x, t, ctx = torch.randn(2, 4, 4, 8, 8), torch.tensor([999, 39]), torch.randn(2, 16, 64)
    return student, target, AdaptersOff(student), (x, t, ctx, 16), torch.tensor([3.0, 7.0])


def test_one_unet_under_bf16_autocast_each_view_computes_its_own_weights():
    """bf16 autocast caches the cast of every trainable weight for the whole region, keyed on the parameter. One
    region runs the student, the teacher and the target in cd_loss's order; each must equal itself called alone in
    a fresh region (the target, bit for bit, is not the online student: lora.swapped empties the cache), and
    the student called after the target is the online student again."""
    student, target, teacher, args, w = bf16_views()
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    with bf16(), torch.no_grad():
        alone = {"target": target(*args, w=w), "teacher": teacher(*args)}
    with bf16():
        alone["student"] = student(*args, w=w).detach()
    with bf16():
        s = student(*args, w=w)                            # the online student first, with a graph
        together = {"teacher": teacher(*args), "target": target(*args, w=w)}
        together["student"] = student(*args, w=w).detach()  # ... and once more after the target
    for k in alone:
        assert torch.equal(together[k], alone[k]), k
    assert (alone["target"] - alone["student"]).abs().max() > 0.1       # the EMA tensors do matter
    s.float().square().mean().backward()                   # the graph built before the target is still valid
    assert all(p.grad is not None for p in target._params)


def test_gradient_checkpointing_recomputes_the_online_student_under_bf16():
    """With --grad-ckpt-unet the student's blocks are recomputed in the backward pass, after the target has swapped
    its tensors in and out: the gradients equal those of a run that stored its activations, bit for bit (dropout
    on: the recompute replays its masks)."""
    grads = []
    for ckpt in (False, True):
        student, target, _, args, w = bf16_views(dropout=0.1)
        student.config = replace(student.config, use_checkpoint=ckpt)
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f = student(*args, w=w)
            with torch.no_grad():
                tgt = target(*args, w=w)
            loss = (f.float() - tgt.float()).square().mean()
        loss.backward()                                    # outside the region, as loop.accumulate does
        grads.append([p.grad for p in target._params])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
