"""The real-model evaluation's cost: python -m vc2.evaluate's scoring with full-size HPSv2.1 and ViCLIP
(random weights) on VC2-size videos.

    python -m benchmarks eval
"""

import json
import re
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from benchmarks.common import in_fresh_process, random_hpsv21
from rewards import ViCLIP, VideoTextReward, viclip_l14
from vc2 import evaluate


def eval_run(workdir, videos=2, frames=16, height=320, width=512):
    """In a fresh process (its peak RSS is the evaluation's alone): what `vc2/evaluate.py --samples DIR --hps --viclip`
    does after loading its files (evaluate.evaluate_real), on `videos` clips of VC2's size, with random full-size
    reward models in place of the files (benchmarks/common.py: random_hpsv21; ViCLIP(viclip_l14()) at its init). ->
    {name: value}."""
    d = Path(workdir)
    (d / "samples").mkdir()
    rows = []
    for i in range(videos):                       # a square sliding right over a grey ramp, as sample.py's MP4s
        clip = np.tile(np.linspace(0, 255, width, dtype=np.uint8)[None, None, :, None], (frames, height, 1, 3))
        for k in range(frames):
            clip[k, height // 3:height // 2, 20 * k + 40 * i:20 * k + 40 * i + height // 6] = (220, 40 + 80 * i, 40)
        iio.imwrite(d / "samples" / f"{i}.mp4", clip, extension=".mp4", fps=16, codec="libx264", macro_block_size=1)
        rows.append({"file": f"{i}.mp4", "files": [f"{i}.mp4"], "prompt": "a red square sliding right", "seed": i})
    (d / "samples" / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    t0 = time.time()
    hps = random_hpsv21()                          # the release's HPSv2.1 file would fill these same modules
    t_hps = time.time() - t0
    viclip = VideoTextReward(ViCLIP(viclip_l14()))
    t_viclip = time.time() - t0 - t_hps
    rewards = evaluate.load_real_rewards(hps, viclip)          # (built modules are taken as they are)
    res = evaluate.evaluate_real({"samples": d / "samples"}, rewards, d / "out", batch_size=videos)["samples"]
    return {"eval_videos": videos, "eval_frames": frames, "eval_threads": torch.get_num_threads(),
            "eval_total_s": time.time() - t0,
            "eval_build_hps_s": t_hps, "eval_build_viclip_s": t_viclip,
            "eval_hps_s_per_video": res["score_seconds"]["image"] / videos,
            "eval_viclip_s_per_video": res["score_seconds"]["video"] / videos,
            "eval_hps_mean": res["hps"]["mean"], "eval_viclip_mean": res["video"]["mean"],
            "eval_peak_rss_gb": int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read())[1]) / 2 ** 20}


def bench_eval(videos=2, frames=16):
    """vc2/evaluate.py's scores on full-size reward models with random weights (HPSv2.1 = OpenCLIP ViT-H-14,
    ViCLIP-L/14), `videos` clips of frames x 320 x 512 read from a sample folder: HPS on every frame (letterbox to
    224), ViCLIP on 8 (resize + crop to 224), fp32, in a fresh process. ~6 GiB of RAM; minutes on one CPU thread."""
    r = in_fresh_process("benchmarks.evaluation", f"eval_run(sys.argv[1], {videos}, {frames})", "eval")
    print(f"\neval: {videos} videos of {frames} x 320 x 512, fp32, {r['eval_threads']} threads: HPSv2.1 "
          f"{r['eval_hps_s_per_video']:.1f} s/video ({frames} frames), ViCLIP-L/14 {r['eval_viclip_s_per_video']:.1f} "
          f"s/video (8 frames); building them {r['eval_build_hps_s']:.1f} + {r['eval_build_viclip_s']:.1f} s; "
          f"peak RSS {r['eval_peak_rss_gb']:.2f} GiB")
    return r
