"""ms/models.py: ModelScopeT2V's UNet through diffusers' own class. At full size (on the meta device) the student's
LoRA is the released unet_lora.pt's list, tensor for tensor; at toy size the student starts as its teacher, and
turbo.py's CD loss trains its LoRA through the same code as VC2's."""
import json
import subprocess
import sys

import pytest
import torch

import turbo
from conftest import FIXTURES, ROOT
from lora import AdaptersOff, lora_tensors, make_student
from ms.models import MS_RANK, MSUNet, MSUNetConfig, load_release_lora, ms_unet, tiny_ms_unet

MANIFEST = FIXTURES / "ms_lora_manifest"


def test_the_full_size_config_is_the_one_the_manifest_was_made_with():
    assert ms_unet().diffusers == json.loads((MANIFEST / "unet_config.json").read_text())


def test_the_students_lora_is_the_released_list_tensor_for_tensor():
    """lora.make_student on the teacher (as train.py builds every student) gives the 1150 tensors of the released
    list, in its order, with its shapes: module k's up is tensor 2k, its down 2k + 1."""
    with torch.device("meta"):
        teacher = MSUNet(ms_unet())
    student, params = make_student(teacher, MS_RANK)
    ours = [(i, name.removeprefix("unet.").rsplit(".", 2)[0], name.rsplit(".", 2)[1], "x".join(map(str, t.shape)))
            for i, (name, t) in enumerate(lora_tensors(student).items())]
    rows = [tuple(int(f) if j == 0 else f for j, f in enumerate(l.split("\t")))
            for l in (MANIFEST / "lora_list.tsv").read_text().splitlines()]
    assert ours == rows
    assert sum(p.numel() for p in params) == 58_497_696 and len(params) == 1150
    assert student.w_proj.base.weight.shape == (320, 256) and not student.w_proj.base.weight.requires_grad


def tiny_pair(seed=0):
    torch.manual_seed(seed)
    teacher = MSUNet(tiny_ms_unet()).eval().requires_grad_(False)
    for p in teacher.parameters():                   # diffusers zero-inits some output layers: make all matter
        p.data.normal_(0, 0.05)
    return teacher, make_student(teacher, 4)


def test_a_tiny_student_starts_as_its_teacher():
    teacher, (student, _) = tiny_pair()
    x, ctx = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 5, 64)
    t, w = torch.tensor([10, 700]), torch.tensor([5.0, 12.0])
    assert torch.equal(student.eval()(x, t, ctx, w=w), teacher(x, t, ctx))      # zero cond_proj, zero LoRA up
    assert torch.equal(AdaptersOff(student)(x, t, ctx, 16), teacher(x, t, ctx))


def test_the_cd_loss_trains_the_ms_students_lora():
    """turbo.cd_loss, unchanged: the student, its teacher read off it (adapters off) and the online target; the
    gradient reaches the LoRA, the w projection's LoRA included, and nothing else."""
    teacher, (student, params) = tiny_pair(1)
    z0, ctx = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 5, 64)
    draws = turbo.cd_draws(2, z0.shape[1:], generator=torch.Generator().manual_seed(0))
    loss, f_theta, _ = turbo.cd_loss(student.train(), student, AdaptersOff(student), z0, ctx, torch.zeros_like(ctx),
                                     8, turbo.vc2_alphas_cumprod(), draws)
    loss.backward()
    assert f_theta.shape == z0.shape and torch.isfinite(loss)
    assert all(p.grad is not None for p in params)
    assert student.w_proj.up.weight.grad.abs().sum() > 0
    trained = {id(p) for p in params}
    assert all(p.grad is None for p in student.parameters() if id(p) not in trained)


def test_the_toy_and_vc2_paths_never_import_diffusers():
    """diffusers is for ms/ alone: every other script and module imports without it."""
    code = ("import sys, train, sample, turbo, toy.prepare, toy.evaluate, vc2.convert, vc2.data, vc2.evaluate, "
            "benchmarks.__main__; print(sorted(m for m in sys.modules if m.split('.')[0] == 'diffusers'))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stderr[-2000:]


def test_a_list_in_the_layout_without_diffusers_peft_backend_is_named_as_such():
    """The release's injector skips diffusers 0.25's LoRACompatible layers when peft is not installed: 250 tensors
    instead of 1150 (tests/fixtures/ms_lora_manifest/README.md). Such a list is refused in one line that says so."""
    rows = [l.split("\t") for l in (MANIFEST / "lora_list_without_peft.tsv").read_text().splitlines()]
    tensors = [torch.zeros(*map(int, r[3].split("x")), device="meta") for r in rows]
    with torch.device("meta"):
        student = MSUNet(MSUNetConfig(ms_unet().diffusers, guidance_embed_dim=256))
    with pytest.raises(ValueError, match="a list of 250 tensors: the layout the release's injector writes when "
                                         "diffusers runs without its PEFT backend"):
        load_release_lora(student, tensors)
