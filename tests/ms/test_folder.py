"""ms/models.py: ModelScopeT2V from a local diffusers folder (as a Hugging Face snapshot lays it out), its encoders
behind encoders.py's interfaces, and one line for a folder that is not one."""
import json
import shutil

import pytest
import torch
from diffusers import AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModel

import turbo
from lora import make_student
from ms.models import MSUNet, load_ms_folder, tiny_ms_unet

TINY_VAE = dict(block_out_channels=[32, 32], down_block_types=["DownEncoderBlock2D"] * 2,
                up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=32, sample_size=16)
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=77, projection_dim=64)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny text-to-video-ms-1.7b folder: unet/, vae/, text_encoder/ written by diffusers and transformers
    themselves, and the two tokenizer files the loader reads."""
    d = tmp_path_factory.mktemp("ms")
    torch.manual_seed(0)
    MSUNet(tiny_ms_unet()).unet.save_pretrained(d / "unet")
    AutoencoderKL(**TINY_VAE).save_pretrained(d / "vae")
    CLIPTextModel(CLIPTextConfig(**TINY_TEXT)).save_pretrained(d / "text_encoder")
    (d / "tokenizer").mkdir()
    (d / "tokenizer" / "special_tokens_map.json").write_text(json.dumps({"pad_token": "!"}))
    (d / "tokenizer" / "vocab.json").write_text(json.dumps({"!": 0, "<|endoftext|>": 49407}))
    return d


def test_a_folder_loads_into_the_projects_interfaces(folder):
    m = load_ms_folder(folder)
    ctx = m["text"].encode_text(["a red circle moving left", ""])
    assert ctx.shape == (2, 77, 64)
    video = torch.rand(1, 3, 2, 16, 16) * 2 - 1                                  # (b, 3, t, H, W)
    z = m["ae"].encode(video)
    assert z.shape == (1, 4, 2, 8, 8) and m["ae"].decode(z).shape == video.shape
    eps = m["unet"](torch.randn(2, 4, 2, 8, 8), torch.tensor([10, 900]), ctx, 8)
    assert eps.shape == (2, 4, 2, 8, 8)
    assert not any(p.requires_grad for k in ("unet", "text", "ae") for p in m[k].parameters())


def test_the_student_samples_with_the_consistency_sampler(folder):
    m = load_ms_folder(folder)
    student, _ = make_student(m["unet"], 4)
    ctx = m["text"].encode_text(["a red circle moving left"])
    z0 = turbo.consistency_sample(student.eval(), torch.randn(1, 4, 2, 8, 8), ctx, 8, turbo.vc2_alphas_cumprod(),
                                  steps=4, w=7.5)
    assert m["ae"].decode(z0).shape == (1, 3, 2, 16, 16)


def test_the_pad_id_comes_from_the_folders_tokenizer(folder):
    ids = load_ms_folder(folder)["text"].tokenize(["a cat"])
    assert ids[0, 0] == 49406 and ids[0, 3] == 49407 and (ids[0, 4:] == 0).all()


BROKEN = [("unet", "no unet/config.json"), ("tokenizer", "does not say its pad token"),
          ("weights", "vae/diffusion_pytorch_model.safetensors")]


@pytest.mark.parametrize("broken, phrase", BROKEN)
def test_a_bad_folder_is_one_line(folder, tmp_path, broken, phrase):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    if broken == "weights":
        for f in (bad / "vae").glob("*.safetensors"):
            f.write_bytes(b"not a safetensors file")
    else:
        shutil.rmtree(bad / broken)
    with pytest.raises(ValueError) as e:
        load_ms_folder(bad)
    assert len(str(e.value).splitlines()) == 1 and str(bad) in str(e.value) and phrase in str(e.value)
