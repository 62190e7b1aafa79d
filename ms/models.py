"""ModelScopeT2V's UNet (ali-vilab/text-to-video-ms-1.7b) behind the interface turbo.py calls, through diffusers'
own UNet3DConditionModel: the teacher and the student of T2V-Turbo (MS) (paper Sec. 4; the release's app_ms.py and
pipeline/t2v_turbo_ms_pipeline.py).

    unet(z_t (b, 4, t, h, w), t (b,), context (b, 77, 1024), fps, w=None) -> eps_hat (b, 4, t, h, w)

- ModelScope predicts eps on the same scaled-linear schedule as VideoCrafter2 (beta 0.00085 .. 0.012, 1000 steps),
  so turbo.py's Part 0 (vc2_alphas_cumprod, split_eps) reads it as it is. It has no fps input: `fps` is ignored.
- The student is the teacher's config with time_cond_proj_dim = 256 (app_ms.py): diffusers adds
  time_embedding.cond_proj (Linear 256 -> 320, no bias) to the timestep embedding, fed the same LCM embedding of w
  as VC2's student (tiny_unet3d.guidance_embedding; the pipeline's get_w_embedding). lora.make_student builds it
  from the teacher like VC2's, with a zero cond_proj (the release leaves it random and never saves it).
- diffusers and transformers are imported where a ModelScope model is built, not at the top: sample.py and
  train.py import this module to read any checkpoint, and the toy and VC2 paths never load diffusers
  (transformers they do load: open_clip imports it).
- The release's LoRA (unet_lora.pt of jiachenli-ucsb/T2V-Turbo-MS) is rank 32 on every Linear, Conv2d and Conv3d
  of that student, in module order: exactly what lora.add_lora wraps, in the same order, at full size
  (tests/fixtures/ms_lora_manifest, made by running the release's own injector).

Parity with the release's own code (its vendored UNet, LoRA handler and w embedding) on a tiny model:
tests/ms/test_parity.py (max abs error 1.3e-7).

    python -m ms.models      # parameter counts at full size (meta device) and the release LoRA's tensor count
"""

import json
import math
import types
import typing
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from einops import rearrange
from torch.utils.checkpoint import checkpoint as grad_checkpoint

from lora import add_lora, lora_tensors
from machinery.checkpoint import build_models as build_vc2_models, load_lora_list, load_strict
from machinery.cli import one_line
from tiny_unet3d import guidance_embedding

MS_RANK = 32           # the release's LoRA rank for MS (app_ms.py: r=32; clipped to 4 on conv_in and conv_out)
# tensors in the list the same release code writes under diffusers <= 0.26 without its PEFT backend; from 0.27 on,
# and with the backend before, it writes 1150 (both layouts: tests/fixtures/ms_lora_manifest/README.md)
WITHOUT_PEFT = 250
# T2V-Turbo (MS)'s training recipe over train.py's vc2_256 (one GPU, bf16, checkpointing): `train.py --preset ms`.
# The paper (Sec. 4, App. A): 256 x 256, 16 frames, HPSv2.1 and ViCLIP with beta_img 2 and beta_vid 3, M = 6 frames
# for R_img; ModelScope was trained at 8 fps. The release has no MS training script; its app loads LoRA rank 32.
# diffusers' UNet3DConditionModel cannot checkpoint its blocks, so --grad-ckpt-unet is off (the decoder's and the
# rewards' stay on).
MS_RECIPE = dict(out="runs/ms", teacher="weights/ms/teacher.safetensors", height=256, width=256, frames=16, fps=8,
                 lora_rank=MS_RANK, beta_img=2.0, beta_vid=3.0, reward_frames=6, grad_ckpt_unet=False)


@dataclass
class MSUNetConfig:
    diffusers: dict = field(default_factory=dict)  # UNet3DConditionModel's keyword arguments (its unet/config.json)
    guidance_embed_dim: int = 0                    # 0: the teacher; 256: the student (time_cond_proj_dim)
    temporal_dropout: float = 0.1                  # diffusers' temporal convs hard-code 0.1 (as ModelScope)
    use_checkpoint: bool = False                   # must stay False: diffusers' UNet3DConditionModel has none
    prediction: str = "eps"                        # ModelScope predicts eps ...
    zero_terminal_snr: bool = False                # ... on VC2's schedule (turbo.py: diffusion_of)
    kind: str = "ms"

    @property
    def in_channels(self):
        return self.diffusers.get("in_channels", 4)


def ms_unet():
    """text-to-video-ms-1.7b's UNet: diffusers' UNet3DConditionModel defaults (that class was written for it), 1.41 B
    parameters. The values are those of the model's unet/config.json as diffusers documents it; the real file has
    not been read here (tests/fixtures/ms_lora_manifest/README.md)."""
    return MSUNetConfig(diffusers=dict(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[320, 640, 1280, 1280],
        down_block_types=["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
        up_block_types=["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
        downsample_padding=1, mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5,
        cross_attention_dim=1024, attention_head_dim=64))


def tiny_ms_unet():
    """The same class at toy size (two levels, 32 and 64 channels; ModelScope's 32 norm groups, the only value at which
    the release's vendored copy and diffusers agree: tests/fixtures/ms_tiny_parity/README.md), for the tests."""
    cfg = ms_unet()
    cfg.diffusers.update(block_out_channels=[32, 64], layers_per_block=1, cross_attention_dim=64,
                         attention_head_dim=8, down_block_types=["CrossAttnDownBlock3D", "DownBlock3D"],
                         up_block_types=["UpBlock3D", "CrossAttnUpBlock3D"], sample_size=8)
    return cfg


class MSUNet(nn.Module):
    """diffusers' UNet3DConditionModel with turbo.py's calling convention. Its state dict is diffusers' own under
    `unet.`, so a diffusers unet/ folder loads into it by adding that prefix."""

    def __init__(self, config, unet=None):
        super().__init__()
        self.config = config
        from diffusers import UNet3DConditionModel  # here, not at the top: see the module docstring
        self.unet = unet or UNet3DConditionModel(**config.diffusers,
                                                 time_cond_proj_dim=config.guidance_embed_dim or None)
        if config.use_checkpoint:                  # diffusers' class has none: say so rather than run without
            raise ValueError("diffusers' UNet3DConditionModel has no gradient checkpointing: drop --grad-ckpt-unet "
                             "(--preset ms does)")

    @property
    def w_proj(self):
        """The student's w projection (diffusers' time_embedding.cond_proj), as tiny_unet3d.UNet3D.w_proj."""
        return self.unet.time_embedding.cond_proj

    def forward(self, x, t, context, fps=None, w=None):
        """x: (b, 4, t, h, w); t: (b,) or a number; context: (b, 77, 1024); w: (b,) or a number, a student only."""
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])
        cond = None
        if self.config.guidance_embed_dim:        # the student: w -> its 256-d LCM embedding -> cond_proj
            w = torch.as_tensor(w, device=x.device, dtype=torch.float32).expand(x.shape[0])
            cond = guidance_embedding(w, self.config.guidance_embed_dim).to(x.dtype)
        return self.unet(x, t, encoder_hidden_states=context, timestep_cond=cond).sample


# ----------------------------------------------------------------------------------------------------------------
# The frozen encoders around the UNet: diffusers' AutoencoderKL and transformers' CLIPTextModel, behind the
# interfaces of encoders.py (encode / decode of (b, c, t, h, w) videos; encode_text of captions)


@dataclass
class MSVAEConfig:
    diffusers: dict = field(default_factory=dict)  # AutoencoderKL's keyword arguments (its vae/config.json)
    kind: str = "ms"

    @property
    def scale_factor(self):                        # SD's 0.18215 (the pipeline: vae.config.scaling_factor)
        return self.diffusers.get("scaling_factor", 0.18215)

    @property
    def ch_mult(self):                             # 2 ** (len - 1) is the downsampling factor, as encoders.AEConfig
        return (1,) * len(self.diffusers.get("block_out_channels", (128, 256, 512, 512)))


class MSVAE(nn.Module):
    """SD's KL-f8 autoencoder (diffusers' AutoencoderKL), applied to every frame on its own as the MS pipeline does,
    latents times scaling_factor. video (b, 3, t, H, W) in [-1, 1] <-> latents (b, 4, t, H/8, W/8)."""

    def __init__(self, config, vae=None):
        super().__init__()
        self.config = config
        from diffusers import AutoencoderKL
        self.vae = vae or AutoencoderKL(**config.diffusers)

    def encode(self, video, sample=True, generator=None, chunk_size=None):
        b = video.shape[0]
        frames = rearrange(video, "b c t h w -> (b t) c h w")
        dist = self.vae.encode(frames).latent_dist
        z = dist.sample(generator) if sample else dist.mode()                        # (b t, 4, h, w)
        return rearrange(z * self.config.scale_factor, "(b t) c h w -> b c t h w", b=b)

    def decode(self, latents, checkpoint=False, chunk_size=None):
        """latents (b, 4, t, h, w) -> video (b, 3, t, 8h, 8w); checkpoint: recompute the decoder in backward (the
        reward path's memory, as encoders.AutoencoderKL.decode)."""
        b = latents.shape[0]
        z = rearrange(latents, "b c t h w -> (b t) c h w") / self.config.scale_factor
        run = lambda zc: self.vae.decode(zc).sample
        frames = [grad_checkpoint(run, zc, use_reentrant=False) if checkpoint else run(zc)
                  for zc in z.split(chunk_size or z.shape[0])]
        return rearrange(torch.cat(frames), "(b t) c h w -> b c t h w", b=b)


@dataclass
class MSTextConfig:
    transformers: dict = field(default_factory=dict)  # CLIPTextConfig's fields (its text_encoder/config.json)
    pad_id: int = 0                                   # the tokenizer's pad token id (tokenizer/, read at load time)
    context_length: int = 77
    kind: str = "ms"


class MSText(nn.Module):
    """ModelScope's text tower: transformers' CLIPTextModel, its last hidden state (after the final layer norm) for
    all 77 positions, as the MS pipeline reads it (text_encoder(input_ids)[0]). Tokens: OpenAI's CLIP BPE, which the
    pipeline's CLIPTokenizer and open_clip share (open_clip's copy ships in its package, so nothing is read at run
    time), padded to 77 with the folder's pad id."""

    def __init__(self, config, model=None):
        super().__init__()
        self.config = config
        from transformers import CLIPTextConfig, CLIPTextModel
        self.model = model or CLIPTextModel(CLIPTextConfig(**config.transformers))
        # position_ids is a buffer that state dicts do not carry: after a load onto the meta device, make it again
        self.register_load_state_dict_post_hook(lambda module, keys: module.position_ids_again())

    def position_ids_again(self):
        emb = self.model.embeddings                # (transformers 5's CLIPTextModel: no text_model level)
        if emb.position_ids.is_meta:
            n = emb.position_embedding.weight.shape[0]
            emb.register_buffer("position_ids", torch.arange(n, device=emb.position_embedding.weight.device)[None],
                                persistent=False)

    def tokenize(self, texts):
        """list of n str -> (n, 77) ids: [SOT] bpe [EOT], then the pad id (open_clip pads with 0)."""
        import open_clip  # here: importing it takes seconds (encoders.py does the same)
        ids = open_clip.tokenize(list(texts), context_length=self.config.context_length)
        after_eot = torch.arange(ids.shape[1])[None] > ids.argmax(dim=1, keepdim=True)   # EOT is the largest id
        return ids.masked_fill(after_eot, self.config.pad_id)

    def encode_text(self, texts):
        """list of str -> context (n, 77, hidden) on the model's device."""
        ids = self.tokenize(texts).to(self.model.device)
        return self.model(input_ids=ids).last_hidden_state


# ----------------------------------------------------------------------------------------------------------------
# Loading


def _folder_part(folder, part):
    """folder/part with its config.json, or one ValueError saying what a ModelScope folder holds."""
    path = Path(folder).expanduser() / part
    if not (path / "config.json").is_file():
        raise ValueError(f"{folder}: no {part}/config.json; give the folder of ali-vilab/text-to-video-ms-1.7b "
                         f"(a Hugging Face snapshot: unet/, vae/, text_encoder/, tokenizer/)")
    return path


def read_json(path):
    """A JSON file that holds an object (a config.json, a tokenizer file) -> its dict, or one ValueError naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:             # (ValueError: not UTF-8, or not JSON)
        raise ValueError(f"{path}: not a readable JSON file ({type(e).__name__}: {one_line(e)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a JSON {type(data).__name__}, not an object of settings")
    return data


def _fits(value, hint):
    """A JSON value against a constructor argument's annotation: int, float (a finite number; an int too), str,
    bool, None, X | Y, tuple[X, ...] / list[X] (a JSON list), dict, Literal; any other hint (torch.dtype) passes."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin in (tuple, list):
        return isinstance(value, list) and all(_fits(v, a) for v in value for a in args if a is not Ellipsis)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint in (int, str, bool, type(None)):       # (True is an int to Python, not to a config)
        return isinstance(value, hint) and (hint is bool or not isinstance(value, bool))
    return True


def _type_words(hint):
    """int | tuple[int] -> 'int or a list of int'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_words(a) for a in args)
    if origin in (tuple, list):
        return f"a list of {_type_words(args[0])}" if args else "a list"
    if origin is typing.Literal:
        return " or ".join(json.dumps(a) for a in args)
    return {type(None): "null", float: "a finite number"}.get(hint, getattr(hint, "__name__", str(hint)))


def check_config_types(path, config, cls):
    """Each value of a config.json that `cls`'s constructor takes, against that argument's annotation (diffusers'
    and transformers' constructors annotate every one): one ValueError naming the file and the key, where the
    library would fail later with a TypeError that names neither (block_out_channels: 32 -> "object of type 'int'
    has no len()"). Keys the constructor does not take are left to it (diffusers ignores them)."""
    init = cls.__init__
    try:  # transformers' hints name torch.dtype, which its module does not import at run time
        hints = typing.get_type_hints(init, globalns={**getattr(init, "__globals__", {}), "torch": torch})
    except (NameError, TypeError):
        hints = {}
    for key, value in config.items():
        if key != "return" and key in hints and not _fits(value, hints[key]):
            raise ValueError(f"{path}: {key} is {json.dumps(value)[:80]}; {cls.__name__} takes "
                             f"{_type_words(hints[key])}")


def tokenizer_pad_id(folder):
    """The pad token's id of the folder's CLIPTokenizer (tokenizer/special_tokens_map.json and vocab.json), or one
    ValueError naming the file and what is wrong with it."""
    path = _folder_part(folder, "text_encoder").parent / "tokenizer"
    special, vocab = path / "special_tokens_map.json", path / "vocab.json"
    for f in (special, vocab):
        if not f.is_file():
            raise ValueError(f"{folder}: tokenizer/ does not say its pad token (no tokenizer/{f.name})")
    given = read_json(special).get("pad_token")
    pad = given.get("content") if isinstance(given, dict) else given
    if not isinstance(pad, str):
        raise ValueError(f"{special}: pad_token is {json.dumps(given)[:80]}; give the pad token as a string (or "
                         f"{{\"content\": string}})")
    ids = read_json(vocab)
    if pad not in ids:
        raise ValueError(f"{vocab}: no entry for the pad token {pad!r} (special_tokens_map.json's pad_token)")
    if not isinstance(ids[pad], int) or isinstance(ids[pad], bool) or ids[pad] < 0:
        raise ValueError(f"{vocab}: the pad token {pad!r} is {json.dumps(ids[pad])[:80]}, not a token id (a whole "
                         f"number >= 0)")
    return ids[pad]


@contextmanager
def _quiet_libraries():
    """diffusers' and transformers' loaders log what they skip (unused weights, ignored config keys) as warnings
    of many lines, and draw a progress bar; here every such case is one ValueError instead, and a command's output
    stays its own: their logs are kept to errors and their bars off while a part loads."""
    import diffusers
    import transformers
    logs = (diffusers.utils.logging, transformers.utils.logging)
    before = [(log.get_verbosity(), log.is_progress_bar_enabled()) for log in logs]
    for log in logs:
        log.set_verbosity_error()
        log.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, (level, bar) in zip(logs, before):
            log.set_verbosity(level)
            log.enable_progress_bar() if bar else None


def _from_pretrained(cls, path, **kw):
    """cls.from_pretrained(path), strict: every tensor of the weights used, every parameter filled, every shape
    the config's (diffusers and transformers only warn of unused weights and leave missing ones random). Else one
    ValueError naming the first tensor that does not fit."""
    try:
        with _quiet_libraries():
            model, info = cls.from_pretrained(path, local_files_only=True, output_loading_info=True,
                                              ignore_mismatched_sizes=True, **kw)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: {one_line(e)}") from None
    key = lambda k: k[0] if isinstance(k, (tuple, list)) else k          # diffusers: (key, stored, model shape)
    problems = {"missing": sorted(map(key, info.get("missing_keys", ()))),
                "unexpected": sorted(map(key, info.get("unexpected_keys", ()))),
                "misshapen": sorted(map(key, info.get("mismatched_keys", ())))}
    if any(problems.values()):
        why = {"missing": "the model of config.json has it, the weights do not",
               "unexpected": "the weights hold it, the model of config.json has no such tensor",
               "misshapen": "its shape in the weights is not the one config.json gives it"}
        kind = next(k for k, v in problems.items() if v)
        counts = ", ".join(f"{len(v)} {k}" for k, v in problems.items() if v)
        raise ValueError(f"{path}: the weights do not fit config.json ({counts}); the first: {problems[kind][0]} "
                         f"({why[kind]})")
    return model


def load_ms_folder(folder, dtype=torch.float32):
    """ModelScopeT2V from a local diffusers folder (nothing is downloaded) -> {'unet': MSUNet, 'text': MSText,
    'ae': MSVAE}, frozen, in eval mode. Strict: a missing or unreadable part, a config value of the wrong type, weights
    that do not fit their config (one tensor unused, missing or misshapen) or parts that do not fit each other: one
    ValueError that names the file, and the key or the tensor."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    parts = {p: _folder_part(folder, p) for p in ("unet", "vae", "text_encoder")}
    for p, cls in zip(parts, (UNet3DConditionModel, AutoencoderKL, CLIPTextConfig)):
        check_config_types(parts[p] / "config.json", read_json(parts[p] / "config.json"), cls)
    pad_id = tokenizer_pad_id(folder)
    # low_cpu_mem_usage=False: diffusers' low-memory path needs accelerate, which this project does not install
    unet = _from_pretrained(UNet3DConditionModel, parts["unet"], torch_dtype=dtype, low_cpu_mem_usage=False)
    vae = _from_pretrained(AutoencoderKL, parts["vae"], torch_dtype=dtype, low_cpu_mem_usage=False)
    text = _from_pretrained(CLIPTextModel, parts["text_encoder"], dtype=dtype)
    # the parts must fit each other: the latents, the text embedding, and the 77 CLIP BPE ids MSText feeds the tower
    c = {"unet": unet.config, "vae": vae.config, "text_encoder": text.config}
    for (a, ka), (b, kb) in ((("unet", "in_channels"), ("vae", "latent_channels")),
                             (("unet", "cross_attention_dim"), ("text_encoder", "hidden_size"))):
        if getattr(c[a], ka) != getattr(c[b], kb):
            raise ValueError(f"{parts[a] / 'config.json'}: {ka} is {getattr(c[a], ka)}, but "
                             f"{b}/config.json's {kb} is {getattr(c[b], kb)}: the two do not fit each other")
    tokens = max(49408, pad_id + 1)                 # open_clip's BPE: ids up to 49407 (EOT)
    if text.config.vocab_size < tokens or text.config.max_position_embeddings < MSTextConfig.context_length:
        raise ValueError(f"{parts['text_encoder'] / 'config.json'}: vocab_size {text.config.vocab_size} and "
                         f"max_position_embeddings {text.config.max_position_embeddings}; the tokens fed to it need "
                         f"at least {tokens} and {MSTextConfig.context_length} (CLIP's BPE, 77 positions)")
    own = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_") and k != "time_cond_proj_dim"}
    models = {"unet": MSUNet(MSUNetConfig(diffusers=own(unet.config)), unet),
              "ae": MSVAE(MSVAEConfig(diffusers=own(vae.config)), vae),
              "text": MSText(MSTextConfig(transformers=text.config.to_dict(), pad_id=pad_id), text)}
    return {k: m.eval().requires_grad_(False) for k, m in models.items()}


def build_models(meta):
    """{'unet', 'text', 'ae'} of a checkpoint's configs, on the meta device, for machinery.checkpoint.load_models:
    ModelScope's parts when the checkpoint's UNet config says kind 'ms', else VideoCrafter2's or the toy's."""
    if meta["unet"].get("kind") != "ms":
        return build_vc2_models(meta)
    with torch.device("meta"):
        return {"unet": MSUNet(MSUNetConfig(**meta["unet"])), "text": MSText(MSTextConfig(**meta["text"])),
                "ae": MSVAE(MSVAEConfig(**meta["ae"]))}


def load_diffusers_unet(model, state_dict):
    """MSUNet <- a diffusers UNet3DConditionModel state dict (unet/diffusion_pytorch_model.*, or a student's with
    time_embedding.cond_proj): strict, one ValueError naming every key that does not fit."""
    return load_strict(model.unet, state_dict, "ModelScope UNet (diffusers UNet3DConditionModel)")


def load_release_lora(student, tensors, rank=MS_RANK):
    """T2V-Turbo (MS)'s unet_lora.pt (a list of 1150 tensors, no names) onto an MSUNet student as lora.py wrappers,
    by position as app_ms.py loads it (machinery/checkpoint.py: load_lora_list; the order is the manifest's,
    tests/fixtures/ms_lora_manifest). Returns the number of tensors loaded."""
    if isinstance(tensors, (list, tuple)) and len(tensors) == WITHOUT_PEFT and rank == MS_RANK:
        raise ValueError(f"a list of {WITHOUT_PEFT} tensors: the layout the release's injector writes when diffusers "
                         f"runs without its PEFT backend (LoRA on 125 modules, not 575; "
                         f"tests/fixtures/ms_lora_manifest/README.md); this project builds the student with LoRA on "
                         f"all 575 (1150 tensors)")
    return load_lora_list(student, tensors, rank, name=lambda n: n.removeprefix("unet."))


def release_lora_list(student):
    """The student's LoRA as the release's unet_lora.pt holds it: [up, down] per module in module order, fp32, no
    names (the list load_release_lora reads back, tensor for tensor)."""
    return [t.float() for t in lora_tensors(student).values()]


if __name__ == "__main__":
    with torch.device("meta"):                     # shapes only: the full-size models build instantly
        teacher, student = MSUNet(ms_unet()), MSUNet(MSUNetConfig(ms_unet().diffusers, guidance_embed_dim=256))
        loras = add_lora(student, MS_RANK)
    count = lambda ps: sum(p.numel() for p in ps)
    lora = count(p for l in loras for p in (l.up.weight, l.down.weight))
    print(f"teacher {count(teacher.parameters()):,} parameters; student {count(student.parameters()) - lora:,} plus "
          f"LoRA rank {MS_RANK}: {lora:,} in {len(loras)} modules, {2 * len(loras)} tensors in the release's list")
