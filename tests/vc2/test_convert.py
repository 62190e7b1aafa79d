"""vc2/convert.py: the real VC2 checkpoint's 2039-key manifest on the meta device, the T2V-Turbo LoRA order rule against
the release manifest, refusal of pickles that run code, the CLI's failures, and a tiny end-to-end conversion that
machinery.checkpoint.load_models reads back (checked against the ORIGINAL VideoCrafter2 parity fixtures).

    OMP_NUM_THREADS=1 python -m pytest -q tests/vc2/test_convert.py
"""
import copy
import json
import math
import re
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import (FIXTURES, ROOT, RunsCode, load_fixture, load_text_sd, text_fixture_config, vae_fixture_config,
                      vc2_keys)
from encoders import AutoencoderKL, TextEncoder, openclip_vit_h14, sd_kl_f8, toy_ae, toy_text
from lora import LoRA, lora_tensors, make_student, merge_lora
from machinery.checkpoint import load_models, model_meta, read_meta, safe_torch_load, save_checkpoint, save_tensors
from tiny_unet3d import UNet3D, toy_unet, vc2
from vc2 import convert
from vc2.convert import config_from_vc2, load_vc2_text, load_vc2_unet, load_vc2_vae, ours_key_to_vc2, vc2_key_to_ours
from vc2.release import find_file, resolve_release_files


def ref(*parts):
    return FIXTURES.joinpath(*parts)


def manifest():
    """model.ckpt's 2039 keys as meta tensors of the real shapes, in the file's order (UNet, VAE, text, buffers)."""
    return vc2_keys("vc2_unet_keys.tsv", "vc2_vae_keys.tsv", "vc2_text_keys.tsv", "vc2_other_keys.tsv")


def lora_rows():
    """lora_list.tsv: (index, VC2 module name, 'up' | 'down', shape), in list order."""
    rows = [l.split("\t") for l in ref("t2v_turbo_lora_manifest", "lora_list.tsv").read_text().splitlines()]
    return [(int(i), m, role, [int(x) for x in s.split("x")] if s else []) for i, m, role, s in rows]


def vc2_buffers():
    """The 13 schedule buffers as VideoCrafter2's register_schedule makes them: float64, stored as fp32
    (lvdm/models/ddpm3d.py:113-165)."""
    betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    post_var = betas * (1 - prev) / (1 - ac)
    b = {"betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": prev, "sqrt_alphas_cumprod": ac.sqrt(),
         "sqrt_one_minus_alphas_cumprod": (1 - ac).sqrt(), "log_one_minus_alphas_cumprod": (1 - ac).log(),
         "sqrt_recip_alphas_cumprod": ac.rsqrt(), "sqrt_recipm1_alphas_cumprod": (1 / ac - 1).sqrt(),
         "posterior_variance": post_var, "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
         "posterior_mean_coef1": betas * prev.sqrt() / (1 - ac),
         "posterior_mean_coef2": (1 - prev) * (1 - betas).sqrt() / (1 - ac),
         "scale_arr": torch.cat([torch.linspace(1.0, 0.7, 400, dtype=torch.float64), torch.full((1000,), 0.7)])}
    return {k: v.float() for k, v in b.items()}


def release_like_lora(vc2_unet_sd, generator):
    """A synthetic unet_lora.pt for a student whose teacher has these VC2 keys, built from the manifest's rules alone
    (tests/fixtures/t2v_turbo_lora_manifest/notes.md, "Order rule" + "Shapes"), not from our wrappers: module order
    release_lora_order, r = min(64, in, out), up (out, r, 1...) then down (r, in, kernel...). Small random values,
    all different."""
    shapes = {k.removeprefix("model.diffusion_model.")[:-len(".weight")]: tuple(v.shape)
              for k, v in vc2_unet_sd.items()}
    shapes["time_cond_proj"] = (shapes["time_embed.0"][1], 256)
    out = []
    for name in convert.release_lora_order(vc2_unet_sd):
        o, i, *kernel = shapes[name]
        r = min(64, i, o)
        out += [torch.randn(o, r, *[1] * len(kernel), generator=generator) * 0.02,
                torch.randn(r, i, *kernel, generator=generator) * 0.02]
    return out


# ----------------------------------------------------------------------------------------------------------------
# The real model.ckpt's layout, on the meta device


def test_full_manifest_converts_on_meta():
    sd = manifest()
    assert len(sd) == 2039
    parts = convert.split_vc2_checkpoint({"state_dict": sd})  # the Lightning-style wrapper is accepted too
    assert {k: len(v) for k, v in parts.items()} == {"unet": 1484, "vae": 248, "text": 294, "buffers": 13}
    ours, buffers = convert.convert_vc2(sd)
    assert sum(map(len, ours.values())) + len(buffers) == 2039
    with torch.device("meta"):
        models = {"unet": UNet3D(vc2()), "text": TextEncoder(openclip_vit_h14()), "ae": AutoencoderKL(sd_kl_f8())}
    for name, m in models.items():  # strict: every key of every model filled, nothing left over
        m.load_state_dict(ours[name], strict=True, assign=True)
    numel = sum(v.numel() for v in sd.values())
    assert numel == json.loads(ref("vc2_keys", "vc2_manifest_summary.json").read_text())["total_numel"]


def test_bad_checkpoint_gives_one_error_naming_everything():
    sd = manifest()
    del sd["model.diffusion_model.out.2.bias"]
    del sd["scale_arr"]
    sd["model_ema.decay"] = torch.empty([], device="meta")
    sd["first_stage_model.bogus.weight"] = torch.empty(3, device="meta")
    sd["cond_stage_model.model.ln_final.weight"] = torch.empty(1023, device="meta")
    sd["model.diffusion_model.input_blocks.1.0.temopral_conv.conv1.2.weight"] = torch.empty(320, 320, 3, device="meta")
    with pytest.raises(ValueError) as e:
        convert.convert_vc2(sd)
    msg = str(e.value)
    # the first line counts them by kind and names the file that lists them all; the first few follow
    assert "(6 problems: 1 unknown key, 1 unet missing, 1 unet wrong shape, 1 text wrong shape, 1 ae unexpected, " \
           "1 buffers missing; first: unknown key: model_ema.decay (no VC2 prefix" in msg.splitlines()[0]
    msg = Path(re.search(r"all 6 listed in (\S+)\)", msg)[1]).read_text()
    for needle in ("unet missing: model.diffusion_model.out.2.bias (4,)", "buffers missing: scale_arr (1400,)",
                   "unknown key: model_ema.decay", "ae unexpected: first_stage_model.bogus.weight",
                   "text wrong shape: cond_stage_model.model.ln_final.weight (1023,), ours (1024,)",
                   # reported under the checkpoint's own (misspelt) name
                   "unet wrong shape: model.diffusion_model.input_blocks.1.0.temopral_conv.conv1.2.weight "
                   "(320, 320, 3)"):
        assert needle in msg, needle
    with pytest.raises(ValueError, match="model_ema.decay"):
        convert.split_vc2_checkpoint(sd)


def test_check_schedule():
    buffers = vc2_buffers()
    summary = json.loads(ref("vc2_keys", "vc2_manifest_summary.json").read_text())["schedule_samples"]
    # the helper makes the checkpoint's values: first/last samples of the real file, bit for bit
    assert buffers["alphas_cumprod"][[0, 999]].tolist() == [summary["alphas_cumprod"][0], summary["alphas_cumprod"][-1]]
    assert buffers["betas"][[0, 999]].tolist() == [summary["betas"][0], summary["betas"][-1]]
    convert.check_schedule(buffers)
    bad = dict(buffers, alphas_cumprod=buffers["alphas_cumprod"].clone())
    bad["alphas_cumprod"][500] *= 1.001
    with pytest.raises(ValueError, match="t=500"):
        convert.check_schedule(bad)
    with pytest.raises(ValueError, match="shape"):
        convert.check_schedule(dict(buffers, alphas_cumprod=buffers["alphas_cumprod"][:999]))
    with pytest.raises(ValueError, match="no alphas_cumprod"):
        convert.check_schedule({})


# ----------------------------------------------------------------------------------------------------------------
# The released LoRA list: order rule, shapes, merge


def test_lora_order_rule_full_size_on_meta():
    modules = [l.split("\t")[1] for l in ref("t2v_turbo_lora_manifest", "lora_modules.tsv").read_text().splitlines()]
    modules = modules[1:]  # a header line
    rows = lora_rows()
    assert len(rows) == 1150 and len(modules) == 575
    unet_keys = {k: v for k, v in manifest().items() if k.startswith("model.diffusion_model.")}
    assert convert.release_lora_order(unet_keys) == modules  # the rule, applied to VC2's own key order
    tensors = [torch.empty(shape, device="meta") for _, _, _, shape in rows]
    with torch.device("meta"):
        student = UNet3D(replace(vc2(), guidance_embed_dim=256))
    assert convert.load_release_lora(student, tensors, order=modules) == 1150
    for i, module, role, shape in rows:  # list index i sits on the module lora_list.tsv names
        m = student.get_submodule(vc2_key_to_ours(module))
        assert isinstance(m, LoRA) and list(getattr(m, role).weight.shape) == shape, (i, module, role)
    assert not isinstance(student.init_attn[0].proj_in, LoRA)  # Conv1d in VC2: no LoRA in the release
    with torch.device("meta"):
        plain = UNet3D(replace(vc2(), guidance_embed_dim=256)).state_dict()
    assert list(convert.merged_tensors(student)[0]) == list(plain)  # the merged student has the plain keys, in order

    def fresh():
        with torch.device("meta"):
            return UNet3D(replace(vc2(), guidance_embed_dim=256))
    swapped = tensors[:14] + [tensors[15], tensors[14]] + tensors[16:]  # up/down of emb_layers.1 exchanged
    with pytest.raises(ValueError, match=r"tensor 14 \(input_blocks.1.0.emb_layers.1 up\)"):
        convert.load_release_lora(fresh(), swapped)
    with pytest.raises(ValueError, match="1149 tensors; the student needs 1150"):
        convert.load_release_lora(fresh(), tensors[:-1])
    wrong_order = modules[:13] + [modules[14], modules[13]] + modules[15:]
    with pytest.raises(ValueError, match="first differ at module 13"):
        convert.load_release_lora(fresh(), tensors, order=wrong_order)
    with torch.device("meta"), pytest.raises(ValueError, match="teacher"):
        convert.load_release_lora(UNet3D(vc2()), tensors)


def test_a_student_trained_here_has_the_release_lora_layout_full_size_on_meta():
    """lora.make_student at VC2 size (LoRA 64): lora.lora_tensors, the order and shapes export_release_lora writes,
    is lora_list.tsv's, row for row; time_cond_proj (w_proj) is trained through its LoRA on a frozen zero base, and
    init_attn's Conv1d-in-VC2 projections are not wrapped, so nothing the student learns is outside the list."""

    with torch.device("meta"):
        student, params = make_student(UNet3D(vc2()), lora_rank=64)
    tensors = lora_tensors(student)
    got = [(ours_key_to_vc2(k.rsplit(".", 2)[0]), k.rsplit(".", 2)[1], list(v.shape)) for k, v in tensors.items()]
    assert got == [(m, role, shape) for _, m, role, shape in lora_rows()]
    assert len(params) == len(tensors) == 1150                  # the trained tensors are exactly the list's
    assert {id(p) for p in params} == {id(v) for v in student.parameters() if v.requires_grad}
    assert not student.w_proj.base.weight.requires_grad


@pytest.fixture(scope="module")
def tiny():
    """The ORIGINAL-code fixtures: (UNet kwargs config, unet_sd in VC2's key order, io, vae_sd, text_sd, configs)."""
    cfg = json.loads(ref("vc2_tiny_parity", "config.json").read_text())
    return dict(unet_config=config_from_vc2(cfg["unet_kwargs"]), unet_sd=load_fixture("vc2_tiny_parity", "unet_sd.pt"),
                io=load_fixture("vc2_tiny_parity", "io.pt"), vae_sd=load_fixture("vae_tiny_parity", "vae_sd.pt"),
                text_sd=load_text_sd("text_tiny_parity", "text_sd.pt"), ae_config=vae_fixture_config(),
                text_config=text_fixture_config())


def student_forward(unet, io, w=7.5):
    with torch.no_grad():
        return unet(io["x"], io["timesteps"], io["context"], io["fps"], w=w)


def test_lora_positions_and_merge_tiny(tiny):
    """At the fixture's tiny size: list position -> module follows the rule derived from the ORIGINAL UNet's key
    order, and the merged student computes what the unmerged one does."""
    gen = torch.Generator().manual_seed(0)
    teacher_keys = {"model.diffusion_model." + k: v for k, v in tiny["unet_sd"].items()}
    tensors, order = release_like_lora(teacher_keys, gen), convert.release_lora_order(teacher_keys)
    student = load_vc2_unet(UNet3D(replace(tiny["unet_config"], guidance_embed_dim=256)), tiny["unet_sd"]).eval()
    torch.nn.init.normal_(student.w_proj.weight, std=0.05, generator=gen)
    assert convert.load_release_lora(student, tensors, order=order) == len(tensors)
    for k, name in enumerate(order):
        m = student.get_submodule(vc2_key_to_ours(name))
        assert torch.equal(m.up.weight, tensors[2 * k]) and torch.equal(m.down.weight, tensors[2 * k + 1])
    placeholders, materialize = convert.merged_tensors(student)
    merged_sd = {k: materialize(k) if v.is_meta else v for k, v in placeholders.items()}
    reference = merge_lora(copy.deepcopy(student)).state_dict()  # lora.py's in-place merge
    assert list(merged_sd) == list(reference)
    assert all((merged_sd[k] - v).abs().max() < 1e-6 for k, v in reference.items())
    merged = UNet3D(student.config).eval()
    merged.load_state_dict(merged_sd, strict=True)
    y_lora, y_merged = student_forward(student, tiny["io"]), student_forward(merged, tiny["io"])
    assert (y_merged - y_lora).abs().max() < 1e-5
    base = student.input_blocks[1][1].proj_in.base.weight
    assert (merged_sd["input_blocks.1.1.proj_in.weight"] - base).abs().max() > 1e-3  # the LoRA did change W


# ----------------------------------------------------------------------------------------------------------------
# Files that must be refused, and the CLI


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_that_runs_code_is_refused(tmp_path, zip_format):
    marker = tmp_path / "side_effect_happened"
    bad = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"betas": torch.zeros(3)}, "x": RunsCode(str(marker))}, bad,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ValueError, match="refused to load .*could run code"):
        safe_torch_load(bad)
    with pytest.raises(SystemExit) as e:
        convert.main(["--vc2", str(bad), "--out", str(tmp_path / "out")])
    assert "refused" in str(e.value.code)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_legacy_format_loads_without_mmap(tmp_path):
    path = tmp_path / "old.pt"
    torch.save([torch.arange(3.0)], path, _use_new_zipfile_serialization=False)
    assert torch.equal(safe_torch_load(path)[0], torch.arange(3.0))


def test_cli_fails_clearly_on_missing_and_corrupt_files(tmp_path):
    run = subprocess.run([sys.executable, "-m", "vc2.convert", "--vc2", str(tmp_path / "nope.ckpt"), "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode != 0 and "no such file" in run.stderr and "nope.ckpt" in run.stderr
    corrupt = tmp_path / "model.ckpt"
    torch.save({"a": torch.zeros(1000)}, corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:300])  # a truncated download
    with pytest.raises(SystemExit) as e:
        convert.main(["--vc2", str(corrupt), "--out", str(tmp_path / "out")])
    assert "not a readable torch checkpoint" in str(e.value.code) and "model.ckpt" in str(e.value.code)
    with pytest.raises(SystemExit) as e:  # a readable file that is not VC2
        torch.save({"foo": torch.zeros(1)}, corrupt)
        convert.main(["--vc2", str(corrupt), "--out", str(tmp_path / "out")])
    assert "unknown key" in str(e.value.code)


# ----------------------------------------------------------------------------------------------------------------
# machinery/checkpoint.py's streaming writer and lazy loader


def test_save_tensors_is_read_by_safetensors(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {"f32": torch.randn(3, 5, generator=g), "t": torch.randn(4, 6, generator=g).t(),  # non-contiguous
               "f16": torch.randn(7, generator=g).half(), "bf16": torch.randn(2, 3, generator=g).bfloat16(),
               "i64": torch.arange(5), "bool": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5),
               "empty": torch.zeros(0, 3), "lazy": torch.empty(2, 2, device="meta")}
    path = save_tensors(tmp_path / "x.safetensors", tensors, {"k": "v"},
                        materialize=lambda name: torch.full((2, 2), 7.0))
    back = load_file(str(path))  # safetensors' own reader, which validates the header and the offsets
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(back[k], torch.full((2, 2), 7.0) if k == "lazy" else v), k
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"k": "v"}
    with pytest.raises(ValueError, match="materialized"):
        save_tensors(tmp_path / "y.safetensors", {"lazy": torch.empty(2, device="meta")}, {}, lambda n: torch.zeros(3))


def test_load_models_checks_everything_and_casts(tmp_path):
    unet, text, ae = UNet3D(toy_unet()), TextEncoder(replace(toy_text(), vocab_size=64)), AutoencoderKL(toy_ae())
    meta = model_meta(unet, text, ae, kind="teacher", train={})
    path = save_checkpoint(tmp_path / "a.safetensors", {"unet": unet, "text": text, "ae": ae}, meta)
    m = load_models(path, dtype=torch.float16)
    assert m["unet"].out[2].weight.dtype == torch.float16 and not m["unet"].out[2].weight.requires_grad
    assert torch.equal(m["text"].positional_embedding, text.positional_embedding.half())
    sd = {f"{name}.{k}": v for name, m in (("unet", unet), ("text", text), ("ae", ae))
          for k, v in m.state_dict().items()}
    del sd["unet.out.2.bias"]
    sd["unet.bogus"] = torch.zeros(1)
    sd["text.ln_final.weight"] = torch.zeros(3)
    save_tensors(tmp_path / "b.safetensors", sd, {"t2v_turbo": json.dumps(meta)})
    with pytest.raises(ValueError, match="3 problems") as e:
        load_models(tmp_path / "b.safetensors")
    for needle in ("missing: unet.out.2.bias", "unexpected: unet.bogus", "wrong shape: text.ln_final.weight"):
        assert needle in str(e.value)


# ----------------------------------------------------------------------------------------------------------------
# Tiny end to end: a VC2-layout model.ckpt -> vc2/convert.py -> machinery.checkpoint.load_models


def test_tiny_end_to_end(tmp_path, tiny):
    ckpt = {"model.diffusion_model." + k: v for k, v in tiny["unet_sd"].items()}
    ckpt.update({"first_stage_model." + k: v for k, v in tiny["vae_sd"].items()})
    ckpt.update({"cond_stage_model." + k: v for k, v in tiny["text_sd"].items()})  # text_sd keys are 'model.*'
    ckpt.update(vc2_buffers())
    torch.save({"state_dict": ckpt}, tmp_path / "model.ckpt")
    gen = torch.Generator().manual_seed(1)
    lora = release_like_lora({"model.diffusion_model." + k: v for k, v in tiny["unet_sd"].items()}, gen)
    torch.save(lora, tmp_path / "unet_lora.pt")
    configs = dict(unet_config=tiny["unet_config"], text_config=tiny["text_config"], ae_config=tiny["ae_config"])
    torch.save(lora[:-1], tmp_path / "short_lora.pt")
    short = r"short_lora.pt: (?s:.*)list length: 747 tensors; the student needs 748"
    with pytest.raises(ValueError, match=short), pytest.warns(UserWarning):
        convert.convert(tmp_path / "model.ckpt", tmp_path / "bad", lora=tmp_path / "short_lora.pt", **configs)
    assert not (tmp_path / "bad").exists()  # checked before anything is written
    with pytest.warns(UserWarning, match="time_cond_proj"):
        paths = convert.convert(tmp_path / "model.ckpt", tmp_path / "out", lora=tmp_path / "unet_lora.pt", **configs)
    assert [p.name for p in paths] == ["teacher.safetensors", "turbo.safetensors"]

    # the teacher: the same function as the original-named weights loaded directly (and as the original code)
    teacher = load_models(paths[0])
    assert teacher["meta"]["kind"] == "teacher" and teacher["meta"]["train"] == convert.VC2_TRAIN
    io = tiny["io"]
    reference = load_vc2_unet(UNet3D(tiny["unet_config"]), tiny["unet_sd"]).eval()  # original names, loaded directly
    text, ae = TextEncoder(tiny["text_config"]), AutoencoderKL(tiny["ae_config"])
    load_vc2_text(text, tiny["text_sd"]), load_vc2_vae(ae, tiny["vae_sd"])
    for got, want in ((teacher["unet"], reference), (teacher["text"], text), (teacher["ae"], ae)):
        assert list(got.state_dict()) == list(want.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), want.state_dict().values()))
    with torch.no_grad():  # so it computes the ORIGINAL UNet's output on the fixture
        y = teacher["unet"](io["x"], io["timesteps"], io["context"], io["fps"])
    assert (y - io["y"]).abs().max() <= 1e-4

    # the student: base = teacher, w_proj base = 0 (the policy), LoRA at the release's positions, merged; the
    # merge itself is checked against a forward through the wrappers in test_lora_positions_and_merge_tiny
    turbo_ = load_models(paths[1])
    assert turbo_["meta"]["kind"] == "turbo" and turbo_["meta"]["unet"]["guidance_embed_dim"] == 256
    unmerged = load_vc2_unet(UNet3D(replace(tiny["unet_config"], guidance_embed_dim=256)), tiny["unet_sd"]).eval()
    convert.load_release_lora(unmerged, lora)
    assert unmerged.w_proj.base.weight.abs().max() == 0  # our init is zero too: the same as the policy
    want = merge_lora(unmerged).state_dict()
    assert list(turbo_["unet"].state_dict()) == list(want)
    assert all((a - want[k]).abs().max() < 1e-6 for k, a in turbo_["unet"].state_dict().items())
    assert torch.equal(turbo_["unet"].w_proj.weight, lora[8] @ lora[9])  # module 4: time_cond_proj = 0 + up @ down
    assert all(torch.equal(a, b) for a, b in zip(turbo_["text"].state_dict().values(), text.state_dict().values()))

    # a merged student UNet (VC2 names, with time_cond_proj) converts to the same turbo checkpoint
    merged_sd = {ours_key_to_vc2(k): v[..., None] if k.startswith("init_attn.0.proj_") and v.ndim == 2 else v
                 for k, v in turbo_["unet"].state_dict().items()}  # app.py's merged unet.state_dict(): Conv1d there
    torch.save(merged_sd, tmp_path / "merged.pt")
    paths2 = convert.convert(tmp_path / "model.ckpt", tmp_path / "out2", merged_unet=tmp_path / "merged.pt", **configs)
    assert read_meta(paths2[1])["source"]["w_proj"] == "as stored"
    again = load_models(paths2[1])["unet"]
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), turbo_["unet"].state_dict().values()))


def test_a_path_flag_takes_the_file_or_its_hugging_face_folder(tmp_path):
    """--hps / --viclip / --internvideo2 / --vc2 / --lora: the file, its folder, or a Hugging Face cache folder
    (models--ORG--NAME/snapshots/HASH/FILE); nothing else is guessed."""
    from types import SimpleNamespace

    snap = tmp_path / "hub" / "models--xswu--HPSv2" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "HPS_v2.1_compressed.pt").write_bytes(b"x")
    for given in (snap / "HPS_v2.1_compressed.pt", snap, tmp_path / "hub" / "models--xswu--HPSv2", tmp_path / "hub"):
        assert find_file(given, "HPS_v2.1_compressed.pt") == snap / "HPS_v2.1_compressed.pt", given
    assert find_file(tmp_path, "HPS_v2.1_compressed.pt") == tmp_path            # not found: left for the caller
    cfg = resolve_release_files(SimpleNamespace(hps=str(tmp_path / "hub"), viclip="", vc2=None))
    assert cfg.hps == str(snap / "HPS_v2.1_compressed.pt") and cfg.viclip == ""


def bad_extra_files(d, unet_sd):
    """{what: path}: files that are not a T2V-Turbo LoRA list nor a merged student UNet, each of another kind."""
    d.mkdir()
    torch.save([torch.zeros(64, 64)] * 4, d / "full.pt")
    files = {name: d / f"{name.replace(' ', '_')}.pt" for name in (
        "cut short", "random bytes", "empty", "runs code", "a list of 3", "a dict", "a value not a tensor",
        "a tensor missing", "a tensor misshapen")}
    files["cut short"].write_bytes((d / "full.pt").read_bytes()[:9000])
    files["random bytes"].write_bytes(bytes(range(256)) * 40)
    files["empty"].write_bytes(b"")
    torch.save({"x": RunsCode(str(d / "side_effect"))}, files["runs code"])
    torch.save([torch.zeros(2, 2)] * 3, files["a list of 3"])
    torch.save({"lora_up.weight": torch.zeros(2, 2)}, files["a dict"])
    teacher = {"model.diffusion_model." + k: v for k, v in unet_sd.items()}
    first = next(iter(teacher))
    torch.save({**teacher, first: "not a tensor"}, files["a value not a tensor"])
    torch.save({k: v for k, v in teacher.items() if k != first}, files["a tensor missing"])
    torch.save({**teacher, first: torch.zeros(3)}, files["a tensor misshapen"])
    return files


@pytest.mark.parametrize("flag", ["lora", "merged_unet"])
def test_a_bad_lora_or_merged_unet_is_refused_before_anything_is_written(tmp_path, tiny, flag):
    """--lora and --merged-unet are loaded and checked in full before teacher.safetensors is written: every bad
    file is one ValueError whose first line (what the CLI prints) names the file and, for a state dict, the first
    tensor that does not fit; OUT stays empty and a pickle that would run code never runs."""
    ckpt = {"model.diffusion_model." + k: v for k, v in tiny["unet_sd"].items()}
    ckpt.update({"first_stage_model." + k: v for k, v in tiny["vae_sd"].items()})
    ckpt.update({"cond_stage_model." + k: v for k, v in tiny["text_sd"].items()})
    ckpt.update(vc2_buffers())
    torch.save({"state_dict": ckpt}, tmp_path / "model.ckpt")
    configs = dict(unet_config=tiny["unet_config"], text_config=tiny["text_config"], ae_config=tiny["ae_config"])
    files = bad_extra_files(tmp_path / "bad", tiny["unet_sd"])
    first = "model.diffusion_model." + next(iter(tiny["unet_sd"]))
    names = {"a value not a tensor": f"{first} is a str, not a tensor", "a tensor missing": "first: missing: ",
             "a tensor misshapen": "first: shape: "}
    for what, path in files.items():
        if flag == "lora" and what in names:
            continue                                     # (state dicts: --merged-unet's kind of file)
        with pytest.raises(ValueError) as e, warnings.catch_warnings():
            warnings.simplefilter("ignore")              # (the w_proj policy's warning comes first for a LoRA)
            convert.convert(tmp_path / "model.ckpt", tmp_path / "out", **{flag: path}, **configs)
        line = str(e.value).splitlines()[0]
        assert str(path) in line and names.get(what, "") in line, (what, line)
        assert not (tmp_path / "out").exists() and not (tmp_path / "bad" / "side_effect").exists(), what
