"""InternVideo2-Stage2 1B, the video-text reward R_vid of T2V-Turbo's VideoCrafter2 release (`vi_clip2`).

T2V-Turbo (arXiv 2405.18750) scores 8 evenly strided frames of the decoded one-step prediction x̂₀ with
InternVideo2-Stage2 (arXiv 2403.15377), file `InternVideo2-stage2_1b-224p-f4.pt` (OpenGVLab on Hugging Face; 2.6 GiB,
bf16, `{"module": state dict}`): J_vid = mean cos(video feature, text feature). This module is that scorer and
nothing else, written compactly with the checkpoint's own key names so that the file loads strictly:
  vision  the 1B ViT (width 1408, 40 blocks, 16 heads, RMSNorm + QK-norm + LayerScale, no final norm) on tubelet
          patches (a Conv3d of kernel (1, 14, 14)), one joint space-time position embedding for 1 + 256 T tokens
          (stored for T = 4, interpolated linearly to the 8 frames T2V-Turbo scores), attention pooling
          (`clip_projector`, a mean-token query) to 768, then `vision_proj` to 512;
  text    BERT-large (transformers' BertModel, built from a BertConfig, never downloaded), of which only layers
          0..18 run (InternVideo2's xbert `mode="text"`: layers 19..23 are its video-text fusion layers), the
          [CLS] vector, then `text_proj` to 512. The tokenizer is bert-large-uncased's WordPiece with
          InternVideo2's own rule: "[CLS] tokens", NO [SEP], cut and padded to 40;
  score   exactly T2V-Turbo's reward_fn.py `get_intern_vid2_score_fn`: short side -> 224 (bicubic) and one
          random 224 crop for the whole call, ImageNet mean/std, both features L2-normalised, dot product.
Everything the reward does not use (`itm_head`, `temp`, the MLM head `text_encoder.cls.*`, the fusion layers, the
CLIP-distillation decoders, the image position embeddings) is dropped BY NAME when loading (`unused_key`); any
other difference between the file and the model is one ValueError.

Nothing is downloaded: the weights come from the user's file and the tokenizer's vocab.txt from a path the user
gives (the file itself, or a Hugging Face cache folder of bert-large-uncased). The tests use a tiny model and a
39-word vocabulary (tests/fixtures/internvideo2_tiny_parity/), recorded by running T2V-Turbo's original code.

    python -m vc2.internvideo2                 # parameter counts (full size, on the meta device)
    python -m benchmarks.internvideo2          # a random full-size model scores a 224 px 8-frame clip, with backward
"""

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.utils.checkpoint import checkpoint as grad_checkpoint
from transformers import BertConfig, BertModel, BertTokenizer

from machinery.checkpoint import load_strict, safe_torch_load, unwrap
from rewards import IMAGENET_MEAN, IMAGENET_STD, normalize, resize_crop_min_size

CHECKPOINT_NAME = "InternVideo2-stage2_1b-224p-f4.pt"


@dataclass
class InternVideo2Config:
    image_size: int = 224                    # frames are image_size x image_size after the crop
    patch_size: int = 14                     # 224 / 14 = 16 x 16 = 256 patches per frame
    tubelet: int = 1                         # frames per token (the Conv3d's time kernel); 1 for the 1B model
    num_frames: int = 8                      # frames scored: T2V-Turbo v1 uses 8, v2 uses 4
    ckpt_num_frames: int = 4                 # frames of the released pos_embed (the "-f4" of the file name)
    vision_width: int = 1408                 # the 1B ViT's d_model
    vision_layers: int = 40
    vision_heads: int = 16                   # head dim 88
    vision_mlp: int = 6144                   # int(1408 * 48 / 11)
    pool_heads: int = 16                     # heads of the attention pooling (clip_projector)
    clip_embed_dim: int = 768                # attention pooling output (the CLIP space it was distilled into)
    gelu_tanh: bool = True                   # tanh GELU in the vision MLP: what T2V-Turbo runs (see VisionMLP)
    text_vocab: int = 30522                  # bert-large-uncased's WordPiece vocabulary
    text_width: int = 1024
    text_layers: int = 19                    # layers run = xbert's fusion_layer; the checkpoint holds 24
    text_heads: int = 16
    text_mlp: int = 4096
    text_max_positions: int = 512
    max_txt_l: int = 40                      # tokens per caption, [CLS] included (T2V-Turbo: max_length=40)
    embed_dim: int = 512                     # the joint video-text space of vision_proj / text_proj
    grad_checkpoint: bool = False            # recompute each vision block in backward (T2V-Turbo: all 40)

    @property
    def num_patches(self):                   # spatial patches per time step
        return (self.image_size // self.patch_size) ** 2

    @property
    def time_steps(self):                    # tokens along time: num_frames / tubelet
        return self.num_frames // self.tubelet


def internvideo2_1b(num_frames=8):
    # InternVideo2-Stage2 1B as T2V-Turbo builds it (internvideo2_stage2_config.py,
    # pretrain_internvideo2_1b_patch14_224, config_bert_large.json with fusion_layer 19). At 8 frames: vision
    # 1,020,708,608 parameters (the file's vision_encoder.* holds 1,049,117,056 at 4 frames, with the unused decoders),
    # BERT layers 0..18 271,111,168, vision_proj + text_proj 918,528. num_frames=4 is T2V-Turbo v2's setting (no
    # interpolation then).
    return InternVideo2Config(num_frames=num_frames)


def tiny_internvideo2():
    # The width of tests/fixtures/internvideo2_tiny_parity (the original code, rebuilt at this size): 28 px frames
    # = 2 x 2 patches, 8 frames (stored for 4), 2 blocks of width 32; a 2-layer BERT of width 32 over a 39-word
    # vocabulary, 48 positions
    return InternVideo2Config(image_size=28, num_frames=8, ckpt_num_frames=4, vision_width=32, vision_layers=2,
                              vision_heads=2, vision_mlp=64, pool_heads=2, clip_embed_dim=24, text_vocab=39,
                              text_width=32, text_layers=2, text_heads=2, text_mlp=64, text_max_positions=48,
                              embed_dim=16)


# ----------------------------------------------------------------------------------------------------------------
# Vision tower: PretrainInternVideo2 (intern_vid2/models/backbones/internvideo2/internvideo2.py), the parts the
# reward runs. Class and attribute names follow the original so the keys are `vision_encoder.<the same path>`.


class RMSNorm(nn.Module):
    # x / rms(x) * weight, eps 1e-6, no bias. Computed in fp32 and cast back before the weight, as the original
    # (its fused flash-attn kernel keeps fp32 through the weight: the same up to the last bit of bf16/fp16)
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class LayerScale(nn.Module):
    # a learned per-channel gain on each residual branch (CaiT), always applied in fp32 (force_fp32 in the original)
    def __init__(self, dim, init=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x):
        return (x.float() * self.gamma.float()).to(x.dtype)


class Attention(nn.Module):
    """Self-attention with QK-normalisation: q and k go through an RMSNorm over ALL heads at once (width 1408),
    before the split into 16 heads of 88. No qkv bias; proj has one."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm, self.k_norm = RMSNorm(dim), RMSNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):                                      # (b, L, d)
        q, k, v = self.qkv(x).chunk(3, dim=-1)                 # (b, L, d) each; the original's "(three h d)" split
        q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (rearrange(z, "b L (h e) -> b h L e", h=self.heads) for z in (q, k, v))
        # softmax(q k^T / sqrt(head_dim)) v, the original's naive attention (and flash-attn on GPU), without mask
        y = F.scaled_dot_product_attention(q, k, v)            # (b, h, L, e)
        return self.proj(rearrange(y, "b h L e -> b L (h e)"))


class VisionMLP(nn.Module):
    """fc1 -> GELU -> fc2. Which GELU: T2V-Turbo's config sets use_half_precision=True, which turns on flash-attn's
    FusedMLP, whose activation is "gelu_approx" = tanh GELU; the original's unfused path (use_fused_mlp=False) uses
    nn.GELU = exact erf GELU. The weights are the same; the two scores differ by ~1e-5 (the tiny fixture has both)."""

    def __init__(self, dim, hidden, tanh):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.approximate = "tanh" if tanh else "none"

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class Block(nn.Module):
    # pre-norm: x += ls1 * attn(norm1 x); x += ls2 * mlp(norm2 x). Drop-path (0.25 in training) is the identity.
    def __init__(self, cfg):
        super().__init__()
        d = cfg.vision_width
        self.norm1, self.attn, self.ls1 = RMSNorm(d), Attention(d, cfg.vision_heads), LayerScale(d)
        self.norm2, self.mlp, self.ls2 = RMSNorm(d), VisionMLP(d, cfg.vision_mlp, cfg.gelu_tanh), LayerScale(d)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    # tubelet x patch x patch pixels -> one token; a Conv3d WITH bias (unlike ViCLIP's)
    def __init__(self, cfg):
        super().__init__()
        k, p = cfg.tubelet, cfg.patch_size
        self.proj = nn.Conv3d(3, cfg.vision_width, (k, p, p), stride=(k, p, p))

    def forward(self, x):                                      # (b, 3, t, H, W)
        x = self.proj(x)                                       # (b, d, t', gh, gw)
        # TIME-major token order (all patches of frame 0, then frame 1, ...), as the original's
        # flatten(3).permute(0, 2, 3, 1).view(B, T * L, C); ViCLIP's is patch-major
        return rearrange(x, "b d t gh gw -> b (t gh gw) d")


class AttentionPool(nn.Module):
    """`clip_projector` (AttentionPoolingBlock): ONE query, the mean of all tokens, attends over all tokens.
    q/k/v are bias-free Linears plus separate q_bias/k_bias/v_bias parameters (the original's layout); LayerNorms
    (eps 1e-5) on the query, the keys and the values separately; proj maps to clip_embed_dim."""

    def __init__(self, dim, heads, out_dim):
        super().__init__()
        self.heads = heads
        self.norm1_q, self.norm1_k, self.norm1_v = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        ca = self.cross_attn = nn.Module()                    # an empty holder, for the key names cross_attn.*
        ca.q, ca.k, ca.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        ca.q_bias, ca.k_bias, ca.v_bias = (nn.Parameter(torch.zeros(dim)) for _ in range(3))
        ca.proj = nn.Linear(dim, out_dim)

    def forward(self, x):                                      # (b, L, d)
        ca = self.cross_attn
        q = self.norm1_q(x.mean(1, keepdim=True))              # (b, 1, d): the mean token is the query
        q = F.linear(q, ca.q.weight, ca.q_bias)
        k = F.linear(self.norm1_k(x), ca.k.weight, ca.k_bias)
        v = F.linear(self.norm1_v(x), ca.v.weight, ca.v_bias)
        q, k, v = (rearrange(z, "b L (h e) -> b h L e", h=self.heads) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v)            # (b, h, 1, e)
        return ca.proj(rearrange(y, "b h 1 e -> b (h e)"))     # (b, out_dim)


class VisionEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg.vision_width
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        # ONE learned embedding per token position of the whole clip: 1 + t' * 256 rows (2049 for 8 frames).
        # The file has it for 4 frames (1025 rows); interpolate_pos_embed stretches it along time when loading.
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.time_steps * cfg.num_patches, d))
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.vision_layers)])
        self.clip_projector = AttentionPool(d, cfg.pool_heads, cfg.clip_embed_dim)

    def forward(self, video):                                  # (b, 3, t, S, S), normalised pixels
        b, c, t, h, w = video.shape
        cfg = self.cfg
        assert t == cfg.num_frames and h == w == cfg.image_size, (
            f"InternVideo2 expects (b, 3, {cfg.num_frames}, {cfg.image_size}, {cfg.image_size}), got "
            f"{tuple(video.shape)}")
        x = self.patch_embed(video.to(self.cls_token.dtype))   # (b, t*256, d), in the model's dtype (original)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + self.pos_embed   # (b, 1 + t*256, d)
        # 40 blocks of full space-time attention over 2049 tokens at 8 frames. The reward backpropagates through
        # all of them, so checkpointing (recompute each block in backward) is what makes it fit in memory
        for block in self.blocks:
            if cfg.grad_checkpoint and torch.is_grad_enabled():
                x = grad_checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        # no final norm: the pooling's own LayerNorms see the raw residual stream
        return self.clip_projector(x)                          # (b, clip_embed_dim)


def interpolate_pos_embed(pos_embed, t_from, t_to):
    """(1, 1 + t_from * n, d) -> (1, 1 + t_to * n, d): the class row is kept; the t_from rows of every patch are
    resampled LINEARLY in time (F.interpolate, align_corners=False), the original's
    interpolate_pos_embed_internvideo2(orig_t_size=4). In fp32; returned in the input's dtype."""
    if t_from == t_to:
        return pos_embed
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    d = grid.shape[-1]
    grid = rearrange(grid.float(), "1 (t n) d -> (n d) 1 t", t=t_from)          # time last, per patch and channel
    grid = F.interpolate(grid, size=t_to, mode="linear", align_corners=False)
    grid = rearrange(grid, "(n d) 1 t -> 1 (t n) d", d=d).to(pos_embed.dtype)
    return torch.cat([cls, grid], dim=1)


# ----------------------------------------------------------------------------------------------------------------
# Text tower: BERT-large (transformers), layers 0..fusion_layer-1, and InternVideo2's tokenizer rule


def bert_config(cfg):
    # config_bert_large.json: exact GELU, LayerNorm eps 1e-12, absolute positions, 2 token types. Only the layers
    # that run are built; dropout is irrelevant (eval). "eager" attention: plain softmax(QK^T + mask) V, the xbert
    # arithmetic (its mask is -10000 where transformers uses the dtype's minimum: both give exactly 0 weight)
    return BertConfig(vocab_size=cfg.text_vocab, hidden_size=cfg.text_width, num_hidden_layers=cfg.text_layers,
                      num_attention_heads=cfg.text_heads, intermediate_size=cfg.text_mlp, hidden_act="gelu",
                      max_position_embeddings=cfg.text_max_positions, type_vocab_size=2, layer_norm_eps=1e-12,
                      pad_token_id=0, attn_implementation="eager")


def find_vocab(path, must=True):
    """bert-large-uncased's vocab.txt from a user path: the file itself, a folder holding it (a Hugging Face
    snapshot folder .../snapshots/<hash>/), or a Hugging Face cache folder of the model
    (models--google-bert--bert-large-uncased, or the hub cache folder above it). Not found: FileNotFoundError,
    or None with must=False."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    candidates = [path / "vocab.txt"]
    for repo in ("", "models--google-bert--bert-large-uncased", "models--bert-large-uncased"):
        candidates += sorted((path / repo / "snapshots").glob("*/vocab.txt"))
    for c in candidates:
        if c.is_file():
            return c
    if not must:
        return None
    raise FileNotFoundError(f"no bert-large-uncased vocab.txt at {path} (give the file, or a Hugging Face cache "
                            "folder of google-bert/bert-large-uncased; nothing is downloaded)")


def load_tokenizer(path):
    """transformers' BertTokenizer over the user's vocab.txt, uncased (bert-large-uncased's tokenizer_config:
    do_lower_case, which also strips accents), Chinese characters split: the settings the original's
    BertTokenizer.from_pretrained("google-bert/bert-large-uncased") gets."""
    return BertTokenizer(vocab=str(find_vocab(path)), do_lower_case=True, tokenize_chinese_chars=True)


def tokenize(tokenizer, texts, max_len=40):
    """list of str -> (input_ids (n, max_len) int64, attention_mask (n, max_len) int64), as InternVideo2 gets them
    from its own xbert BertTokenizer (padding="max_length", truncation=True, max_length=40): "[CLS] wordpieces",
    WITHOUT the [SEP] stock BERT appends (its build_inputs_with_special_tokens returns [CLS] + X), cut to max_len
    tokens, padded with [PAD] = 0; the mask is 1 on [CLS] and the wordpieces."""
    ids = torch.full((len(texts), max_len), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(texts), max_len, dtype=torch.long)
    for i, text in enumerate(texts):
        pieces = tokenizer(text, add_special_tokens=False)["input_ids"][:max_len - 1]
        row = [tokenizer.cls_token_id] + pieces
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
    return ids, mask


# ----------------------------------------------------------------------------------------------------------------
# The model: the four parts of the checkpoint that the score uses, under their checkpoint names


class InternVideo2(nn.Module):
    """`vision_encoder`, `text_encoder.bert`, `vision_proj`, `text_proj`: state dict keys are the released file's."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.vision_encoder = VisionEncoder(config)
        self.text_encoder = nn.Module()                       # holder: the file's text keys are text_encoder.bert.*
        self.text_encoder.bert = BertModel(bert_config(config), add_pooling_layer=False)
        self.vision_proj = nn.Linear(config.clip_embed_dim, config.embed_dim)
        self.text_proj = nn.Linear(config.text_width, config.embed_dim)

    def encode_video(self, video):
        """(b, 3, t, S, S) normalised pixels -> (b, embed_dim), unnormalised (pooled vision feature @ vision_proj)."""
        return self.vision_proj(self.vision_encoder(video))

    def encode_text(self, input_ids, attention_mask):
        """(n, L) ids and mask -> (n, embed_dim), unnormalised: the last run layer's [CLS] vector @ text_proj."""
        out = self.text_encoder.bert(input_ids=input_ids, attention_mask=attention_mask)
        return self.text_proj(out.last_hidden_state[:, 0])


def init_weights(model, generator=None):
    """Random weights for a model built without a checkpoint (tests, the bench): the original's from-scratch
    init (truncated normal 0.02 for Linears and embeddings, LayerScale 1e-5, norms 1, biases 0), every tensor
    written explicitly, so a model materialised from the meta device (to_empty) holds no garbage."""
    for name, p in model.named_parameters():
        with torch.no_grad():
            if name.endswith("gamma"):
                p.fill_(1e-5)
            elif p.ndim >= 2 or "embeddings" in name:
                nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04, generator=generator)
            elif re.search(r"(norm\w*|LayerNorm)\.weight$", name):
                p.fill_(1.0)
            else:
                p.zero_()
    _rebuild_buffers(model)
    return model


def _rebuild_buffers(model):
    # BertEmbeddings' position_ids (arange) and token_type_ids (zeros) are non-persistent buffers: not in any state
    # dict, so after a meta-device build nothing fills them. Recreated here on the device of the word embeddings.
    emb = model.text_encoder.bert.embeddings
    device = emb.word_embeddings.weight.device
    n = model.config.text_max_positions
    emb.register_buffer("position_ids", torch.arange(n, device=device)[None], persistent=False)
    emb.register_buffer("token_type_ids", torch.zeros(1, n, dtype=torch.long, device=device), persistent=False)


# ----------------------------------------------------------------------------------------------------------------
# Loading the released file: unwrap, drop the unused keys by name, stretch pos_embed, one strict check, assign

# Keys of the released training checkpoint (InternVideo2_Stage2 in internvideo2_stage2.py) that the reward never
# reads, each with the reason. Anything else the model does not have is reported as unexpected.
UNUSED_KEYS = [
    (r"temp$", "contrastive temperature (training only)"),
    (r"itm_head\.", "video-text matching head (training only)"),
    (r"text_encoder\.cls\.", "BERT masked-language-model head (training only)"),
    (r"text_encoder\.bert\.embeddings\.position_ids$", "xbert's persistent arange buffer; recreated, not loaded"),
    (r"vision_encoder\.(img_pos_embed|clip_img_pos_embed)$", "position embeddings for single images (T = 1)"),
    (r"vision_encoder\.clip_pos_embed$", "position embedding of the CLIP-distillation decoders"),
    (r"vision_encoder\.(clip_decoder|final_clip_decoder)\.", "CLIP-distillation decoders (training only)"),
]


def unused_key(name, config):
    """-> the reason the reward drops this checkpoint key, or None if it must be loaded. Besides UNUSED_KEYS:
    BERT layers >= config.text_layers (19), the fusion layers with cross-attention into video tokens, which
    InternVideo2's text-only forward (`mode="text"`) skips."""
    for pattern, why in UNUSED_KEYS:
        if re.match(pattern, name):
            return why
    m = re.match(r"text_encoder\.bert\.encoder\.layer\.(\d+)\.", name)
    if m and int(m.group(1)) >= config.text_layers:
        return f"BERT fusion layer {m.group(1)} (only layers 0..{config.text_layers - 1} run for text)"
    return None


def load_internvideo2(path_or_state_dict, config=None, dtype=None):
    """InternVideo2 <- InternVideo2-stage2_1b-224p-f4.pt (a path, read with torch.load(weights_only=True)) or its
    loaded dict. Accepts {"module": sd} (the release), a bare state dict and DDP's "module." prefixes.
    Built on the meta device, so nothing is allocated before the checkpoint's own tensors are assigned: the
    model keeps the file's dtype (bf16 for the release) unless `dtype` casts it. Keys the reward does not use are
    dropped by name (unused_key); then ONE ValueError lists every missing, unexpected and mis-shaped key."""
    config = config or internvideo2_1b()
    what = f"InternVideo2-Stage2 ({CHECKPOINT_NAME})"
    ckpt = path_or_state_dict
    if isinstance(ckpt, (str, Path)):
        ckpt = safe_torch_load(ckpt, what)        # weights_only: a pickle that would run code is refused
    sd = unwrap(ckpt, ["module"], strip_module=True, what=what)
    sd = {k: v for k, v in sd.items() if unused_key(k, config) is None}

    # pos_embed: stored for ckpt_num_frames (4), stretched to num_frames when its row count says so
    key = "vision_encoder.pos_embed"
    rows = lambda t: 1 + (t // config.tubelet) * config.num_patches     # noqa: E731
    if key in sd and sd[key].shape[1] == rows(config.ckpt_num_frames) != rows(config.num_frames):
        sd[key] = interpolate_pos_embed(sd[key], config.ckpt_num_frames // config.tubelet, config.time_steps)

    with torch.device("meta"):                                 # shapes only: instant, no memory
        model = InternVideo2(config)
    # one error naming every mismatch; assign=True: the parameters BECOME the checkpoint's tensors (no copy, no fp32
    # blow-up of a bf16 file)
    load_strict(model, sd, what)
    if dtype is not None:
        model.to(dtype)
    _rebuild_buffers(model)
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------------------------
# The reward


def _texts_for(texts, n):
    # str | list -> n texts: one per video, or one per group of consecutive videos (as rewards.VideoTextReward)
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts or n % len(texts):
        raise ValueError(f"{len(texts)} texts for {n} videos: need one per video or one per equal group")
    return [t for t in texts for _ in range(n // len(texts))]


class InternVideo2Reward(nn.Module):
    """R_vid(video, text) = cos(InternVideo2 video feature, InternVideo2 text feature), T2V-Turbo's `vi_clip2`.

    forward(video (b, 3, t, H, W) in [0, 1], texts, generator=None) -> (b,) scores, t = config.num_frames.
    Preprocessing as reward_fn.py: short side -> 224 (bicubic, antialiased), one random 224 x 224 crop shared by
    the whole call (seed it with `generator`), ImageNet mean/std. Gradients reach the pixels only."""

    def __init__(self, model, tokenizer, mean=IMAGENET_MEAN, std=IMAGENET_STD, antialias=True):
        super().__init__()
        self.model = model.eval().requires_grad_(False)        # frozen, as T2V-Turbo's reward models
        self.tokenizer = tokenizer
        self.image_size, self.antialias = model.config.image_size, antialias
        self.mean, self.std = tuple(mean), tuple(std)

    def set_grad_checkpointing(self, on=True):
        """Recompute each of the 40 vision blocks in backward (T2V-Turbo checkpoints all of them)."""
        self.model.config.grad_checkpoint = bool(on)
        return self

    def preprocess(self, video, generator=None):               # (b, 3, t, H, W) in [0, 1]
        b = video.shape[0]
        x = rearrange(video, "b c t h w -> (b t) c h w")       # reward_fn.py crops all b*t frames at once
        x = resize_crop_min_size(x, self.image_size, generator, self.antialias)
        x = normalize(x, self.mean, self.std)
        return rearrange(x, "(b t) c h w -> b c t h w", b=b)

    def encode_videos(self, video, generator=None):
        """(b, 3, t, H, W) in [0, 1] -> L2-normalised (b, embed_dim) in fp32, differentiable."""
        n = self.model.config.num_frames
        assert video.shape[2] == n, f"InternVideo2 is set up for {n} frames, got {video.shape[2]}"
        # .float() before the norm: with a bf16 model the cosine is still taken in fp32 (the original divides in
        # the model's half precision)
        return F.normalize(self.model.encode_video(self.preprocess(video, generator)).float(), dim=-1)

    def encode_texts(self, texts):
        """list of str -> L2-normalised (n, embed_dim) in fp32."""
        ids, mask = tokenize(self.tokenizer, list(texts), self.model.config.max_txt_l)
        device = self.model.text_proj.weight.device
        return F.normalize(self.model.encode_text(ids.to(device), mask.to(device)).float(), dim=-1)

    def forward(self, video, texts, generator=None):
        video_features = self.encode_videos(video, generator)  # (b, d), differentiable w.r.t. the pixels
        with torch.no_grad():                                  # the prompt is a constant (T2V-Turbo: no_grad)
            text_features = self.encode_texts(_texts_for(texts, video.shape[0]))
        return (video_features * text_features).sum(-1)       # (b,) cosine


def internvideo2_reward(checkpoint, vocab, num_frames=8, dtype=None, grad_checkpoint=True):
    """The real reward: InternVideo2Reward(load_internvideo2(checkpoint), load_tokenizer(vocab)).
    vocab: bert-large-uncased's vocab.txt or a Hugging Face cache folder holding it. dtype=None keeps bf16."""
    model = load_internvideo2(checkpoint, internvideo2_1b(num_frames), dtype=dtype)
    return InternVideo2Reward(model, load_tokenizer(vocab)).set_grad_checkpointing(grad_checkpoint)


# ----------------------------------------------------------------------------------------------------------------

if __name__ == "__main__":
    with torch.device("meta"):                                 # shapes only: the 1B model builds instantly
        full = InternVideo2(internvideo2_1b(8))
    for part in ("vision_encoder", "text_encoder", "vision_proj", "text_proj"):
        print(f"{part:16s} {sum(x.numel() for x in getattr(full, part).parameters()):>14,d} parameters")
