"""InternVideo2-1B as T2V-Turbo's video reward at full size, with random weights: the cost of one reward call and its
backward pass on this machine (seconds, peak RSS), at each precision and with or without gradient checkpointing.

    python -m benchmarks.internvideo2      # prints name: value lines
"""

import argparse
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from vc2.internvideo2 import InternVideo2, InternVideo2Reward, init_weights, internvideo2_1b, load_tokenizer


def _peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2      # Linux reports KiB


def bench_internvideo2(num_frames=8, dtype=torch.float32, grad_checkpoint=True, size=224, seed=0):
    """A RANDOM full-size InternVideo2 (no checkpoint needed) scores one (1, 3, num_frames, size, size) clip in
    [0, 1] against one caption, then backpropagates to the pixels. Prints and returns `name: value` lines."""
    t0 = time.time()
    config = replace(internvideo2_1b(num_frames), grad_checkpoint=grad_checkpoint)
    with torch.device("meta"):
        model = InternVideo2(config)
    model = init_weights(model.to_empty(device="cpu").to(dtype), torch.Generator().manual_seed(seed))
    with tempfile.TemporaryDirectory() as d:                   # a stand-in vocabulary: ids < 30522 is all that matters
        (Path(d) / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat"]))
        reward = InternVideo2Reward(model, load_tokenizer(d))
    t_build = time.time() - t0
    video = torch.rand(1, 3, num_frames, size, size, generator=torch.Generator().manual_seed(seed),
                       requires_grad=True)
    t0 = time.time()
    score = reward(video, ["a cat"])
    t_fwd = time.time() - t0
    score.sum().backward()
    t_all = time.time() - t0
    lines = [f"params: {sum(p.numel() for p in model.parameters())}",
             f"dtype: {str(dtype).replace('torch.', '')}",
             f"threads: {torch.get_num_threads()}",
             f"frames: {num_frames}",
             f"tokens: {1 + config.time_steps * config.num_patches}",
             f"grad checkpointing: {grad_checkpoint}",
             f"build s: {t_build:.1f}",
             f"forward s: {t_fwd:.1f}",
             f"forward+backward s: {t_all:.1f}",
             f"score: {score.item():.6f}",
             f"pixel grad finite and nonzero: {bool(torch.isfinite(video.grad).all() and video.grad.abs().sum() > 0)}",
             f"peak RSS GB: {_peak_rss_gb():.2f}"]
    print("\n".join(lines))
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(prog="benchmarks.internvideo2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=8, help="frames scored (T2V-Turbo v1: 8, v2: 4)")
    p.add_argument("--bf16", action="store_true", help="bf16 weights (as the release stores them)")
    args = p.parse_args(argv)
    return bench_internvideo2(args.frames, torch.bfloat16 if args.bf16 else torch.float32)


if __name__ == "__main__":
    main()
