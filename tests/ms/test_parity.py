"""Parity with the release: T2V-Turbo (MS)'s student at a tiny size, as the release's own code runs it (its vendored
model_scope UNet, its LoRA handler loading a unet_lora.pt list as app_ms.py does, the MS pipeline's w embedding;
tests/fixtures/ms_tiny_parity/config.json says how it was made), against ms/models.py on diffusers' own class."""
import json

import pytest
import torch

from conftest import FIXTURES
from lora import merge_lora
from ms.models import MSUNet, MSUNetConfig, load_diffusers_unet, load_release_lora
from tiny_unet3d import guidance_embedding

FIX = FIXTURES / "ms_tiny_parity"
CFG = json.loads((FIX / "config.json").read_text())
IO = torch.load(FIX / "io.pt", weights_only=True)
BOUND = 1e-5


def student():
    model = MSUNet(MSUNetConfig(diffusers=CFG["unet_config"], guidance_embed_dim=256))
    load_diffusers_unet(model, torch.load(FIX / "student_base_sd.pt", weights_only=True))
    load_release_lora(model, torch.load(FIX / "unet_lora.pt", weights_only=True), rank=CFG["lora_rank"])
    return model.eval()


def test_the_w_embedding_is_the_pipelines():
    assert torch.equal(guidance_embedding(IO["w"], 256), IO["w_embedding"])


def test_the_student_with_the_released_lora_matches_the_release():
    with torch.no_grad():
        got = student()(IO["x"], IO["t"], IO["context"], w=IO["w"])
    assert (got - IO["y_lora"]).abs().max() <= BOUND
    assert (IO["y_lora"] - IO["y_teacher"]).abs().max() > 100 * BOUND      # the LoRA and w do change the output


def test_the_merged_student_matches_the_releases_collapsed_one():
    model = merge_lora(student())
    with torch.no_grad():
        got = model(IO["x"], IO["t"], IO["context"], w=IO["w"])
    assert (got - IO["y_merged"]).abs().max() <= BOUND


def test_the_teacher_matches_the_releases():
    sd = torch.load(FIX / "student_base_sd.pt", weights_only=True)
    sd.pop("time_embedding.cond_proj.weight")
    teacher = MSUNet(MSUNetConfig(diffusers=CFG["unet_config"])).eval()
    load_diffusers_unet(teacher, sd)
    with torch.no_grad():
        got = teacher(IO["x"], IO["t"], IO["context"], 8)
    assert (got - IO["y_teacher"]).abs().max() <= BOUND


def test_a_list_that_does_not_fit_is_refused_with_every_mismatch():
    lst = torch.load(FIX / "unet_lora.pt", weights_only=True)
    model = MSUNet(MSUNetConfig(diffusers=CFG["unet_config"], guidance_embed_dim=256))
    with pytest.raises(ValueError, match=r"list length: 351 tensors; the student needs 352"):
        load_release_lora(model, lst[:-1], rank=CFG["lora_rank"])
