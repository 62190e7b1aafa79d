"""The two differentiable reward models of T2V-Turbo, at full size (to load the real checkpoints) and toy size.

T2V-Turbo (arXiv 2405.18750) decodes the student's one-step prediction x̂₀ to pixels and adds two reward terms to
the consistency-distillation loss (eqs. 8-10: J_img, J_vid and L = L_CD - β_img J_img - β_vid J_vid):
  J_img  an image-text reward R_img on M random frames of x̂₀: HPSv2.1, an OpenCLIP ViT-H-14 fine-tuned on human
         preferences (paper: M = 6 and a sum over frames; the released code: 5 frames and the mean);
  J_vid  a video-text reward R_vid on 8 evenly strided frames: ViCLIP-L/14 trained on InternVid (the paper's
         ModelScope variant; the VideoCrafter2 release uses InternVideo2-S2, see below).
Both scores are the plain cosine of the L2-normalised video/image and text features (no logit scale, no x100);
the text branch runs under no_grad and the reward models are frozen, so gradients reach only the pixels.

The SAME classes build the real models (filled from the released files by vc2/release.py: `load_hpsv21`,
`load_viclip`) and the toy ones (`toy_image_reward()`, `toy_video_reward()`), which toy/prepare.py trains contrastively
(CLIP's InfoNCE) on the moving-shapes clips of toy/world.py, so the CPU demo runs the code path the real rewards use.
Key names, preprocessing and scores follow the originals (tgxs002/HPSv2, OpenGVLab/InternVideo's ViCLIP, and
T2V-Turbo's reward_fn.py); nothing is downloaded.
InternVideo2-Stage2 (the video reward of the VideoCrafter2 release, `vi_clip2`) lives in vc2/internvideo2.py.

    python rewards.py                   # parameter counts (toy and full size) and one toy score with random weights
"""

from dataclasses import dataclass

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.utils.checkpoint import checkpoint as grad_checkpoint

from encoders import SelfAttention, causal_mask

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)     # CLIP's normalisation, used by HPSv2 (open_clip constants)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)                 # what T2V-Turbo's reward_fn.py feeds ViCLIP
IMAGENET_STD = (0.229, 0.224, 0.225)

# ----------------------------------------------------------------------------------------------------------------
# Differentiable preprocessing. Both originals are torchvision transforms on float tensors, i.e. F.interpolate
# (bicubic, align_corners=False, antialias=True: the torchvision default since 0.17; T2V-Turbo's install line pins
# torchdata 0.8 = torch 2.4 / torchvision 0.19) with no clamping, so writing them with torch ops keeps the autograd
# path and matches torchvision bit for bit (tests/test_rewards.py checks it).


def resize(images, size_hw, antialias=True):
    """(n, c, h, w) -> (n, c, *size_hw), bicubic, as torchvision's F.resize on a float tensor (may overshoot [0, 1]).
    Always computed in fp32 and returned in the input's dtype: under bf16 autocast the decoded frames arrive in bf16,
    and torch has no CPU kernel for antialiased bicubic in bf16 (nor would bf16 weights of a 16-tap filter be the
    originals' fp32 preprocessing)."""
    out = F.interpolate(images.float(), size=size_hw, mode="bicubic", align_corners=False, antialias=antialias)
    return out.to(images.dtype)


def letterbox(images, size, antialias=True):
    """HPSv2's ResizeMaxSize(size, fill=0): the LONGEST side becomes `size` (aspect kept), then zero padding centres
    the image in size x size (extra odd pixel on the right/bottom), e.g. 320x512 -> 140x224 + 42 px black bands.
    Padding happens before normalisation, so the bands are black (0 in [0, 1]), not the mean colour.
    One deviation: HPS skips the padding too when the longest side is already `size`, which only works for square
    inputs (ViT-H-14 needs 224x224); here a non-square image is always padded."""
    n, c, h, w = images.shape
    scale = size / max(h, w)
    if scale != 1.0:
        # Python's round, as the original (`round(dim * scale)`), so sizes agree even at .5
        images = resize(images, (round(h * scale), round(w * scale)), antialias)
    pad_h, pad_w = size - images.shape[-2], size - images.shape[-1]
    # torch's pad order is (left, right, top, bottom); torchvision's [l, t, r, b] = [pw//2, ph//2, pw-pw//2, ph-ph//2]
    return F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)


def crop_params(h, w, size, generator=None):
    """torchvision RandomCrop.get_params: top ~ U{0..h-size}, then left ~ U{0..w-size}, drawn in that order from
    the generator (or the global RNG when None); no draw at all when the image is already size x size."""
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} out of {h}x{w}")
    if h == size and w == size:
        return 0, 0
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    return top, left


def resize_crop_min_size(images, size, generator=None, antialias=True):
    """T2V-Turbo's ResizeCropMinSize(size) for ViCLIP: the SHORTEST side becomes `size` (bicubic; 320x512 -> 224x358),
    then ONE random size x size window is cut from every image of the call (all frames share the crop).
    Deviation: the original skips the crop as well as the resize when the short side is already `size`, which
    would hand a non-square video to ViCLIP; here the crop always happens (a no-op for square inputs)."""
    n, c, h, w = images.shape
    scale = size / min(h, w)
    if scale != 1.0:
        images = resize(images, (round(h * scale), round(w * scale)), antialias)
    top, left = crop_params(images.shape[-2], images.shape[-1], size, generator)
    return images[..., top:top + size, left:left + size]


def normalize(images, mean, std):
    """(n, c, h, w) -> (x - mean) / std per channel, torchvision's Normalize (same order of operations)."""
    # (c, 1, 1) constants broadcast over (n, c, h, w); a subtract then a divide, exactly Normalize's arithmetic
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    return (images - mean) / std


# ----------------------------------------------------------------------------------------------------------------
# Image-text reward: HPSv2.1 = an open_clip ViT-H-14 CLIP with fine-tuned weights (tgxs002/HPSv2; T2V-Turbo loads
# it in Ji4chenLi/t2v-turbo reward_fn/reward_fn.py:72-125)


def _as_texts(texts, n):
    """str | list of str -> a list of n texts: one per image, or one per group of n // len(texts) CONSECUTIVE images
    (clip-major order: every scored frame of clip 0, then of clip 1, ...). T2V-Turbo's `text.repeat(k, 1)` tiles
    instead, which mis-pairs prompts whenever more than one clip is scored (reward_fn/reward_fn.py:117-118); this
    does not."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts or n % len(texts):
        raise ValueError(f"{len(texts)} texts for {n} images: need one per image or one per equal group")
    k = n // len(texts)
    return [t for t in texts for _ in range(k)]


class ImageTextReward(nn.Module):
    """R_img(image, text) = cos(f_img(preprocess(image)), f_txt(text)), the reward inside J_img, for an open_clip CLIP.

    forward(images (n, 3, H, W) in [0, 1], texts) -> (n,) scores; gradients flow to the pixels only.
    Preprocessing is HPSv2's val transform minus its PIL steps: letterbox to image_size, then normalise."""

    def __init__(self, clip, image_size=224, mean=OPENAI_MEAN, std=OPENAI_STD, antialias=True, clip_cfg=None):
        super().__init__()
        # a reward model is frozen (T2V-Turbo: requires_grad_(False)) and in eval mode (no dropout); gradients
        # still flow THROUGH it to the input pixels, which is the whole point of a differentiable reward
        self.clip = clip.eval().requires_grad_(False)
        self.image_size, self.antialias = image_size, antialias
        self.mean, self.std = tuple(mean), tuple(std)
        self.clip_cfg = clip_cfg                               # open_clip.CLIP kwargs, kept for reward_state()

    def set_grad_checkpointing(self, on=True):
        """Recompute the vision tower's blocks in the backward pass (open_clip's switch): memory for time."""
        self.clip.set_grad_checkpointing(on)

    def preprocess(self, images):                              # (n, 3, H, W) in [0, 1]
        x = letterbox(images, self.image_size, self.antialias)  # (n, 3, S, S), black bands
        return normalize(x, self.mean, self.std)

    def encode_images(self, images):
        """(n, 3, H, W) in [0, 1] -> L2-normalised image features (n, embed_dim), differentiable."""
        return self.clip.encode_image(self.preprocess(images), normalize=True)

    def encode_texts(self, texts):
        """list of n str -> L2-normalised text features (n, embed_dim). The CLIP BPE with the model's context
        (77 for ViT-H-14), [SOT] + bpe + [EOT], zero padded; no no_grad here, so toy training can use it."""
        device = self.clip.logit_scale.device                  # wherever the model lives (cpu / cuda)
        # open_clip.tokenize = SimpleTokenizer; its BPE merges ship inside the package, so this works offline
        tokens = open_clip.tokenize(list(texts), context_length=self.clip.context_length).to(device)
        return self.clip.encode_text(tokens, normalize=True)

    def forward(self, images, texts):
        """images (n, 3, H, W) in [0, 1]; texts: n strings, or one per group of consecutive images -> (n,) cosine."""
        image_features = self.encode_images(images)           # (n, d)
        # the prompt is a constant of the reward: no graph for it (T2V-Turbo encodes text under no_grad too)
        with torch.no_grad():
            text_features = self.encode_texts(_as_texts(texts, images.shape[0]))
        return (image_features * text_features).sum(-1)       # (n,) in [-1, 1]


def toy_clip_cfg():
    # 3.4M parameters, 3.2M of them the 49408 x 64 token table: keeping the whole CLIP vocabulary lets the real
    # tokenizer run unchanged. 32 px frames, 8 px patches -> 16 patch tokens + class token.
    return dict(embed_dim=64,
                vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
                text_cfg=dict(context_length=16, vocab_size=49408, width=64, heads=4, layers=2))


def toy_image_reward():
    """The toy R_img: a tiny open_clip CLIP (random weights until trained) on 32 x 32 frames, so preprocessing
    is an identity letterbox plus normalisation."""
    cfg = toy_clip_cfg()
    return ImageTextReward(open_clip.CLIP(**cfg), image_size=32, clip_cfg=cfg)


# ----------------------------------------------------------------------------------------------------------------
# Video-text reward: ViCLIP-L/14 (InternVid, arXiv 2307.06942; OpenGVLab/InternVideo Data/InternVid/viclip/),
# written compactly with the original key names so ViClip-InternVid-10M-FLT.pth (447 keys) loads strictly.


@dataclass
class ViCLIPConfig:
    image_size: int = 224                    # input_resolution; frames are image_size x image_size
    patch_size: int = 14                     # Conv3d kernel (tubelet, p, p)
    tubelet: int = 1                         # frames per token: ViCLIP's kernel_size (1 for ViCLIP-L; the toy uses 2)
    num_frames: int = 8                      # frames in (the reward asserts 8); num_frames // tubelet time steps
    vision_width: int = 1024
    vision_layers: int = 24
    vision_heads: int = 16                   # head dim 64
    text_width: int = 768
    text_layers: int = 12
    text_heads: int = 12
    context_length: int = 32                 # ViCLIP's max_txt_l (CLIP uses 77)
    vocab_size: int = 49408                  # the CLIP BPE
    embed_dim: int = 768                     # joint space: vision proj (1024 -> 768) and text_projection (768 -> 768)
    init_temp: float = 0.01                  # `temp` (logits = sim / temp); ViCLIP starts at 1/100
    grad_checkpoint: bool = False            # checkpoint every vision block (ViCLIP's checkpoint_num=24) to save memory


def viclip_l14():
    # 427,590,145 parameters: vision 303,974,400 + text 123,615,744 + temp
    return ViCLIPConfig()


def toy_viclip():
    # 32 px, 8 px patches, 2-frame tubelets -> 16 patches x 4 time steps = 64 tokens + class token; text context as
    # ViCLIP's (32). Why a tubelet: with one frame per token, position and time only meet through the MLPs (the
    # embeddings add), and from scratch the toy learned the AXIS of motion but not its sign (direction ~50% after
    # 700 steps, chance 25%); a token that spans two frames sees the 2 px shift itself. kernel_size is an option of
    # ViCLIP's own VisionTransformer, so this stays within the architecture.
    # init_temp 0.07 (logit scale ~14, CLIP's from-scratch value), not ViCLIP's 0.01, which is too sharp at the start
    return ViCLIPConfig(image_size=32, patch_size=8, tubelet=2, num_frames=8, vision_width=64, vision_layers=2,
                        vision_heads=4, text_width=64, text_layers=2, text_heads=4, context_length=32, embed_dim=64,
                        init_temp=0.07)


class QuickGELUMLP(nn.Module):
    # width -> 4 width -> width; ViCLIP (both towers, from OpenAI CLIP) uses QuickGELU x·σ(1.702x), not exact GELU
    def __init__(self, width):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x):
        h = self.c_fc(x)
        return self.c_proj(h * torch.sigmoid(1.702 * h))


class Block(nn.Module):
    """Pre-LN transformer block with nn.MultiheadAttention's key names (attn.in_proj_weight, attn.out_proj.*),
    computed batch-first: x += attn(ln_1 x); x += mlp(ln_2 x). Drop-path (0.1 in training) is the identity here."""

    def __init__(self, width, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)                        # eps 1e-5
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = QuickGELUMLP(width)

    def forward(self, x, mask=None):                           # (n, L, width); mask (L, L) additive or None
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


def _tower(width, layers, heads):
    # an nn.Module holding `resblocks`, for the key names `*.transformer.resblocks.N.*`
    tower = nn.Module()
    tower.resblocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])
    return tower


def _init_blocks(blocks, width):
    # CLIP's init: attention in_proj std w^-0.5, residual outputs scaled down by sqrt(2 layers), biases zero
    attn_std, proj_std, fc_std = width ** -0.5, width ** -0.5 * (2 * len(blocks)) ** -0.5, (2 * width) ** -0.5
    for b in blocks:
        nn.init.normal_(b.attn.in_proj_weight, std=attn_std)
        nn.init.zeros_(b.attn.in_proj_bias)
        nn.init.normal_(b.attn.out_proj.weight, std=proj_std)
        nn.init.normal_(b.mlp.c_fc.weight, std=fc_std)
        nn.init.normal_(b.mlp.c_proj.weight, std=proj_std)
        for lin in (b.attn.out_proj, b.mlp.c_fc, b.mlp.c_proj):
            nn.init.zeros_(lin.bias)
        for ln in (b.ln_1, b.ln_2):
            nn.init.ones_(ln.weight), nn.init.zeros_(ln.bias)


class ViCLIPVision(nn.Module):
    """Joint space-time ViT: every patch of every frame attends to every other (1 + 256 x 8 = 2049 tokens at 224 px)."""

    def __init__(self, cfg):
        super().__init__()
        w, p, k = cfg.vision_width, cfg.patch_size, cfg.tubelet
        assert cfg.num_frames % k == 0, "num_frames must be a multiple of the tubelet"
        self.cfg = cfg
        self.conv1 = nn.Conv3d(3, w, (k, p, p), (k, p, p), bias=False)   # weight (w, 3, k, p, p)
        self.class_embedding = nn.Parameter(torch.empty(w))
        self.positional_embedding = nn.Parameter(torch.empty((cfg.image_size // p) ** 2 + 1, w))  # spatial, per frame
        self.temporal_positional_embedding = nn.Parameter(torch.empty(1, cfg.num_frames // k, w))  # per time step
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = _tower(w, cfg.vision_layers, cfg.vision_heads)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(torch.empty(w, cfg.embed_dim))          # x @ proj

    def forward(self, video):                                  # (b, 3, t, h, w), normalised pixels
        b, c, t, h, w = video.shape
        nf, size = self.cfg.num_frames, self.cfg.image_size
        assert t == nf and h == w == size, f"ViCLIP expects (b, 3, {nf}, {size}, {size}), got {tuple(video.shape)}"
        x = self.conv1(video)                                  # (b, m, t', gh, gw), t' = t / tubelet time steps
        x = rearrange(x, "b m t gh gw -> b (gh gw) t m")       # (b, n, t', m), n = gh*gw patches
        x = x + self.positional_embedding[1:, None]            # the same spatial embedding at every time step
        x = x + self.temporal_positional_embedding[0]          # (t', m): the same temporal embedding for every patch
        # token order is patch-major, time-minor, as the original's '(b n) t m -> b (n t) m'
        x = rearrange(x, "b n t m -> b (n t) m")               # (b, n*t', m)
        # ONE class token for the whole clip: class_embedding + pos[0] (the original takes frame 0's, all identical)
        cls = (self.class_embedding + self.positional_embedding[0]).expand(b, 1, -1)   # (b, 1, m)
        x = self.ln_pre(torch.cat([cls, x], dim=1))            # (b, 1 + n*t', m)
        # full attention over all 1 + n*t' tokens (no mask), 24 blocks at full size. At 224 px that is L = 2049,
        # so the reward's backward pass stores big activations: grad_checkpoint recomputes each block instead
        for block in self.transformer.resblocks:
            if self.cfg.grad_checkpoint and torch.is_grad_enabled():
                x = grad_checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.ln_post(x[:, 0]) @ self.proj               # class token -> (b, embed_dim)


class ViCLIPText(nn.Module):
    """CLIP text tower (OpenAI layout, QuickGELU, causal mask), context 32: the EOT feature @ text_projection."""

    def __init__(self, cfg):
        super().__init__()
        w = cfg.text_width
        self.token_embedding = nn.Embedding(cfg.vocab_size, w)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, w))
        self.transformer = _tower(w, cfg.text_layers, cfg.text_heads)
        self.ln_final = nn.LayerNorm(w)
        self.text_projection = nn.Parameter(torch.empty(w, cfg.embed_dim))

    def forward(self, tokens):                                 # (n, L) int
        n, L = tokens.shape
        # int32 ids (ViCLIP's own tokenizer) or int64 (open_clip's) index the table alike
        x = self.token_embedding(tokens) + self.positional_embedding[:L]           # (n, L, w)
        mask = causal_mask(L, x.device, x.dtype)               # token i sees 0..i; no padding mask (as CLIP)
        for block in self.transformer.resblocks:
            x = block(x, mask)
        x = self.ln_final(x)
        # EOT (49407) is the largest id, so argmax finds it
        return x[torch.arange(n, device=x.device), tokens.argmax(dim=-1)] @ self.text_projection   # (n, embed_dim)


class ViCLIP(nn.Module):
    """ViCLIP: `vision_encoder`, `text_encoder` and the contrastive temperature `temp` (logits = cos / temp)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.vision_encoder = ViCLIPVision(config)
        self.text_encoder = ViCLIPText(config)
        self.temp = nn.Parameter(torch.tensor(float(config.init_temp)))
        self._init_weights()

    def _init_weights(self):
        # Every parameter explicitly: the original leaves proj, text_projection and the text positional embedding
        # as torch.empty (denormals, zeros, even NaN; viclip_vision.py's VisionTransformer and viclip_text.py's
        # CLIP_TEXT), harmless only because it always loads weights. CLIP's init otherwise. ViCLIP zeroes the
        # temporal embedding (it starts from an image CLIP, which zero keeps intact); trained from scratch, zero
        # would leave the model blind to frame order at the start (left and right look alike), so the toy gets a
        # random one like the spatial embedding.
        v, t, cfg = self.vision_encoder, self.text_encoder, self.config
        vw, tw = cfg.vision_width, cfg.text_width
        nn.init.normal_(v.conv1.weight, std=(3 * cfg.tubelet * cfg.patch_size ** 2) ** -0.5)
        nn.init.normal_(v.class_embedding, std=vw ** -0.5)
        nn.init.normal_(v.positional_embedding, std=vw ** -0.5)
        nn.init.normal_(v.temporal_positional_embedding, std=vw ** -0.5)
        nn.init.normal_(v.proj, std=vw ** -0.5)
        nn.init.normal_(t.token_embedding.weight, std=0.02)
        nn.init.normal_(t.positional_embedding, std=0.01)
        nn.init.normal_(t.text_projection, std=tw ** -0.5)
        for ln in (v.ln_pre, v.ln_post, t.ln_final):
            nn.init.ones_(ln.weight), nn.init.zeros_(ln.bias)
        _init_blocks(v.transformer.resblocks, vw)
        _init_blocks(t.transformer.resblocks, tw)

    def tokenize(self, texts):
        """list of str -> LongTensor (n, context_length): the CLIP BPE as ViCLIP's own tokenizer (which returns int32;
        the ids are identical), [SOT] + bpe + [EOT] cut to the context with EOT kept last, zero padded."""
        return open_clip.tokenize(list(texts), context_length=self.config.context_length)

    def encode_video(self, video):
        """(b, 3, t, h, w) normalised pixels -> (b, embed_dim), unnormalised."""
        return self.vision_encoder(video)

    def encode_text(self, texts):
        """list of str -> (n, embed_dim), unnormalised."""
        return self.text_encoder(self.tokenize(texts).to(self.temp.device))


class VideoTextReward(nn.Module):
    """R_vid(video, text) = cos(ViCLIP video feature, ViCLIP text feature) (the reward inside J_vid).

    forward(video (b, 3, t, H, W) in [0, 1], texts, generator=None) -> (b,) scores, t = 8. Preprocessing as
    T2V-Turbo's reward_fn.py: short side -> image_size (bicubic), one random crop shared by the whole call
    (seed it with `generator` for a deterministic reward), ImageNet mean/std."""

    def __init__(self, viclip, image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, antialias=True):
        super().__init__()
        self.viclip = viclip.eval().requires_grad_(False)      # frozen, as the image reward
        self.image_size, self.antialias = image_size, antialias
        self.mean, self.std = tuple(mean), tuple(std)

    def set_grad_checkpointing(self, on=True):
        """Recompute every vision block in the backward pass (ViCLIP's checkpoint_num = all of them)."""
        self.viclip.vision_encoder.cfg.grad_checkpoint = on

    def preprocess(self, video, generator=None):               # (b, 3, t, H, W) in [0, 1]
        b, c, t, h, w = video.shape
        x = rearrange(video, "b c t h w -> (b t) c h w")       # the original crops the stacked (b*t) frames at once
        x = resize_crop_min_size(x, self.image_size, generator, self.antialias)   # (b*t, 3, S, S)
        x = normalize(x, self.mean, self.std)
        return rearrange(x, "(b t) c h w -> b c t h w", b=b)   # (b, 3, t, S, S)

    def encode_videos(self, video, generator=None):
        """(b, 3, t, H, W) in [0, 1] -> L2-normalised (b, embed_dim), differentiable."""
        n = self.viclip.config.num_frames
        assert video.shape[2] == n, f"ViCLIP scores exactly {n} frames, got {video.shape[2]} (see turbo.video_reward_frames)"
        # .float() as get_vid_feat_with_grad: the score is computed in fp32 even when the model runs in fp16/bf16
        return F.normalize(self.viclip.encode_video(self.preprocess(video, generator)).float(), dim=-1)

    def encode_texts(self, texts):
        return F.normalize(self.viclip.encode_text(texts).float(), dim=-1)

    def forward(self, video, texts, generator=None):
        """video (b, 3, t, H, W) in [0, 1]; texts: b strings (or one per group of consecutive videos) -> (b,)."""
        video_features = self.encode_videos(video, generator)  # (b, d), differentiable w.r.t. the pixels
        with torch.no_grad():                                  # the prompt is a constant
            text_features = self.encode_texts(_as_texts(texts, video.shape[0]))
        return (video_features * text_features).sum(-1)       # (b,) cosine


def toy_video_reward():
    """The toy R_vid: a tiny ViCLIP on 32 x 32 x 8 clips (crop and resize are identities; ImageNet normalisation)."""
    return VideoTextReward(ViCLIP(toy_viclip()), image_size=32)


# ----------------------------------------------------------------------------------------------------------------

if __name__ == "__main__":
    def count(m):
        return sum(x.numel() for x in m.parameters())

    with torch.device("meta"):                                 # shapes only: full-size models build instantly
        print(f"{'ViCLIP-L/14':22s} {count(ViCLIP(viclip_l14())):>12,d} parameters")
        hps = open_clip.create_model("ViT-H-14", pretrained=None, device="meta")
        print(f"{'HPSv2.1 (ViT-H-14)':22s} {count(hps):>12,d} parameters")
    # the toy ones for real; with random weights, the scores below only show the call and the value range
    img, vid = toy_image_reward(), toy_video_reward()
    print(f"{'toy image reward':22s} {count(img):>12,d} parameters")
    print(f"{'toy video reward':22s} {count(vid):>12,d} parameters")
    video = torch.rand(1, 3, 8, 32, 32)                        # (b, 3, t, h, w) in [0, 1]
    print("random-weight toy scores: image", img(video[:, :, 0], ["a red circle moving left"]).item(),
          "video", vid(video, ["a red circle moving left"]).item())
