"""The toy teacher's parameterisation (toy/diffusion.py): a zero-terminal-SNR schedule, v-prediction, and its
training loss; turbo.py's sampler runs it when handed its `split`."""
import pytest
import torch

import turbo
from tiny_unet3d import UNetConfig
from toy.diffusion import diffusion_loss
from turbo import diffusion_of, split_v, zero_terminal_snr


def test_zero_terminal_snr_schedule():
    ab, zt = turbo.vc2_alphas_cumprod(), zero_terminal_snr(turbo.vc2_alphas_cumprod())
    assert zt[999].item() == 0 and abs(zt[0].item() - ab[0].item()) < 1e-12
    assert bool((zt[1:] < zt[:-1]).all())                                  # still strictly decreasing
    assert diffusion_of(UNetConfig())[0].equal(ab)                          # VC2's config: the schedule as is
    assert diffusion_of(UNetConfig(prediction="v", zero_terminal_snr=True))[0].equal(zt)
    with pytest.raises(ValueError, match="needs prediction='v'"):
        UNetConfig(zero_terminal_snr=True)
    with pytest.raises(ValueError, match="prediction must be"):
        UNetConfig(prediction="x0")


def test_split_v_inverts_the_forward_process():
    """v = alpha eps - sigma x0 maps back to the same (x0, eps) on both schedules, including at alpha = 0."""
    x0, eps = torch.randn(3, 4, 3, 2, 2), torch.randn(3, 4, 3, 2, 2)
    for ab in (turbo.vc2_alphas_cumprod(), zero_terminal_snr(turbo.vc2_alphas_cumprod())):
        t = torch.tensor([0, 500, 999])
        z = turbo.add_noise(x0, eps, t, ab)
        a, s = (ab[t].float().sqrt().view(-1, 1, 1, 1, 1), (1 - ab[t].float()).sqrt().view(-1, 1, 1, 1, 1))
        x0_v, eps_v = split_v(a * eps - s * x0, z, t, ab)
        assert torch.allclose(x0_v, x0, atol=1e-5) and torch.allclose(eps_v, eps, atol=1e-5)


def test_v_prediction_teacher_on_zero_terminal_snr():
    """A v-model's DDIM sampling from pure noise (alpha_999 = 0) returns the one data point; its loss is zero
    when it outputs the true v."""
    cfg = UNetConfig(prediction="v", zero_terminal_snr=True)
    ab, split = diffusion_of(cfg)
    assert split is split_v
    target = torch.randn(1, 4, 3, 4, 4)

    class Oracle(torch.nn.Module):
        config = cfg

        def forward(self, z, t, ctx, fps):
            a = ab[t].float().view(-1, 1, 1, 1, 1)
            eps = (z - a.sqrt() * target) / (1 - a).sqrt()
            return a.sqrt() * eps - (1 - a).sqrt() * target

    out = turbo.ddim_sample(Oracle(), torch.randn(1, 4, 3, 4, 4), torch.zeros(1, 2, 8), torch.zeros(1, 2, 8), 16,
                            ab, guidance=7.0, split=split)
    assert torch.allclose(out, target, atol=1e-4)
    loss = diffusion_loss(Oracle(), target.expand(2, -1, -1, -1, -1), torch.zeros(2, 2, 8), 16, ab, "v",
                          t=torch.tensor([999, 10]))
    assert loss.item() < 1e-8
