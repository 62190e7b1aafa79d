"""Test set-up and the helpers more than one test module uses: the repo root on sys.path, 1 CPU thread, a tiny
toy/prepare.py folder shared by the tests, the paths they read (ROOT, the shipped toy models, the parity fixtures),
the flags that run a command line here (TRAIN_CPU), the parity fixtures' loaders, and the before/after records
(snapshot, mtimes) that show a command wrote nothing, moving_frames for video files, and tiny reward configs at
the real 224 px input (CLIP_224, VICLIP_224). A module imports the plain
ones: `from conftest import ...`.

One thread: the tests' tensors are small, so a second thread buys little, and two threads on a busy 2-core
machine can make a step 100x slower (OpenMP threads spin-wait for each other)."""
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)

from encoders import AEConfig, TextConfig  # noqa: E402
from rewards import ViCLIPConfig  # noqa: E402
from tiny_unet3d import UNet3D, toy_unet  # noqa: E402
from toy import prepare  # noqa: E402 (after the repo root is on sys.path)

TOY = ROOT / "toy" / "assets"                       # the toy models that ship (toy/prepare.py made them)
FIXTURES = ROOT / "tests" / "fixtures"              # made by the original code; see fixtures/README.md

# train.py (and the checks it shares with the other command lines) on this machine: the CPU, one thread, and no
# closing teacher-vs-student comparison (its sampling would take most of a tiny run). A module adds what its runs
# need on top (a warm-up of 1 step, a batch size); a flag given again later wins.
TRAIN_CPU = ["--device", "cpu", "--threads", "1", "--compare-per-caption", "0"]

# toy/prepare.py on a tiny budget: every stage runs, in seconds
TOY_FLAGS = ["--text-steps", "2", "--text-batch", "4", "--teacher-steps", "3", "--teacher-batch", "2",
             "--reward-steps", "2", "--warmup", "1", "--dtype", "fp16", "--eval-per-caption", "0", "--threads", "1",
             "--device", "cpu"]


@pytest.fixture
def toy_flags():
    return list(TOY_FLAGS)


_MADE = {}  # the folder below, made once per test process and reused by every test


@pytest.fixture(scope="module")
def toy_models(tmp_path_factory):
    """A folder as toy/prepare.py writes it (text_ae, teacher, reward_image, reward_video .safetensors), made once
    per test process. Tests read it and never write into it (copy a file out to change it)."""
    if "toy_models" not in _MADE:
        out = tmp_path_factory.mktemp("toy_models")
        prepare.main([*TOY_FLAGS, "--out", str(out)])
        _MADE["toy_models"] = out
    return _MADE["toy_models"]


# ----------------------------------------------------------------------------------------------------------------
# Nothing written, nothing changed


def snapshot(*roots):
    """Every file and folder under the roots, by its full path, with its bytes (None for a folder): a test compares
    it before and after a command to show that the command wrote and changed nothing there."""
    return {str(p): (p.read_bytes() if p.is_file() else None) for r in roots for p in sorted(Path(r).rglob("*"))}


def mtimes(folder, names=None):
    """{file name: modification time in ns} of the named files in folder (None: all of them): compared before and
    after a run, it shows that the run only read them."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir()) if names is None else names
    return {n: (folder / n).stat().st_mtime_ns for n in names}


def run_main(main, argv, capsys):
    """A command line's main(argv) in this process -> (exit code, stdout, stderr), as the shell would see them when
    the script runs: sys.exit("message") is exit code 1 with the message on stderr, sys.exit() is 0."""
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = 1 if isinstance(e.code, str) else e.code or 0
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return code, out, err


class RunsCode:
    """A pickle payload: unpickling calls open(path, 'w'), creating the file (it stands in for any code)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


# ----------------------------------------------------------------------------------------------------------------
# The parity fixtures (tests/fixtures: recorded by running the original code)


def load_fixture(*parts):
    """A fixture's .pt file (tensors only: weights_only), on the CPU."""
    return torch.load(FIXTURES.joinpath(*parts), map_location="cpu", weights_only=True)


def load_text_sd(*parts):
    """text_sd.pt stores only the token_embedding rows the fixture's tokens use (see fixtures/README.md); the other
    rows, which no recorded output depends on, come back as zeros."""
    sd = load_fixture(*parts)
    emb = sd["model.token_embedding.weight"]
    sd["model.token_embedding.weight"] = torch.zeros(emb["num_rows"], emb["rows"].shape[1]).index_copy_(
        0, emb["index"], emb["rows"])
    return sd


def vae_fixture_config():
    """The AEConfig of vae_tiny_parity (its ddconfig, and VC2's latent scale)."""
    cfg = json.loads((FIXTURES / "vae_tiny_parity" / "config.json").read_text())
    dd = cfg["ddconfig"]
    return AEConfig(ch=dd["ch"], ch_mult=dd["ch_mult"], num_res_blocks=dd["num_res_blocks"],
                    z_channels=dd["z_channels"], embed_dim=cfg["embed_dim"], in_channels=dd["in_channels"],
                    out_ch=dd["out_ch"], attn_resolutions=dd["attn_resolutions"], resolution=dd["resolution"],
                    scale_factor=0.18215)


def text_fixture_config():
    """The TextConfig of text_tiny_parity (open_clip's model config, at the fixture's size)."""
    cfg = json.loads((FIXTURES / "text_tiny_parity" / "config.json").read_text())["open_clip_model_cfg"]
    tc = cfg["text_cfg"]
    return TextConfig(vocab_size=tc["vocab_size"], context_length=tc["context_length"], width=tc["width"],
                      heads=tc["heads"], layers=tc["layers"], embed_dim=cfg["embed_dim"])


def vc2_keys(*names):
    """The real VC2 model.ckpt's keys listed in tests/fixtures/vc2_keys/NAME (key, tab, shape as 'AxB'; '' is a
    0-dim tensor), as meta tensors of the real shapes under their original names, in the files' order."""
    sd = {}
    for name in names:
        for line in (FIXTURES / "vc2_keys" / name).read_text().splitlines():
            key, shape = line.split("\t")
            sd[key] = torch.empty([int(s) for s in shape.split("x")] if shape else [], device="meta")
    return sd


# ----------------------------------------------------------------------------------------------------------------
# Models


def tiny_unet(**kw):
    """The toy preset's UNet on 4 latent channels, seeded, with no zero layer: VC2 zero-inits its output layers;
    here they are drawn too, so that every layer matters."""
    torch.manual_seed(0)
    cfg = replace(toy_unet(), in_channels=4, out_channels=4, **kw)
    m = UNet3D(cfg).eval()
    for p in m.parameters():
        if p.dim() > 1 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.02)
    return m


# A tiny text-to-video-ms-1.7b folder (ms/models.py: load_ms_folder reads it)

TINY_MS_VAE = dict(block_out_channels=[32, 32], down_block_types=["DownEncoderBlock2D"] * 2,
                   up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=32, sample_size=16)
TINY_MS_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                    max_position_embeddings=77, projection_dim=64)


def write_ms_folder(d, **unet):
    """A tiny ModelScope folder at d, laid out as a Hugging Face snapshot: unet/, vae/ and text_encoder/ written by
    diffusers and transformers themselves (the UNet: ms.models.tiny_ms_unet with `unet`'s changes), and the two
    tokenizer files the loader reads. -> d"""
    from diffusers import AutoencoderKL  # here: only the ModelScope tests load diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    from ms.models import MSUNet, tiny_ms_unet
    torch.manual_seed(0)
    cfg = tiny_ms_unet()
    cfg.diffusers.update(unet)
    MSUNet(cfg).unet.save_pretrained(d / "unet")
    AutoencoderKL(**TINY_MS_VAE).save_pretrained(d / "vae")
    CLIPTextModel(CLIPTextConfig(**TINY_MS_TEXT)).save_pretrained(d / "text_encoder")
    (d / "tokenizer").mkdir()
    (d / "tokenizer" / "special_tokens_map.json").write_text(json.dumps({"pad_token": "!"}))
    (d / "tokenizer" / "vocab.json").write_text(json.dumps({"!": 0, "<|endoftext|>": 49407}))
    return d


def edit_json(path, **changes):
    """Rewrites a JSON file (a config.json) with some of its keys changed."""
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# ----------------------------------------------------------------------------------------------------------------
# Videos on disk


def moving_frames(n, h=32, w=48, seed=0):
    """n distinct uint8 frames (n, h, w, 3): a noise picture sliding 3 pixels a frame."""
    base = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    return np.stack([np.roll(base, 3 * k, axis=1) for k in range(n)])


# ----------------------------------------------------------------------------------------------------------------
# Tiny reward models of the real ones' classes, at the real 224 px input (HPSv2.1's open_clip CLIP, ViCLIP)

CLIP_224 = dict(embed_dim=32, vision_cfg=dict(image_size=224, patch_size=32, width=32, layers=1, head_width=16),
                text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))
VICLIP_224 = ViCLIPConfig(image_size=224, patch_size=32, vision_width=32, vision_layers=1, vision_heads=2,
                          text_width=32, text_layers=1, text_heads=2, embed_dim=32)
