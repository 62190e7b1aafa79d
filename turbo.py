"""T2V-Turbo's algorithm, in the order a reader meets it (Li et al., arXiv 2405.18750).

    Part 0  the teacher's diffusion: VideoCrafter2's noise schedule, alpha_t and sigma_t, eps-prediction (and the
            toy teacher's v-prediction on a zero-terminal-SNR schedule: diffusion_of reads which from a UNet config)
    Part 1  the teacher's sampler: DDIM (eta = 0) with classifier-free guidance, 50 steps
    Part 2  consistency distillation (Algorithm 1): the consistency function f_theta with its boundary condition
            (eq. 5), the augmented PF-ODE solver with guidance w (eq. 7, App. A eq. 11), the CD loss with the
            skipped-step target and a pseudo-Huber distance (eq. 6), and the target network's EMA update
    Part 3  the multistep consistency sampler (4 steps, no CFG: w enters through the student's embedding)
    Part 4  mixed reward feedback (eqs. 8-10): the single-step prediction f_theta is decoded and scored by an
            image-text and a video-text reward model; L = L_CD - beta_img J_img - beta_vid J_vid

The UNet lives in tiny_unet3d.py, the autoencoder and text encoder in encoders.py, the reward models in rewards.py;
this file holds the math and imports only torch (and math). Notation follows the paper: z_t = alpha_t z_0 +
sigma_t eps with alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t) (paper Sec. 3, "latent diffusion"); t is an
integer in [0, 999].
Latent videos are (b, c, t, h, w) everywhere: b clips, c latent channels, t frames, h x w latent pixels.

    python turbo.py      # prints the schedule's golden values, the 50-step DDIM grid and the boundary scalings
"""

import math

import torch

NUM_TRAIN_TIMESTEPS = 1000

# ----------------------------------------------------------------------------------------------------------------
# Part 0. The teacher's diffusion process (VideoCrafter2, configs/inference_t2v_512_v2.0.yaml)


def vc2_alphas_cumprod(num_train_timesteps=NUM_TRAIN_TIMESTEPS):
    """abar_t for t = 0..999: VC2's "linear" schedule, betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2.
    Computed in float64 (as the original) and returned as float64 (1000,); callers cast when they index."""
    betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def alpha_sigma(abar, t, like):
    """The paper's alpha_t = sqrt(abar_t) and sigma_t = sqrt(1 - abar_t) for a batch of timesteps t (b,) long,
    each shaped (b, 1, 1, 1, 1) to broadcast against `like` (b, c, t, h, w), in its dtype and on its device."""
    a = abar.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))   # (b, 1, 1, 1, 1)
    return a.sqrt(), (1 - a).sqrt()


def add_noise(z0, noise, t, abar):
    """The forward process q(z_t | z_0): z_t = alpha_t z_0 + sigma_t eps."""
    alpha, sigma = alpha_sigma(abar, t, z0)
    return alpha * z0 + sigma * noise


def split_eps(out, z_t, t, abar):
    """A UNet output -> (x0_hat, eps_hat), both (b, c, t, h, w), for an eps-prediction model such as VC2:
    eps_hat = out and x0_hat = (z_t - sigma_t eps_hat) / alpha_t. Both are linear in `out` for a fixed z_t, so
    classifier-free guidance on the output equals guidance on either estimate. Every function below that reads a
    UNet's output takes this as `split`; a model trained with another parameterisation passes its own (the toy
    teacher's v-prediction: split_v below)."""
    alpha, sigma = alpha_sigma(abar, t, z_t)
    return (z_t - sigma * out) / alpha, out


def split_v(out, z_t, t, abar):
    """A v-prediction output -> (x0_hat, eps_hat): x0_hat = alpha_t z_t - sigma_t v, eps_hat = sigma_t z_t +
    alpha_t v (v = alpha eps - sigma x0; Salimans & Ho 2022; VideoCrafter's lvdm/models/ddpm3d.py has the same
    `parameterization = "v"` option). Unlike split_eps it is defined at alpha_t = 0. VC2 and ModelScope are
    eps-models; the toy teacher is a v-model (RESULTS.md, design note 3, says why)."""
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
    its weights were trained with, which every function below takes. VC2's and ModelScope's (vc2_alphas_cumprod,
    split_eps: the same "linear" schedule) unless the config says v-prediction and zero terminal SNR, as the toy
    teacher's does (a converted VC2 or ModelScope checkpoint never does)."""
    abar = vc2_alphas_cumprod()
    if config.zero_terminal_snr:
        abar = zero_terminal_snr(abar)
    return abar.to(device), (split_v if config.prediction == "v" else split_eps)


# ----------------------------------------------------------------------------------------------------------------
# Part 1. The teacher's sampler: DDIM with classifier-free guidance


def ddim_timesteps(num_steps=50, num_train_timesteps=NUM_TRAIN_TIMESTEPS):
    """The 50-step grid [19, 39, ..., 999] (T2V-Turbo's DDIMSolver, Ji4chenLi/t2v-turbo
    ode_solver/ddim_solver.py:19-32). VC2's own inference script uses [1, 21, ..., 981] instead; we sample the
    teacher on the grid the student is distilled on."""
    ratio = num_train_timesteps // num_steps
    return [(i + 1) * ratio - 1 for i in range(num_steps)]


def ddim_step(x0, eps, t_prev, abar):
    """One deterministic DDIM step (eta = 0) to t_prev (b,): z_{t_prev} = alpha_{t_prev} x0_hat + sigma_{t_prev}
    eps_hat. Both the teacher's sampler (here) and the ODE solver of the distillation (Part 2, eq. 7) take it."""
    alpha, sigma = alpha_sigma(abar, t_prev, x0)
    return alpha * x0 + sigma * eps


@torch.no_grad()
def ddim_sample(unet, noise, context, uncond, fps, abar, steps=50, guidance=5.0, split=split_eps):
    """Samples the teacher: 50 DDIM steps from pure noise, each with classifier-free guidance.

    noise: (b, c, t, h, w) z_T; context / uncond: (b, L, d) caption and empty-caption embeddings.
    guidance g uses VC2's convention eps = eps_u + g (eps_c - eps_u) (g = 1: no guidance), i.e. LCM/T2V-Turbo's
    w = g - 1 in `cond + w (cond - uncond)`; both branches run as one batch of 2b (same math, half the calls).
    Returns the last x0 estimate, (b, c, t, h, w): the final step lands on t = 0, where x0_hat is the sample.
    """
    grid = ddim_timesteps(steps)[::-1] + [0]                 # 999, 979, ..., 19, then t = 0
    z, b = noise, noise.shape[0]                             # z: (b, c, t, h, w)
    ctx = torch.cat([context, uncond])                       # (2b, L, d)
    for t, t_prev in zip(grid[:-1], grid[1:]):
        tt = torch.full((2 * b,), t, device=z.device, dtype=torch.long)
        out_c, out_u = unet(torch.cat([z, z]), tt, ctx, fps).chunk(2)                    # 2 x (b, c, t, h, w)
        x0, eps = split(out_u + guidance * (out_c - out_u), z, tt[:b], abar)
        z = ddim_step(x0, eps, torch.full((b,), t_prev, device=z.device, dtype=torch.long), abar)
    return x0


# ----------------------------------------------------------------------------------------------------------------
# Part 2. Consistency distillation (paper Sec. 3 "video consistency model", Algorithm 1, App. A)


def skipping_step(num_ddim_steps=50, num_train_timesteps=NUM_TRAIN_TIMESTEPS):
    """k of Algorithm 1, in 1000-step units: one step of the DDIM grid the student is distilled on, so that
    (t_{n+k}, t_n) are neighbours on it (50 steps: k = 20, paper Sec. 4 and App. A)."""
    grid = ddim_timesteps(num_ddim_steps, num_train_timesteps)
    return grid[1] - grid[0] if len(grid) > 1 else grid[0] + 1


def boundary_scalings(t, sigma_data=0.5, timestep_scaling=10.0):
    """c_skip(t), c_out(t) of eq. 5, as LCM / T2V-Turbo compute them: on the integer t scaled by 10, sigma_data 0.5.
    c_skip(0) = 1 and c_out(0) = 0, so f(x, 0) = x (the boundary condition); by t = 19 c_skip is already ~7e-6."""
    st = t.double() * timestep_scaling
    c_skip = sigma_data ** 2 / (st ** 2 + sigma_data ** 2)
    c_out = st / (st ** 2 + sigma_data ** 2).sqrt()
    return c_skip.float(), c_out.float()


def consistency_fn(student, z_t, t, context, fps, w, abar, split=split_eps):
    """Eq. 5: f_theta(z_t, w, c, t) = c_skip(t) z_t + c_out(t) x0_hat(z_t, eps_theta(z_t, w, c, t)).
    z_t: (b, c, t, h, w); t, w: (b,). This is the student's single-step prediction of the clean video, both the
    CD prediction and (Part 4) what gets decoded and scored by the rewards."""
    x0 = split(student(z_t, t, context, fps, w=w), z_t, t, abar)[0]
    c_skip, c_out = (c.view(-1, 1, 1, 1, 1).to(z_t) for c in boundary_scalings(t))    # (b, 1, 1, 1, 1)
    return c_skip * z_t + c_out * x0


@torch.no_grad()
def guided_ode_step(teacher, z, t_from, t_to, context, uncond, fps, w, abar, split=split_eps):
    """The augmented PF-ODE solver Psi of eq. 7: one DDIM step (eta 0) of the teacher from t_{n+k} to t_n, with
    classifier-free guidance in LCM's convention applied to BOTH the x0 and eps estimates before the step:
        x0_hat = x0_c + w (x0_c - x0_u),  eps_hat = eps_c + w (eps_c - eps_u)       ((1 + w) cond - w uncond)
        z_{t_n} = alpha_{t_n} x0_hat + sigma_{t_n} eps_hat                          (App. A eq. 11, DDIM form)
    The unconditional branch sees the empty caption's embedding. t_to may be 0 (the last grid step lands there)."""
    out_c, out_u = teacher(torch.cat([z, z]), torch.cat([t_from, t_from]), torch.cat([context, uncond]),
                           fps).chunk(2)                                                  # 2 x (b, c, t, h, w)
    (x0_c, eps_c), (x0_u, eps_u) = split(out_c, z, t_from, abar), split(out_u, z, t_from, abar)
    wv = w.view(-1, 1, 1, 1, 1).to(z)                                                     # (b, 1, 1, 1, 1)
    x0 = x0_c + wv * (x0_c - x0_u)
    eps = eps_c + wv * (eps_c - eps_u)
    return ddim_step(x0, eps, t_to, abar)


def pseudo_huber(a, b, c=0.001):
    """d(x, y) = sqrt((x - y)^2 + c^2) - c per element, averaged (T2V-Turbo's `huber`, c = 0.001), in fp32."""
    return ((a.float() - b.float()) ** 2 + c * c).sqrt().sub(c).mean()


def cd_draws(b, shape, w_min=5.0, w_max=15.0, num_ddim_steps=50, generator=None, device="cpu"):
    """The random part of one CD step for b clips (Algorithm 1 lines 5-6): {'n': (b,) grid indices ~ U{0..49},
    'w': (b,) guidance scales ~ U[w_min, w_max], 'noise': (b, *shape) eps ~ N(0, I)}. Separate from cd_loss so
    that train.py can draw them for a whole multi-process batch and hand each process its rows."""
    return {"n": torch.randint(0, num_ddim_steps, (b,), device=device, generator=generator),
            "w": w_min + (w_max - w_min) * torch.rand(b, device=device, generator=generator),
            "noise": torch.randn((b, *shape), device=device, generator=generator)}


def cd_loss(student, target, teacher, z0, context, uncond, fps, abar, draws, huber_c=0.001, num_ddim_steps=50,
            split=split_eps):
    """One CD step of Algorithm 1 on a batch of clean latents z0: (b, c, t, h, w). Returns (loss, f_theta, info).

        n ~ U{0..49},  t_{n+k} = grid[n] in {19, ..., 999},  t_n = max(t_{n+k} - k, 0)         (skipped-step pair)
        w ~ U[w_min, w_max] per sample                                                         (paper Sec. 4)
        z_{t_{n+k}} = alpha z0 + sigma eps                                                      (forward process)
        f_theta     = f(z_{t_{n+k}}, w, c, t_{n+k})                 student, with gradient       (eq. 5)
        z_{t_n}     = Psi(z_{t_{n+k}}, t_{n+k}, t_n, c, w)          teacher + CFG, no gradient   (eq. 7)
        target      = f_{theta^-}(z_{t_n}, w, c, t_n)               target network, no gradient
        L_CD        = d(f_theta, target)                            pseudo-Huber                (eq. 6)
    `target` is the EMA copy theta^- (the paper) or the student itself (the released code); the caller decides.
    n, w and eps are `draws`, cd_draws' dict for these b clips; k is one step of the grid. The three networks
    share the teacher's parameterisation `split` (the student starts as the teacher).
    """
    dev = z0.device
    grid = torch.tensor(ddim_timesteps(num_ddim_steps), device=dev)                       # (50,) 19 .. 999
    t_nk = grid[draws["n"].to(dev)]                                                       # (b,) t_{n+k}
    t_n = (t_nk - skipping_step(num_ddim_steps)).clamp(min=0)                             # (b,) t_n
    w = draws["w"].to(dev)                                                                # (b,) guidance scales
    noise = draws["noise"].to(dev, z0.dtype)                                              # (b, c, t, h, w)
    z_nk = add_noise(z0, noise, t_nk, abar)                                               # (b, c, t, h, w)

    f_theta = consistency_fn(student, z_nk, t_nk, context, fps, w, abar, split)           # (b, c, t, h, w), grad
    z_n = guided_ode_step(teacher, z_nk, t_nk, t_n, context, uncond, fps, w, abar, split)  # (b, c, t, h, w)
    with torch.no_grad():
        tgt = consistency_fn(target, z_n, t_n, context, fps, w, abar, split)             # (b, c, t, h, w)
    loss = pseudo_huber(f_theta, tgt, huber_c)                                            # () scalar
    return loss, f_theta, {"t": t_nk, "w": w}


@torch.no_grad()
def ema_update(target_params, params, mu):
    """Algorithm 1's last line: theta^- <- stopgrad(mu theta^- + (1 - mu) theta), tensor by tensor (two
    iterables in the same order, e.g. target.parameters() and model.parameters())."""
    for p_target, p in zip(target_params, params, strict=True):
        p_target.lerp_(p, 1 - mu)                             # = mu p_target + (1 - mu) p


# ----------------------------------------------------------------------------------------------------------------
# Part 3. Multistep consistency sampling (paper Sec. 3, LCM's Algorithm; Ji4chenLi/t2v-turbo
# scheduler/t2v_turbo_scheduler.py:323-355, 367-467)


def consistency_timesteps(num_steps=4, origin_steps=50, num_train_timesteps=NUM_TRAIN_TIMESTEPS):
    """Timesteps picked from the same 50-step origin grid the student was distilled on:
    4 -> [999, 759, 519, 279], 8 -> [999, 879, ..., 159], 2 -> [999, 499], 1 -> [999].
    origin_steps=200 is the release app's choice (its lcm_origin_steps): 4 -> [999, 749, 499, 249]; the release's
    pipeline defaults to 50, the grid of training (TUTORIAL.md section 9)."""
    origin = ddim_timesteps(origin_steps, num_train_timesteps)
    if not 1 <= num_steps <= origin_steps:
        raise ValueError(f"steps must be in 1..{origin_steps}, got {num_steps}")
    skip = origin_steps // num_steps
    return origin[::-skip][:num_steps]


def fresh_noise(shape, generator=None, device="cpu", dtype=torch.float32):
    """(b, ...) standard normal noise. `generator` may be one torch.Generator for the whole batch, or a list of
    CPU generators, one per video: then video i's noise depends on its own seed only, so a video is the same
    alone and in any batch (drawn in fp32 on the CPU, so also the same on any device)."""
    if isinstance(generator, (list, tuple)):
        assert len(generator) == shape[0], f"{len(generator)} generators for {shape[0]} videos"
        return torch.stack([torch.randn(shape[1:], generator=g) for g in generator]).to(device, dtype)
    return torch.randn(shape, device=device, generator=generator).to(dtype)


@torch.no_grad()
def consistency_sample(student, noise, context, fps, abar, steps=4, w=7.5, generator=None, origin_steps=50,
                       split=split_eps):
    """z_T ~ N(0, I); for each t_i: x_i = f_theta(z, w, c, t_i); then re-noise x_i to t_{i+1} with FRESH noise,
    z = alpha_{t_{i+1}} x_i + sigma_{t_{i+1}} eps. Returns the last x_i, (b, c, t, h, w). One UNet call per
    step and no CFG: guidance was distilled into the student and enters only through its w-embedding.
    `generator`: one for the batch, or one per video (fresh_noise) for videos that do not depend on the batch.
    `origin_steps`: the grid the t_i are picked from (consistency_timesteps; 200: the release app's)."""
    b, dev = noise.shape[0], noise.device
    ts = consistency_timesteps(steps, origin_steps)                     # e.g. [999, 759, 519, 279]
    z, wv = noise, torch.full((b,), float(w), device=dev)               # z: (b, c, t, h, w); wv: (b,)
    for i, t in enumerate(ts):
        tt = torch.full((b,), t, device=dev, dtype=torch.long)          # (b,)
        x0 = consistency_fn(student, z, tt, context, fps, wv, abar, split)  # (b, c, t, h, w): the clean estimate
        if i + 1 < len(ts):
            t_next = torch.full((b,), ts[i + 1], device=dev, dtype=torch.long)
            eps = fresh_noise(z.shape, generator, dev, z.dtype)         # (b, c, t, h, w)
            z = add_noise(x0, eps, t_next, abar)                        # (b, c, t, h, w) at t_{i+1}
    return x0


# ----------------------------------------------------------------------------------------------------------------
# Part 4. Mixed reward feedback (paper Sec. 4, eqs. 8-10; Ji4chenLi/t2v-turbo train_t2v_turbo_v1_lora.py:1043-1098,
# reward_fn/reward_fn.py)


def image_reward_frames(num_frames, m=5, generator=None):
    """-> LongTensor (m,) of distinct random frame indices for R_img: `randperm(num_frames)[:m]`.
    m = 5 is the released code's `reward_frame_bsz`; the paper (Sec. 4.1) says M = 6."""
    if not 1 <= m <= num_frames:
        raise ValueError(f"cannot pick {m} distinct frames out of {num_frames}")
    # each frame is decoded through the VAE with gradients, so M trades reward signal against memory
    return torch.randperm(num_frames, generator=generator)[:m]


def video_reward_frames(num_frames, n=8, generator=None):
    """-> LongTensor (n,) of evenly strided frames for R_vid: stride = num_frames // n, start ~ U{0..stride-1},
    `arange(start, num_frames, stride)[:n]`. VC2's 16 frames give {s, s+2, ..., s+14}; the toy's 8 give all 8."""
    stride = num_frames // n
    if stride < 1:
        raise ValueError(f"a video reward on {n} frames needs at least {n} frames, got {num_frames}")
    # the random phase means every frame of the clip gets reward gradients over training, not only the even ones
    start = int(torch.randint(0, stride, (1,), generator=generator))
    return torch.arange(start, num_frames, stride)[:n]


def reward_terms(f_theta, ae, captions, image_reward=None, video_reward=None, m_frames=5, generator=None,
                 decode_checkpoint=False):
    """Decodes the student's single-step prediction f_theta (b, c, t, h, w) and scores it, with gradients.

        J_img = E[ mean over M random frames of R_img(x0_hat^m, c) ]   (eq. 8; the paper sums over M, the release
                                                                        averages: a factor M on beta_img)
        J_vid = E[ R_vid(x0_hat^{8 strided frames}, c) ]              (eq. 9)
    Only the frames that get scored are decoded (5 + 8, not all 16, on VC2): that and never backpropagating
    through a sampler is what keeps this affordable. Pixels go to the rewards in [0, 1], as the release does
    ((x / 2 + 0.5).clamp(0, 1)). Returns {'r_img': (b,) or absent, 'r_vid': (b,) or absent}."""
    b, _, t = f_theta.shape[:3]                                                  # f_theta: (b, c, t, h, w)
    out = {}
    if image_reward is not None:
        idx = image_reward_frames(t, min(m_frames, t), generator).tolist()      # M frame indices
        x = ae.decode(f_theta[:, :, idx], checkpoint=decode_checkpoint)         # (b, 3, M, H, W) in ~[-1, 1]
        frames = (x / 2 + 0.5).clamp(0, 1).transpose(1, 2).flatten(0, 1)       # (b M, 3, H, W), clip-major
        out["r_img"] = image_reward(frames, list(captions)).view(b, len(idx)).mean(1)         # (b,)
    if video_reward is not None:
        idx = video_reward_frames(t, 8, generator).tolist()                     # 8 strided frame indices
        x = ae.decode(f_theta[:, :, idx], checkpoint=decode_checkpoint)         # (b, 3, 8, H, W) in ~[-1, 1]
        out["r_vid"] = video_reward((x / 2 + 0.5).clamp(0, 1), list(captions), generator=generator)   # (b,)
    return out


def mixed_loss(loss_cd, rewards, beta_img=1.0, beta_vid=2.0):
    """Eq. 10: L = L_CD - beta_img J_img - beta_vid J_vid, every term on every sample and every step (the release
    computes R_vid only on GPU ranks 6-7 of 8, so on fewer GPUs it silently vanishes; here it never does)."""
    loss = loss_cd                                                              # () scalar
    if "r_img" in rewards:
        loss = loss - beta_img * rewards["r_img"].mean()                        # J_img: mean over the batch
    if "r_vid" in rewards:
        loss = loss - beta_vid * rewards["r_vid"].mean()                        # J_vid
    return loss


if __name__ == "__main__":
    ab = vc2_alphas_cumprod()
    print("alphas_cumprod[0, 19, 499, 999] =", [round(ab[i].item(), 6) for i in (0, 19, 499, 999)])
    print("50-step DDIM grid:", ddim_timesteps(50)[:3], "...", ddim_timesteps(50)[-2:], "; k =", skipping_step(50))
    for n in (1, 2, 4, 8):
        print(f"{n}-step consistency timesteps:", consistency_timesteps(n))
    cs, co = boundary_scalings(torch.tensor([0, 1, 19, 999]))
    print("c_skip(0, 1, 19, 999) =", cs.tolist(), " c_out =", co.tolist())
