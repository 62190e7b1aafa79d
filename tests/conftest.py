"""Shared test set-up: the repo root on sys.path, 2 CPU threads (CI's machine), ../shared located once."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(2)

SHARED = ROOT.parent / "shared"


@pytest.fixture
def shared():
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (CI puts ../shared beside the repo)")
    return SHARED
