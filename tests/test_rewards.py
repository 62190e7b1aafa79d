"""rewards.py: gradients to the pixels, preprocessing == torchvision's transforms, the real checkpoints' key sets
(HPSv2.1: 686 keys, open_clip's ViT-H-14; ViCLIP: 447 keys, InternVideo's Data/InternVid/viclip/; checked on the
meta device), loaders and their errors, frame selection, the contrastive loss, toy training and save/load. Fast: no
model is trained beyond a few steps; the trained-model check uses the shipped
toy/assets/reward_{image,video}.safetensors."""
import dataclasses
import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from safetensors.torch import load_file, save_file
from torchvision.transforms import InterpolationMode, RandomCrop

import rewards
from conftest import TOY
from machinery.checkpoint import load_reward, reward_from_state, reward_state, save_reward
from rewards import (IMAGENET_MEAN, IMAGENET_STD, OPENAI_MEAN, OPENAI_STD, ImageTextReward, ViCLIP, VideoTextReward,
                     toy_clip_cfg, toy_image_reward, toy_viclip, toy_video_reward, viclip_l14)
from toy import prepare
from toy.prepare import contrastive_loss
from turbo import image_reward_frames, video_reward_frames
from vc2.release import load_hps_state, load_hpsv21, load_viclip

CAP = "a red circle moving left"


def count(m):
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------------------------------------------
# gradients reach the pixels, and only the pixels


def test_image_reward_gradients_reach_pixels():
    torch.manual_seed(0)
    reward = toy_image_reward()
    for shape in [(2, 3, 32, 32), (2, 3, 40, 64)]:             # identity and letterbox (resize + pad) paths
        images = torch.rand(shape, requires_grad=True)
        score = reward(images, [CAP, "a blue square moving up"])
        assert score.shape == (2,) and (score.abs() <= 1 + 1e-5).all()
        score.sum().backward()
        assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in reward.parameters())


def test_video_reward_gradients_reach_pixels():
    torch.manual_seed(0)
    reward = toy_video_reward()
    for shape in [(2, 3, 8, 32, 32), (1, 3, 8, 40, 64)]:       # identity and resize + crop paths
        video = torch.rand(shape, requires_grad=True)
        score = reward(video, [CAP] * shape[0], generator=torch.Generator().manual_seed(0))
        assert score.shape == (shape[0],)
        score.sum().backward()
        assert torch.isfinite(video.grad).all() and video.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in reward.parameters())
    with pytest.raises(AssertionError, match="8 frames"):
        reward(torch.rand(1, 3, 4, 32, 32), [CAP])


def test_viclip_gradient_checkpointing_changes_nothing():
    torch.manual_seed(0)
    model = ViCLIP(toy_viclip())
    video = torch.randn(2, 3, 8, 32, 32, requires_grad=True)
    model.encode_video(video).square().sum().backward()
    g = video.grad.clone()
    video.grad = None
    model.config.grad_checkpoint = True
    model.encode_video(video).square().sum().backward()
    torch.testing.assert_close(video.grad, g)


def test_text_contract():
    torch.manual_seed(0)
    reward = toy_image_reward()
    images = torch.rand(4, 3, 32, 32)
    caps = [CAP, "a blue square moving up"]
    # one text per group of consecutive images (clip-major), not tiled
    torch.testing.assert_close(reward(images, caps), reward(images, [caps[0]] * 2 + [caps[1]] * 2))
    torch.testing.assert_close(reward(images, CAP), reward(images, [CAP] * 4))
    with pytest.raises(ValueError, match="3 texts for 4 images"):
        reward(images, caps + [CAP])


# ----------------------------------------------------------------------------------------------------------------
# preprocessing == the originals' torchvision transforms


def hps_reference(image, size, mean=OPENAI_MEAN, std=OPENAI_STD):
    """HPSv2's ResizeMaxSize(size, fill=0) + Normalize, on one (3, H, W) tensor, with torchvision's functional ops."""
    h, w = image.shape[1:]
    scale = size / float(max(h, w))
    new = tuple(round(d * scale) for d in (h, w))
    image = TF.resize(image, list(new), InterpolationMode.BICUBIC)          # torchvision's default antialias
    ph, pw = size - new[0], size - new[1]
    image = TF.pad(image, padding=[pw // 2, ph // 2, pw - pw // 2, ph - ph // 2], fill=0)
    return TF.normalize(image, mean, std)


@pytest.mark.parametrize("hw,size", [((40, 64), 32), ((64, 40), 32), ((320, 512), 224), ((33, 17), 32)])
def test_letterbox_matches_torchvision(hw, size):
    torch.manual_seed(0)
    images = torch.rand(1 if size == 224 else 3, 3, *hw)
    reward = ImageTextReward(open_clip.CLIP(**toy_clip_cfg()), image_size=size)
    ours = reward.preprocess(images)
    ref = torch.stack([hps_reference(x, size) for x in images])            # HPS transforms one image at a time
    assert ours.shape == (images.shape[0], 3, size, size)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    if hw == (320, 512):                                       # 140 x 224 content, 42 black rows above and below
        black = (torch.zeros(3) - torch.tensor(OPENAI_MEAN)) / torch.tensor(OPENAI_STD)
        torch.testing.assert_close(ours[0, :, :42, 0], black[:, None].expand(3, 42))
        assert not torch.allclose(ours[0, :, 42, 0], black)


@pytest.mark.parametrize("hw,size,t", [((40, 64), 32, 8), ((320, 512), 224, 2), ((64, 40), 32, 8)])
def test_video_preprocess_matches_torchvision(hw, size, t):
    torch.manual_seed(0)
    video = torch.rand(2, 3, t, *hw)
    reward = VideoTextReward(ViCLIP(toy_viclip()), image_size=size)
    h, w = hw
    scale = size / min(h, w)
    new = [round(h * scale), round(w * scale)]
    for seed in range(3):
        ours = reward.preprocess(video, generator=torch.Generator().manual_seed(seed))   # (b, 3, t, S, S)
        frames = video.permute(0, 2, 1, 3, 4).reshape(-1, 3, h, w)         # (b*t, 3, H, W), as reward_fn.py
        torch.manual_seed(seed)                                # RandomCrop draws from the global RNG
        ref = TF.normalize(RandomCrop(size)(TF.resize(frames, new, InterpolationMode.BICUBIC)),
                           IMAGENET_MEAN, IMAGENET_STD)
        ref = ref.reshape(2, t, 3, size, size).permute(0, 2, 1, 3, 4)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    # the crop is random (different seeds, different windows) and shared by every frame of the call
    top, left = rewards.crop_params(*new, size, torch.Generator().manual_seed(0))
    assert max(top, left) > 0 or min(new) == max(new)


# ----------------------------------------------------------------------------------------------------------------
# HPSv2.1: the key set of open_clip ViT-H-14, the loader and its errors


def clip_block_keys(prefix, w):
    return {f"{prefix}attn.in_proj_weight": (3 * w, w), f"{prefix}attn.in_proj_bias": (3 * w,),
            f"{prefix}attn.out_proj.weight": (w, w), f"{prefix}attn.out_proj.bias": (w,),
            f"{prefix}ln_1.weight": (w,), f"{prefix}ln_1.bias": (w,), f"{prefix}ln_2.weight": (w,),
            f"{prefix}ln_2.bias": (w,), f"{prefix}mlp.c_fc.weight": (4 * w, w), f"{prefix}mlp.c_fc.bias": (4 * w,),
            f"{prefix}mlp.c_proj.weight": (w, 4 * w), f"{prefix}mlp.c_proj.bias": (w,)}


def hps_expected_keys():
    """686 keys of HPS_v2.1_compressed.pt's state_dict: open_clip's ViT-H-14 CLIP (model_configs/ViT-H-14.json, the
    same in tgxs002/HPSv2's vendored open_clip)."""
    keys = {"positional_embedding": (77, 1024), "text_projection": (1024, 1024), "logit_scale": (),
            "token_embedding.weight": (49408, 1024), "ln_final.weight": (1024,), "ln_final.bias": (1024,),
            "visual.class_embedding": (1280,), "visual.positional_embedding": (257, 1280),
            "visual.proj": (1280, 1024), "visual.conv1.weight": (1280, 3, 14, 14),
            "visual.ln_pre.weight": (1280,), "visual.ln_pre.bias": (1280,),
            "visual.ln_post.weight": (1280,), "visual.ln_post.bias": (1280,)}
    for i in range(24):
        keys.update(clip_block_keys(f"transformer.resblocks.{i}.", 1024))
    for i in range(32):
        keys.update(clip_block_keys(f"visual.transformer.resblocks.{i}.", 1280))
    return keys


def meta_vit_h14():
    with torch.device("meta"):
        return open_clip.create_model("ViT-H-14", pretrained=None, device="meta")


def test_hps_key_set_loads_on_meta():
    clip = meta_vit_h14()
    expected = hps_expected_keys()
    assert len(expected) == 686
    assert {k: tuple(v.shape) for k, v in clip.state_dict().items()} == expected
    assert count(clip) == 986_109_441
    # the release: {'state_dict': fp16 tensors}; fake it at full size on meta (no memory), with DDP prefixes too
    for prefix in ["", "module."]:
        fake = {"state_dict": {prefix + k: torch.empty(s, dtype=torch.float16, device="meta")
                               for k, s in expected.items()}}
        load_hps_state(clip, fake)
        assert all(p.dtype == torch.float32 for p in clip.parameters())


def test_hps_wrong_keys_one_clear_error():
    clip = meta_vit_h14()
    sd = {k: torch.empty(s, dtype=torch.float16, device="meta") for k, s in hps_expected_keys().items()}
    del sd["visual.proj"]
    sd["visual.extra"] = torch.empty(3, device="meta")
    sd["text_projection"] = torch.empty(1024, 512, device="meta")
    with pytest.raises(ValueError) as e:
        load_hps_state(clip, {"state_dict": sd})
    msg = str(e.value)
    assert "missing: visual.proj" in msg and "unexpected: visual.extra" in msg and "text_projection" in msg


def test_hps_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="HPSv2.1"):
        load_hpsv21(tmp_path / "nope.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pt is not a torch checkpoint") as e:
        load_hpsv21(bad)
    assert str(e.value).startswith("HPSv2.1") and "weights_only" not in str(e.value)   # never torch's advice


def test_hps_tiny_round_trip(tmp_path):
    torch.manual_seed(0)
    src = toy_image_reward()
    sd16 = {k: v.half() for k, v in src.clip.state_dict().items()}         # stored as the release: fp16
    torch.save({"state_dict": sd16}, tmp_path / "hps_tiny.pt")
    got = load_hpsv21(tmp_path / "hps_tiny.pt", image_size=32, clip_cfg=toy_clip_cfg())
    for k, v in got.clip.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, sd16[k].float())
    images = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(got(images, CAP), src(images, CAP), atol=2e-2, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# ViCLIP: the 447 keys of ViClip-InternVid-10M-FLT.pth, a parity check of the token layout, loader and errors


def viclip_expected_keys():
    """ViCLIP-L/14 as OpenGVLab/InternVideo's Data/InternVid/viclip/ (viclip.py, viclip_vision.py, viclip_text.py)
    defines it, written out by hand (not from rewards.py)."""
    v, t = "vision_encoder.", "text_encoder."
    keys = {"temp": (), f"{v}class_embedding": (1024,), f"{v}positional_embedding": (257, 1024),
            f"{v}temporal_positional_embedding": (1, 8, 1024), f"{v}proj": (1024, 768),
            f"{v}conv1.weight": (1024, 3, 1, 14, 14), f"{v}ln_pre.weight": (1024,), f"{v}ln_pre.bias": (1024,),
            f"{v}ln_post.weight": (1024,), f"{v}ln_post.bias": (1024,),
            f"{t}positional_embedding": (32, 768), f"{t}text_projection": (768, 768),
            f"{t}token_embedding.weight": (49408, 768), f"{t}ln_final.weight": (768,), f"{t}ln_final.bias": (768,)}
    for i in range(24):
        keys.update(clip_block_keys(f"{v}transformer.resblocks.{i}.", 1024))
    for i in range(12):
        keys.update(clip_block_keys(f"{t}transformer.resblocks.{i}.", 768))
    return keys


def test_viclip_key_set_loads_on_meta():
    expected = viclip_expected_keys()
    assert len(expected) == 447
    with torch.device("meta"):
        model = ViCLIP(viclip_l14())
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert count(model.vision_encoder) == 303_974_400 and count(model.text_encoder) == 123_615_744
    assert count(model) == 427_590_145
    fake = {"model": {k: torch.empty(s, device="meta") for k, s in expected.items()}}      # the release's wrapper
    load_viclip(model, fake)


def test_viclip_bad_dict_one_clear_error(tmp_path):
    model = ViCLIP(toy_viclip())
    sd = dict(model.state_dict())
    del sd["temp"], sd["vision_encoder.proj"]
    sd["vision_encoder.bogus"] = torch.zeros(1)
    sd["text_encoder.positional_embedding"] = torch.zeros(77, 64)
    with pytest.raises(ValueError) as e:
        load_viclip(model, {"model": sd})
    msg = str(e.value)
    for s in ["missing: temp", "missing: vision_encoder.proj", "unexpected: vision_encoder.bogus",
              "text_encoder.positional_embedding: checkpoint (77, 64)"]:
        assert s in msg
    with pytest.raises(FileNotFoundError, match="ViCLIP"):
        load_viclip(model, tmp_path / "missing.pth")


def test_viclip_tiny_round_trip(tmp_path):
    torch.manual_seed(0)
    src = ViCLIP(toy_viclip())
    torch.save({"model": src.state_dict()}, tmp_path / "viclip_tiny.pth")
    got = load_viclip(ViCLIP(toy_viclip()), tmp_path / "viclip_tiny.pth")
    video, caps = torch.randn(2, 3, 8, 32, 32), [CAP, "a white square moving down"]
    with torch.no_grad():
        torch.testing.assert_close(got.encode_video(video), src.encode_video(video), rtol=0, atol=0)
        torch.testing.assert_close(got.encode_text(caps), src.encode_text(caps), rtol=0, atol=0)
    ddp = {"module." + k: v for k, v in src.state_dict().items()}         # a bare, DDP-prefixed dict works too
    load_viclip(ViCLIP(toy_viclip()), ddp)


def reference_vision(v, video):
    """ViCLIP's VisionTransformer.forward (InternVideo's Data/InternVid/viclip/viclip_vision.py) for kernel_size 1,
    written step by step, sequence-first, with torch's own nn.MultiheadAttention: frame-wise class token + spatial
    embedding, then the '(b t) n m -> (b n) t m' temporal embedding and '-> b (n t) m' token order, and the blocks."""
    x = v.conv1(video)                                         # (B, C, T, H, W)
    B, C, T, H, W = x.shape
    x = x.permute(0, 2, 3, 4, 1).reshape(B * T, H * W, C)
    x = torch.cat([v.class_embedding + torch.zeros(B * T, 1, C), x], dim=1) + v.positional_embedding
    cls = x[:B, :1]
    x = x[:, 1:].reshape(B, T, H * W, C).transpose(1, 2).reshape(B * H * W, T, C) + v.temporal_positional_embedding
    x = torch.cat([cls, x.reshape(B, H * W * T, C)], dim=1)
    x = v.ln_pre(x).permute(1, 0, 2)                           # (L, B, C): nn.MultiheadAttention's default layout
    for blk in v.transformer.resblocks:
        mha = torch.nn.MultiheadAttention(C, v.cfg.vision_heads)
        mha.load_state_dict(blk.attn.state_dict())
        y = blk.ln_1(x)
        x = x + mha(y, y, y, need_weights=False)[0]
        h = blk.mlp.c_fc(blk.ln_2(x))
        x = x + blk.mlp.c_proj(h * torch.sigmoid(1.702 * h))
    return v.ln_post(x)[0] @ v.proj


def test_viclip_vision_matches_reference_layout():
    torch.manual_seed(0)
    cfg = dataclasses.replace(toy_viclip(), tubelet=1)         # ViCLIP-L's per-frame tokens
    model = ViCLIP(cfg).eval()
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(video), reference_vision(model.vision_encoder, video),
                                   rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# frame selection (Ji4chenLi/t2v-turbo train_t2v_turbo_v1_lora.py:1043-1098)


def test_image_reward_frames():
    for seed in range(20):
        idx = image_reward_frames(16, 5, torch.Generator().manual_seed(seed))
        assert idx.shape == (5,) and len(set(idx.tolist())) == 5 and 0 <= idx.min() and idx.max() < 16
    assert torch.equal(image_reward_frames(16, 5, torch.Generator().manual_seed(3)),
                       image_reward_frames(16, 5, torch.Generator().manual_seed(3)))
    assert sorted(image_reward_frames(8, 8).tolist()) == list(range(8))
    with pytest.raises(ValueError):
        image_reward_frames(4, 5)


def test_video_reward_frames():
    starts = set()
    for seed in range(20):
        idx = video_reward_frames(16, 8, torch.Generator().manual_seed(seed)).tolist()
        assert len(idx) == 8 and idx[0] in (0, 1) and all(b - a == 2 for a, b in zip(idx, idx[1:]))
        starts.add(idx[0])
    assert starts == {0, 1}                                    # the phase is random
    assert video_reward_frames(8, 8).tolist() == list(range(8))                # the toy: every frame
    idx = video_reward_frames(16, 4, torch.Generator().manual_seed(0)).tolist()
    assert idx[0] in range(4) and all(b - a == 4 for a, b in zip(idx, idx[1:]))
    with pytest.raises(ValueError):
        video_reward_frames(4, 8)


# ----------------------------------------------------------------------------------------------------------------
# contrastive loss and toy training


def test_contrastive_loss_is_clip_infonce():
    torch.manual_seed(0)
    a, t = torch.randn(6, 8), torch.randn(6, 8)
    logits = 10 * F.normalize(a, dim=-1) @ F.normalize(t, dim=-1).T
    ref = (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6))) / 2
    torch.testing.assert_close(contrastive_loss(a, t, 10.0), ref)


def test_contrastive_loss_duplicates_are_not_negatives():
    torch.manual_seed(0)
    t = torch.randn(4, 8)
    t[1] = t[0]                                                # clips 0 and 1 share a caption
    ids = torch.tensor([0, 0, 1, 2])
    a = t.clone()
    swapped = a[[1, 0, 2, 3]]                                  # which duplicate matches which caption is moot
    assert torch.isclose(contrastive_loss(a, t, 50.0, ids), contrastive_loss(swapped, t, 50.0, ids))
    # aligned features reach the bound: the entropy of the targets, log 2 for the two duplicate rows
    assert contrastive_loss(a, t, 1e3, ids).item() == pytest.approx(np.log(2) / 2, abs=1e-3)


@pytest.fixture
def one_thread():
    # many tiny ops per step: with 2 threads on an oversubscribed machine each op's thread barrier can stall for a
    # scheduler tick (measured: 127 s instead of 4 s); one thread is fast everywhere and reproducible
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_toy_training_lowers_the_loss(one_thread):
    # the loss on ONE fixed batch (no sampling noise) before and after 20 steps; the same seed gives the same init
    caps = prepare.split_captions("train")[::2][:32]
    video = prepare.render_captions(caps, np.random.default_rng(99))   # (32, 3, 8, 32, 32) in [0, 1]
    for kind, make in [("image", toy_image_reward), ("video", toy_video_reward)]:
        def loss(r):
            with torch.no_grad():
                f = r.encode_images(video[:, :, 3]) if kind == "image" else r.encode_videos(video)
                return contrastive_loss(f, r.encode_texts(caps), 10.0).item()
        torch.manual_seed(0)
        before = loss(make())
        trained, stats = prepare.train_toy_reward(kind, steps=20, batch=16, lr=5e-3, seed=0)
        assert len(stats["losses"]) == 20 and loss(trained) < before - 0.1, (kind, before, loss(trained))


def test_held_out_captions_are_refused():
    held = prepare.split_captions("heldout")
    with pytest.raises(ValueError, match="held-out"):
        prepare.train_toy_reward("image", steps=1, batch=2,
                                     captions=prepare.split_captions("train")[:3] + held[:1])


def test_discrimination_report_shape():
    d = prepare.discrimination(toy_image_reward(), "image", [CAP, "a blue square moving up"], n_clips=4)
    assert d["direction"] is None and set(d) == {"n", "colour", "shape", "direction", "all"}
    d = prepare.discrimination(toy_video_reward(), "video", [CAP], n_clips=2)
    assert d["n"] == 2 and all(d[k] in (0, 0.5, 1) for k in ("colour", "shape", "direction", "all"))   # shares of 2
    assert d["all"] <= min(d["colour"], d["shape"], d["direction"])      # 'all' needs every attribute


def test_reward_state_round_trip(tmp_path):
    torch.manual_seed(0)
    images, video = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 8, 32, 32)
    for reward, x in [(toy_image_reward(), images), (toy_video_reward(), video)]:
        tensors, config = reward_state(reward)
        config = json.loads(json.dumps(config))                # JSON-able, and rebuilt from JSON
        save_file(tensors, str(tmp_path / "r.safetensors"))
        again = reward_from_state(load_file(str(tmp_path / "r.safetensors")), config)
        assert type(again) is type(reward) and not any(p.requires_grad for p in again.parameters())
        with torch.no_grad():
            torch.testing.assert_close(again(x, CAP), reward(x, CAP), rtol=0, atol=0)
        save_reward(tmp_path / "r2.safetensors", reward, {"note": 1})
        again, stats = load_reward(tmp_path / "r2.safetensors")
        assert stats == {"note": 1}
        with torch.no_grad():
            torch.testing.assert_close(again(x, CAP), reward(x, CAP), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["image", "video"])
def test_trained_toy_reward_prefers_the_right_caption(kind):
    reward, _ = load_reward(TOY / f"reward_{kind}.safetensors")   # the shipped one
    d = prepare.discrimination(reward, kind, prepare.split_captions("train"), n_clips=76, seed=123)
    # a caption that is wrong in one attribute scores below the right one
    assert d["colour"] >= 0.9 and d["shape"] >= 0.9, d
    if kind == "video":
        assert d["direction"] >= 0.8, d


# ----------------------------------------------------------------------------------------------------------------
# --precision bf16: the decoded frames reach the rewards in bf16, on any CPU


def test_both_rewards_take_bf16_frames_under_bf16_autocast():
    """Under bf16 autocast the decoder hands the rewards bf16 frames; resizing them (torch has no CPU kernel for
    antialiased bicubic in bf16) is done in fp32, so both rewards score them, with gradients to the pixels, close to
    their fp32 scores. Runs the bf16 path whether or not this CPU has bf16 instructions."""
    torch.manual_seed(0)
    image_reward, video_reward = toy_image_reward(), toy_video_reward()
    video = torch.rand(2, 3, 8, 40, 64)                        # not 32 x 32: both resize
    caps = [CAP, "a blue square moving up"]
    images = video[:, :, 0]
    with torch.no_grad():
        ref = image_reward(images, caps), video_reward(video, caps, generator=torch.Generator().manual_seed(0))
    x = video.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = image_reward(x[:, :, 0], caps), video_reward(x, caps, generator=torch.Generator().manual_seed(0))
    for s, r in zip(scores, ref):
        assert s.shape == (2,) and torch.isfinite(s).all()
        torch.testing.assert_close(s.float(), r, atol=0.05, rtol=0)            # bf16 rounding, nothing more
    sum(s.float().sum() for s in scores).backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert rewards.resize(x.detach()[:, :, 0], (32, 32)).dtype == torch.bfloat16   # returned in the input's dtype
