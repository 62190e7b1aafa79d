"""The toy models that ship in toy/assets/ (toy/prepare.py made them): they load, they say how they were made, and
the teacher does what a teacher must: its 50-step samples show the caption's colour, shape and direction."""
import json

import torch
from safetensors import safe_open

import sample
from conftest import TOY
from machinery.checkpoint import load_models, load_reward, read_meta
from toy.world import correct, split_captions


def test_files_are_fp16_and_record_their_recipe():
    for name, key in (("teacher", "t2v_turbo"), ("reward_image", "reward"), ("reward_video", "reward")):
        with safe_open(str(TOY / f"{name}.safetensors"), "pt") as f:
            meta = json.loads(f.metadata()[key])
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        assert dtypes <= {"F16", "I64"} and "F16" in dtypes, (name, dtypes)
        assert meta["command"].startswith("python -m toy.prepare"), meta      # the recipe's command line
        assert meta["minutes"] > 0, meta
    assert sum(p.stat().st_size for p in TOY.glob("*.safetensors")) < 25 * 2 ** 20   # 25 MiB in all
    meta = read_meta(TOY / "teacher.safetensors")
    assert meta["kind"] == "teacher" and set(meta["quality"]) >= {"judge_seen", "judge_heldout", "image", "video"}


def test_teacher_samples_pass_the_judge():
    """Two seen and two held-out captions, one video each, 50-step DDIM at the teacher's own CFG."""
    models = load_models(TOY / "teacher.safetensors", dtype=torch.float32)
    assert next(models["unet"].parameters()).dtype == torch.float32
    prompts = split_captions("train")[::19][:2] + split_captions("heldout")[:2]
    videos = sample.generate(models, prompts, list(range(len(prompts))), progress=False)
    right = [correct(v, p)["all"] for v, p in zip(videos, prompts)]
    assert sum(right) >= 3, list(zip(prompts, right))     # 4 of 4 where the shipped files were made


def test_reward_models_load_and_score_in_fp32():
    for kind in ("image", "video"):
        model, stats = load_reward(TOY / f"reward_{kind}.safetensors")
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert stats["discrimination_train"]["all"] >= 0.9, stats
