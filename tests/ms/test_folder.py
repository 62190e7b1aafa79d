"""ms/models.py: ModelScopeT2V from a local diffusers folder (as a Hugging Face snapshot lays it out), its encoders
behind encoders.py's interfaces, and one line for a folder that is not one."""
import json
import shutil

import open_clip
import pytest
import torch
from safetensors import safe_open

import sample
import train
import turbo
from conftest import CLIP_224, FIXTURES, TRAIN_CPU, VICLIP_224, edit_json, write_ms_folder
from lora import add_lora, make_student, merge_lora
from machinery.checkpoint import load_models
from machinery.cli import run_cli
from ms import convert
from ms.models import MS_RANK, MSUNet, MSUNetConfig, build_models, load_ms_folder, load_release_lora, release_lora_list
from rewards import ViCLIP
from vc2 import release


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny text-to-video-ms-1.7b folder (conftest.write_ms_folder)."""
    return write_ms_folder(tmp_path_factory.mktemp("ms"))


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


# (what is changed, the file, a phrase of the one line): each a config.json or tokenizer value of the wrong type
BAD_VALUES = [
    ({"block_out_channels": 32}, "unet/config.json", "block_out_channels is 32; UNet3DConditionModel takes a list "
                                                      "of int"),
    ({"layers_per_block": "2"}, "unet/config.json", 'layers_per_block is "2"; UNet3DConditionModel takes int'),
    ({"norm_eps": True}, "unet/config.json", "norm_eps is true; UNet3DConditionModel takes a finite number"),
    ({"down_block_types": ["CrossAttnDownBlock3D", 3]}, "unet/config.json", "takes a list of str"),
    ({"scaling_factor": "0.18"}, "vae/config.json", "scaling_factor is \"0.18\"; AutoencoderKL takes a finite number"),
    ({"hidden_size": [64]}, "text_encoder/config.json", "hidden_size is [64]; CLIPTextConfig takes int"),
    ({"pad_token": ["!"]}, "tokenizer/special_tokens_map.json", 'pad_token is ["!"]; give the pad token as a string'),
    ({"pad_token": "<pad>"}, "tokenizer/special_tokens_map.json", "no entry for the pad token '<pad>'"),
    ({"!": "0"}, "tokenizer/vocab.json", "the pad token '!' is \"0\", not a token id"),
]


@pytest.mark.parametrize("change, file, phrase", BAD_VALUES, ids=[next(iter(c)) for c, _, _ in BAD_VALUES])
def test_a_config_value_of_the_wrong_type_is_one_line_naming_the_file_and_the_key(folder, tmp_path, change, file,
                                                                                  phrase):
    """The values the loader and the libraries read, of the wrong type: one ValueError naming the file and the key
    (not a TypeError from inside diffusers or transformers)."""
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    edit_json(bad / file, **change)
    named = bad / ("tokenizer/vocab.json" if change.get("pad_token") == "<pad>" else file)   # (the id's file)
    with pytest.raises(ValueError) as e:
        load_ms_folder(bad)
    assert len(str(e.value).splitlines()) == 1 and str(named) in str(e.value) and phrase in str(e.value), e.value


@pytest.mark.parametrize("part, kw, phrase", [
    ("vae", {"latent_channels": 8}, "unet/config.json: in_channels is 4, but vae/config.json's latent_channels is 8"),
    ("text_encoder", {"hidden_size": 32}, "unet/config.json: cross_attention_dim is 64, but "
                                          "text_encoder/config.json's hidden_size is 32"),
    ("text_encoder", {"max_position_embeddings": 16}, "text_encoder/config.json: vocab_size 49408 and "
                                                      "max_position_embeddings 16; the tokens fed to it need at least "
                                                      "49408 and 77"),
    ("text_encoder", {"vocab_size": 1000}, "text_encoder/config.json: vocab_size 1000")])
def test_parts_that_do_not_fit_each_other_are_one_line(folder, tmp_path, part, kw, phrase):
    """A part whose weights fit its own config but not the other parts (the latents, the text embedding, the 77 CLIP
    BPE ids the text tower is fed): one ValueError naming the file and the keys, before anything runs."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from conftest import TINY_MS_TEXT, TINY_MS_VAE
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad, ignore=shutil.ignore_patterns(part))
    model = AutoencoderKL(**{**TINY_MS_VAE, **kw}) if part == "vae" else \
        CLIPTextModel(CLIPTextConfig(**{**TINY_MS_TEXT, "projection_dim": kw.get("hidden_size", 64), **kw}))
    model.save_pretrained(bad / part)
    with pytest.raises(ValueError) as e:
        load_ms_folder(bad)
    assert len(str(e.value).splitlines()) == 1 and f"{bad}/{phrase}" in str(e.value), e.value


@pytest.mark.parametrize("part, change", [("unet", {"layers_per_block": 2}), ("unet", {"layers_per_block": 0}),
                                          ("vae", {"layers_per_block": 2}),
                                          ("text_encoder", {"num_hidden_layers": 1}),
                                          ("text_encoder", {"num_hidden_layers": 3}),
                                          ("text_encoder", {"intermediate_size": 64})])
def test_a_config_that_disagrees_with_its_weights_is_refused_naming_the_first_tensor(folder, tmp_path, part, change):
    """Weights with more or fewer tensors than the config's model, or of other shapes: diffusers and transformers
    load what fits and only warn, so half a UNet could be written out silently. Here it is one ValueError that names
    the part, how many tensors do not fit, and the first of them, which is one the model or the file really has."""
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    edit_json(bad / part / "config.json", **change)
    with pytest.raises(ValueError) as e:
        load_ms_folder(bad)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(f"{bad / part}: the weights do not fit config.json ("), msg
    kind, first = msg.split(" (")[1].split()[1].strip(",);"), msg.split("; the first: ")[1].split(" ")[0]
    with safe_open(str(next((folder / part).glob("*.safetensors"))), "pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    from diffusers import AutoencoderKL, UNet3DConditionModel  # the model the changed config.json describes
    from transformers import CLIPTextConfig, CLIPTextModel
    model = (CLIPTextModel(CLIPTextConfig.from_pretrained(bad / part)) if part == "text_encoder" else
             {"unet": UNet3DConditionModel, "vae": AutoencoderKL}[part].from_config(
                 UNet3DConditionModel.load_config(bad / part)))
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {"missing": first in wanted and first not in stored, "unexpected": first in stored and first not in wanted,
            "misshapen": stored.get(first, 0) != wanted.get(first, 0)}[kind], (kind, first)


def test_convert_checks_the_lora_before_it_writes_anything(folder, tmp_path, capsys):
    """python -m ms.convert --ms FOLDER --out OUT --lora BAD: one line, and nothing in OUT, so that the same command
    with a good LoRA runs next (a teacher left there would make it refuse OUT)."""
    out = tmp_path / "out"
    bad = tmp_path / "short_lora.pt"
    torch.save([torch.zeros(2, 2)] * 3, bad)
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: convert.main(["--ms", str(folder), "--out", str(out), "--lora", str(bad)]))
    assert "list length: 3 tensors" in e.value.code and not out.exists()
    student, _ = make_student(load_ms_folder(folder)["unet"], 0)
    add_lora(student, MS_RANK)
    good = tmp_path / "unet_lora.pt"
    torch.save(release_lora_list(student), good)
    convert.main(["--ms", str(folder), "--out", str(out), "--lora", str(good)])
    assert sorted(p.name for p in out.iterdir()) == ["teacher.safetensors", "turbo.safetensors"]


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
    2 steps through train.py on the toy world's 8-frame clips at 32 px (at 16 px its shapes leave the frame within 8
    frames: train.py refuses that); both reward terms are logged."""
    hps, viclip = tmp_path / "HPS_v2.1_compressed.pt", tmp_path / "ViClip-InternVid-10M-FLT.pth"
    torch.save({"state_dict": open_clip.CLIP(**CLIP_224).state_dict()}, hps)
    torch.save({"model": ViCLIP(VICLIP_224).state_dict()}, viclip)
    real_hps = release.load_hpsv21
    monkeypatch.setattr(release, "load_hpsv21", lambda p: real_hps(p, clip_cfg=CLIP_224))
    monkeypatch.setattr(release, "viclip_l14", lambda: VICLIP_224)
    w = tmp_path / "weights"
    convert.convert(folder, w, train={**convert.MS_TRAIN, "frames": 8, "height": 16, "width": 16})
    train.main(["--preset", "ms", "--teacher", str(w / "teacher.safetensors"), "--hps", str(hps), "--viclip",
                str(viclip), "--lora-rank", "4", "--turbo-steps", "2", "--size", "32", "--height", "0", "--width",
                "0", "--frames", "8", "--precision", "fp32", "--out", str(tmp_path / "run"), "--save-every", "100",
                "--val-every", "0", "--grad-ckpt-reward", *TRAIN_CPU])
    log = load_models(tmp_path / "run" / "turbo.safetensors", build=build_models)["meta"]["stats"]["log"]
    assert len(log) == 2 and all({"cd", "r_img", "r_vid"} <= set(step) for step in log)
