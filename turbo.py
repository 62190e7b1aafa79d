"""T2V-Turbo's algorithm, in the order a reader meets it (Li et al., arXiv 2405.18750).

    Part 0  the teacher's diffusion: VideoCrafter2's noise schedule, eps-prediction, its training loss
    Part 1  the teacher's sampler: DDIM (eta = 0) with classifier-free guidance, 50 steps

The UNet lives in tiny_unet3d.py, the autoencoder and text encoder in encoders.py; this file only holds math.
Notation follows the paper: z_t = alpha_t z_0 + sigma_t eps with alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t)
(paper Sec. 3, "latent diffusion"); t is an integer in [0, 999].

    python turbo.py      # prints the schedule's golden values and the 50-step DDIM grid
"""

import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

NUM_TRAIN_TIMESTEPS = 1000

# ----------------------------------------------------------------------------------------------------------------
# Part 0. The teacher's diffusion process (VideoCrafter2, digest 1.1)


def vc2_alphas_cumprod(num_train_timesteps=NUM_TRAIN_TIMESTEPS):
    """abar_t for t = 0..999: VC2's "linear" schedule, betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2.
    Computed in float64 (as the original) and returned as float64 (1000,); callers cast when they index."""
    betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def _at(a, t, like):
    """a[t] broadcast against a (b, c, t, h, w) tensor `like`; t is (b,) long."""
    return a.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def add_noise(z0, noise, t, abar):
    """Forward process q(z_t | z_0): z_t = alpha_t z_0 + sigma_t eps."""
    return _at(abar, t, z0).sqrt() * z0 + (1 - _at(abar, t, z0)).sqrt() * noise


def predicted_x0(z_t, eps, t, abar):
    """The eps-parameterised model's clean estimate: x0_hat = (z_t - sigma_t eps_hat) / alpha_t."""
    return (z_t - (1 - _at(abar, t, z_t)).sqrt() * eps) / _at(abar, t, z_t).sqrt()


def diffusion_loss(unet, z0, context, fps, abar, generator=None):
    """The teacher's own objective (DDPM, eps-prediction): E_{t, eps} || eps - eps_theta(z_t, t, c) ||^2.
    T2V-Turbo never trains the teacher; the toy world needs one, so it is trained here the way VC2 was.
    z0: (b, c, t, h, w) latents; context: (b, L, d) text tokens (already with caption dropout applied)."""
    b = z0.shape[0]
    t = torch.randint(0, len(abar), (b,), device=z0.device, generator=generator)
    noise = torch.randn(z0.shape, device=z0.device, generator=generator)
    eps = unet(add_noise(z0, noise, t, abar), t, context, fps)
    return F.mse_loss(eps, noise)


# ----------------------------------------------------------------------------------------------------------------
# Part 1. The teacher's sampler: DDIM with classifier-free guidance


def ddim_timesteps(num_steps=50, num_train_timesteps=NUM_TRAIN_TIMESTEPS):
    """The 50-step grid [19, 39, ..., 999] (T2V-Turbo's DDIMSolver, digest 1.2). VC2's own inference script uses
    [1, 21, ..., 981] instead; we sample the teacher on the grid the student is distilled on."""
    ratio = num_train_timesteps // num_steps
    return [(i + 1) * ratio - 1 for i in range(num_steps)]


def ddim_step(x0, eps, abar_prev):
    """Deterministic DDIM (eta = 0): z_prev = alpha_prev x0_hat + sigma_prev eps_hat (a scalar abar_prev)."""
    return math.sqrt(abar_prev) * x0 + math.sqrt(1 - abar_prev) * eps


@torch.no_grad()
def ddim_sample(unet, noise, context, uncond, fps, abar, steps=50, guidance=5.0, progress=False):
    """Samples the teacher: 50 DDIM steps from pure noise, each with classifier-free guidance.

    noise: (b, c, t, h, w) z_T; context / uncond: (b, L, d) caption and empty-caption embeddings.
    guidance g uses VC2's convention eps = eps_u + g (eps_c - eps_u) (g = 1: no guidance), i.e. LCM/T2V-Turbo's
    w = g - 1 in `cond + w (cond - uncond)`; both branches run as one batch of 2b (same math, half the calls).
    Returns the last x0 estimate, (b, c, t, h, w): the final step lands on abar_0 ~ 1, where x0_hat is the sample.
    """
    grid = ddim_timesteps(steps)[::-1]  # 999, 979, ..., 19
    z, b = noise, noise.shape[0]
    ctx = torch.cat([context, uncond])
    for i, t in enumerate(tqdm(grid, desc="ddim", leave=False, disable=not progress)):
        tt = torch.full((2 * b,), t, device=z.device, dtype=torch.long)
        eps_c, eps_u = unet(torch.cat([z, z]), tt, ctx, fps).chunk(2)
        eps = eps_u + guidance * (eps_c - eps_u)
        x0 = predicted_x0(z, eps, tt[:b], abar)
        abar_prev = abar[grid[i + 1]].item() if i + 1 < len(grid) else abar[0].item()
        z = ddim_step(x0, eps, abar_prev)
    return x0


if __name__ == "__main__":
    ab = vc2_alphas_cumprod()
    print("alphas_cumprod[0, 19, 499, 999] =", [round(ab[i].item(), 6) for i in (0, 19, 499, 999)])
    print("50-step DDIM grid:", ddim_timesteps(50)[:3], "...", ddim_timesteps(50)[-2:])
