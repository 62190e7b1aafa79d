"""The toy teacher's own training loss: DDPM's, as eps- or v-prediction.

T2V-Turbo never trains its teacher. A toy teacher has to be trained (toy/prepare.py), and trains best as a
v-prediction model on a zero-terminal-SNR schedule (RESULTS.md says why). Its UNet config records both
(tiny_unet3d.UNetConfig.prediction, .zero_terminal_snr); turbo.py's Part 0 holds the schedule and the split of an
output into (x0_hat, eps_hat) for both parameterisations (turbo.diffusion_of), since sampling and distillation read
them for every teacher; this file holds only what training a teacher adds.

    python -m toy.diffusion     # VC2's and the zero-terminal-SNR schedule's alpha_t at a few timesteps
"""

import torch
import torch.nn.functional as F

from turbo import add_noise, alpha_sigma, vc2_alphas_cumprod, zero_terminal_snr


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
