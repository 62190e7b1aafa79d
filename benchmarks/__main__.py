"""Benchmarks (not tests): figures measured in one run on this machine, printed as a table and as `name: value` lines.
One file per concern; each section is a function bench_<section> that returns {name: value}.

    python -m benchmarks              # main, sample and train (a few minutes)
    python -m benchmarks main         # toy_speed.py: the main job's teacher and student step, GFLOP/s vs a matmul peak
    python -m benchmarks sample       # toy_speed.py: 50-step CFG teacher vs 4-step T2V-Turbo, text to pixels
    python -m benchmarks train        # toy_speed.py: a student step with the mixed reward vs CD alone
    python -m benchmarks load         # load.py: peak RSS of loading a full-size VC2 checkpoint (~2 min, 6.9 GiB)
    python -m benchmarks ddp          # ddp.py: the toy student on 1 process and under torchrun on 2 (~2 min)
    python -m benchmarks vc2          # vc2_step.py: 2 vc2_256 steps, every model at full size, random weights
    python -m benchmarks vc2_iv2      # vc2_step.py: the same with InternVideo2-Stage2 1B as the video reward
    python -m benchmarks vc2_sample   # vc2_sample.py: sample.py on full-size checkpoints (random weights), 1 step
    python -m benchmarks eval         # evaluation.py: vc2.evaluate's scores with full-size HPSv2.1 and ViCLIP
    python -m benchmarks data         # data.py: clips/s, seek vs sequential decode, 1 and N workers, a latent cache
    python -m benchmarks ms           # ms_step.py: 2 steps of --preset ms, every model at ModelScope size
    python -m benchmarks gpu          # gpu.py, on a CUDA machine: the vc2_256 step, 4- vs 50-step latency, the toy
                                      # main job (--tiny: the same script with toy-size models on a CPU, a check)
    python -m benchmarks profile      # profile.py: where a student step's and the closing comparison's time goes
    python -m benchmarks.internvideo2 # InternVideo2-1B's reward call and backward at full size

Ratios are measured in the same run on the same model size, so they travel between machines better than the
absolute seconds do.
"""

import argparse

import torch

from benchmarks.data import bench_data
from benchmarks.ddp import bench_ddp
from benchmarks.evaluation import bench_eval
from benchmarks.gpu import bench_gpu
from benchmarks.load import bench_load
from benchmarks.ms_step import bench_ms
from benchmarks.profile import bench_profile
from benchmarks.toy_speed import bench_main, bench_sample, bench_train
from benchmarks.vc2_sample import bench_vc2_sample
from benchmarks.vc2_step import bench_vc2, bench_vc2_iv2
from machinery.cli import Parser

SECTIONS = {"main": bench_main, "sample": bench_sample, "train": bench_train, "load": bench_load, "ddp": bench_ddp,
            "vc2": bench_vc2, "vc2_iv2": bench_vc2_iv2, "vc2_sample": bench_vc2_sample, "gpu": bench_gpu,
            "eval": bench_eval, "data": bench_data, "ms": bench_ms, "profile": bench_profile}
TINY = ("gpu", "vc2", "ms")                       # the sections --tiny checks at toy size on a CPU
DEFAULT = ["main", "sample", "train"]       # the quick ones; load, ddp and the vc2 ones take minutes: name them


def main(argv=None):
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sections", nargs="*", help=f"any of {sorted(SECTIONS)}; default: {' '.join(DEFAULT)}")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--tiny", action="store_true", help="gpu, vc2: toy-size models on the CPU, a check of the script")
    args = p.parse_args(argv)
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {sorted(unknown)}; choose from {sorted(SECTIONS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name in args.sections or DEFAULT:
        results.update(SECTIONS[name](tiny=args.tiny) if name in TINY else SECTIONS[name]())
    gpu = torch.cuda.get_device_name() if "gpu" in args.sections and not args.tiny else "none"
    print(f"device: cpu, torch {torch.__version__}, {torch.get_num_threads()} threads; GPU: {gpu}")
    print("| figure | value |\n|---|---|")
    for k, v in results.items():
        print(f"| {k} | {v:.4g} |")
    for k, v in results.items():
        print(f"{k}: {v:.6g}")
    return results


if __name__ == "__main__":
    main()
