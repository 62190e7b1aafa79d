"""tiny_unet3d.py against the ORIGINAL VideoCrafter2 UNet (a parity fixture made by running its code), the real
checkpoint's key manifest (on the meta device), and the T2V-Turbo student's w-conditioning."""
import json
import math
from dataclasses import replace

import pytest
import torch
from einops import rearrange

from conftest import FIXTURES, load_fixture, tiny_unet, vc2_keys
from machinery.checkpoint import read_meta
from tiny_unet3d import CrossAttention, UNet3D, UNetConfig, guidance_embedding, timestep_embedding, toy_unet, vc2
from toy.world import TOY_MODELS
from vc2.convert import (check_state_dict, config_from_vc2, convert_vc2_unet, load_vc2_unet, ours_key_to_vc2,
                         vc2_key_to_ours)

TOL = 1e-4  # fp32; a faithful reimplementation reproduces y to ~1e-5


@pytest.fixture(scope="module")
def parity():
    """The tiny original-code fixture: (config, converted-and-loaded UNet3D in eval mode, io, intermediates)."""
    cfg = json.loads((FIXTURES / 'vc2_tiny_parity' / 'config.json').read_text())
    model = load_vc2_unet(UNet3D(config_from_vc2(cfg['unet_kwargs'])), load_fixture('vc2_tiny_parity', 'unet_sd.pt'))
    return (cfg, model.eval(), load_fixture('vc2_tiny_parity', 'io.pt'),
            load_fixture('vc2_tiny_parity', 'intermediates.pt'))


def run(model, io, **kw):
    with torch.no_grad():
        return model(io['x'], io['timesteps'], io['context'], io['fps'], **kw)


# ----------------------------------------------------------------------------------------------------------------
# Parity with the original code


def test_parity_output(parity):
    cfg, model, io, _ = parity
    assert sum(p.numel() for p in model.parameters()) == cfg['num_params']
    assert len(model.state_dict()) == cfg['num_state_dict_keys']
    err = (run(model, io) - io['y']).abs().max().item()
    print(f"parity: max |y - y_ref| = {err:.2e}")
    assert err <= TOL


def test_parity_intermediates(parity):
    """Every module output the fixture recorded: time_embed, fps_embedding, each input block, init_attn,
    middle_block, each output block, out. Our module names are VC2's, so the names hook directly."""
    _, model, io, inter = parity
    got = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda m, i, o, name=name: got.__setitem__(name, o.detach().clone())) for name in inter]
    try:
        run(model, io)
    finally:
        for h in hooks:
            h.remove()
    errs = {name: (got[name] - want).abs().max().item() for name, want in inter.items()}
    print("intermediates max abs err:", {k: f"{v:.1e}" for k, v in errs.items()})
    assert len(errs) == 17 and max(errs.values()) <= TOL, errs


def test_parity_batch_and_int_conditioning(parity):
    """A batch of 2 equals two single calls; python ints for t and fps work like (b,) tensors."""
    _, model, io, _ = parity
    x2, ctx2 = torch.cat([io['x'], io['x'].flip(2)]), io['context'].repeat(2, 1, 1)
    with torch.no_grad():
        y2 = model(x2, int(io['timesteps']), ctx2, int(io['fps']))
        y_flip = model(x2[1:], io['timesteps'], ctx2[1:], io['fps'])
    assert (y2[:1] - io['y']).abs().max() <= TOL and (y2[1:] - y_flip).abs().max() <= TOL


# ----------------------------------------------------------------------------------------------------------------
# The real VC2 layout, on the meta device


def test_vc2_manifest_loads_on_meta():
    sd = vc2_keys('vc2_unet_keys.tsv')
    assert len(sd) == 1484
    with torch.device('meta'):
        teacher, student = UNet3D(vc2()), UNet3D(replace(vc2(), guidance_embed_dim=256))
    converted = convert_vc2_unet(sd, expected=teacher.state_dict())  # raises on any mismatch
    assert set(converted) == set(teacher.state_dict())
    assert sum(p.numel() for p in teacher.parameters()) == 1_413_284_420
    assert sum(p.numel() for p in student.parameters()) == 1_413_284_420 + 320 * 256
    load_vc2_unet(student, sd)  # a teacher checkpoint fits a student: only w_proj is absent
    # T2V-Turbo's student checkpoint key `time_cond_proj.weight` passes through as w_proj
    sd['model.diffusion_model.time_cond_proj.weight'] = torch.empty(320, 256, device='meta')
    assert set(convert_vc2_unet(sd, expected=student.state_dict())) == set(student.state_dict())


def test_key_maps_round_trip():
    for key in vc2_keys('vc2_unet_keys.tsv'):
        ours = vc2_key_to_ours(key)
        assert 'temopral' not in ours and ours_key_to_vc2(ours) == key.removeprefix('model.diffusion_model.')
    assert vc2_key_to_ours('input_blocks.1.0.temopral_conv.conv1.2') == 'input_blocks.1.0.temporal_conv.conv1.2'
    assert vc2_key_to_ours('time_cond_proj') == 'w_proj'


def test_bad_state_dict_lists_every_problem():
    with torch.device('meta'):
        expected = UNet3D(vc2()).state_dict()
    sd = vc2_keys('vc2_unet_keys.tsv')
    del sd['model.diffusion_model.out.2.bias']
    sd['model.diffusion_model.input_blocks.1.0.bogus.weight'] = torch.empty(3, device='meta')
    sd['model.diffusion_model.input_blocks.1.1.proj_in.weight'] = torch.empty(320, 321, device='meta')
    with pytest.raises(ValueError) as e:
        convert_vc2_unet(sd, expected=expected)
    msg = str(e.value)
    assert 'out.2.bias' in msg and 'input_blocks.1.0.bogus.weight' in msg
    assert 'input_blocks.1.1.proj_in.weight' in msg and '(320, 321)' in msg
    assert '1 missing, 1 unexpected, 1 with a wrong shape' in msg
    with pytest.raises(ValueError):  # a missing w_proj is only tolerated by the loaders, not by the checker
        check_state_dict({}, {'w_proj.weight': torch.empty(1)})


def test_config_from_vc2_rejects_unsupported_flags():
    base = json.loads((FIXTURES / 'vc2_tiny_parity' / 'config.json').read_text())['unet_kwargs']
    assert config_from_vc2({**base, 'time_cond_proj_dim': 256}).guidance_embed_dim == 256
    for bad in [dict(use_linear=False), dict(use_scale_shift_norm=True), dict(use_causal_attention=True),
                dict(temporal_conv=False), dict(whatever=1), dict(use_relative_position=True, temporal_length=None)]:
        with pytest.raises(ValueError):
            config_from_vc2({**base, **bad})
    no_rel = {k: v for k, v in base.items() if k != 'use_relative_position'}  # UNetModel's default is True (VC1)
    assert config_from_vc2(no_rel).use_relative_position and not config_from_vc2(base).use_relative_position


def test_relative_position_attention_matches_vc1_einsums():
    """VC1's temporal attention with relative positions, written out as its einsums, against ours; and VC1's
    key names and shapes (a 33 x 64 table per attention for temporal_length 16)."""
    torch.manual_seed(0)
    att = CrossAttention(32, 32, heads=2, dim_head=16, max_rel=4)
    x = torch.randn(3, 6, 32)                                           # 6 frames, more than 4: offsets clip
    q, k, v = (rearrange(p(x), 'b n (h d) -> (b h) n d', h=2) for p in (att.to_q, att.to_k, att.to_v))
    rk, rv = att.relative_position_k(6, 6), att.relative_position_v(6, 6)
    sim = (torch.einsum('bid,bjd->bij', q, k) + torch.einsum('btd,tsd->bts', q, rk)) * 16 ** -0.5
    a = sim.softmax(-1)
    ref_out = torch.einsum('bij,bjd->bid', a, v) + torch.einsum('bts,tsd->btd', a, rv)
    ref_out = att.to_out(rearrange(ref_out, '(b h) n d -> b n (h d)', h=2))
    torch.testing.assert_close(att(x), ref_out, atol=1e-5, rtol=1e-5)
    idx = torch.arange(6)
    assert torch.equal(rk[0, 5], att.relative_position_k.embeddings_table[8])  # offset +5 clipped to +4
    assert torch.equal(rk[idx, idx], att.relative_position_k.embeddings_table[4].expand(6, -1))
    with torch.device('meta'):
        sd = UNet3D(replace(vc2(), use_relative_position=True)).state_dict()
    rel = [k for k in sd if 'relative_position' in k]
    assert 'init_attn.0.transformer_blocks.0.attn2.relative_position_v.embeddings_table' in rel
    assert all(sd[k].shape == (33, 64) for k in rel) and len(rel) == 68    # VC1's 68 extra keys


# ----------------------------------------------------------------------------------------------------------------
# The T2V-Turbo student: w-conditioning


def student_of(teacher, cfg):
    """A student (w input, guidance_embed_dim 256) with the teacher's weights; its w projection starts at zero."""
    student = UNet3D(replace(cfg, guidance_embed_dim=256)).eval()
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert missing == ['w_proj.weight'] and not unexpected
    return student


def test_student_starts_as_teacher(parity):
    """With the teacher's weights (only w_proj is missing) and its zero w projection, the student computes what the
    teacher does, bit for bit, at any w: on the parity fixture, and on a batch of two clips with a w each through a
    toy UNet with no zero layer."""
    cfg, teacher, io, _ = parity
    student = student_of(teacher, config_from_vc2(cfg['unet_kwargs']))
    y_teacher = run(teacher, io)
    for w in (torch.tensor([0.0]), torch.tensor([7.5]), 15.0):
        assert torch.equal(run(student, io, w=w), y_teacher)  # zero w_proj: bit-identical
    teacher = tiny_unet()
    student = student_of(teacher, teacher.config)
    x, t, ctx = torch.randn(2, 4, 4, 8, 8), torch.tensor([10, 700]), torch.randn(2, 16, 64)
    with torch.no_grad():
        assert torch.equal(student(x, t, ctx, 16, w=torch.tensor([5.0, 15.0])), teacher(x, t, ctx, 16))


def test_a_trained_w_projection_makes_w_condition_the_student(parity):
    cfg, teacher, io, _ = parity
    student = student_of(teacher, config_from_vc2(cfg['unet_kwargs']))
    y_teacher = run(teacher, io)
    torch.nn.init.normal_(student.w_proj.weight, std=0.02)
    y5, y10 = run(student, io, w=torch.tensor([5.0])), run(student, io, w=torch.tensor([10.0]))
    assert (y5 - y10).abs().max() > 1e-3 and (y5 - y_teacher).abs().max() > 1e-3


def test_a_student_needs_w_and_a_teacher_takes_none(parity):
    cfg, teacher, io, _ = parity
    student = student_of(teacher, config_from_vc2(cfg['unet_kwargs']))
    with pytest.raises(ValueError, match='guidance'):
        run(student, io)          # a student needs w
    with pytest.raises(ValueError, match='w was given'):
        run(teacher, io, w=5.0)   # a teacher has no w input


def test_guidance_embedding_layout():
    """Golden values from the formula: [sin(1000 w f_j), cos(1000 w f_j)], f_j = 1e4^(-j/(half-1))."""
    e = guidance_embedding(torch.tensor([0.0, 1.0, 7.5]), 256)
    assert e.shape == (3, 256)
    assert torch.all(e[0, :128] == 0) and torch.all(e[0, 128:] == 1)   # w = 0: sin half 0, cos half 1
    # j = 0: f = 1; j = 127 (= half-1): f = 1e-4 exactly, which pins the (half-1) divisor
    assert e[1, 0].item() == pytest.approx(math.sin(1000.0), abs=1e-4)
    assert e[1, 128].item() == pytest.approx(math.cos(1000.0), abs=1e-4)
    assert e[2, 127].item() == pytest.approx(math.sin(7500 * 1e-4), abs=1e-5)
    assert e[2, 255].item() == pytest.approx(math.cos(7500 * 1e-4), abs=1e-5)
    # VC2's own t-embedding is the other way round: cos first, divisor half
    t = timestep_embedding(torch.tensor([10.0]), 320)
    assert t[0, 0].item() == pytest.approx(math.cos(10.0), abs=1e-5)
    assert t[0, 160 + 159].item() == pytest.approx(math.sin(10.0 * 1e4 ** (-159 / 160)), abs=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# The toy preset trains


def test_toy_unet_is_the_shipped_teachers_config():
    """The toy teacher's config is written once, in toy_unet(): toy/prepare.py trains it, and it is what the shipped
    teacher's metadata records (every field, v-prediction and zero terminal SNR included)."""
    assert UNetConfig(**read_meta(TOY_MODELS / "teacher.safetensors")["unet"]) == toy_unet()


def test_toy_forward_backward_and_checkpointing():
    """A fresh UNet outputs 0 (zero-init out conv); every weight gets a finite gradient; gradient checkpointing
    gives the same gradients, dropout included (the recomputation replays the RNG state)."""
    torch.manual_seed(0)
    model = UNet3D(replace(toy_unet(), in_channels=4, out_channels=4, guidance_embed_dim=256)).train()
    x, t, ctx, w = torch.randn(2, 4, 4, 8, 8), torch.tensor([3, 900]), torch.randn(2, 5, 64), torch.tensor([5., 15.])
    assert torch.all(model(x, t, ctx, 8, w=w) == 0)
    with torch.no_grad():  # un-zero the zero-init layers so that every weight gets a gradient
        for p in model.parameters():
            p.normal_(0, 0.05) if p.ndim > 1 else None
    ckpt_model = UNet3D(replace(model.config, use_checkpoint=True)).train()
    ckpt_model.load_state_dict(model.state_dict())
    grads = []
    for m in (model, ckpt_model):
        torch.manual_seed(1)  # same dropout masks in both runs
        m(x, t, ctx, 8, w=w).square().mean().backward()
        grads.append({k: p.grad for k, p in m.named_parameters()})
    assert all(g is not None and torch.isfinite(g).all() for g in grads[0].values())
    assert all(torch.allclose(grads[0][k], grads[1][k], atol=1e-6) for k in grads[0])
