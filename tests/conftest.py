"""Test set-up: the repo root on sys.path, 1 CPU thread, and a tiny prepare_toy.py folder shared by the tests.

One thread: the tests' tensors are small, so a second thread buys little, and two threads on a busy 2-core
machine can make a step 100x slower (OpenMP threads spin-wait for each other)."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)

import prepare_toy  # noqa: E402 (after the repo root is on sys.path)

# prepare_toy.py on a tiny budget: every stage runs, in seconds
TOY_FLAGS = ["--text-steps", "2", "--text-batch", "4", "--teacher-steps", "3", "--teacher-batch", "2",
             "--reward-steps", "2", "--warmup", "1", "--dtype", "fp16", "--eval-per-caption", "0", "--threads", "1",
             "--device", "cpu"]


@pytest.fixture
def toy_flags():
    return list(TOY_FLAGS)


_MADE = {}  # the folder below, made once per test process and reused by every test


@pytest.fixture(scope="module")
def toy_models(tmp_path_factory):
    """A folder as prepare_toy.py writes it (text_ae, teacher, reward_image, reward_video .safetensors), made once
    per test process. Tests read it and never write into it (copy a file out to change it)."""
    if "toy_models" not in _MADE:
        out = tmp_path_factory.mktemp("toy_models")
        prepare_toy.main([*TOY_FLAGS, "--out", str(out)])
        _MADE["toy_models"] = out
    return _MADE["toy_models"]
