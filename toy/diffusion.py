"""The toy teacher's diffusion: v-prediction on a zero-terminal-SNR schedule, and its own training loss.

T2V-Turbo never trains its teacher, and VC2 is an eps-prediction model on the schedule of turbo.py's Part 0. A toy
teacher has to be trained (toy/prepare.py), and trains best as a v-prediction model on a zero-terminal-SNR schedule
(RESULTS.md says why). Its UNet config records both (tiny_unet3d.UNetConfig.prediction, .zero_terminal_snr);
`diffusion_of(config)` turns them into what every function of turbo.py takes: the schedule abar and the `split`
of an output into (x0_hat, eps_hat). turbo.py itself knows only VC2's.

    python -m toy.diffusion     # VC2's and the zero-terminal-SNR schedule's alpha_t at a few timesteps
"""

import torch
import torch.nn.functional as F

from turbo import add_noise, alpha_sigma, split_eps, vc2_alphas_cumprod


def split_v(out, z_t, t, abar):
    """A v-prediction output -> (x0_hat, eps_hat): x0_hat = alpha_t z_t - sigma_t v, eps_hat = sigma_t z_t +
    alpha_t v (v = alpha eps - sigma x0; Salimans & Ho 2022; VideoCrafter's ddpm3d.py has the same
    `parameterization = "v"` option). Unlike split_eps it is defined at alpha_t = 0."""
    alpha, sigma = alpha_sigma(abar, t, z_t)
    return alpha * z_t - sigma * out, sigma * z_t + alpha * out


def zero_terminal_snr(abar):
    """Lin et al. 2024 ("Common diffusion noise schedules and sample steps are flawed", Alg. 1): shift and scale
    alpha_t = sqrt(abar_t) so that alpha_999 = 0 exactly and alpha_0 is unchanged. VC2's schedule leaves
    abar_999 = 0.0047: a training z_999 still carries 7% of the clip, and a model learns to read the motion from
    that residue instead of from the caption, then reads it from pure noise when sampling. It needs v-prediction:
    with alpha_999 = 0 an eps-model cannot say anything about x0."""
    a = abar.sqrt()
    a0, aT = a[0].clone(), a[-1].clone()
    return ((a - aT) * a0 / (a0 - aT)) ** 2


def diffusion_of(config, device="cpu"):
    """A UNet config -> (abar (1000,) float64 on `device`, split): the schedule and the meaning of the output that
    its weights were trained with. VC2's (turbo.vc2_alphas_cumprod, turbo.split_eps) unless the config says v-prediction
    and zero terminal SNR, as the toy teacher's does (a VC2 checkpoint never does)."""
    abar = vc2_alphas_cumprod()
    if config.zero_terminal_snr:
        abar = zero_terminal_snr(abar)
    return abar.to(device), (split_v if config.prediction == "v" else split_eps)


def diffusion_loss(unet, z0, context, fps, abar, prediction="eps", generator=None, t=None, noise=None):
    """The teacher's own objective (DDPM, eps-prediction): E_{t, eps} || eps - eps_theta(z_t, t, c) ||^2
    (prediction='v': the UNet regresses v = alpha_t eps - sigma_t z0 instead).
    z0: (b, c, t, h, w) latents; context: (b, L, d) text tokens (already with caption dropout applied).
    t (b,) and noise (like z0) are drawn from `generator` unless given (toy/prepare.py draws them for a whole
    multi-process batch and hands each process its rows)."""
    b = z0.shape[0]
    if t is None:
        t = torch.randint(0, len(abar), (b,), device=z0.device, generator=generator)
    if noise is None:
        noise = torch.randn(z0.shape, device=z0.device, generator=generator)
    t, noise = t.to(z0.device), noise.to(z0.device, z0.dtype)
    out = unet(add_noise(z0, noise, t, abar), t, context, fps)                  # (b, c, t, h, w)
    target = noise
    if prediction == "v":
        alpha, sigma = alpha_sigma(abar, t, z0)
        target = alpha * noise - sigma * z0
    return F.mse_loss(out, target)


if __name__ == "__main__":
    vc2 = vc2_alphas_cumprod()
    for name, ab in (("VC2", vc2), ("zero terminal SNR", zero_terminal_snr(vc2))):
        print(f"{name:18s} alpha_t at t = 0, 499, 999:", [round(ab[i].sqrt().item(), 4) for i in (0, 499, 999)])
