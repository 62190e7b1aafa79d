"""ms/models.py: ModelScopeT2V from a local diffusers folder (as a Hugging Face snapshot lays it out), its encoders
behind encoders.py's interfaces, and one line for a folder that is not one."""
import json
import shutil

import open_clip
import pytest
import torch
from diffusers import AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModel

import sample
import train
import turbo
from conftest import CLIP_224, FIXTURES, TRAIN_CPU, VICLIP_224
from lora import add_lora, make_student, merge_lora
from machinery.checkpoint import load_models
from machinery.cli import run_cli
from ms import convert
from ms.models import (MS_RANK, MSUNet, MSUNetConfig, build_models, load_ms_folder, load_release_lora,
                       release_lora_list, tiny_ms_unet)
from rewards import ViCLIP
from vc2 import release

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


def test_convert_writes_checkpoints_that_sample_py_samples(folder, tmp_path, capsys):
    """ms.convert (FOLDER + a LoRA list), then python sample.py --ckpt: the student (its LoRA merged) and the teacher
    sample from their own checkpoints and configs alone (a 2-frame 16 x 16 clip, 2 steps)."""
    teacher = load_ms_folder(folder)["unet"]
    student, _ = make_student(teacher, 0)
    with torch.no_grad():
        add_lora(student, MS_RANK)
        for p in student.parameters():
            p.normal_(0, 0.02) if p.requires_grad else None
    lora = tmp_path / "unet_lora.pt"
    torch.save(release_lora_list(student), lora)
    out = tmp_path / "weights"
    convert.convert(folder, out, lora, train={**convert.MS_TRAIN, "frames": 2, "height": 16, "width": 16})
    for kind in ("turbo", "teacher"):
        rows = sample.main(["--ckpt", str(out / f"{kind}.safetensors"), "--prompt", "a cat", "--out",
                            str(tmp_path / kind), "--device", "cpu", "--quiet", "--steps", "2"])
        assert rows[0]["steps"] == 2 and (tmp_path / kind / rows[0]["file"]).is_file()
    models = load_models(out / "turbo.safetensors", build=build_models)
    assert models["meta"]["unet"]["kind"] == "ms" and models["meta"]["train"]["fps"] == 8


def test_the_released_list_round_trips_tensor_for_tensor():
    """load_release_lora then release_lora_list gives back the very list (the parity fixture's)."""
    fix = FIXTURES / "ms_tiny_parity"
    cfg = json.loads((fix / "config.json").read_text())
    tensors = torch.load(fix / "unet_lora.pt", weights_only=True)
    student = MSUNet(MSUNetConfig(diffusers=cfg["unet_config"], guidance_embed_dim=256))
    load_release_lora(student, tensors, rank=cfg["lora_rank"])
    again = release_lora_list(student)
    assert len(again) == len(tensors) and all(torch.equal(a, b) for a, b in zip(again, tensors))


@pytest.mark.parametrize("argv, phrase", [(["--ms", "{nope}", "--out", "{out}"], "no unet/config.json"),
                                          (["--ms", "{folder}", "--out", "{out}", "--lora", "{nope}"], "--lora"),
                                          (["--ms", "{folder}"], "the following arguments are required: --out"),
                                          (["--export-release-lora", "{folder}/unet/config.json", "--out", "{out}"],
                                           "not a readable safetensors checkpoint")])
def test_convert_refuses_bad_input_in_one_line(folder, tmp_path, capsys, argv, phrase):
    fill = {"nope": tmp_path / "nope", "out": tmp_path / "out", "folder": folder}
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: convert.main([a.format(**fill) for a in argv]))
    err = str(e.value.code) if isinstance(e.value.code, str) else capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and phrase in err and not (tmp_path / "out").exists()


def test_train_py_distils_an_ms_teacher_with_lora(folder, tmp_path):
    """train.py, unchanged, on a ModelScope teacher (converted from the folder): 2 steps of CD on the toy world's
    clips with a rank-4 LoRA student sharing one UNet with its teacher and EMA target; the merged student it writes
    is an MS checkpoint that has moved from its teacher, and its LoRA file exports to the release's list, which
    merges back into the same student bit for bit."""
    w = tmp_path / "weights"
    convert.convert(folder, w, train={**convert.MS_TRAIN, "frames": 2, "height": 16, "width": 16})
    out = tmp_path / "run"
    train.main(["--teacher", str(w / "teacher.safetensors"), "--rewards", "none", "--lora-rank", "4",
                "--turbo-steps", "2", "--turbo-lr", "1e-3", "--size", "16", "--frames", "2", "--out", str(out),
                *TRAIN_CPU])
    student = load_models(out / "vcm.safetensors", build=build_models)
    assert student["meta"]["unet"]["kind"] == "ms" and student["meta"]["unet"]["guidance_embed_dim"] == 256
    teacher = load_models(w / "teacher.safetensors", build=build_models)["unet"].state_dict()
    moved = [k for k, v in student["unet"].state_dict().items() if k in teacher and not torch.equal(v, teacher[k])]
    assert moved                                          # the merged LoRA changed the student's weights
    # the LoRA alone, exported as the release's unet_lora.pt, loaded as app_ms.py would and merged: the same student,
    # bit for bit
    convert.main(["--export-release-lora", str(out / "vcm_lora.safetensors"), "--out", str(tmp_path / "u.pt")])
    again, _ = make_student(load_models(w / "teacher.safetensors", build=build_models)["unet"], 0)
    load_release_lora(again, torch.load(tmp_path / "u.pt", weights_only=True), rank=4)
    merged = merge_lora(again).state_dict()
    assert merged.keys() == student["unet"].state_dict().keys()
    assert all(torch.equal(v, student["unet"].state_dict()[k]) for k, v in merged.items())


def test_train_py_distils_an_ms_teacher_with_both_real_rewards(folder, tmp_path, monkeypatch):
    """--preset ms's path at toy size: a converted MS teacher, a rank-4 LoRA student, and HPSv2.1 and ViCLIP read
    from files in the release's formats by the real loaders (their architectures swapped for tiny ones at 224 px),
    2 steps through train.py; both reward terms are logged."""
    hps, viclip = tmp_path / "HPS_v2.1_compressed.pt", tmp_path / "ViClip-InternVid-10M-FLT.pth"
    torch.save({"state_dict": open_clip.CLIP(**CLIP_224).state_dict()}, hps)
    torch.save({"model": ViCLIP(VICLIP_224).state_dict()}, viclip)
    real_hps = release.load_hpsv21
    monkeypatch.setattr(release, "load_hpsv21", lambda p: real_hps(p, clip_cfg=CLIP_224))
    monkeypatch.setattr(release, "viclip_l14", lambda: VICLIP_224)
    w = tmp_path / "weights"
    convert.convert(folder, w, train={**convert.MS_TRAIN, "frames": 8, "height": 16, "width": 16})
    train.main(["--preset", "ms", "--teacher", str(w / "teacher.safetensors"), "--hps", str(hps), "--viclip",
                str(viclip), "--lora-rank", "4", "--turbo-steps", "2", "--size", "16", "--height", "0", "--width",
                "0", "--frames", "8", "--precision", "fp32", "--out", str(tmp_path / "run"), "--save-every", "100",
                "--val-every", "0", "--grad-ckpt-reward", *TRAIN_CPU])
    log = load_models(tmp_path / "run" / "turbo.safetensors", build=build_models)["meta"]["stats"]["log"]
    assert len(log) == 2 and all({"cd", "r_img", "r_vid"} <= set(step) for step in log)
