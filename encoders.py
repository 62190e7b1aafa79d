"""The frozen encoders around the UNet: the first stage (a KL autoencoder) and the text encoder.

VideoCrafter2 (arXiv 2401.09047) diffuses in the latent space of Stable Diffusion's KL-f8 `AutoencoderKL`
(LDM, arXiv 2112.10752), applied to every frame on its own: a (3, 320, 512) frame becomes a (4, 40, 64) latent,
multiplied by 0.18215 so that latents have roughly unit variance. Its prompt goes through the text tower of
OpenCLIP ViT-H-14, read out at the *penultimate* layer, and all 77 token vectors (not a pooled vector) are the
cross-attention context of the UNet. T2V-Turbo (arXiv 2405.18750) keeps both frozen; its reward path decodes
student latents back to pixels *with gradients*, so `decode` can checkpoint the decoder to save memory.

The same two classes build the real models (`sd_kl_f8()`, `openclip_vit_h14()`), the toy world's text tower
(`toy_text()`) and a toy-size KL autoencoder (`toy_ae()`, the parity fixture's config, which tests and
`python -m benchmarks vc2 --tiny` build with random weights). The toy world's own first stage is not a KL autoencoder
but `LinearAutoencoder` (`toy_linear_ae()`): a PCA of 4 x 4 patches behind AutoencoderKL's interface, fitted by
toy/prepare.py. Module names follow the original code, so the VideoCrafter2 checkpoint's `first_stage_model.*` and
`cond_stage_model.model.*` tensors load as they are (vc2/convert.py: `load_vc2_vae`, `load_vc2_text`).
Video tensors are (b, c, t, h, w) throughout; images are (n, c, h, w).

    python encoders.py      # parameter counts of the four presets; a toy_ae / toy_text round trip, random weights
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.utils.checkpoint import checkpoint as grad_checkpoint

# ----------------------------------------------------------------------------------------------------------------
# First stage: AutoencoderKL (VideoCrafter lvdm/models/autoencoder.py:13-35; LDM's ae_modules.py)


@dataclass
class AEConfig:
    ch: int = 128                            # width of the first level; level i is ch * ch_mult[i] wide
    ch_mult: tuple = (1, 2, 4, 4)            # one entry per resolution level; len - 1 downsamplings (4 -> f8)
    num_res_blocks: int = 2                  # ResnetBlocks per level in the encoder (the decoder has one more)
    z_channels: int = 4                      # latent channels; the encoder outputs 2x this (mean and logvar)
    embed_dim: int = 4                       # channels after quant_conv: equal to z_channels in SD
    in_channels: int = 3                     # RGB in [-1, 1]
    out_ch: int = 3                          # RGB out, roughly [-1, 1] (never clamped here)
    attn_resolutions: tuple = ()             # resolutions with attention inside the levels; SD: none (mid only)
    resolution: int = 512                    # nominal input size: only used to place attn_resolutions
    scale_factor: float = 0.18215            # latent = scale_factor * z (SD's constant: 1 / std of its latents)
    norm_groups: int = 32                    # GroupNorm groups (SD: 32); lets a narrower toy AE keep working

    def __post_init__(self):
        # configs come back from JSON checkpoint metadata with lists; keep them tuples so asdict round-trips
        self.ch_mult, self.attn_resolutions = tuple(self.ch_mult), tuple(self.attn_resolutions)


def toy_ae():
    # Exactly the ddconfig of tests/fixtures/vae_tiny_parity: 3 levels, so f4, 32x32 frames -> 8x8 latents.
    # scale_factor 1.0: nothing here trains this autoencoder (tests and benchmarks use it with random weights);
    # a trained one would set 1 / std of its latents (SD's "scale_by_std" rule), the way 0.18215 was measured for SD.
    return AEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=2, z_channels=4, embed_dim=4, resolution=32,
                    scale_factor=1.0)


def sd_kl_f8():
    # VideoCrafter2's first_stage_model: SD's kl-f8, 83,653,863 parameters
    return AEConfig(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4, embed_dim=4, resolution=512,
                    scale_factor=0.18215)


def group_norm(channels, groups):
    # eps 1e-6, not torch's default 1e-5: a small difference, but parity needs it
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """norm -> swish -> conv, twice, plus a (1x1-projected when widths differ) skip. No timestep input:
    the autoencoder is not a diffusion model (LDM builds these with temb_channels=0). Dropout is 0 in SD, so omitted."""

    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = group_norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = group_norm(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None   # "network in network" = 1x1 conv

    def forward(self, x):                                      # (n, cin, h, w)
        h = self.conv1(F.silu(self.norm1(x)))                  # silu(x) = x * sigmoid(x), LDM's "swish"
        h = self.conv2(F.silu(self.norm2(h)))                  # (n, cout, h, w)
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all h*w positions, with 1x1 convs as the q/k/v/out projections."""

    def __init__(self, channels, groups):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        y = self.norm(x)
        # one head whose dim is all c channels; SDPA's default scale 1/sqrt(c) is LDM's `int(c)**(-0.5)`
        q, k, v = (rearrange(f(y), "n c h w -> n 1 (h w) c") for f in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v)            # (n, 1, h*w, c)
        y = rearrange(y, "n 1 (h w) c -> n c h w", h=h, w=w)
        return x + self.proj_out(y)


class Downsample(nn.Module):
    """LDM's downsample (ae_modules.py): pad right and bottom by one, then a stride-2 3x3 conv (key `conv`).
    tiny_unet3d.py has a pair of its own on purpose: VC2's UNet pads all four sides by one and names its conv `op`,
    so the two Downsamples compute different functions of differently named weights, each what its checkpoint was
    trained with. The two Upsamples compute the same function; each stays beside its Downsample so that neither
    file imports the other."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x):
        # torch convs pad symmetrically; LDM pads only right and bottom, so (h, w) -> (h/2, w/2) exactly,
        # and the trained weights expect exactly this alignment
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv (key `conv`; the same function as tiny_unet3d.Upsample: Downsample
    says why there are two)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    # the only attention SD's autoencoder has, at the lowest resolution (64x64 for a 512 image)
    def __init__(self, channels, groups):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)


def _level(blocks, attns):
    # an empty nn.Module holding `block`, `attn` (and `downsample`/`upsample`), named as in LDM so keys match
    level = nn.Module()
    level.block, level.attn = nn.ModuleList(blocks), nn.ModuleList(attns)
    return level


def _run(module, x, use_checkpoint):
    # activation checkpointing trades compute for memory: the reward path backpropagates through the decoder
    if use_checkpoint and torch.is_grad_enabled():
        return grad_checkpoint(module, x, use_reentrant=False)
    return module(x)


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        g, widths = cfg.norm_groups, [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin, res = cfg.ch, cfg.resolution
        for i, cout in enumerate(widths):
            # the first block of a level changes the width (so it gets a nin_shortcut: down.1.block.0 and
            # down.2.block.0 in SD), the others keep it
            blocks = [ResnetBlock(cin if j == 0 else cout, cout, g) for j in range(cfg.num_res_blocks)]
            attns = [AttnBlock(cout, g) for _ in blocks] if res in cfg.attn_resolutions else []
            level = _level(blocks, attns)
            if i != len(widths) - 1:                           # every level but the last halves h and w
                level.downsample = Downsample(cout)
                res //= 2
            self.down.append(level)
            cin = cout
        self.mid = MidBlock(cin, g)
        self.norm_out = group_norm(cin, g)
        self.conv_out = nn.Conv2d(cin, 2 * cfg.z_channels, 3, padding=1)   # mean and logvar ("double_z")

    def forward(self, x):                                      # (n, 3, H, W)
        # f = 2 ** (len(ch_mult) - 1): 8 for SD, 4 for the toy
        h = self.conv_in(x)                                    # (n, ch, H, W)
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))         # (n, ch*ch_mult[-1], H/f, W/f)
        return self.conv_out(F.silu(self.norm_out(h)))                      # (n, 2*z, H/f, W/f)


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        g, widths = cfg.norm_groups, [cfg.ch * m for m in cfg.ch_mult]
        n_levels = len(widths)
        self.conv_in = nn.Conv2d(cfg.z_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(widths[-1], g)
        # Built in level order 0..n-1 so that up[i] is level i (LDM builds it backwards with insert(0, ...),
        # same keys); level i receives the width of level i+1 (the last level receives its own width).
        self.up = nn.ModuleList()
        for i, cout in enumerate(widths):
            cin = widths[min(i + 1, n_levels - 1)]
            res = cfg.resolution // 2 ** i
            # one block more than the encoder per level (LDM's choice: a decoder works harder than an encoder)
            blocks = [ResnetBlock(cin if j == 0 else cout, cout, g) for j in range(cfg.num_res_blocks + 1)]
            attns = [AttnBlock(cout, g) for _ in blocks] if res in cfg.attn_resolutions else []
            level = _level(blocks, attns)
            if i != 0:                                         # every level but the first doubles h and w
                level.upsample = Upsample(cout)
            self.up.append(level)
        self.norm_out = group_norm(widths[0], g)
        self.conv_out = nn.Conv2d(widths[0], cfg.out_ch, 3, padding=1)

    def forward(self, z, use_checkpoint=False):                # (n, z, h, w)
        h = self.conv_in(z)                                    # (n, ch*ch_mult[-1], h, w)
        for m in (self.mid.block_1, self.mid.attn_1, self.mid.block_2):
            h = _run(m, h, use_checkpoint)
        for level in reversed(self.up):                        # lowest resolution first
            for j, block in enumerate(level.block):
                h = _run(block, h, use_checkpoint)
                if len(level.attn) > 0:
                    h = _run(level.attn[j], h, use_checkpoint)
            if hasattr(level, "upsample"):
                h = _run(level.upsample, h, use_checkpoint)
        return self.conv_out(F.silu(self.norm_out(h)))         # (n, 3, h*f, w*f); no tanh, no clamp


class AutoencoderKL(nn.Module):
    """SD's KL autoencoder, used frame by frame on videos. Keys: encoder.*, decoder.*, quant_conv.*, post_quant_conv.*

    The scale_factor is a plain config value, not a tensor: VC2's checkpoint has no key for it (it is a yaml
    constant), so a trained toy AE must carry it in its config (machinery/checkpoint.py saves asdict(config))."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        # 1x1 convs between the encoder/decoder and the latent; identity-sized in SD, kept for the keys
        self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    def encode_moments(self, x):
        """images (n, 3, H, W) in [-1, 1] -> posterior (mean, logvar), each (n, embed_dim, H/f, W/f), unscaled."""
        moments = self.quant_conv(self.encoder(x))             # (n, 2*embed_dim, H/f, W/f)
        mean, logvar = moments.chunk(2, dim=1)
        # LDM's DiagonalGaussianDistribution clamps logvar so exp() can neither overflow nor collapse to 0
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_frames(self, z, checkpoint=False):
        """unscaled image latents (n, embed_dim, h, w) -> images (n, 3, h*f, w*f), roughly [-1, 1]."""
        return self.decoder(self.post_quant_conv(z), use_checkpoint=checkpoint)

    def encode(self, video, sample=True, generator=None, noise=None, chunk_size=None):
        """video (b, 3, t, H, W) in [-1, 1] -> scaled latents (b, embed_dim, t, H/f, W/f).

        sample=True draws z = mean + std * eps from the posterior (what VC2/T2V-Turbo training does);
        sample=False returns the mean. eps comes from `noise` (b, embed_dim, t, h, w) if given, else from
        `generator` (which must live on the video's device). chunk_size caps how many frames go through the
        encoder at once (None: all b*t frames in one batch; the result is the same up to float rounding)."""
        mean, logvar = self.posterior(video, chunk_size)
        return self.sample_latents(mean, logvar, generator, noise) if sample else mean * self.config.scale_factor

    def posterior(self, video, chunk_size=None):
        """video (b, 3, t, H, W) in [-1, 1] -> the posterior's (mean, logvar), each (b, embed_dim, t, h, w), unscaled
        (what a latent cache keeps, vc2/data.py); chunk_size: frames per encoder call (None: all)."""
        b, c, t, H, W = video.shape
        assert c == self.config.in_channels, f"expected (b, {self.config.in_channels}, t, h, w), got {video.shape}"
        frames = rearrange(video, "b c t h w -> (b t) c h w")  # frames are independent: it's a 2-D AE
        parts = [self.encode_moments(f) for f in frames.split(chunk_size or frames.shape[0])]
        return tuple(rearrange(torch.cat([p[j] for p in parts]), "(b t) c h w -> b c t h w", b=b) for j in (0, 1))

    def sample_latents(self, mean, logvar, generator=None, noise=None):
        """The posterior (b, embed_dim, t, h, w) -> scaled latents z = (mean + std * eps) * scale_factor; eps from
        `noise`, else drawn (b t, c, h, w)-shaped from `generator` (the global RNG when None)."""
        b = mean.shape[0]
        mean, logvar = (rearrange(x, "b c t h w -> (b t) c h w") for x in (mean, logvar))
        if noise is not None:
            eps = rearrange(noise, "b c t h w -> (b t) c h w")
        else:
            eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * eps
        # the scale makes latents roughly unit-variance, which the diffusion noise schedule assumes
        return rearrange(z * self.config.scale_factor, "(b t) c h w -> b c t h w", b=b)

    def decode(self, latents, checkpoint=False, chunk_size=None):
        """scaled latents (b, embed_dim, t, h, w) -> video (b, 3, t, h*f, w*f) in roughly [-1, 1], not clamped.

        checkpoint=True recomputes decoder activations in the backward pass (the reward losses decode with
        gradients). chunk_size: frames per decoder call, as in encode (VC2's decode_first_stage_2DAE uses 1 frame
        of the batch per call; that differs from one big batch only by float rounding)."""
        b = latents.shape[0]
        # undo the scale first: the decoder was trained on raw posterior samples
        z = rearrange(latents, "b c t h w -> (b t) c h w") / self.config.scale_factor      # (b*t, z, h, w)
        frames = [self.decode_frames(zc, checkpoint) for zc in z.split(chunk_size or z.shape[0])]
        return rearrange(torch.cat(frames), "(b t) c h w -> b c t h w", b=b)             # (b, 3, t, H, W)


@dataclass
class LinearAEConfig:
    patch: int = 4                           # f: each p x p x 3 pixel patch is one latent "pixel"
    latent_channels: int = 8                 # k principal components kept of the 3 p^2 = 48 patch values
    in_channels: int = 3
    scale_factor: float = 1.0                # latents are whitened per channel already (LinearAutoencoder.std)
    kind: str = "linear"

    @property
    def embed_dim(self):                     # latent channels, as AEConfig.embed_dim
        return self.latent_channels

    @property
    def ch_mult(self):                       # 2 ** (len(ch_mult) - 1) is the downsampling factor f, as for AEConfig
        return (1,) * (int(math.log2(self.patch)) + 1)


def toy_linear_ae():
    # The toy's first stage: 32x32 frames -> (8, 8, 8) latents (f4, like VC2's f8 grid of 4-channel latents). 8 of
    # the 48 patch dimensions keep 90% of the variance and every clip's colour, shape and direction (toy/world.py
    # judge: 1.00 on reconstructions); 16 kept 96.5%, but the teacher then spent half its effort on faint detail
    # channels and sampled noisy speckle (judge colour 0.47-0.75 vs 0.95 with 8, same budget).
    return LinearAEConfig(patch=4, latent_channels=8)


class LinearAutoencoder(nn.Module):
    """The toy's first stage, behind AutoencoderKL's interface: a *linear* autoencoder on p x p patches, fitted in
    closed form by PCA (`fit`), so it needs no training run and its decoder is exact and cheap to differentiate.

        encode: patch x (3 p^2,) -> z = S^-1 P (x - mu)            P: (k, 3 p^2) top-k principal directions
        decode: z -> x_hat = P^T S z + mu                          S = diag(std of each component)

    Each latent channel is whitened to unit variance (S), the per-channel version of SD's 0.18215: the diffusion
    noise then drowns every channel equally, and an error in a low-variance (fine-detail) channel is shrunk by
    its small std when decoded instead of showing up as grain.
    Why not pixel space itself: an eps-predicting UNet has to carry every latent channel of the noise through
    GroupNorm + SiLU to its last conv; 48 channels of pixels per position need a much wider (slower) UNet than the
    8 that toy_linear_ae keeps. Why not a small KL autoencoder: it trains for minutes before shapes come out sharp;
    PCA takes a second and reconstructs the toy's flat-coloured shapes well enough that the judge cannot tell
    (tests)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        d, k = config.in_channels * config.patch ** 2, config.latent_channels
        self.register_buffer("mean", torch.zeros(d))                        # mu: (3 p^2,)
        self.register_buffer("proj", torch.eye(k, d))                       # P: (k, 3 p^2), orthonormal rows
        self.register_buffer("std", torch.ones(k))                          # S: (k,)

    @torch.no_grad()
    def fit(self, video):
        """PCA of every p x p patch of `video` (b, 3, t, H, W) in [-1, 1]; sets mean, proj and std."""
        p, k = self.config.patch, self.config.latent_channels
        x = rearrange(video, "b c t (h p1) (w p2) -> (b t h w) (c p1 p2)", p1=p, p2=p).double()
        mu = x.mean(0)
        _, s, vt = torch.linalg.svd(x - mu, full_matrices=False)           # rows of vt: principal directions
        self.mean.copy_(mu.float())
        self.proj.copy_(vt[:k].float())
        self.std.copy_(((x - mu) @ vt[:k].T).std(0).float())
        return float((s[:k] ** 2).sum() / (s ** 2).sum())                   # share of variance kept

    def encode(self, video, sample=True, generator=None, noise=None, chunk_size=None):
        """video (b, 3, t, H, W) in [-1, 1] -> latents (b, k, t, H/p, W/p); deterministic (`sample` is ignored)."""
        p = self.config.patch
        x = rearrange(video, "b c t (h p1) (w p2) -> b t h w (c p1 p2)", p1=p, p2=p)
        z = (x - self.mean) @ self.proj.T / self.std * self.config.scale_factor       # (b, t, h, w, k)
        return rearrange(z, "b t h w k -> b k t h w")

    def decode(self, latents, checkpoint=False, chunk_size=None):
        """latents (b, k, t, h, w) -> video (b, 3, t, h p, w p), roughly [-1, 1], not clamped."""
        p = self.config.patch
        z = rearrange(latents, "b k t h w -> b t h w k") / self.config.scale_factor
        x = (z * self.std) @ self.proj + self.mean                          # (b, t, h, w, 3 p^2)
        return rearrange(x, "b t h w (c p1 p2) -> b c t (h p1) (w p2)", p1=p, p2=p)


def first_stage_from_config(d):
    """A first stage rebuilt from its config dict (as checkpoints store it): the KL autoencoder or the toy's
    linear one (its weights then come from the checkpoint)."""
    d = dict(d)
    if d.pop("kind", "kl") == "linear":
        return LinearAutoencoder(LinearAEConfig(**d))
    return AutoencoderKL(AEConfig(**d))


# ----------------------------------------------------------------------------------------------------------------
# Text encoder: the OpenCLIP text tower (VideoCrafter lvdm/modules/encoders/condition.py:174-235; open_clip's
# transformer.py)


@dataclass
class TextConfig:
    vocab_size: int = 49408                  # CLIP BPE; 49406 = start-of-text, 49407 = end-of-text, 0 = padding
    context_length: int = 77                 # tokens per caption, padded / truncated
    width: int = 1024                        # model width = the UNet's cross-attention context_dim
    heads: int = 16
    layers: int = 24
    embed_dim: int = 1024                    # text_projection output (CLIP's joint text-image space)
    layer: str = "penultimate"               # forward() output: 'penultimate' (VC2, skips the last block) or 'last'


def toy_text():
    # The toy captions ("a red circle moving left") are 7 tokens with SOT/EOT, so 16 positions are plenty; VC2 uses
    # 77. Everything else is as in VC2: the same BPE vocabulary, SOT 49406 / EOT 49407, zero padding, and padding
    # positions are real outputs (only a causal mask, no padding mask).
    return TextConfig(vocab_size=49408, context_length=16, width=64, heads=4, layers=3, embed_dim=64)


def openclip_vit_h14():
    # VideoCrafter2's cond_stage_model.model: ViT-H-14's text tower, 354,032,641 parameters
    return TextConfig(vocab_size=49408, context_length=77, width=1024, heads=16, layers=24, embed_dim=1024)


class SelfAttention(nn.Module):
    """Multi-head causal self-attention holding torch.nn.MultiheadAttention's parameter names
    (in_proj_weight = cat(Wq, Wk, Wv) along dim 0), so open_clip weights load, but computed batch-first by hand."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x, mask):                                # (n, L, d), mask (L, L) additive
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)                            # (n, L, 3d)
        # torch MHA splits heads as (h d) with the head index slowest
        q, k, v = rearrange(qkv, "n l (three h e) -> three n h l e", three=3, h=self.heads)  # each (n, h, L, d/h)
        # a float mask is added to the logits before the softmax, exactly what torch MHA does with attn_mask
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)                         # scale 1/sqrt(d/h)
        return self.out_proj(rearrange(y, "n h l e -> n l (h e)"))


class MLP(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))               # exact (erf) GELU, not the tanh approximation


class ResidualAttentionBlock(nn.Module):
    # pre-LayerNorm transformer block; open_clip's ls_1/ls_2 layer scales are Identity for ViT-H-14, so omitted
    def __init__(self, width, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)                        # eps 1e-5 (torch's default) as in open_clip
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


def causal_mask(n, device=None, dtype=torch.float32):
    # additive mask (n, n): 0 on and below the diagonal, -inf above, so token i only sees tokens 0..i.
    # CLIP's text tower is causal (it was trained as in GPT); there is no padding mask.
    return torch.full((n, n), float("-inf"), device=device, dtype=dtype).triu(1)


_TOKENIZER = None


class TextEncoder(nn.Module):
    """OpenCLIP's text transformer with open_clip key names (so `cond_stage_model.model.*` loads as is).

    forward() is VideoCrafter2's FrozenOpenCLIPEmbedder: penultimate layer, ln_final, every token position.
    pooled() is CLIP's own text feature, which VC2 never uses; toy/prepare.py pre-trains the toy's tower through it
    (pretrain_text)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        w, L = config.width, config.context_length
        # at full size the embedding table alone is 49408 x 1024 = 50.6M parameters; the toy keeps the whole
        # vocabulary too, so the real tokenizer (and its SOT/EOT ids) works unchanged
        self.token_embedding = nn.Embedding(config.vocab_size, w)
        self.positional_embedding = nn.Parameter(torch.empty(L, w))                 # learned, absolute
        self.transformer = nn.Module()                                              # for the key names
        self.transformer.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(w, config.heads) for _ in range(config.layers)])
        self.ln_final = nn.LayerNorm(w)
        self.text_projection = nn.Parameter(torch.empty(w, config.embed_dim))       # x @ W, not nn.Linear
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))           # CLIP temperature, 0-dim
        self._init_weights()

    def _init_weights(self):
        # open_clip's TextTransformer.init_parameters; irrelevant when VC2 weights are loaded, used by the toy
        w, n = self.config.width, self.config.layers
        attn_std, proj_std, fc_std = w ** -0.5, w ** -0.5 * (2 * n) ** -0.5, (2 * w) ** -0.5
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=w ** -0.5)

    def tokenize(self, texts):
        """list of str -> LongTensor (n, context_length), exactly open_clip.tokenize: [49406] + BPE + [49407],
        zero padded; longer captions are cut to context_length with the last id set to 49407 (EOT)."""
        global _TOKENIZER
        if _TOKENIZER is None:
            # the one import inside a function here, on purpose: open_clip is slow to import, and a module that only
            # builds or loads models need not pay for it (rewards.py, which always needs it, imports it at the top).
            # The BPE ships inside the package
            from open_clip.tokenizer import SimpleTokenizer
            _TOKENIZER = SimpleTokenizer()
        return _TOKENIZER(list(texts), context_length=self.config.context_length)

    def _blocks(self, tokens, n_blocks):
        n, L = tokens.shape
        # L is context_length for tokenize()'s output; a shorter L just uses the first L positions
        x = self.token_embedding(tokens) + self.positional_embedding[:L]           # (n, L, width)
        mask = causal_mask(L, x.device, x.dtype)
        for block in self.transformer.resblocks[:n_blocks]:
            x = block(x, mask)
        return self.ln_final(x)                                                     # (n, L, width)

    def forward(self, tokens):
        """tokens (n, L) -> context (n, L, width): all L positions, ln_final applied, no projection."""
        # VC2's layer='penultimate' stops one block early: the last block of a CLIP text tower is tuned for the
        # pooled EOT feature, the one before it keeps more per-token information for cross-attention
        n_blocks = self.config.layers - (1 if self.config.layer == "penultimate" else 0)
        return self._blocks(tokens, n_blocks)

    def encode_text(self, texts):
        """list of str -> (n, context_length, width) on the model's device. VC2's unconditional context is
        encode_text([''])."""
        return self(self.tokenize(texts).to(self.token_embedding.weight.device))

    def pooled(self, tokens):
        """tokens (n, L) -> CLIP text feature (n, embed_dim): ALL blocks, ln_final, the EOT position
        (EOT 49407 is the largest id, so argmax finds it), @ text_projection. Not normalised."""
        x = self._blocks(tokens, self.config.layers)                                # (n, L, width)
        eot = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # (n, width)
        return eot @ self.text_projection                                           # (n, embed_dim)


# ----------------------------------------------------------------------------------------------------------------

if __name__ == "__main__":
    torch.manual_seed(0)
    with torch.device("meta"):                                 # shapes only: builds the full-size models instantly
        for name, make, cls in [("toy_ae", toy_ae, AutoencoderKL), ("sd_kl_f8", sd_kl_f8, AutoencoderKL),
                                ("toy_text", toy_text, TextEncoder),
                                ("openclip_vit_h14", openclip_vit_h14, TextEncoder)]:
            print(f"{name:18s} {sum(p.numel() for p in cls(make()).parameters()):>12,d} parameters")
    # the toy-size models for real, with random weights: only the shapes are meaningful here
    ae, text = AutoencoderKL(toy_ae()).eval(), TextEncoder(toy_text()).eval()
    video = torch.rand(2, 3, 8, 32, 32) * 2 - 1                # (b, c, t, h, w) in [-1, 1]
    with torch.no_grad():
        z, ctx = ae.encode(video), text.encode_text(["a red circle moving left", ""])
        print(f"toy_ae: video {tuple(video.shape)} -> latents {tuple(z.shape)} -> video {tuple(ae.decode(z).shape)}; "
              f"text: context {tuple(ctx.shape)} (untrained weights)")
