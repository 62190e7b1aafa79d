"""
VideoCrafter2's 3D UNet, the backbone of both the T2V-Turbo teacher and student, in one file.

UNet3D computes the same function as VideoCrafter2's `UNetModel` (AILab-CVC/VideoCrafter @ 11bcd76,
lvdm/modules/networks/openaimodel3d.py) built with the VC2 flags. It is an SD-2.x spatial UNet in which
  - every ResBlock ends with a temporal convolution (kernel 3 over frames),
  - every attention level has a SpatialTransformer (self-attention over pixels plus cross-attention to the text)
    followed by a TemporalTransformer (self-attention over the frames of each pixel),
  - an fps embedding is added to the time embedding, and one extra TemporalTransformer (`init_attn`) runs
    after the first conv.
Module names mirror the checkpoint, so loading the 1484 real weights is a name-for-name copy (vc2/convert.py:
convert_vc2_unet, with the key maps).

T2V-Turbo (Li et al., arXiv 2405.18750, Sec. 3 and App. A) distils VC2 into a consistency model f_theta(z, w, c, t)
that also takes the guidance scale w. Its student adds w_proj(guidance_embedding(w)) to the sinusoidal timestep
embedding before time_embed (`guidance_embed_dim=256`). We zero-initialise w_proj, so a fresh student equals
the teacher exactly.

Run:  python tiny_unet3d.py    # parameter counts of toy_unet() and vc2() (vc2 is built on the meta device: no memory)
"""
import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.utils.checkpoint import checkpoint


@dataclass
class UNetConfig:
    in_channels: int = 4                      # latent channels (the VC2 VAE gives 4)
    out_channels: int = 4                     # the UNet predicts eps, which has the input's shape
    model_channels: int = 320                 # width of level 0; the time embedding is 4x wider
    channel_mult: tuple = (1, 2, 4, 4)        # width multiplier per level, with a 2x spatial downsample between levels
    num_res_blocks: int = 2                   # ResBlocks per level going down (one more per level going up)
    attention_resolutions: tuple = (4, 2, 1)  # downsample factors that get spatial+temporal transformers
    num_head_channels: int = 64               # channels per attention head: heads = width // 64
    transformer_depth: int = 1                # blocks per SpatialTransformer and in init_attn (T blocks: always 1)
    context_dim: int = 1024                   # text token width (OpenCLIP ViT-H/14 penultimate layer)
    temporal_length: int | None = 16          # frames VC2 trained on: the clip of the relative positions below
    use_relative_position: bool = False       # VideoCrafter1's learned relative positions in the temporal attention
    fps_cond: bool = True                     # add an fps embedding to the time embedding
    addition_attention: bool = True           # the extra temporal transformer `init_attn` after the first conv
    guidance_embed_dim: int = 0               # 0: teacher, no w input; 256: T2V-Turbo student (t2v-turbo app.py:238)
    temporal_dropout: float = 0.1             # dropout in the temporal conv blocks (VC2 hard-codes 0.1)
    use_checkpoint: bool = False              # gradient checkpointing of res/transformer blocks while training
    # what the output means and which noise schedule the weights were trained with (turbo.py: diffusion_of);
    # they travel with every checkpoint's config. VC2: eps and its schedule as is. VideoCrafter's LatentDiffusion
    # also offers v-prediction; zero terminal SNR (Lin et al. 2024) is a toy-teacher option that needs it.
    prediction: str = "eps"                   # "eps" or "v"
    zero_terminal_snr: bool = False

    def __post_init__(self):  # a config read back from JSON carries lists: make them tuples again
        self.channel_mult, self.attention_resolutions = tuple(self.channel_mult), tuple(self.attention_resolutions)
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', got {self.prediction!r}")
        if self.zero_terminal_snr and self.prediction != "v":
            raise ValueError("zero_terminal_snr needs prediction='v' (at alpha = 0 an eps-model's x0 is undefined)")


def vc2():
    """The real VideoCrafter2 UNet (configs/inference_t2v_512_v2.0.yaml), 1,413,284,420 params: the defaults.
    VC2 trains with use_checkpoint=True; that is a memory choice for the trainer, not part of the function."""
    return UNetConfig()


def toy_unet():
    """The toy teacher's UNet, exactly the config of the shipped toy/assets/teacher.safetensors (toy/prepare.py trains
    it; tests/test_unet3d.py checks the two agree): VC2's structure on the toy's 8x8 latent grid, 2 levels of 32
    channels, one ResBlock per level, no init_attn, and every block keeps VC2's temporal convs. The cuts are for speed
    on 2 cores: at width 32 a training step costs about half of width 64's (python -m benchmarks main). The first
    stage gives 8-channel latents (encoders.toy_linear_ae); the width must stay well above them (48 latent channels
    at width 64 left an eps-predictor's loss stuck near 0.13), and a multiple of 32 (GroupNorm's 32 groups).
    Where it departs from VC2, and why (RESULTS.md, design notes): spatial + temporal transformers at both levels
    (without attention at 8x8 the shapes came out poorer), VC1's learned relative temporal positions, and
    v-prediction on a zero-terminal-SNR schedule (on VC2's schedule a toy teacher reads the motion from the noise)."""
    return UNetConfig(in_channels=8, out_channels=8, model_channels=32, channel_mult=(1, 1), num_res_blocks=1,
                      attention_resolutions=(1, 2), num_head_channels=16, context_dim=64, temporal_length=8,
                      use_relative_position=True, addition_attention=False, prediction="v", zero_terminal_snr=True)


# ----------------------------------------------------------------------------------------------------------------
# Embeddings of scalars: the timestep t, the fps and the guidance scale w


def timestep_embedding(t, dim, max_period=10000):
    """VC2's sinusoidal embedding of t (b,) -> (b, dim): [cos(t f_j), sin(t f_j)], f_j = max_period^(-j/half).
    cos comes first and the divisor is half (utils_diffusion.py); guidance_embedding below differs in both."""
    half = dim // 2
    # frequencies computed on the CPU and then moved, as VC2 does, so they are bit-identical on any device
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
    args = t[:, None].float() * freqs[None]                            # (b, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)       # (b, 2*half)
    return F.pad(emb, (0, dim % 2))                                   # odd dim: one zero column


def guidance_embedding(w, dim=256):
    """T2V-Turbo/LCM's embedding of the guidance scale w (b,) -> (b, dim) (guidance_scale_embedding,
    Ji4chenLi/t2v-turbo utils/common_utils.py:47-73): w is scaled by 1000, f_j = 10000^(-j/(half-1)), and the
    output is [sin(1000 w f_j), cos(1000 w f_j)]: sin first, divisor half-1."""
    half = dim // 2
    # LCM's order of fp32 operations (log of a tensor, then divide), so that the embedding is bit-identical
    step = torch.log(torch.tensor(10000.0)) / (half - 1)
    freqs = torch.exp(-step * torch.arange(half, dtype=torch.float32)).to(w.device)
    args = (w * 1000.0).float()[:, None] * freqs[None]                # (b, half)
    return F.pad(torch.cat([torch.sin(args), torch.cos(args)], dim=-1), (0, dim % 2))


# ----------------------------------------------------------------------------------------------------------------
# Building blocks. Inside the UNet a video is (b t) c h w: frames are folded into the batch, frame-minor
# (row = batch_index * t + frame), so that 2-D convs and spatial attention treat each frame as an image.
# The temporal layers unfold it back to (b, c, t, h, w) to mix information across frames.


class GroupNorm32(nn.GroupNorm):
    """VC2's `normalization()` for ResBlocks and the output head: GroupNorm(32 groups, eps 1e-5) computed in fp32
    and cast back, so that it stays accurate when the rest of the network runs in fp16/bf16."""

    def __init__(self, channels):
        super().__init__(32, channels, eps=1e-5)

    def forward(self, x):
        w, b = self.weight.float(), self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


class TemporalConvBlock(nn.Module):
    """Four (GN, SiLU, [dropout], Conv3d) stages with kernel (3, 1, 1), i.e. a 1-D conv over time at each pixel,
    zero-padded at the first and last frame. The last conv starts at zero, so the block starts as the identity.
    The GroupNorms see the 5-D tensor, so their statistics span all frames (unlike the per-frame ResBlock GN)."""

    def __init__(self, channels, dropout):
        super().__init__()
        def stage(drop):  # index 2 is the dropout in conv2..4 and is absent in conv1: that is VC2's key layout
            conv = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
            return nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), *([nn.Dropout(dropout)] if drop else []), conv)
        self.conv1, self.conv2, self.conv3, self.conv4 = stage(False), stage(True), stage(True), stage(True)

    def forward(self, x):  # x: (b, c, t, h, w); residual around the four stages
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))) + Linear(SiLU(emb)); h = skip(x) + conv(SiLU(GN(h))); then the temporal conv block.
    The nn.Sequential indices (in_layers.2, emb_layers.1, out_layers.3) are the checkpoint's."""

    def __init__(self, ch_in, ch_out, emb_dim, temporal_dropout):
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(ch_in), nn.SiLU(), nn.Conv2d(ch_in, ch_out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, ch_out))
        # VC2's UNet dropout is 0; the Dropout stays so that the conv keeps its key `out_layers.3`
        self.out_layers = nn.Sequential(GroupNorm32(ch_out), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(ch_out, ch_out, 3, padding=1))
        self.skip_connection = nn.Identity() if ch_in == ch_out else nn.Conv2d(ch_in, ch_out, 1)
        self.temporal_conv = TemporalConvBlock(ch_out, temporal_dropout)  # `temopral_conv` in the checkpoint

    def forward(self, x, emb, b):  # x: ((b t), c_in, h, w), emb: ((b t), emb_dim)
        h = self.in_layers(x)                                        # ((b t), c_out, h, w)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]  # the time embedding is a per-channel bias
        h = self.skip_connection(x) + self.out_layers(h)             # ((b t), c_out, h, w)
        # unfold the frames so the temporal convs can slide along t, then fold them back
        h = self.temporal_conv(rearrange(h, '(b t) c h w -> b c t h w', b=b))  # (b, c_out, t, h, w)
        return rearrange(h, 'b c t h w -> (b t) c h w')


class RelativePosition(nn.Module):
    """A learned vector per frame offset j - i, clipped to [-max_rel, max_rel] (VideoCrafter1's temporal attention;
    VC2 turns it off). Returns (len_q, len_k, dim_head)."""

    def __init__(self, dim_head, max_rel):
        super().__init__()
        self.max_rel = max_rel
        self.embeddings_table = nn.Parameter(torch.empty(2 * max_rel + 1, dim_head))
        nn.init.xavier_uniform_(self.embeddings_table)

    def forward(self, len_q, len_k):
        dev = self.embeddings_table.device
        offset = torch.arange(len_k, device=dev)[None, :] - torch.arange(len_q, device=dev)[:, None]  # j - i
        return self.embeddings_table[offset.clamp(-self.max_rel, self.max_rel) + self.max_rel]


class CrossAttention(nn.Module):
    """Multi-head attention of x (B, N, query_dim) over context (B, L, context_dim); context=None: self-attention.
    q/k/v have no bias. Heads split the channels as (h d), head-major, as in the checkpoint.
    max_rel > 0 (temporal attention with use_relative_position) adds VC1's relative positions on both sides:
    a_ij = softmax_j(q_i . (k_j + rk_{j-i}) / sqrt(d)),  out_i = sum_j a_ij (v_j + rv_{j-i})."""

    def __init__(self, query_dim, context_dim, heads, dim_head, max_rel=0):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))  # keeps the key `to_out.0`
        if max_rel:
            self.relative_position_k = RelativePosition(dim_head, max_rel)
            self.relative_position_v = RelativePosition(dim_head, max_rel)

    def forward(self, x, context=None):
        context = x if context is None else context
        # (B, N, h*d) and (B, L, h*d) -> (B, h, N or L, d): one attention per head
        q, k, v = (rearrange(p, 'b n (h d) -> b h n d', h=self.heads)
                   for p in (self.to_q(x), self.to_k(context), self.to_v(context)))
        if hasattr(self, 'relative_position_k'):  # spelled out: the value side needs the attention weights
            n, m = q.shape[2], k.shape[2]
            rk, rv = self.relative_position_k(n, m), self.relative_position_v(n, m)   # (n, m, d)
            scale = q.shape[-1] ** -0.5
            sim = (q @ k.transpose(-1, -2) + torch.einsum('bhid,ijd->bhij', q, rk)) * scale   # (B, h, n, m)
            a = sim.softmax(dim=-1)
            out = a @ v + torch.einsum('bhij,ijd->bhid', a, rv)                               # (B, h, n, d)
        else:
            # softmax(q k^T / sqrt(d)) v, as VC2's einsum version; SDPA picks a fused kernel (flash on GPU)
            out = F.scaled_dot_product_attention(q, k, v)              # (B, heads, N, d)
        return self.to_out(rearrange(out, 'b h n d -> b n (h d)'))


class FeedForward(nn.Module):
    """GEGLU MLP: Linear(D, 8D) -> value * gelu(gate) (4D each; value = first half) -> Linear(4D, D)."""

    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim))

    def forward(self, x):
        return self.net(x)


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x):
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)  # exact (erf) GELU


class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm block: self-attention, then attention to `context` (text, or x itself when context is None:
    the temporal transformers use this second attention as a second self-attention), then the GEGLU MLP.
    attn1, ff, attn2 are registered in VC2's order, so named_modules() walks them as VC2 does (LoRA file order)."""

    def __init__(self, dim, heads, dim_head, context_dim=None, max_rel=0):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, dim_head, max_rel)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim or dim, heads, dim_head, max_rel)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context=None):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Attention among the h*w pixels of each frame, plus cross-attention to the text tokens.
    x -> GN (eps 1e-6) -> tokens -> Linear proj_in -> blocks -> Linear proj_out (zero-init) -> + x."""

    def __init__(self, channels, heads, dim_head, depth=1, context_dim=None, max_rel=0):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, context_dim, max_rel) for _ in range(depth)])
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x, context):  # x: ((b t), c, h, w); context: ((b t), L, context_dim)
        h = self.proj_in(rearrange(self.norm(x), 'n c h w -> n (h w) c'))   # ((b t), h*w, inner)
        for block in self.transformer_blocks:
            h = block(h, context)
        h = rearrange(self.proj_out(h), 'n (h w) c -> n c h w', h=x.shape[2])  # back to a feature map
        return x + h  # residual: proj_out starts at zero, so a fresh transformer is the identity


class TemporalTransformer(SpatialTransformer):
    """The same module attending along time: the tokens are the t frames of one pixel, there is no text
    (attn2 is a second self-attention) and, in VC2, no positional encoding over time (max_rel = 0); VC1 and the
    toy teacher (toy_unet) use learned relative positions (max_rel = temporal_length). The GN sees (b, c, t, h, w),
    so its statistics span all frames."""

    def __init__(self, channels, heads, dim_head, depth=1, max_rel=0):
        super().__init__(channels, heads, dim_head, depth, context_dim=None, max_rel=max_rel)

    def forward(self, x, b):  # x: ((b t), c, h, w)
        _, _, H, W = x.shape
        h = self.norm(rearrange(x, '(b t) c h w -> b c t h w', b=b))    # GN over all frames of a video
        # every pixel of every video becomes one sequence of t tokens: attention only mixes frames
        h = self.proj_in(rearrange(h, 'b c t h w -> (b h w) t c'))        # ((b h w), t, inner)
        for block in self.transformer_blocks:
            h = block(h)  # no context: attn2 is self-attention too (VC2's temporal_selfatt_only)
        h = rearrange(self.proj_out(h), '(b h w) t c -> (b t) c h w', b=b, h=H, w=W)  # fold frames back
        return x + h


class Downsample(nn.Module):
    """Between levels of the down path, frame by frame: a stride-2 3x3 conv padded by 1 on every side (VC2's
    openaimodel3d.py, key `op`). encoders.py has a Downsample / Upsample pair of its own on purpose: the VAE's
    (LDM's ae_modules.py) pads only right and bottom and names its conv `conv`, so the two Downsamples compute
    different functions of differently named weights, each what its checkpoint was trained with. The two Upsamples
    compute the same function; each stays beside its Downsample so that neither file imports the other."""

    def __init__(self, channels):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)  # halves h and w

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv to smooth the blocky result (key `conv`; the same function as
    encoders.Upsample: Downsample says why there are two)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode='nearest'))  # doubles h and w


class UNetBlock(nn.Sequential):
    """One entry of input_blocks / middle_block / output_blocks: runs its layers in order, handing each the
    inputs it needs (VC2's TimestepEmbedSequential). With `ckpt`, ResBlocks and transformers are recomputed in
    the backward pass instead of storing their activations (torch.utils.checkpoint; dropout masks are replayed)."""

    def forward(self, h, emb, context, b, ckpt=False):
        for layer in self:
            if isinstance(layer, ResBlock):
                args = (h, emb, b)
            elif isinstance(layer, TemporalTransformer):  # before SpatialTransformer: it is a subclass
                args = (h, b)
            elif isinstance(layer, SpatialTransformer):
                args = (h, context)
            else:  # plain conv, Downsample, Upsample
                h = layer(h)
                continue
            h = checkpoint(layer, *args, use_reentrant=False) if ckpt else layer(*args)
        return h


# ----------------------------------------------------------------------------------------------------------------
# The UNet


class UNet3D(nn.Module):
    """eps_theta(x, t, c, fps[, w]). For vc2() the blocks are (R ResBlock, S/T spatial/temporal transformer,
    D/U down/upsample; width @ downsample factor):
        input_blocks  0: conv 4->320 (then init_attn) | 1-2: R S T 320@1 | 3: D | 4-5: R S T 640@2 | 6: D
                      7-8: R S T 1280@4 | 9: D | 10-11: R 1280@8 (8 is not in attention_resolutions)
        middle_block  R S T R 1280@8
        output_blocks 0-2: R 1280@8, U after 2 | 3-5: R S T 1280@4, U after 5 | 6-8: R S T 640@2, U after 8
                      9-11: R S T 320@1;   out: GN SiLU conv 320->4
    Construction allocates nothing on torch.device('meta'): `with torch.device('meta'): UNet3D(vc2())`."""

    def __init__(self, config):
        super().__init__()
        self.config = cfg = config
        mc, emb_dim, d_head = cfg.model_channels, 4 * cfg.model_channels, cfg.num_head_channels

        def mlp():  # the scalar-embedding MLP: Linear(mc, 4mc) SiLU Linear(4mc, 4mc)
            return nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def res(ch_in, ch_out):
            return ResBlock(ch_in, ch_out, emb_dim, cfg.temporal_dropout)

        max_rel = cfg.temporal_length if cfg.use_relative_position else 0

        def attn(ch):  # spatial then temporal transformer, ch // 64 heads of 64 channels
            return [SpatialTransformer(ch, ch // d_head, d_head, cfg.transformer_depth, cfg.context_dim),
                    TemporalTransformer(ch, ch // d_head, d_head, max_rel=max_rel)]

        # registration order = VC2's named_modules() order (what the T2V-Turbo LoRA file is ordered by)
        self.time_embed = mlp()
        if cfg.fps_cond:
            self.fps_embedding = mlp()
        if cfg.guidance_embed_dim:  # the student's w projection; `time_cond_proj` in T2V-Turbo
            self.w_proj = nn.Linear(cfg.guidance_embed_dim, mc, bias=False)
        self.input_blocks = nn.ModuleList([UNetBlock(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])

        # down path: each level = num_res_blocks x (ResBlock [+ S + T]), then a Downsample (except the last level).
        # Every block's output is kept as a skip for the up path; skip_chs records their widths.
        skip_chs, ch, ds = [mc], mc, 1  # ds = current downsample factor
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [res(ch, mult * mc)]  # the first ResBlock of a level changes the width
                ch = mult * mc
                layers += attn(ch) if ds in cfg.attention_resolutions else []
                self.input_blocks.append(UNetBlock(*layers))
                skip_chs.append(ch)
            if level < len(cfg.channel_mult) - 1:
                self.input_blocks.append(UNetBlock(Downsample(ch)))
                skip_chs.append(ch)
                ds *= 2
        if cfg.addition_attention:  # VC2's init_attn: 8 heads (so inner width 8*64 = 512 != 320)
            self.init_attn = UNetBlock(TemporalTransformer(mc, 8, d_head, cfg.transformer_depth, max_rel))

        # the bottleneck always has attention, whatever attention_resolutions says
        self.middle_block = UNetBlock(res(ch, ch), *attn(ch), res(ch, ch))

        # up path: num_res_blocks + 1 blocks per level, each eating one skip (concatenated on channels),
        # with an Upsample at the end of each level but the top one
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_chs.pop(), mult * mc)]  # input: h and the skip, concatenated
                ch = mult * mc
                layers += attn(ch) if ds in cfg.attention_resolutions else []
                if level > 0 and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(UNetBlock(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(ch, cfg.out_channels, 3, padding=1))
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self):
        """PyTorch's default init everywhere (as VC2), except the layers that end a residual branch, which start
        at zero (VC2's zero_module): each new block then starts as the identity, and the whole untrained
        UNet outputs 0. w_proj is zero too: with it, a fresh student computes exactly the teacher's function."""
        zero = [self.out[-1]]
        for m in self.modules():
            if isinstance(m, ResBlock):
                zero += [m.out_layers[-1], m.temporal_conv.conv4[-1]]
            elif isinstance(m, SpatialTransformer):  # includes the temporal ones
                zero.append(m.proj_out)
        if self.config.guidance_embed_dim:
            zero.append(self.w_proj)
        for m in zero:
            for p in m.parameters():
                nn.init.zeros_(p)

    def forward(self, x, t, context, fps=16, w=None):
        """x: (b, c, t, h, w) noisy latents; t: (b,) timesteps in [0, 1000) or a number; context: (b, L, context_dim)
        text tokens; fps: a number or (b,); w: (b,) guidance scales or a number, only for a student
        (guidance_embed_dim > 0). Returns eps_hat, (b, out_channels, t, h, w)."""
        cfg = self.config
        b, c, T, H, W = x.shape
        assert c == cfg.in_channels and context.shape[0] == b and context.shape[-1] == cfg.context_dim, \
            f"x {tuple(x.shape)} / context {tuple(context.shape)} do not fit this config"
        per_sample = lambda v: torch.as_tensor(v, device=x.device).expand(b)  # a number or (b,) -> (b,)
        dtype = self.time_embed[0].weight.dtype  # the sinusoids are fp32; feed the MLPs in the weights' dtype

        # 1. scalar conditioning -> one embedding per video, (b, 4mc)
        t_emb = timestep_embedding(per_sample(t), cfg.model_channels)                 # (b, mc)
        if cfg.guidance_embed_dim:  # T2V-Turbo student: w enters next to t, before time_embed
            if w is None:
                raise ValueError("this UNet is a student (guidance_embed_dim > 0): pass the guidance scale w")
            t_emb = t_emb + self.w_proj(guidance_embedding(per_sample(w), cfg.guidance_embed_dim).to(dtype))
        elif w is not None:
            raise ValueError("w was given but this UNet has no guidance input (guidance_embed_dim = 0)")
        emb = self.time_embed(t_emb.to(dtype))                                         # (b, 4mc)
        if cfg.fps_cond:
            emb = emb + self.fps_embedding(timestep_embedding(per_sample(fps), cfg.model_channels).to(dtype))

        # 2. fold frames into the batch; every frame sees its video's embedding and text
        emb = emb.repeat_interleave(T, dim=0)                                          # ((b t), 4mc)
        context = context.repeat_interleave(T, dim=0)                                  # ((b t), L, context_dim)
        h = rearrange(x, 'b c t h w -> (b t) c h w')

        # 3. the UNet; the skip saved for input block 0 is the output of init_attn
        ckpt = cfg.use_checkpoint and self.training and torch.is_grad_enabled()
        skips = []
        for i, block in enumerate(self.input_blocks):
            h = block(h, emb, context, b, ckpt)
            if i == 0 and cfg.addition_attention:
                h = self.init_attn(h, emb, context, b, ckpt)
            skips.append(h)
        h = self.middle_block(h, emb, context, b, ckpt)
        for block in self.output_blocks:  # the up path consumes the skips last-in first-out
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, b, ckpt)  # the skip goes second
        y = self.out(h)                                                                # ((b t), out, h, w)
        return rearrange(y, '(b t) c h w -> b c t h w', b=b)


if __name__ == "__main__":
    count = lambda m: sum(p.numel() for p in m.parameters())
    for name, cfg in [("toy", toy_unet()), ("vc2", vc2())]:
        with torch.device('meta'):  # shapes only: the 1.4 B model costs no memory
            teacher, student = UNet3D(cfg), UNet3D(replace(cfg, guidance_embed_dim=256))
        print(f"{name}: teacher {count(teacher):,} params, student (+w_proj 256->{cfg.model_channels}) "
              f"{count(student):,}")
    cfg = toy_unet()
    x = torch.randn(1, cfg.in_channels, cfg.temporal_length, 8, 8)  # (b, c, t, h, w): the toy's 8x8 latent grid
    print("toy forward:", tuple(x.shape), "->", tuple(UNet3D(cfg)(x, 500, torch.randn(1, 16, cfg.context_dim)).shape))
