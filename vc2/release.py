"""The released files of VideoCrafter2 and T2V-Turbo's reward models: where they are, how they are opened, and how
HPSv2.1 and ViCLIP are loaded from them.

    - find_file / resolve_release_files: a flag may name the file or a folder holding it (a Hugging Face snapshot);
    - safe_torch_load: the release's .ckpt / .pt / .pth files are pickles; they are opened with weights_only=True,
      so a file that would run code is refused, never run;
    - unwrap: the wrappers around a state dict ({'state_dict': ...}, {'model': ...}, 'module.' prefixes);
    - load_hpsv21, load_viclip, load_real_reward: the real reward models of rewards.py, filled strictly from the
      released files (HPS_v2.1_compressed.pt, ViClip-InternVid-10M-FLT.pth; InternVideo2 in vc2/internvideo2.py).

    python -m vc2.release HPS_v2.1_compressed.pt     # what a released file holds: its keys, shapes and dtypes
"""

import sys
from collections import Counter
from pathlib import Path

import open_clip
import torch

from machinery.checkpoint import load_strict, safe_torch_load, unwrap
from rewards import ImageTextReward, ViCLIP, VideoTextReward, viclip_l14
from vc2.internvideo2 import internvideo2_reward

# the released files, by the flag that takes them (train.py, vc2/convert.py)
RELEASE_FILES = {"vc2": "model.ckpt", "lora": "unet_lora.pt", "hps": "HPS_v2.1_compressed.pt",
                 "viclip": "ViClip-InternVid-10M-FLT.pth", "internvideo2": "InternVideo2-stage2_1b-224p-f4.pt"}


def find_file(path, name):
    """A user's PATH for a released file: the file itself, or a folder holding `name`, directly or in a Hugging
    Face cache snapshot (FOLDER/snapshots/<hash>/name, or FOLDER/models--*/snapshots/<hash>/name). Nothing is
    downloaded; an unresolved folder is returned as it is (the caller's existence check names it)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return path
    found = [path / name, *sorted(path.glob(f"snapshots/*/{name}")),
             *sorted(path.glob(f"models--*/snapshots/*/{name}"))]
    return next((p for p in found if p.is_file()), path)


def resolve_release_files(cfg):
    """Every release-file flag of `cfg` (RELEASE_FILES) that names a folder -> the file in it (in place)."""
    for flag, name in RELEASE_FILES.items():
        if getattr(cfg, flag, None):
            setattr(cfg, flag, str(find_file(getattr(cfg, flag), name)))
    return cfg


def load_hps_state(clip, ckpt):
    """open_clip CLIP <- an HPS checkpoint dict (or a bare state dict). One ValueError lists every missing,
    unexpected and mis-shaped key; floating tensors are cast to fp32 (the release is fp16)."""
    sd = unwrap(ckpt, ["state_dict"], strip_module=True, what="HPSv2.1")
    sd = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in sd.items()}
    return load_strict(clip, sd, "HPSv2.1 (open_clip ViT-H-14)")


def load_viclip(model, path_or_state_dict):
    """ViCLIP <- ViClip-InternVid-10M-FLT.pth (a path) or a dict. The release is {'model': state_dict} in fp32
    (ViCLIP itself loads `torch.load(path)['model']`, strict); bare state dicts, {'state_dict': ...} and 'module.'
    prefixes are accepted too. One ValueError lists every missing, unexpected and mis-shaped key."""
    ckpt = path_or_state_dict
    if isinstance(ckpt, (str, Path)):
        ckpt = safe_torch_load(ckpt, "ViCLIP (OpenGVLab/ViCLIP on Hugging Face: ViClip-InternVid-10M-FLT.pth)")
    sd = unwrap(ckpt, ["model", "state_dict", "module"], strip_module=True, what="ViCLIP")
    return load_strict(model, sd, "ViCLIP")


def load_hpsv21(path, image_size=224, clip_cfg=None):
    """The real HPSv2.1 reward from the user's HPS_v2.1_compressed.pt ({'state_dict': fp16 open_clip keys}).
    Builds ViT-H-14 with random weights (open_clip, pretrained=None: no download; ~10 s, 4 GiB), then loads
    strictly; weights are cast to fp32 (autocast can bring bf16 back, as T2V-Turbo's default precision).
    clip_cfg (open_clip.CLIP kwargs) swaps in another architecture: the tests use the toy one."""
    # read (and validate) the file first: a wrong path fails in milliseconds, not after a 10 s model build
    ckpt = safe_torch_load(path, "HPSv2.1 (xswu/HPSv2 on Hugging Face: HPS_v2.1_compressed.pt)")
    if clip_cfg is None:
        clip, clip_cfg = open_clip.create_model("ViT-H-14", pretrained=None), open_clip.get_model_config("ViT-H-14")
    else:
        clip = open_clip.CLIP(**clip_cfg)
    load_hps_state(clip, ckpt)
    return ImageTextReward(clip, image_size=image_size, clip_cfg=clip_cfg)


def load_real_reward(kind, path, internvideo2=False, bert_vocab=None, dtype=None):
    """A released reward model from its file, as train.py and the real-model evaluation load it: kind 'image' ->
    HPSv2.1 (load_hpsv21); 'video' -> ViCLIP-L/14, or InternVideo2 (with bert-large-uncased's vocab) when
    `internvideo2` is true. dtype: InternVideo2's (None keeps its stored bf16); the others load in fp32."""
    if kind == "image":
        return load_hpsv21(path)
    if internvideo2:
        return internvideo2_reward(path, bert_vocab, dtype=dtype)
    return VideoTextReward(load_viclip(ViCLIP(viclip_l14()), path))


if __name__ == "__main__":
    sd = unwrap(safe_torch_load(sys.argv[1]), ["state_dict", "model", "module"], strip_module=True)
    print(f"{sys.argv[1]}: {len(sd)} tensors, {sum(v.numel() for v in sd.values() if torch.is_tensor(v)):,} numbers, "
          f"dtypes {dict(Counter(str(v.dtype) for v in sd.values() if torch.is_tensor(v)))}")
    for k in list(sd)[:10]:
        print(f"  {k}: {tuple(sd[k].shape) if torch.is_tensor(sd[k]) else type(sd[k]).__name__}")
