"""Checkpoints: one safetensors file per trained model, carrying every config needed to rebuild it.

A checkpoint holds the weights of the UNet (`unet.*`), the text encoder (`text.*`) and the first stage (`ae.*`; none
for the toy's pixel-space first stage),
and in its safetensors metadata the configs of all three plus the training config that made it, as JSON. So
`sample.py --ckpt runs/toy/teacher.safetensors` needs nothing else, and nothing is unpickled: safetensors stores
plain tensors, so a checkpoint cannot run code when it is opened.

    python checkpoint.py runs/toy/teacher.safetensors     # prints what a checkpoint holds
"""

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from encoders import TextConfig, TextEncoder, first_stage_from_config
from tiny_unet3d import UNet3D, UNetConfig

META_KEY = "t2v_turbo"


def save_checkpoint(path, modules, meta):
    """modules: {'unet': nn.Module, 'text': ..., 'ae': ...}; meta: JSON-able dict (configs, kind, stats).
    Written to a temporary file first and renamed, so a killed run never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items()
               for k, v in m.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    os.replace(tmp, path)
    return path


def read_checkpoint(path):
    """-> (tensors by name, meta dict); a clear error for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors checkpoint ({e})") from None
    if raw is None:
        raise ValueError(f"{path} has no '{META_KEY}' metadata: not a checkpoint written by this project")
    return tensors, json.loads(raw)


def _part(tensors, prefix):
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load_models(path, device="cpu"):
    """Rebuilds {'unet', 'text', 'ae', 'meta'} from a checkpoint, in eval mode, strict key checks."""
    tensors, meta = read_checkpoint(path)
    models = {"unet": UNet3D(UNetConfig(**meta["unet"])),
              "text": TextEncoder(TextConfig(**meta["text"])),
              "ae": first_stage_from_config(meta["ae"])}
    for name, m in models.items():
        missing, unexpected = m.load_state_dict(_part(tensors, name), strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: {name} weights do not match its config: missing {missing[:5]}..., "
                             f"unexpected {unexpected[:5]}...")
        m.to(device).eval().requires_grad_(False)
    return {**models, "meta": meta}


def model_meta(unet, text, ae, **extra):
    """The configs every checkpoint carries, as JSON-able dicts."""
    return {"unet": asdict(unet.config), "text": asdict(text.config), "ae": asdict(ae.config), **extra}


if __name__ == "__main__":
    for p in sys.argv[1:]:
        tensors, meta = read_checkpoint(p)
        n = sum(v.numel() for v in tensors.values())
        print(f"{p}: {len(tensors)} tensors, {n:,} numbers, kind={meta.get('kind')}")
        print(json.dumps(meta, indent=1)[:3000])
