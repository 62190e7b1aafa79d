"""VideoCrafter2's own DDIM sampler, the one its published samples (and VBench numbers) come from, beside ours.

turbo.py Part 1 samples the teacher on the grid T2V-Turbo distils on (999, 979, ..., 19, then x0_hat at t = 0) with
eta = 0. VC2's inference script (AILab-CVC/VideoCrafter, commit 11bcd76: scripts/run_text2video.sh ->
scripts/evaluation/inference.py -> funcs.py: batch_ddim_sampling -> lvdm/models/samplers/ddim.py: DDIMSampler) differs
in four ways, each a parameter of vc2_ddim_sample. Each step is DDIM's (Song et al. 2021, eq. 12):
z_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma n, n ~ N(0, I).

    grid      t = 981, 961, ..., 21, 1: range(0, 1000, 1000 // S) + 1 (utils_diffusion.py:56-70), visited from the
              top (ddim.py:156, 165-167); the step from t = 1 lands on abar_0 (utils_diffusion.py:77).
    eta       DDIM's noise (Song et al. 2021, eq. 16): sigma_i = eta sqrt((1 - abar_prev) / (1 - abar)
              (1 - abar / abar_prev)) (utils_diffusion.py:80); the script passes eta = 1.0 (inference.py:29,
              run_text2video.sh: --ddim_eta 1.0), so fresh noise enters at every step, the last one included.
    scale_arr VC2 was trained with z_t = sqrt(abar_t) s_t x0 + sqrt(1 - abar_t) eps (ddpm3d.py:412-417), s_t falling
              linearly from 1 to 0.7 over t = 0..399 and 0.7 after (ddpm3d.py:362-376, config use_scale true,
              scale_b 0.7). So the eps-model's x0_hat is s_t x0: the sampler divides it by s_t and rescales it by
              s_prev for the next point (ddim.py:281-287). T2V-Turbo distils without it (--no_scale_pred_x0).
    output    z at abar_0 (ddim.py:289-291, 210), not x0_hat; the script decodes that z as it is
              (funcs.py:64: decode_first_stage_2DAE, i.e. z / 0.18215 through the VAE decoder frame by frame).

Classifier-free guidance is VC2's (and turbo.ddim_sample's) eps = eps_u + g (eps_c - eps_u) (ddim.py:236), g = 12
in the script, with the empty caption as the unconditional input (funcs.py:20-24) at the same fps
(inference.py:101, 110; run_text2video.sh: --fps 28). Tested against the original DDIMSampler on a tiny fixture made
by running it (tests/fixtures/vc2_ddim_sampler/README.md):

    python sample.py --ckpt weights/vc2/teacher.safetensors --teacher-sampler vc2 --prompt "a corgi on the beach"
    python -m pytest -q tests/vc2/test_ddim.py
"""

import torch

import turbo

# what VC2's text-to-video script passes (scripts/run_text2video.sh; inference.py's own defaults in brackets)
VC2_SCRIPT_ETA = 1.0     # --ddim_eta 1.0 [1.0]
VC2_SCRIPT_FPS = 28      # --fps 28 [24]; T2V-Turbo trains and samples its student at 16


def vc2_timesteps(steps=50, num_train_timesteps=turbo.NUM_TRAIN_TIMESTEPS):
    """VC2's grid, ascending: [1, 21, ..., 981] for 50 steps (make_ddim_timesteps 'uniform',
    utils_diffusion.py:56-70: range(0, 1000, 1000 // S) + 1). When S does not divide 1000 it has MORE than S points
    (7 -> 1000 // 7 = 142 -> 1, 143, ..., 995: 8 points), as the original has (its length assert is commented
    out, :65). Where 1000 // S divides 999 (S = 3, 9, 27, 36, 37, 101..111, 251..333, 501..1000) the grid reaches
    t = 1000, past the schedule, and the original fails with an IndexError: refused here with a ValueError."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"VC2's DDIM grid needs 1 <= steps <= {num_train_timesteps}, got {steps}")
    grid = [t + 1 for t in range(0, num_train_timesteps, num_train_timesteps // steps)]
    if grid[-1] >= num_train_timesteps:
        raise ValueError(f"VC2's DDIM grid for {steps} steps (t = 1 + {num_train_timesteps // steps} k) reaches "
                         f"t = {grid[-1]}, past its {num_train_timesteps}-step schedule: take another count")
    return grid


def vc2_scale_arr(num_train_timesteps=turbo.NUM_TRAIN_TIMESTEPS, scale_a=1.0, scale_b=0.7, mid_step=400):
    """s_t of VC2's use_scale (ddpm3d.py:362-376, the values of configs/inference_t2v_512_v2.0.yaml:20-21):
    linspace(scale_a, scale_b, mid_step) then scale_b. The original appends num_train_timesteps (not
    1000 - mid_step) values of scale_b (fix_scale_bug False, its "bug" comment at :368): 1400 long; only the first
    1000 are ever read. float64 (1400,)."""
    return torch.cat([torch.linspace(scale_a, scale_b, mid_step, dtype=torch.float64),
                      torch.full((num_train_timesteps,), scale_b, dtype=torch.float64)])


def vc2_settings(meta):
    """The scale_arr and the fps that VC2's script would give this teacher checkpoint: a teacher converted from
    VC2's model.ckpt (its meta's source names "vc2") was trained with use_scale and is sampled at fps 28; any other
    teacher (the toy's, ModelScope's) was trained without scale_arr and keeps its own fps."""
    if "vc2" in meta.get("source", {}):
        return {"scale_arr": vc2_scale_arr(), "fps": VC2_SCRIPT_FPS}
    return {"scale_arr": None, "fps": meta.get("train", {}).get("fps", 16)}


@torch.no_grad()
def vc2_ddim_sample(unet, noise, context, uncond, fps, abar, steps=50, guidance=12.0, eta=VC2_SCRIPT_ETA,
                    scale_arr=None, generator=None, split=turbo.split_eps, step_noise=None):
    """VC2's DDIMSampler.sample as its T2V script calls it: from z_T = `noise` down VC2's grid to abar_0.

    noise: (b, c, t, h, w) z_T; context / uncond: (b, L, d) caption and empty-caption embeddings (uncond None or
    guidance 1: no CFG, one UNet call a step, as ddim.py:222-223); fps: a number or (b,); abar: (1000,) float64.
    The UNet interface is turbo.ddim_sample's: unet(z, t, context, fps) and `split` turns its (guided) output into
    (x0_hat, eps_hat); VC2 is an eps-model, so split_eps gives ddim.py:270 exactly. scale_arr: vc2_scale_arr() for
    a model trained with it, None otherwise. eta > 0 draws fresh noise each step with turbo.fresh_noise from
    `generator` (one, or one per video: then a video does not depend on its batch); `step_noise`, a
    (len(grid), b, c, t, h, w) tensor, replaces those draws (the tests replay what the original drew).
    Returns z at abar_0, (b, c, t, h, w): what VC2 returns and decodes.
    """
    grid = vc2_timesteps(steps)                              # ascending, 1 .. 981
    ab = abar.double().cpu()                                 # coefficients in float64, cast once per step
    a_t = ab[grid]                                           # abar at each grid point (ddim.py:254, ddim_alphas)
    a_prev = torch.cat([ab[:1], ab[grid[:-1]]])              # the point below; abar_0 under t = 1 (utils:77)
    sig = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()                  # utils_diffusion.py:80
    if scale_arr is not None:
        s = scale_arr.double().cpu()
        s_t, s_prev = s[grid], torch.cat([s[:1], s[grid[:-1]]])                         # ddim.py:37-40
    z, b, dev = noise, noise.shape[0], noise.device          # z: (b, c, t, h, w)
    cfg = uncond is not None and guidance != 1.0
    ctx = torch.cat([context, uncond]) if cfg else context  # (2b, L, d): both branches in one call (same math)
    fps_in = torch.cat([fps, fps]) if cfg and torch.is_tensor(fps) and fps.dim() else fps
    col = lambda v: torch.full((b, 1, 1, 1, 1), float(v), device=dev, dtype=z.dtype)   # (b, 1, 1, 1, 1)
    for k, i in enumerate(reversed(range(len(grid)))):      # index i of ddim.py:166, from the top
        tt = torch.full((b,), grid[i], device=dev, dtype=torch.long)
        if cfg:
            out_c, out_u = unet(torch.cat([z, z]), torch.cat([tt, tt]), ctx, fps_in).chunk(2)  # 2 x (b, c, t, h, w)
            out = out_u + guidance * (out_c - out_u)                                          # ddim.py:236
        else:
            out = unet(z, tt, ctx, fps_in)
        x0, eps = split(out, z, tt, abar)                    # x0_hat = s_t x0 for a model trained with scale_arr
        if scale_arr is not None:
            x0 = x0 / col(s_t[i])                            # ddim.py:286
        a_p = col(a_prev[i])
        z_next = a_p.sqrt() * (col(s_prev[i]) if scale_arr is not None else 1) * x0 \
            + (1 - a_p - col(sig[i]) ** 2).sqrt() * eps      # ddim.py:274, 287/289: the deterministic part
        if sig[i] > 0:                                       # eta = 0: no noise (VC2 draws it and multiplies by 0)
            n = step_noise[k].to(dev, z.dtype) if step_noise is not None else \
                turbo.fresh_noise(z.shape, generator, dev, z.dtype)                           # ddim.py:276
            z_next = z_next + col(sig[i]) * n
        z = z_next
    return z
