"""Test set-up: the repo root on sys.path, 1 CPU thread.

One thread: the tests' tensors are small, so a second thread buys little, and two threads on a busy 2-core
machine can make a step 100x slower (OpenMP threads spin-wait for each other)."""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)
