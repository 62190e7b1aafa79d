"""Where the main job's time goes: `python train.py`'s own code, the student steps of Algorithm 1 (train.distill) and
the closing comparison (toy/evaluate.py: toy_comparison), timed region by region, each region named by what it is in
the paper. Nothing here changes what runs: hooks only time each model call, the backward pass, the optimizer step
and the data (torch.profiler's op-level view is for finding why a region is slow, not how long it is).

    python -m benchmarks profile          # 20 student steps, then the closing comparison on 1 video per caption

Each `profile_*_share` is a region's wall time over the total (the steps', or the comparison's); what no region
covers is `other` (Python, small tensor ops between the calls, the loss, the EMA update). A region that runs
inside another is counted once, where it starts: the backward pass is its own region, so the four UNet regions are
forward passes only.
"""

import re
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

import train
from machinery.checkpoint import load_models, read_meta
from toy import evaluate
from toy.world import TOY_MODELS

class Timer:
    """Wall seconds per named region; a region entered while another runs is not counted again (so the shares
    add up to at most 1)."""

    def __init__(self):
        self.seconds, self.depth = defaultdict(float), 0

    @contextmanager
    def region(self, name):
        if self.depth:
            yield
            return
        self.depth += 1
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0
            self.depth -= 1

    def wrap(self, obj, method, name):
        """obj.method(...) runs inside region `name` (an instance attribute shadows the class's method)."""
        fn = getattr(obj, method)

        def timed(*args, **kwargs):
            with self.region(name):
                return fn(*args, **kwargs)
        setattr(obj, method, timed)


def label_teacher(timer, teacher):
    """The loaded teacher dict's text tower and first stage."""
    timer.wrap(teacher["text"], "encode_text", "text tower")
    timer.wrap(teacher["ae"], "encode", "first stage encode")
    timer.wrap(teacher["ae"], "decode", "first stage decode (eqs. 8-9)")


@contextmanager
def labelled_training(timer):
    """While it is open, train.py's distill runs with every model call, the backward, the optimizer step and the
    data inside its named region (module attributes patched, restored on exit)."""
    saved = {k: getattr(train, k) for k in ("make_networks", "distill")}
    backward, step = torch.Tensor.backward, torch.optim.AdamW.step

    def make_networks(cfg, run, unet):
        student, params, target, teacher_unet = saved["make_networks"](cfg, run, unet)
        # full fine-tuning (the toy preset): three networks; the student's forward is its __call__ in cd_loss
        for module, name in ((student, "unet student f_theta (eq. 5)"), (teacher_unet, "unet teacher cond+uncond "
                             "(eq. 7)"), (target, "unet target f_theta^- (eq. 6)")):
            timer.wrap(module, "forward", name)
        return student, params, target, teacher_unet

    def distill(cfg, run, data, teacher, image_reward=None, video_reward=None):
        label_teacher(timer, teacher)
        for model, name in ((image_reward, "image reward (eq. 8)"), (video_reward, "video reward (eq. 9)")):
            if model is not None:
                timer.wrap(model, "forward", name)
        timer.wrap(data, "batch", "data")
        return saved["distill"](cfg, run, data, teacher, image_reward, video_reward)

    def timed_backward(self, *a, **k):
        with timer.region("backward"):
            return backward(self, *a, **k)

    def timed_step(self, *a, **k):
        with timer.region("optimizer step"):
            return step(self, *a, **k)
    train.make_networks, train.distill = make_networks, distill
    torch.Tensor.backward, torch.optim.AdamW.step = timed_backward, timed_step
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(train, k, v)
        torch.Tensor.backward, torch.optim.AdamW.step = backward, step


def shares(timer, total, prefix):
    """{'<prefix>_<region>_share': its seconds / total} for every region timed, and '<prefix>_other_share'."""
    key = lambda region: re.sub(r"\W+", "_", region.split(" (")[0]).strip("_")      # 'unet student f_theta'
    out = {f"{prefix}_{key(k)}_share": v / total for k, v in timer.seconds.items()}
    out[f"{prefix}_other_share"] = 1 - sum(timer.seconds.values()) / total
    return out


def bench_profile(steps=20, warmup=3, toy_models=TOY_MODELS, per_caption=1):
    """The student step (toy preset, the models in toy_models: the shipped ones, 8 clips, both rewards), region by
    region, and the closing comparison (teacher 50 steps + CFG, student 4 steps) on `per_caption` videos of each of
    its 16 captions."""
    timer, ctimer, models_flag = Timer(), Timer(), ["--toy-models", str(toy_models)]
    with tempfile.TemporaryDirectory() as d:
        # warm-up steps first (allocation, kernel choice), in their own run, then the measured run
        train.main(["--turbo-steps", str(warmup), "--compare-per-caption", "0", "--out", f"{d}/warm", *models_flag])
        with labelled_training(timer):
            t0 = time.perf_counter()
            train.main(["--turbo-steps", str(steps), "--compare-per-caption", "0", "--out", d, *models_flag])
            run_s = time.perf_counter() - t0
        per_step = read_meta(Path(d) / "turbo.safetensors")["stats"]["step_seconds"]      # each good step's s
        steps_s = sum(per_step)
        out = {"profile_student_step_s": steps_s / len(per_step), "profile_train_run_s": run_s,
               "profile_train_outside_steps_s": run_s - steps_s, **shares(timer, steps_s, "profile_step")}
        # the closing comparison, its regions: sampling's UNet calls, decoding; the rest is scoring the videos
        models = {"teacher": load_models(Path(toy_models) / "teacher.safetensors", "cpu", dtype=torch.float32),
                  "T2V-Turbo": load_models(Path(d) / "turbo.safetensors", "cpu", dtype=torch.float32)}
        for name, m in models.items():
            ctimer.wrap(m["unet"], "forward", f"unet {name}")
            ctimer.wrap(m["text"], "encode_text", "text tower")
            ctimer.wrap(m["ae"], "decode", "first stage decode")
        t0 = time.perf_counter()
        evaluate.toy_comparison(models, toy_models, per_caption=per_caption)
        total = time.perf_counter() - t0
    return {**out, "profile_compare_s": total, **shares(ctimer, total, "profile_compare")}


if __name__ == "__main__":
    for k, v in bench_profile().items():
        print(f"{k}: {v:.4g}")
