"""The schedule and the teacher's DDIM sampler (turbo.py Parts 0-1)."""
import torch

import turbo


def test_schedule_golden_values():
    ab = turbo.vc2_alphas_cumprod()
    assert ab.shape == (1000,)
    assert abs(ab[0].item() - (1 - 0.00085)) < 1e-9
    assert abs(ab[999].item() - 0.004660) < 5e-7
    assert abs(ab[499].item() - 0.27767) < 5e-5


def test_ddim_grid():
    g = turbo.ddim_timesteps(50)
    assert g[:3] == [19, 39, 59] and g[-1] == 999 and len(g) == 50


def test_ddim_step_closed_form():
    ab = turbo.vc2_alphas_cumprod()
    x0, eps = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    t = torch.tensor([999, 999])
    z = turbo.add_noise(x0, eps, t, ab)
    assert torch.allclose(turbo.predicted_x0(z, eps, t, ab), x0, atol=1e-4)
    # with the exact eps, one DDIM step lands on the forward process at the earlier time
    prev = turbo.ddim_step(x0, eps, ab[979].item())
    assert torch.allclose(prev, turbo.add_noise(x0, eps, torch.tensor([979, 979]), ab), atol=1e-5)


def test_ddim_sampler_recovers_a_point_mass():
    """If the data is one video x*, the exact eps is (z - alpha x*) / sigma; 50 guided DDIM steps return x*."""
    ab = turbo.vc2_alphas_cumprod()
    target = torch.randn(1, 4, 3, 4, 4)

    def oracle(z, t, ctx, fps):
        a = ab[t].float().view(-1, 1, 1, 1, 1)
        return (z - a.sqrt() * target) / (1 - a).sqrt()

    out = turbo.ddim_sample(oracle, torch.randn(1, 4, 3, 4, 4), torch.zeros(1, 2, 8), torch.zeros(1, 2, 8), 16, ab,
                            guidance=7.0)
    assert torch.allclose(out, target, atol=1e-3)
