"""Released weights -> this repo's checkpoints: VideoCrafter2's `model.ckpt` (the teacher) and T2V-Turbo's VC2 LoRA
(`unet_lora.pt`, the 4-step student of Li et al., arXiv 2405.18750), so that sample.py runs them directly.

    python -m vc2.convert --vc2 model.ckpt --out weights/vc2 --lora unet_lora.pt
    python sample.py --ckpt weights/vc2 --prompt "a corgi running on the beach"   # picks turbo.safetensors: 4 steps
    python -m vc2.convert --export-release-lora runs/vc2/turbo_lora.safetensors --out unet_lora.pt   # the other way

Writes OUT/teacher.safetensors (VC2's UNet + KL-f8 VAE + OpenCLIP text tower, kind "teacher") and, given the LoRA
(or --merged-unet, a student UNet state dict with the LoRA already merged), OUT/turbo.safetensors: the student UNet
(guidance_embed_dim 256) with the LoRA merged, W <- W + up @ down (collapse_lora, Ji4chenLi/t2v-turbo
utils/lora.py:793-830), and the same VAE and text.
What is checked; each step raises ONE ValueError that lists every problem, and the CLI exits 1 with it:
  1. the files hold only tensors and containers: torch.load(weights_only=True) refuses any other pickled object
     (one that could run code) before anything runs, and we never retry with weights_only=False;
  2. model.ckpt's 2039 keys split into UNet (1484) / VAE (248) / text (294) / schedule buffers (13), nothing else
     (VideoCrafter loads it strictly, scripts/evaluation/funcs.py:88-104; the keys: tests/fixtures/vc2_keys/);
  3. every key maps onto our modules with its shape (tests/fixtures/vc2_keys/; convert_vc2_unet below does
     the renames);
  4. the stored alphas_cumprod is the schedule turbo.py samples with (VideoCrafter's register_schedule,
     lvdm/models/ddpm3d.py:113-165);
  5. the LoRA list has an (up, down) pair per module, in the release's module order
     (tests/fixtures/t2v_turbo_lora_manifest/notes.md, "Order rule").
The schedule buffers are not copied: turbo.py recomputes them, and step 4 proves they agree.

W_PROJ_POLICY. The student's w projection (T2V-Turbo's `time_cond_proj`, `w_proj` here) has no stored base weight:
the release built it with nn.Linear's random init, drew it from an UNSEEDED generator in app.py, never saved it and
trained only a LoRA on top (tests/fixtures/t2v_turbo_lora_manifest/notes.md, "Caveats"). The deployed function,
random W + up @ down, is therefore different in every run of the release and cannot be recovered. We take W = 0,
the mean of that init (and our own zero init of w_proj), so w_proj = up @ down: deterministic, and the w-embedding
only carries what training put there.
Loading such a file prints a warning. A merged UNet that carries time_cond_proj.weight keeps it as it is. A LoRA
student trained here (train.py --lora-rank) has exactly this layout, zero base + LoRA, so --export-release-lora
writes it as an unet_lora.pt that loads back (here, or in the release with its base zeroed) bit for bit.

Memory: model.ckpt is memory-mapped (torch.load(mmap=True)), models are built on the meta device and take the
mapped tensors as they are (load_state_dict(assign=True)), and the outputs are streamed one tensor at a time (a merged
weight is computed only when it is written), so nothing full-size is ever held twice. bench_load measures the
other direction, loading a converted checkpoint (python -m benchmarks load).
"""

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch
import torch.nn as nn

import turbo
from encoders import AutoencoderKL, TextEncoder, openclip_vit_h14, sd_kl_f8
from lora import RELEASE_UNWRAPPED, LoRA, add_lora
from machinery.checkpoint import (META_KEY, load_lora_list, load_strict, lora_list_from_file, problem_report, read_meta,
                                  safe_torch_load, save_tensors, unwrap, written_atomically)
from machinery.cli import Parser
from tiny_unet3d import UNet3D, UNetConfig, vc2
from vc2.release import resolve_release_files

# ----------------------------------------------------------------------------------------------------------------
# VideoCrafter2's UNet keys and ours (the model file, tiny_unet3d.py, knows no checkpoint). Our module names are
# VC2's (so the T2V-Turbo LoRA list, which is keyed by VC2 module names, maps too), with exactly these differences:
#   1. the prefix `model.diffusion_model.` (LatentDiffusion's wrapper) is dropped;
#   2. VC2's misspelt `temopral_conv` is `temporal_conv` here;
#   3. T2V-Turbo's `time_cond_proj` (the student's w projection, 320x256) is `w_proj` here;
#   4. init_attn's proj_in/proj_out are Conv1d(k=1) in VC2 (its only non-linear-layout transformer) and Linear
#      here: the weight loses its trailing kernel axis, (out, in, 1) -> (out, in). Same function.
# Temporal convs stay Conv3d (3, 1, 1) and spatial convs Conv2d, so their weights (and LoRA deltas) copy as-is.

VC2_PREFIX = 'model.diffusion_model.'
_RENAMES = [('temopral_conv', 'temporal_conv'), ('time_cond_proj', 'w_proj')]   # (VC2 name, our name)
_CONV1D_KEYS = ('init_attn.0.proj_in.weight', 'init_attn.0.proj_out.weight')    # our names


def vc2_key_to_ours(key):
    """Maps a VC2/T2V-Turbo UNet key or module name (prefixed or not) to ours, e.g. for a LoRA loader."""
    key = key.removeprefix(VC2_PREFIX)
    for theirs, ours in _RENAMES:
        key = key.replace(theirs, ours)
    return key


def ours_key_to_vc2(key):
    """The inverse of vc2_key_to_ours (without the prefix)."""
    for theirs, ours in _RENAMES:
        key = key.replace(ours, theirs)
    return key


def check_state_dict(state_dict, expected, allow_missing=()):
    """Compares key sets and shapes; raises ONE ValueError listing every missing key, unexpected key and
    shape mismatch, so a broken checkpoint is diagnosed in one go."""
    missing = [k for k in expected if k not in state_dict and k not in allow_missing]
    unexpected = [k for k in state_dict if k not in expected]
    bad_shape = [f"{k}: got {tuple(v.shape)}, model has {tuple(expected[k].shape)}"
                 for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or bad_shape:
        lines = [f"  missing: {k}" for k in missing] + [f"  unexpected: {k}" for k in unexpected]
        lines += [f"  shape: {s}" for s in bad_shape]
        raise ValueError("\n".join([f"state dict does not fit the UNet: {len(missing)} missing, {len(unexpected)} "
                                    f"unexpected, {len(bad_shape)} with a wrong shape; first: {lines[0].strip()}",
                                    *lines]))   # (the CLI prints the first line alone: it names one key)


def convert_vc2_unet(state_dict, expected=None):
    """VC2 (or T2V-Turbo student) UNet state dict -> ours. Keys may carry `model.diffusion_model.`; given a
    whole LatentDiffusion checkpoint, only the UNet part is taken. With `expected` (e.g. model.state_dict()),
    the result is checked with check_state_dict (a missing w_proj is allowed: it stays at its zero init)."""
    if any(k.startswith(VC2_PREFIX) for k in state_dict):
        state_dict = {k: v for k, v in state_dict.items() if k.startswith(VC2_PREFIX)}
    bad = next((k for k, v in state_dict.items() if not torch.is_tensor(v)), None)
    if bad is not None:  # (a file of tensors and containers may hold other values too: strings, numbers, dicts)
        raise ValueError(f"{bad} is a {type(state_dict[bad]).__name__}, not a tensor: not a UNet state dict")
    out = {}
    for k, v in state_dict.items():
        k = vc2_key_to_ours(k)
        out[k] = v[..., 0] if k in _CONV1D_KEYS and v.ndim == 3 else v   # Conv1d(k=1) -> Linear
    if expected is not None:
        check_state_dict(out, expected, allow_missing=('w_proj.weight',))
    return out


def load_vc2_unet(model, state_dict, assign=False):
    """Converts, checks (one ValueError for every problem) and loads VC2 weights into `model`; returns it.
    A teacher checkpoint has no w_proj: a student keeps its zero w_proj. assign=True adopts the given tensors
    instead of copying into the model's (e.g. a model built on the meta device gets real weights without copies)."""
    sd = convert_vc2_unet(state_dict, expected=model.state_dict())
    model.load_state_dict(sd, strict=False, assign=assign)
    return model


def config_from_vc2(kwargs):
    """UNetConfig from VC2's UNetModel constructor kwargs (the yaml's unet_config.params; T2V-Turbo's
    `time_cond_proj_dim` becomes guidance_embed_dim). A kwarg we do not implement raises ValueError."""
    # flags with a single supported value: name -> (UNetModel's default, the value VC2 uses and we implement)
    fixed = dict(dropout=(0.0, 0.0), conv_resample=(True, True), dims=(2, 2), use_scale_shift_norm=(False, False),
                 resblock_updown=(False, False), num_heads=(-1, -1), use_linear=(False, True),
                 temporal_conv=(False, True), tempspatial_aware=(False, False), temporal_attention=(True, True),
                 temporal_selfatt_only=(True, True),
                 use_causal_attention=(False, False), use_fp16=(False, False), use_image_attention=(False, False),
                 temporal_transformer_depth=(1, 1), motion_cond_proj_dim=(None, None),
                 record_attn_probs=(False, False))
    # UNetModel's defaults for the kwargs that map onto UNetConfig fields (missing required ones: None)
    defaults = dict(in_channels=None, out_channels=None, model_channels=None, num_res_blocks=None,
                    attention_resolutions=None, channel_mult=(1, 2, 4, 8), num_head_channels=-1,
                    transformer_depth=1, context_dim=None, temporal_length=None, fps_cond=False,
                    addition_attention=False, use_checkpoint=False, time_cond_proj_dim=None,
                    use_relative_position=True)
    unknown = set(kwargs) - set(fixed) - set(defaults)
    if unknown:
        raise ValueError(f"unknown UNetModel kwargs: {sorted(unknown)}")
    for name, (default, supported) in fixed.items():
        if kwargs.get(name, default) != supported:
            raise ValueError(f"{name}={kwargs.get(name, default)!r} is not supported: UNet3D implements only "
                             f"VideoCrafter2's {name}={supported!r}")
    args = {**defaults, **kwargs}
    for name in ('in_channels', 'out_channels', 'model_channels', 'num_res_blocks', 'attention_resolutions',
                 'context_dim'):
        if args[name] is None:
            raise ValueError(f"{name} must be given (a text-conditioned VC2 UNet needs it)")
    if args['num_head_channels'] <= 0:
        raise ValueError("num_head_channels must be > 0 (VC2 sets heads by channels per head, 64)")
    if args['use_relative_position'] and not args['temporal_length']:
        raise ValueError("use_relative_position needs temporal_length (the clip of the frame offsets)")
    args['guidance_embed_dim'] = args.pop('time_cond_proj_dim') or 0
    ours = {f.name for f in fields(UNetConfig)}
    return UNetConfig(**{k: v for k, v in args.items() if k in ours})


# model.ckpt = LatentDiffusion.state_dict(): three sub-models under these prefixes, plus the schedule buffers
VC2_PREFIXES = {"unet": "model.diffusion_model.", "vae": "first_stage_model.", "text": "cond_stage_model.model."}
VC2_BUFFERS = {name: 1000 for name in (  # register_schedule's buffers, fp32 (1000,) each (ddpm3d.py:113-165)
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2")}
VC2_BUFFERS["scale_arr"] = 1400  # VC2's use_scale ramp; 1400 long because of fix_scale_bug=False (ddpm3d.py:362-376)
# sample.py's settings for VC2: 16 frames of 320x512 (latents 40x64), fps 16, VC2's CFG scale 12 for the
# teacher; the student's w = 7.5 and 4 steps are the release's defaults
VC2_TRAIN = {"frames": 16, "height": 320, "width": 512, "size": None, "fps": 16, "guidance": 12.0, "turbo_w": 7.5,
             "turbo_sample_steps": 4}
GUIDANCE_EMBED_DIM = 256  # the student's time_cond_proj_dim (app.py)
RELEASE_RANK = 64         # unet_lora.pt's rank, clipped to min(in, out) per layer (4 for the first and last conv)


# the first stage and the text tower keep VC2's (open_clip's) names: only a prefix to strip, and strict checks


def _select(state_dict, prefixes):
    """Strips the first prefix that some key carries, keeping only keys with it (so a whole VC2 checkpoint works
    too); keys with none of the prefixes are returned as they are."""
    if "state_dict" in state_dict and not torch.is_tensor(state_dict["state_dict"]):
        state_dict = state_dict["state_dict"]                  # Lightning-style wrapper around model.ckpt
    for p in prefixes:
        if any(k.startswith(p) for k in state_dict):
            return {k[len(p):]: v for k, v in state_dict.items() if k.startswith(p)}
    return dict(state_dict)


def load_vc2_vae(model, state_dict):
    """AutoencoderKL <- VC2 VAE weights; keys with or without 'first_stage_model.' (or a whole VC2 checkpoint)."""
    return load_strict(model, _select(state_dict, ["first_stage_model."]), "AutoencoderKL")


def load_vc2_text(model, state_dict):
    """TextEncoder <- VC2 text weights; keys 'cond_stage_model.model.*', 'model.*' (FrozenOpenCLIPEmbedder) or
    bare open_clip names. open_clip's causal `attn_mask` is a non-persistent buffer, so it is never a key here;
    this class builds the mask on the fly (causal_mask)."""
    return load_strict(model, _select(state_dict, ["cond_stage_model.model.", "model."]), "TextEncoder")


# ----------------------------------------------------------------------------------------------------------------
# VideoCrafter2's model.ckpt -> our three state dicts


def _split(checkpoint):
    """-> ({'unet', 'vae', 'text', 'buffers'}: prefix-free dicts in the file's key order, [problems])."""
    parts, problems = {name: {} for name in (*VC2_PREFIXES, "buffers")}, []
    for k, v in unwrap(checkpoint).items():
        part = next((p for p, prefix in VC2_PREFIXES.items() if k.startswith(prefix)), None)
        if not torch.is_tensor(v):
            problems.append(f"  not a tensor: {k} ({type(v).__name__})")
        elif part is not None:
            parts[part][k[len(VC2_PREFIXES[part]):]] = v
        elif k in VC2_BUFFERS:
            parts["buffers"][k] = v
        else:
            problems.append(f"  unknown key: {k} (no VC2 prefix, not a schedule buffer)")
    return parts, problems


def split_vc2_checkpoint(checkpoint):
    """model.ckpt's dict -> {'unet': {name: tensor}, 'vae': ..., 'text': ..., 'buffers': ...}, prefixes removed,
    names otherwise VC2's. A key under none of the prefixes and not a known buffer raises one ValueError naming all."""
    parts, problems = _split(checkpoint)
    if problems:
        raise ValueError(_report("not a VideoCrafter2 checkpoint: keys that fit no part", problems))
    return parts


def _report(title, problems):
    """One error message for every problem found: counts by kind, the first few, and a file with all of them."""
    return problem_report(title, problems)


def _compare(part, got, expected, show=lambda k: k):
    """Every missing, unexpected and misshapen key of one part, as lines of a report."""
    out = [f"  {part} missing: {show(k)} {tuple(v.shape)}" for k, v in expected.items() if k not in got]
    out += [f"  {part} unexpected: {show(k)}" for k in got if k not in expected]
    out += [f"  {part} wrong shape: {show(k)} {tuple(v.shape)}, ours {tuple(expected[k].shape)}"
            for k, v in got.items() if k in expected and v.shape != expected[k].shape]
    return out


def convert_vc2(checkpoint, unet_config=None, text_config=None, ae_config=None):
    """model.ckpt's dict -> ({'unet', 'text', 'ae'}: our state dicts, the schedule buffers). Every key of every part
    is checked against our models (built on the meta device) and ONE ValueError lists every problem of the whole
    file. The tensors are the checkpoint's own (no copies); configs default to the real VC2 ones."""
    parts, problems = _split(checkpoint)
    with torch.device("meta"):
        models = {"unet": UNet3D(unet_config or vc2()), "text": TextEncoder(text_config or openclip_vit_h14()),
                  "ae": AutoencoderKL(ae_config or sd_kl_f8())}
    ours = {"unet": convert_vc2_unet(parts["unet"]), "text": parts["text"], "ae": parts["vae"]}
    # problems are reported under the checkpoint's own names
    show = {"unet": lambda k: VC2_PREFIXES["unet"] + ours_key_to_vc2(k), "text": lambda k: VC2_PREFIXES["text"] + k,
            "ae": lambda k: VC2_PREFIXES["vae"] + k}
    for name, m in models.items():
        problems += _compare(name, ours[name], m.state_dict(), show[name])
    expected_buffers = {k: torch.empty(n, device="meta") for k, n in VC2_BUFFERS.items()}
    problems += _compare("buffers", parts["buffers"], expected_buffers)
    if problems:
        raise ValueError(_report("the checkpoint does not match VideoCrafter2", problems))
    return ours, parts["buffers"]


def check_schedule(buffers, atol=1e-6):
    """The stored alphas_cumprod must be turbo.vc2_alphas_cumprod() (VC2 computes it in float64 and stores fp32, so
    they agree to fp32 rounding, ~1e-7): every sampler and the distillation in turbo.py use that schedule."""
    if "alphas_cumprod" not in buffers:
        raise ValueError("the checkpoint has no alphas_cumprod buffer: cannot check its noise schedule")
    stored, ours = buffers["alphas_cumprod"], turbo.vc2_alphas_cumprod()
    if stored.shape != ours.shape:
        raise ValueError(f"alphas_cumprod has shape {tuple(stored.shape)}; VC2's schedule has {tuple(ours.shape)}")
    err = (stored.double() - ours).abs()
    if not err.max() <= atol:  # also catches NaN
        t = int(err.argmax())
        raise ValueError(f"alphas_cumprod differs from turbo.vc2_alphas_cumprod() by up to {err.max():.3g} (t={t}: "
                         f"{stored[t].item():.7g} vs {ours[t].item():.7g}): this model was trained with another noise "
                         f"schedule, and turbo.py's samplers would not fit it")


# ----------------------------------------------------------------------------------------------------------------
# T2V-Turbo's released LoRA (unet_lora.pt) onto our student


def release_lora_order(vc2_unet_sd):
    """The module order of the release's list (tests/fixtures/t2v_turbo_lora_manifest/notes.md, "Order rule"), from
    a VC2 UNet state dict in its own key order (= module registration order): every `*.weight` of ndim 2 (Linear),
    4 (Conv2d) or 5 (Conv3d). Conv1d weights (ndim 3, init_attn's proj_in/out) drop out, as the release's injector
    does not search Conv1d. Given a teacher's keys, the student's time_cond_proj is put where T2V-Turbo registers
    it: after time_embed/fps_embedding."""
    names = [k.removeprefix(VC2_PREFIXES["unet"])[:-len(".weight")] for k, v in vc2_unet_sd.items()
             if k.endswith(".weight") and v.ndim in (2, 4, 5)]
    if "time_cond_proj" not in names:
        last = max(i for i, n in enumerate(names) if n.startswith(("time_embed.", "fps_embedding.")))
        names.insert(last + 1, "time_cond_proj")
    return names


def load_release_lora(student, tensors, order=None, rank=RELEASE_RANK):
    """Puts T2V-Turbo's released LoRA (a plain list of 1150 tensors, no names) onto our student UNet3D as lora.py
    wrappers; merge it with lora.merge_lora or merged_tensors. machinery/checkpoint.py: load_lora_list spells out and
    checks the release's rule (by position: app.py's lora_up.weight = loras.pop(0)); for VC2:
      - modules: every Linear/Conv2d/Conv3d in named_modules() (registration) order, which is VC2's, minus
        init_attn's proj_in/proj_out (Conv1d in VC2: no LoRA in the release; Linear here, so left unwrapped);
      - `order` (optional): the release's module names in VC2 spelling (release_lora_order, or the manifest's
        lora_modules.tsv); our wrappers must come in exactly that order;
      - `rank`: 64, the release's (clipped to min(in, out) per layer); a list exported from a student trained here
        (--export-release-lora) has that student's --lora-rank. The list has no field to say which.
    Returns the number of tensors loaded (1150)."""
    return load_lora_list(student, tensors, rank, RELEASE_UNWRAPPED, ours_key_to_vc2, order)


def export_release_lora(path):
    """Our LoRA file (train.py's turbo_lora.safetensors, checkpoint.save_lora) -> the release's unet_lora.pt list:
    [up, down] per module in its module walk (load_release_lora's order rule), fp32, no names, so the released
    app.py and scripts load a student trained here. Exact: the student was trained with the release's layout
    (lora.make_student: w_proj = zero base + LoRA, init_attn's proj_in/out unwrapped), and loading the list back
    (vc2/convert.py --vc2 model.ckpt --lora unet_lora.pt) merges into the same weights bit for bit. A file that does not
    fit that layout (a wrong module set or shape, a nonzero w_proj base) raises ONE ValueError listing it all."""
    meta = read_meta(path)
    if meta.get("kind") != "lora":
        raise ValueError(f"{path} is a {meta.get('kind')!r} checkpoint, not a LoRA file (train.py --lora-rank R "
                         f"writes one beside its student: turbo_lora.safetensors)")
    if meta.get("w_proj_base") != "zero":
        raise ValueError(f"{path}: its w_proj base is not zero (W_PROJ_POLICY), so the release's list cannot carry it")
    with torch.device("meta"):                             # the module walk, from the config alone
        student = UNet3D(UNetConfig(**meta["unet"]))
        add_lora(student, meta["rank"], skip=RELEASE_UNWRAPPED)
    return lora_list_from_file(path, student)


def zero_w_proj_base(student, source):
    """W_PROJ_POLICY (module docstring): the student's w_proj base weight is 0; warns, naming the file."""
    w = student.w_proj.base.weight if isinstance(student.w_proj, LoRA) else student.w_proj.weight
    zeros = nn.Parameter(torch.zeros(w.shape, dtype=w.dtype, device="cpu" if w.is_meta else w.device),
                         requires_grad=False)
    if isinstance(student.w_proj, LoRA):
        student.w_proj.base.weight = zeros
    else:
        student.w_proj.weight = zeros
    warnings.warn(f"{source}: no base weight for T2V-Turbo's time_cond_proj (w_proj). The release's was a random, "
                  f"unseeded nn.Linear init that was never saved, so it cannot be recovered; using W = 0, i.e. "
                  f"w_proj = the LoRA delta up @ down only (vc2/convert.py, W_PROJ_POLICY). The w-conditioning differs "
                  f"from any run of the release's app.py by that random term.", stacklevel=2)


def merged_tensors(model):
    """-> (placeholders, materialize): the state dict lora.merge_lora(model) would leave, with each merged weight
    W + up @ down computed only when materialize(name) is called (checkpoint.save_tensors does, one at a time), so
    a merged full-size UNet never sits in memory next to its base weights. Merged weights are meta placeholders."""
    loras = {n: m for n, m in model.named_modules() if isinstance(m, LoRA)}
    placeholders, merged = {}, {}
    for key, v in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")              # e.g. 'input_blocks.1.1.proj_in.base', 'weight'
        parent, _, role = owner.rpartition(".")
        if parent in loras and role in ("up", "down"):
            continue                                      # folded into the base weight
        if parent in loras and role == "base":
            key = f"{parent}.{leaf}"
            if leaf == "weight":
                merged[key] = loras[parent]
                v = torch.empty(v.shape, dtype=v.dtype, device="meta")
        placeholders[key] = v

    @torch.no_grad()
    def materialize(name):
        m = merged[name]
        return m.base.weight + m.delta()  # delta = (up.flatten(1) @ down.flatten(1)).view_as(W), lora.py
    return placeholders, materialize


# ----------------------------------------------------------------------------------------------------------------
# The whole conversion (what the CLI runs)


def _write(path, parts, meta, materialize_unet=None):
    """Streams {'unet': sd, 'text': sd, 'ae': sd} into one checkpoint (machinery/checkpoint.py's layout)."""
    tensors = {f"{p}.{k}": v for p, sd in parts.items() for k, v in sd.items()}
    materialize = materialize_unet and (lambda name: materialize_unet(name.removeprefix("unet.")))
    t0 = time.time()
    save_tensors(path, tensors, {META_KEY: json.dumps(meta)}, materialize)
    n = sum(v.numel() for v in tensors.values())
    print(f"wrote {path}: {len(tensors)} tensors, {n:,} numbers, {os.path.getsize(path) / 2 ** 30:.2f} GiB "
          f"({time.time() - t0:.0f} s)")
    return Path(path)


V2_KEYS = ("motion_cond_proj", "combine_proj")  # T2V-Turbo-v2's motion guidance (t2v-turbo's openaimodel3d.py:421-430)


def refuse_v2(state_dict):
    """T2V-Turbo-v2 adds a motion-guidance input (motion_cond_proj, combine_proj) that this project's UNet (v1,
    arXiv 2405.18750) does not have: one clear refusal instead of a list of unexpected keys."""
    found = sorted({k for k in state_dict if any(v in k for v in V2_KEYS)})
    if found:
        raise ValueError(f"a T2V-Turbo-v2 checkpoint ({found[0]}, {len(found)} motion-guidance keys): this project "
                         f"implements T2V-Turbo v1, whose student has no motion guidance; give a v1 file")


def turbo_unet(teacher_unet, student_config, lora=None, merged_unet=None, name="", rank=RELEASE_RANK):
    """The student UNet's state dict from the teacher's (ours, converted) and either the release's LoRA list or a
    merged student state dict (VC2 names). -> (state dict with merged weights as meta placeholders, materialize or
    None, a note on where w_proj came from). Everything is checked here, before anything is written."""
    with torch.device("meta"):
        student = UNet3D(student_config)
    try:
        if lora is not None:
            load_vc2_unet(student, teacher_unet, assign=True)  # the teacher's weights are the student's base
            zero_w_proj_base(student, name)
            n = load_release_lora(student, lora, rank=rank)
            print(f"{name}: {n} LoRA tensors on {n // 2} modules, merged as they are written")
            return (*merged_tensors(student), "zero base + LoRA delta (W_PROJ_POLICY)")
        refuse_v2(unwrap(merged_unet))
        unet = convert_vc2_unet(unwrap(merged_unet), expected=student.state_dict())
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    if "w_proj.weight" in unet:
        return unet, None, "as stored"
    load_vc2_unet(student, unet, assign=True)
    zero_w_proj_base(student, name)
    return student.state_dict(), None, "zero (W_PROJ_POLICY)"


def convert(vc2_path, out_dir, lora=None, merged_unet=None, unet_config=None, text_config=None, ae_config=None,
            train=None, lora_rank=RELEASE_RANK):
    """model.ckpt (+ unet_lora.pt or a merged student UNet) -> out_dir/teacher.safetensors (+ turbo.safetensors).
    Configs default to the real VC2 ones, train to VC2_TRAIN (sample.py's settings). Returns the paths written."""
    if lora and merged_unet:
        raise ValueError("give a LoRA file or a merged UNet, not both")
    unet_config, text_config = unet_config or vc2(), text_config or openclip_vit_h14()
    ae_config = ae_config or sd_kl_f8()
    checkpoint = safe_torch_load(vc2_path)
    try:
        refuse_v2(unwrap(checkpoint))
        ours, buffers = convert_vc2(checkpoint, unet_config, text_config, ae_config)
        check_schedule(buffers)
    except ValueError as e:
        raise ValueError(f"{vc2_path}: {e}") from None
    print(f"{vc2_path}: {len(unwrap(checkpoint))} keys = UNet {len(ours['unet'])} + VAE {len(ours['ae'])} + text "
          f"{len(ours['text'])} + schedule buffers {len(buffers)}; every key mapped, schedule = turbo.py's")
    meta = {"unet": asdict(unet_config), "text": asdict(text_config), "ae": asdict(ae_config),
            "train": dict(train or VC2_TRAIN), "source": {"vc2": Path(vc2_path).name}}
    student = None
    if lora or merged_unet:  # checked in full before minutes of writing
        extra = Path(lora or merged_unet)
        student_config = replace(unet_config, guidance_embed_dim=GUIDANCE_EMBED_DIM)
        tensors = safe_torch_load(extra)
        student = turbo_unet(ours["unet"], student_config, lora=tensors if lora else None,
                             merged_unet=None if lora else tensors, name=str(extra), rank=lora_rank)
    out = Path(out_dir)
    paths = [_write(out / "teacher.safetensors", ours, {**meta, "kind": "teacher"})]
    if student is not None:
        unet, materialize, w_proj = student
        source = {**meta["source"], "lora" if lora else "merged_unet": extra.name, "w_proj": w_proj}
        turbo_meta = {**meta, "unet": asdict(student_config), "kind": "turbo", "source": source}
        paths.append(_write(out / "turbo.safetensors", {"unet": unet, "text": ours["text"], "ae": ours["ae"]},
                            turbo_meta, materialize))
    return paths


# ----------------------------------------------------------------------------------------------------------------


def check_args(args, error):
    """The inputs exist and are not this project's own checkpoints; nothing in OUT would be overwritten."""
    if args.export_release_lora:
        if args.vc2 or args.lora or args.merged_unet:
            error("--export-release-lora takes only --out (the unet_lora.pt to write)")
        if not Path(args.export_release_lora).is_file():
            error(f"--export-release-lora {args.export_release_lora}: no such file")
        if Path(args.out).exists():
            error(f"--out {args.out} exists; give a new file name (nothing is overwritten)")
        return
    if not args.vc2:
        error("give --vc2 model.ckpt (a conversion) or --export-release-lora LORA (an export)")
    for flag in ("vc2", "lora", "merged_unet"):
        path = getattr(args, flag)
        if path is None:
            continue
        if not Path(path).is_file():
            error(f"--{flag.replace('_', '-')} {path}: no such file")
        try:  # a safetensors file of this project needs no conversion: say so rather than fail on its bytes
            kind = read_meta(path).get("kind")
        except ValueError:
            continue
        hint = " (a LoRA trained here: python -m vc2.convert --export-release-lora writes it as unet_lora.pt)" \
            * (kind == "lora")
        error(f"--{flag.replace('_', '-')} {path} is already a {kind} checkpoint of this project (sample.py and "
              f"train.py read it as it is){hint}; --vc2 takes VideoCrafter2's model.ckpt")
    out = Path(args.out)
    for name in ("teacher.safetensors",) + (("turbo.safetensors",) if args.lora or args.merged_unet else ()):
        if (out / name).exists():
            error(f"--out {out}: {name} exists there; give a new folder (nothing is overwritten)")


def export(lora_path, out):
    """--export-release-lora: our LoRA file -> the release's unet_lora.pt (torch.save of a plain list of tensors,
    which the release's torch.load reads, also with weights_only=True)."""
    tensors = export_release_lora(lora_path)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(out) as tmp:
        torch.save(tensors, tmp)
    rank = read_meta(lora_path)["rank"]
    print(f"wrote {out}: {len(tensors)} tensors (up, down for {len(tensors) // 2} modules, the release's order), "
          f"{os.path.getsize(out) / 2 ** 20:.1f} MiB; load it with vc2/convert.py --vc2 model.ckpt --lora {out}"
          + (f" --lora-rank {rank}" if rank != RELEASE_RANK else ""))


def main(argv=None):
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vc2", help="VideoCrafter2's model.ckpt (a bare state dict or {'state_dict': ...})")
    p.add_argument("--out", required=True, help="folder for teacher.safetensors (and turbo.safetensors); with "
                                                "--export-release-lora, the unet_lora.pt file to write")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lora", help="T2V-Turbo (VC2) unet_lora.pt: the released list of 1150 LoRA tensors")
    g.add_argument("--merged-unet", help="a T2V-Turbo student UNet state dict with its LoRA already merged")
    g.add_argument("--export-release-lora", metavar="LORA",
                   help="instead of converting: write train.py's turbo_lora.safetensors as the release's unet_lora.pt")
    p.add_argument("--lora-rank", type=int, default=RELEASE_RANK, help="the --lora list's rank: the release's is 64; "
                   "one exported from a student trained here has its --lora-rank")
    args = resolve_release_files(p.parse_args(argv))   # a folder (e.g. a Hugging Face snapshot): the file in it
    check_args(args, p.error)
    try:
        if args.export_release_lora:
            export(args.export_release_lora, args.out)
        else:
            convert(args.vc2, args.out, lora=args.lora, merged_unet=args.merged_unet, lora_rank=args.lora_rank)
    except (ValueError, OSError) as e:  # OSError includes FileNotFoundError and a full disk
        sys.exit(f"vc2.convert: error: {str(e).strip().splitlines()[0]}")   # a long report: its file has the rest


if __name__ == "__main__":
    main()
