"""encoders.py against the ORIGINAL VideoCrafter code: tiny-size parity fixtures (outputs of VideoCrafter's own
AutoencoderKL and FrozenOpenCLIPEmbedder with re-randomised weights) and the real checkpoint's key manifests.

    python -m pytest -q tests/test_encoders.py
"""

import json

import pytest
import torch

from conftest import FIXTURES, load_fixture, load_text_sd, text_fixture_config, vae_fixture_config, vc2_keys
from encoders import (AEConfig, AutoencoderKL, LinearAutoencoder, TextEncoder, causal_mask, first_stage_from_config,
                      openclip_vit_h14, sd_kl_f8, toy_ae, toy_linear_ae, toy_text)
from machinery.videoio import to_uint8
from toy.world import ToyWorld, judge_videos
from vc2.convert import load_vc2_text, load_vc2_vae

TOL = 1e-4


def check_close(name, got, want, tol=TOL, errors=None):
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    err = (got.double() - want.double()).abs().max().item()
    if errors is not None:
        errors[name] = err
    assert err <= tol, f"{name}: max abs error {err:.3g} > {tol}"


# ----------------------------------------------------------------------------------------------------------------
# Autoencoder


@pytest.fixture(scope="module")
def vae_fixture():
    ae = AutoencoderKL(vae_fixture_config())
    load_vc2_vae(ae, load_fixture("vae_tiny_parity", "vae_sd.pt"))
    return ae.eval(), load_fixture("vae_tiny_parity", "io.pt"), load_fixture("vae_tiny_parity", "intermediates.pt")


def test_toy_ae_preset_is_the_fixture_config(vae_fixture):
    ae, _, _ = vae_fixture
    assert AEConfig(**{**toy_ae().__dict__, "scale_factor": 0.18215}) == ae.config
    assert sum(p.numel() for p in ae.parameters()) == 1_288_263


def test_vae_parity(vae_fixture):
    ae, io, inter = vae_fixture
    # record the first output of every module the fixture hooked (same module names as the original)
    got, hooks = {}, []
    modules = dict(ae.named_modules())
    for name in inter:
        hooks.append(modules[name].register_forward_hook(
            lambda m, i, o, name=name: got.setdefault(name, o.detach().clone())))
    errors = {}
    with torch.no_grad():
        mean, logvar = ae.encode_moments(io["x"])                   # (2, 4, 8, 8)
        decoded = ae.decode_frames(mean)                            # (2, 3, 32, 32)
        for h in hooks:
            h.remove()
        check_close("mean", mean, io["mean"], errors=errors)
        check_close("logvar", logvar, io["logvar"], errors=errors)
        check_close("moments", torch.cat([mean, logvar], 1), io["moments"], errors=errors)  # clamp inactive here
        check_close("std", torch.exp(0.5 * logvar), io["std"], errors=errors)
        check_close("decode_mean", decoded, io["decode_mean"], errors=errors)
        for name, want in inter.items():
            check_close(name, got[name], want, errors=errors)
        # the video API: the fixture's images as b=2 videos of t=1 frame, with its posterior noise
        video = io["x"].unsqueeze(2)                                # (2, 3, 1, 32, 32)
        lat = ae.encode(video, noise=io["sample_noise"].unsqueeze(2))
        check_close("latent_scaled", lat[:, :, 0], io["latent_scaled"], errors=errors)
        check_close("z_sample", lat[:, :, 0] / 0.18215, io["z_sample"], errors=errors)
        check_close("encode(sample=False)", ae.encode(video, sample=False)[:, :, 0], io["mean"] * 0.18215,
                    errors=errors)
        check_close("video_decoded", ae.decode(io["z_video"]), io["video_decoded"], errors=errors)
        check_close("video_decoded chunk 1", ae.decode(io["z_video"], chunk_size=1), io["video_decoded"], errors=errors)
    print("VAE max abs errors:", {k: f"{v:.1e}" for k, v in errors.items()})
    print("VAE worst:", max(errors.values()))


def test_vae_checkpointed_decode_matches_plain():
    torch.manual_seed(0)
    ae = AutoencoderKL(AEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=16))   # small: backward x2
    z = torch.randn(1, 4, 2, 8, 8, requires_grad=True)
    plain = ae.decode(z)
    g_plain, = torch.autograd.grad(plain.square().mean(), z)
    ckpt = ae.decode(z, checkpoint=True)
    g_ckpt, = torch.autograd.grad(ckpt.square().mean(), z)
    check_close("checkpointed decode", ckpt, plain, tol=1e-6)
    check_close("checkpointed grad", g_ckpt, g_plain, tol=1e-6)


def test_vae_encode_generator_is_reproducible():
    ae = AutoencoderKL(toy_ae()).eval()
    video = torch.rand(2, 3, 2, 32, 32) * 2 - 1
    with torch.no_grad():
        a = ae.encode(video, generator=torch.Generator().manual_seed(1))
        b = ae.encode(video, generator=torch.Generator().manual_seed(1), chunk_size=3)
    assert a.shape == (2, 4, 2, 8, 8)
    check_close("chunked encode, same generator", b, a, tol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Text encoder


@pytest.fixture(scope="module")
def text_fixture():
    cfg = json.loads((FIXTURES / "text_tiny_parity" / "config.json").read_text())
    model = TextEncoder(text_fixture_config())
    sd = load_text_sd("text_tiny_parity", "text_sd.pt")
    assert all(k.startswith("model.") for k in sd)                  # FrozenOpenCLIPEmbedder.state_dict() names
    load_vc2_text(model, sd)
    return model.eval(), cfg, load_fixture("text_tiny_parity", "io.pt"), load_fixture("text_tiny_parity",
                                                                                        "intermediates.pt")


def test_tokenizer_matches_open_clip_at_77(text_fixture):
    model, cfg, io, _ = text_fixture
    tokens = model.tokenize(cfg["prompts"])
    assert tokens.dtype == torch.long and torch.equal(tokens, io["tokens"])
    assert tokens[1, :3].tolist() == [49406, 49407, 0]              # '' -> SOT, EOT, padding
    assert tokens[3, -1].item() == 49407                            # the 93-token prompt is cut, EOT kept


def test_text_parity(text_fixture):
    model, cfg, io, inter = text_fixture
    tokens = io["tokens"]
    got, hooks = {}, []
    for i in range(2):
        hooks.append(model.transformer.resblocks[i].register_forward_hook(
            lambda m, a, o, i=i: got.setdefault(f"resblock_{i}_out_NLD", o.detach().clone())))
    errors = {}
    with torch.no_grad():
        z = model(tokens)                                           # (4, 77, 32), penultimate
        for h in hooks:
            h.remove()
        check_close("z", z, io["z"], errors=errors)
        check_close("encode_text", model.encode_text(cfg["prompts"]), io["z"], errors=errors)
        x0 = model.token_embedding(tokens) + model.positional_embedding
        check_close("x0_tok_plus_pos_NLD", x0, inter["x0_tok_plus_pos_NLD"], errors=errors)
        for name in ["resblock_0_out_NLD", "resblock_1_out_NLD"]:
            check_close(name, got[name], inter[name], errors=errors)
        check_close("pre_ln_final_NLD", got["resblock_1_out_NLD"], inter["pre_ln_final_NLD"], errors=errors)
        assert torch.equal(causal_mask(77), inter["attn_mask"])
        # layer='last' runs every block: the fixture's z_last
        model.config.layer = "last"
        try:
            z_last = model(tokens)
        finally:
            model.config.layer = "penultimate"
        check_close("z_last", z_last, io["z_last"], errors=errors)
        # pooled = CLIP's text feature: all blocks, ln_final, EOT position, text_projection
        eot = io["z_last"][torch.arange(4), tokens.argmax(-1)]
        check_close("pooled", model.pooled(tokens), eot @ model.text_projection, errors=errors)
    print("text max abs errors:", {k: f"{v:.1e}" for k, v in errors.items()})
    print("text worst:", max(errors.values()))


def test_toy_text_shapes():
    model = TextEncoder(toy_text())
    tokens = model.tokenize(["a red circle moving left", ""])
    assert tokens.shape == (2, 16) and tokens[0, :1].item() == 49406
    assert model(tokens).shape == (2, 16, 64) and model.pooled(tokens).shape == (2, 64)


# ----------------------------------------------------------------------------------------------------------------
# Full size: the real checkpoint's keys, on the meta device (no memory, no download)


@pytest.mark.parametrize("make, cls, loader, tsv, n_keys, n_params", [
    (sd_kl_f8, AutoencoderKL, load_vc2_vae, "vc2_vae_keys.tsv", 248, 83_653_863),
    (openclip_vit_h14, TextEncoder, load_vc2_text, "vc2_text_keys.tsv", 294, 354_032_641),
])
def test_full_size_keys_on_meta(make, cls, loader, tsv, n_keys, n_params):
    sd = vc2_keys(tsv)
    assert len(sd) == n_keys
    with torch.device("meta"):
        model = cls(make())
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert len(model.state_dict()) == n_keys                        # nothing extra (no stored attn_mask etc.)
    loader(model, sd)                                               # raises if anything is missing/extra/misshapen
    assert sum(t.numel() for t in sd.values()) == n_params


@pytest.mark.parametrize("cls, make, loader, prefix", [
    (AutoencoderKL, toy_ae, load_vc2_vae, "first_stage_model."),
    (TextEncoder, toy_text, load_vc2_text, "cond_stage_model.model."),
])
def test_bad_state_dict_one_error_names_everything(cls, make, loader, prefix):
    model = cls(make())
    sd = {prefix + k: v.clone() for k, v in model.state_dict().items()}
    keys = list(sd)
    drop, bend = keys[1], keys[-1]
    del sd[drop]
    sd[bend] = torch.zeros(3, 5, 7)
    sd[prefix + "bogus.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as e:
        loader(model, sd)
    msg = str(e.value)
    assert drop[len(prefix):] in msg and "missing" in msg
    assert "bogus.weight" in msg and "unexpected" in msg
    assert bend[len(prefix):] in msg and "wrong shape" in msg
    # and the good dict, prefixed, loads
    loader(model, {prefix + k: v for k, v in cls(make()).state_dict().items()})


def test_toy_linear_autoencoder_reconstructs_what_the_judge_reads():
    """The toy's first stage (PCA of 4x4 patches): unit-variance latents, exact linear decode, and
    reconstructions whose colour, shape and direction the judge still reads correctly."""
    ae = LinearAutoencoder(toy_linear_ae())
    kept = ae.fit(ToyWorld(seed=0).batch(128)[0])
    assert 0.9 < kept <= 1.0
    video, caps = ToyWorld(seed=1).batch(32)
    z = ae.encode(video)
    assert z.shape == (32, 8, 8, 8, 8) and (z.transpose(0, 1).flatten(1).std(1) - 1).abs().max() < 0.3
    rec = ae.decode(z)
    judged = judge_videos(to_uint8(rec), caps)
    assert judged["all"] >= 0.95 and min(judged["per_shape"].values()) >= 0.9, judged     # every shape, by name
    assert torch.allclose(ae.decode(ae.encode(rec)), rec, atol=1e-4)     # a projection: idempotent
    # rebuilt from its JSON-able config + buffers, it is the same map
    from dataclasses import asdict
    ae2 = first_stage_from_config(asdict(ae.config))
    ae2.load_state_dict(ae.state_dict())
    assert torch.allclose(ae2.encode(video), z)
    zg = z.clone().requires_grad_(True)
    ae.decode(zg).square().sum().backward()
    assert zg.grad.abs().sum() > 0
