"""The schedule and the teacher's DDIM sampler (turbo.py Parts 0-1)."""
import pytest
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
    assert torch.allclose(turbo.split_eps(eps, z, t, ab)[0], x0, atol=1e-4)
    # with the exact eps, one DDIM step lands on the forward process at the earlier time
    prev = turbo.ddim_step(x0, eps, torch.tensor([979, 979]), ab)
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


def test_split_eps_inverts_the_forward_process():
    """VC2's parameterisation: an eps-prediction output maps back to the (x0, eps) that made z_t."""
    x0, eps = torch.randn(3, 4, 3, 2, 2), torch.randn(3, 4, 3, 2, 2)
    ab, t = turbo.vc2_alphas_cumprod(), torch.tensor([0, 500, 999])
    x0_e, eps_e = turbo.split_eps(eps, turbo.add_noise(x0, eps, t, ab), t, ab)
    assert torch.allclose(x0_e, x0, atol=1e-4) and eps_e is eps


def test_pseudo_huber_golden_values():
    """d = mean(sqrt((x - y)^2 + c^2) - c): 0 at x = y, x^2 / 2c for small x, |x| - c for large x."""
    c = 0.001
    x = torch.tensor([0.0, 0.001, 1.0, -3.0])
    expected = [0.0, c * (2 ** 0.5 - 1), (1 + c * c) ** 0.5 - c, (9 + c * c) ** 0.5 - c]
    for i, e in enumerate(expected):
        assert turbo.pseudo_huber(x[i:i + 1], torch.zeros(1), c).item() == pytest.approx(e, rel=1e-5, abs=1e-9)
    assert turbo.pseudo_huber(x, torch.zeros(4), c).item() == pytest.approx(sum(expected) / 4, rel=1e-5)
    # the small-difference end: x^2 / 2c (fp32 cancels most digits of sqrt(...) - c here: 1% is what is left)
    assert turbo.pseudo_huber(torch.tensor([1e-5]), torch.zeros(1), c).item() == pytest.approx(1e-10 / (2 * c),
                                                                                              rel=1e-2)


def test_ema_update_of_the_target_network():
    """theta^- <- mu theta^- + (1 - mu) theta, parameter by parameter; theta itself is left alone."""
    target, model = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    for p in target.parameters():
        torch.nn.init.zeros_(p)
    for p in model.parameters():
        torch.nn.init.ones_(p)
    turbo.ema_update(target.parameters(), model.parameters(), 0.95)
    assert all(torch.allclose(p, torch.full_like(p, 0.05)) for p in target.parameters())
    turbo.ema_update(target.parameters(), model.parameters(), 0.95)
    assert all(torch.allclose(p, torch.full_like(p, 0.05 * 0.95 + 0.05)) for p in target.parameters())
    assert all(torch.equal(p, torch.ones_like(p)) for p in model.parameters())


@pytest.mark.parametrize("steps, k", [(50, 20), (25, 40), (10, 100), (100, 10)])
def test_the_skipping_step_comes_from_the_grid(steps, k):
    """k is one step of the grid the student is distilled on, so the target network sees t_n = t_{n+k} - k, the
    grid point below t_{n+k} (or 0 from the lowest one), whatever the grid."""
    assert turbo.skipping_step(steps) == k
    ab, seen = turbo.vc2_alphas_cumprod(), {}

    def net(name):
        def f(z, t, ctx, fps, w=None):
            seen.setdefault(name, []).append(t.clone())
            return torch.zeros_like(z)
        return f

    n = torch.tensor([0, 1, steps - 1])
    draws = {"n": n, "w": torch.ones(3), "noise": torch.randn(3, 2, 2, 2, 2)}
    turbo.cd_loss(net("student"), net("target"), net("teacher"), torch.randn(3, 2, 2, 2, 2), torch.zeros(3, 1, 4),
                  torch.zeros(3, 1, 4), 16, ab, draws, num_ddim_steps=steps)
    grid = turbo.ddim_timesteps(steps)
    t_nk = torch.tensor([grid[i] for i in n])
    assert torch.equal(seen["student"][0], t_nk)
    assert torch.equal(seen["target"][0], (t_nk - k).clamp(min=0))
    assert seen["target"][0].tolist()[1:] == [grid[0], grid[-2]]     # the grid point below, from the 2nd point on
