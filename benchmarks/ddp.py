"""train.py's toy student on 1 process and under torchrun on 2: the step time and the peak memory per process.

    python -m benchmarks ddp
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT
from machinery.checkpoint import read_meta


def bench_ddp(steps=30, batch=4):
    """The toy student stage of train.py (CD + both rewards, fresh toy teacher and reward models) run for `steps`
    steps on 1 process with `batch` clips, and under torchrun on 2 processes with batch/2 clips each (the same
    global batch), 1 thread per process. Step time = the stage's wall time over its steps; peak memory = the
    largest RSS of any process of the run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    tiny = ["--warmup", "1", "--threads", "1", "--device", "cpu"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"   # tiny random-ish toy models: the step costs the same as with the shipped ones
        subprocess.run([sys.executable, "-m", "toy.prepare", "--out", str(base), "--teacher-steps", "1",
                        "--text-steps", "1", "--reward-steps", "1", "--eval-per-caption", "0", *tiny], check=True,
                       env=env, capture_output=True, cwd=ROOT)
        for procs in (1, 2):
            d = Path(tmp) / f"p{procs}"
            d.mkdir()
            launcher = [sys.executable] if procs == 1 else \
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
            # a fresh parent per run, so that its RUSAGE_CHILDREN peak covers this run's processes only
            peak_of = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
                       "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            r = subprocess.run([sys.executable, "-c", peak_of, *launcher, str(ROOT / "train.py"), "--toy-models",
                                str(base), "--out", str(d), "--turbo-steps", str(steps), "--compare-per-caption",
                                "0", "--turbo-batch", str(batch // procs), *tiny], check=True, env=env,
                               capture_output=True, text=True)
            meta = read_meta(d / "turbo.safetensors")
            out[f"ddp_toy_step_s_{procs}proc"] = meta["seconds"] / steps
            out[f"ddp_toy_peak_rss_gb_per_process_{procs}proc"] = int(r.stdout.split()[-1]) / 2 ** 20
    out["ddp_toy_step_time_2proc_over_1proc"] = out["ddp_toy_step_s_2proc"] / out["ddp_toy_step_s_1proc"]
    return out
