"""The machinery under every training loop here: processes, per-step seeding, resumable states, and the small
functions a loop calls. Nothing in this file is T2V-Turbo: train.py writes the paper's Algorithm 1 as a `for` loop
over the steps, and toy/prepare.py writes the toy teacher's; both call these pieces:
    - processes: torchrun sets WORLD_SIZE / RANK / LOCAL_RANK; DDP averages the gradients (gloo on CPU, nccl on GPU);
    - randomness: everything random in step k (which clips, their noise, t, w, reward frames) is drawn from
      generators seeded by (seed, stage, k) for the WHOLE batch of all processes, and each process keeps its own
      rows. So N processes with batch b compute exactly what one process with batch N*b would, and a resumed run
      replays exactly what the killed one would have done: the step number is the RNG state and the data
      position. Only dropout inside the UNet draws from the global RNG, seeded per (step, micro-batch, process);
    - a step: its lr (warm-up, then constant or cosine: set_lr), its micro-batches under bf16 autocast with their
      backward passes (accumulate, toy/prepare.py's; train.py spells its own out in distill, the read-along's
      loop), clipping (clipped), and a non-finite step skipped and counted (skip_step);
    - resumable states, OUT/<stage>.state-<step>.safetensors, written atomically, the newest `keep` kept
      (save_if_due, resume);
    - tqdm with every loss term, and TensorBoard when it is installed (Progress).
The command line (one --flag per dataclass field) is machinery/cli.py's; the batches decoded ahead in worker processes,
machinery/batches.py's.

    python -m pytest tests/machinery/test_loop.py   # DDP == one process, kill -9 + --resume == uninterrupted, NaN
"""

import dataclasses
import importlib.util
import json
import math
import os
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from machinery.checkpoint import save_tensors
from machinery.cli import resolve_device

try:                                           # optional: curves in OUT/tb when TensorBoard is installed
    from torch.utils.tensorboard import SummaryWriter
except ImportError:
    SummaryWriter = None

# ----------------------------------------------------------------------------------------------------------------
# Command lines: one line per bad input, and a dataclass config as flags


# ----------------------------------------------------------------------------------------------------------------
# Processes and randomness


def setup_processes(cfg):
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without it this is one process. -> run (rank, world, device, main)."""
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = torch.device(resolve_device(cfg.device))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda, but torch sees no CUDA GPU")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        # a stage that only process 0 works on (saving, sampling) can keep the others waiting: a long timeout
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    return SimpleNamespace(rank=rank, world=world, device=device, main=rank == 0)


def barrier(run):
    if run.world > 1:
        dist.barrier()


def step_seed(cfg, stage, step, micro=0, rank=0):
    """A 63-bit seed for (seed, stage, step, micro-batch, process); rank 0 for what every process draws alike."""
    words = [cfg.seed, sum(map(ord, stage)), step, micro, rank]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> np.uint64(1))


def step_draws(cfg, run, stage, step, micro, b):
    """-> (numpy rng, torch CPU generator, B, rows). The generators are seeded by the step alone, so every process
    and micro-batch draws the same global batch of B = b * world * grad_accum clips; `rows` are the b of them this
    (process, micro-batch) trains on. Also seeds the global RNG (dropout) per step, micro-batch and process."""
    torch.manual_seed(step_seed(cfg, stage, step, micro, run.rank + 1))
    rng, B, rows = data_draws(cfg, run, stage, step, micro, b)
    return rng, torch.Generator().manual_seed(step_seed(cfg, stage, step)), B, rows


def data_draws(cfg, run, stage, step, micro, b):
    """-> (numpy rng, B, rows): step_draws' data half, the same draws, but torch's RNG is left alone (a DataLoader
    worker process calls it to decode the batch of (step, micro) ahead: machinery/batches.py: StepLoader)."""
    first = (micro * run.world + run.rank) * b
    return np.random.default_rng(step_seed(cfg, stage, step)), b * run.world * cfg.grad_accum, range(first, first + b)


def all_finite(run, loss):
    """True when the loss is finite on every process: all must agree before anyone calls backward."""
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
    if run.world > 1:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return bad.item() == 0


def mean_over_processes(run, logs):
    if run.world == 1 or not logs:
        return logs
    keys = sorted(logs)
    v = torch.tensor([logs[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(v)
    return {k: float(x) / run.world for k, x in zip(keys, v)}


def sum_over_processes(run, counts, once=None):
    """{name: count} summed over the processes (e.g. skipped videos by reason), plus `once`: counts that every
    process holds alike (e.g. a caption file's bad rows, which each process read) added once. Every process gets
    the total."""
    every = [dict(counts)]
    if run.world > 1:
        every = [None] * run.world
        dist.all_gather_object(every, dict(counts))
    every.append(dict(once or {}))
    return {k: sum(c.get(k, 0) for c in every) for c in every for k in c}


def check_in_sync(run, module, what):
    """After DDP training every process must hold the same weights; a cheap fingerprint proves it."""
    if run.world == 1:
        return True
    with torch.no_grad():
        v = torch.stack([p.double().sum() for p in module.parameters()]).cpu()
    got = [torch.zeros_like(v) for _ in range(run.world)]
    dist.all_gather(got, v)
    if not all(torch.equal(g, got[0]) for g in got):
        raise RuntimeError(f"{what}: the {run.world} processes ended with different weights")
    return True


# ----------------------------------------------------------------------------------------------------------------
# The optimizer and its learning rate


def lr_at(step, total, base, warmup, schedule="cosine"):
    """Linear warm-up over `warmup` steps, then `constant` (T2V-Turbo's release: diffusers' "constant", lr 1e-5)
    or `cosine` decay to 10% of base at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


ADAMW8BIT_MISSING = ("--optim adamw8bit (the vc2 preset's) needs bitsandbytes, which is not installed: "
                     "pip install bitsandbytes==0.50.2, or give --optim adamw")


def check_optim(cfg, error):
    """--optim adamw8bit without bitsandbytes: one line at parse time, before any model or data is loaded."""
    if cfg.optim == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
        error(ADAMW8BIT_MISSING)


def make_optimizer(cfg, params, lr):
    """AdamW (betas 0.9 / 0.999, no weight decay, eps 1e-8: the release's), or bitsandbytes' 8-bit AdamW."""
    if cfg.optim == "adamw8bit":
        try:
            import bitsandbytes as bnb  # optional: only --optim adamw8bit needs it (check_optim said so already)
        except ImportError:
            raise SystemExit(ADAMW8BIT_MISSING) from None
        return bnb.optim.AdamW8bit(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8)
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8)


# ----------------------------------------------------------------------------------------------------------------
# Resumable states


def state_paths(out, stage):
    """Resumable states of a stage, oldest first."""
    return sorted(Path(out).glob(f"{stage}.state-*.safetensors"))


def save_state(run, out, stage, step, modules, opt, extra, keep):
    """OUT/<stage>.state-<step>.safetensors: the weights of `modules`, the optimizer's state and, in the metadata,
    the step, the logs so far and `extra`. Written by process 0 to a temporary file and renamed (atomic), so a
    kill never leaves a half-written state; then all but the newest `keep` are deleted. Refuses NaN weights."""
    if not run.main:
        return
    tensors, opt_meta = {}, {}
    for name, m in modules.items():
        for k, v in m.state_dict().items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise RuntimeError(f"refusing to save non-finite weights ({name}.{k}) at step {step}")
            tensors[f"{name}.{k}"] = v
    sd = opt.state_dict()
    for i, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{i}.{k}"] = v
            else:
                opt_meta[f"{i}.{k}"] = v
    meta = {"step": step, "param_groups": sd["param_groups"], "optim_other": opt_meta, **extra}
    path = Path(out) / f"{stage}.state-{step:07d}.safetensors"
    save_tensors(path, tensors, {"t2v_turbo_state": json.dumps(meta)})
    for old in state_paths(out, stage)[:-keep]:
        old.unlink()
    return path


# flags that may change between a run and its --resume: where and how it runs, not what it trains
RESUMABLE_CHANGES = {"resume", "device", "threads", "fresh", "keep", "save_every", "val_every", "max_bad_steps",
                     "compare_per_caption", "eval_per_caption", "out", "toy_models", "data_workers"}


def resume_conflicts(path, cfg, world=1):
    """What differs from the run the state at `path` was trained by: ['--turbo-lr 1e-05 (saved: 0.0001)', ...], and
    the process count (`world`): the global batch is processes x clips x micro-batches, so a run resumed on fewer
    GPUs would train another batch. Read from the state's metadata only."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["t2v_turbo_state"])
        saved = meta.get("config", {})
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path} is not a readable training state ({e}): delete it to resume from an older one, "
                         f"or run without --resume") from None
    now = dataclasses.asdict(cfg)
    conflicts = [f"--{k.replace('_', '-')} {now[k]!r} (saved: {saved[k]!r})" for k in now
                 if k in saved and k not in RESUMABLE_CHANGES and saved[k] != now[k]]
    if meta.get("world", world) != world:
        conflicts.append(f"{world} process(es) (saved: {meta['world']}; torchrun --nproc_per_node={meta['world']})")
    return conflicts


def load_state(path, modules, opt, device):
    """The inverse of save_state -> meta. Weights and optimizer moments land on `device`."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["t2v_turbo_state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a readable training state ({e}): delete it to resume from an older one, "
                         f"or run without --resume") from None
    for name, m in modules.items():
        m.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
    state = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, key = k.split(".", 2)
            state.setdefault(int(i), {})[key] = v.to(device) if key != "step" else v
    for ik, v in meta["optim_other"].items():
        i, key = ik.split(".", 1)
        state.setdefault(int(i), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


# ----------------------------------------------------------------------------------------------------------------
# The pieces of a training loop (train.py and toy/prepare.py write the loop itself)


def no_state(out, stage, whose=lambda other: ""):
    """--resume in a folder that holds no state of `stage` -> one line saying so and what the folder holds instead
    (whose(other stage) may say what that other run was); None when there is a state to resume."""
    if state_paths(out, stage):
        return None
    others = sorted(Path(out).glob("*.state-*.safetensors"), key=lambda p: p.stat().st_mtime)
    head = f"--resume: no state of {stage} in {out}"
    if not others:
        return f"{head} ({'it holds no saved state' if Path(out).is_dir() else 'no such folder'}): drop --resume " \
               f"to start from step 0"
    newest, more = others[-1].name, f" and {len(others) - 1} more" if len(others) > 1 else ""
    return f"{head}; it holds {newest}{more}{whose(newest.split('.state-')[0])}: give that run's flags to resume " \
           f"it, or drop --resume to start from step 0"


def resume(cfg, run, stage, steps, modules, opt):
    """--resume: the newest state of `stage` into `modules` and `opt` -> (its step, its logs, {'steps': bad steps
    so far, 'in_a_row': 0}); (0, [], no bad steps) without --resume. --resume where OUT holds no state of `stage`
    but another's (a run that trains something else saved it) is refused with no_state's line; with no state at
    all it starts from step 0 and says so (toy/prepare.py's --resume also means "keep the finished files", so its
    first start has none; train.py refuses that case at parse time)."""
    found = state_paths(cfg.out, stage) if cfg.resume else []
    if not found:
        if cfg.resume and list(Path(cfg.out).glob("*.state-*.safetensors")):
            raise SystemExit(no_state(cfg.out, stage))
        if cfg.resume and run.main:
            print(f"{stage}: --resume found no saved state in {cfg.out}: starting from step 0")
        return 0, [], {"steps": 0, "in_a_row": 0}
    conflicts = resume_conflicts(found[-1], cfg, run.world)
    if conflicts:  # a resumed run must train what the saved one trained: say what differs, change nothing
        raise SystemExit(f"{stage}: --resume from {found[-1]}, which was trained with other values: "
                         f"{'; '.join(conflicts)}. Give the saved values, or start over without --resume")
    meta = load_state(found[-1], modules, opt, run.device)
    print(f"{stage}: resuming from {found[-1]} (step {meta['step']} of {steps})")
    return meta["step"], meta["logs"], {"steps": meta["bad_steps"], "in_a_row": 0}


def autocast_for(cfg, run):
    """The context every micro-step's forward pass runs in: bf16 autocast with --precision bf16, else nothing."""
    return torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")


def set_lr(opt, cfg, step, total, base):
    """Step `step`'s lr (lr_at; a --warmup longer than a tenth of the run is cut to a tenth, so a short run still
    reaches its schedule) into every parameter group."""
    for g in opt.param_groups:
        g["lr"] = lr_at(step, total, base, min(cfg.warmup, total // 10), cfg.lr_schedule)


def accumulate(cfg, run, micro_step, synced, autocast):
    """Forward and backward over cfg.grad_accum micro-batches -> (every loss was finite, [per-micro-batch logs]).
    micro_step(micro) -> (loss, {name: float}): this process's share of micro-batch `micro` (mean over its rows).
    DDP averages the gradients across processes on the last micro-batch only (`synced`: the DDP-wrapped modules)."""
    step_logs = []
    for micro in range(cfg.grad_accum):
        with ExitStack() as stack:
            if micro < cfg.grad_accum - 1:  # accumulate locally; average across processes once, at the end
                for m in synced:
                    stack.enter_context(m.no_sync())
            with autocast:
                loss, info = micro_step(micro)
            if not all_finite(run, loss):
                return False, step_logs
            (loss / cfg.grad_accum).backward()
        step_logs.append({"loss": loss.item(), **info})
    return True, step_logs


def clipped(ok, params, max_norm):
    """ok, and the gradients' norm after clipping to max_norm is finite. The gradients are averaged over the
    processes by now, so every process sees the same norm and takes the same decision."""
    return ok and bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(params, max_norm)))


def skip_step(cfg, opt, stage, step, bad):
    """A step with a non-finite loss or gradient: its gradients dropped, no update, counted in `bad` ({'steps':
    in all, 'in_a_row': since the last good step}); --max-bad-steps in a row stop the run without saving."""
    opt.zero_grad(set_to_none=True)
    bad["steps"], bad["in_a_row"] = bad["steps"] + 1, bad["in_a_row"] + 1
    if bad["in_a_row"] >= cfg.max_bad_steps:
        raise RuntimeError(f"{stage}: {bad['in_a_row']} steps in a row with a non-finite loss or gradient (step "
                           f"{step}); stopping without saving. The newest good state is in {cfg.out} (--resume); "
                           f"try a lower lr or --precision fp32")


class Progress:
    """tqdm over a stage's steps (process 0), every loss term and the clips/s in its bar, TensorBoard scalars in
    OUT/tb when tensorboard is installed. `for step in Progress(...)` is the stage's loop."""

    def __init__(self, cfg, run, stage, start, steps, batch, counters=None):
        self.run, self.stage, self.clips = run, stage, cfg.grad_accum * run.world * batch   # clips per step
        self.counters = counters                    # () -> {name: number} shown too (e.g. skipped videos)
        self.bar = tqdm(range(start, steps), initial=start, total=steps, desc=stage, disable=not run.main)
        self.writer = SummaryWriter(str(Path(cfg.out) / "tb")) if SummaryWriter and run.main else None
        self.t0, self.seconds = None, []            # the current step's start (set by __iter__); good steps' seconds

    def __iter__(self):
        for step in self.bar:
            self.t0 = time.time()
            yield step
        if self.writer:
            self.writer.close()

    def log(self, step, step_logs, logs, bad):
        """A good step's logs, averaged over its micro-batches and the processes, appended to `logs`."""
        rec = mean_over_processes(self.run, {k: float(np.mean([l[k] for l in step_logs])) for k in step_logs[0]})
        logs.append(rec)
        self.seconds.append(time.time() - self.t0)
        if self.run.main:
            clips_s = self.clips / self.seconds[-1]
            self.bar.set_postfix({**{k: f"{np.mean([l[k] for l in logs[-20:]]):.4f}" for k in rec},
                                  "clips/s": f"{clips_s:.1f}", "bad": bad["steps"],
                                  **(self.counters() if self.counters else {})})
            for k, v in rec.items() if self.writer else ():
                self.writer.add_scalar(f"{self.stage}/{k}", v, step)


def save_if_due(cfg, run, stage, done, steps, modules, opt, logs, bad):
    """Every --save-every steps (not at the end: the finished model is saved instead), a resumable state."""
    if done % cfg.save_every == 0 and done < steps:
        save_state(run, cfg.out, stage, done, modules, opt, {"logs": logs, "bad_steps": bad["steps"],
                                                             "config": dataclasses.asdict(cfg), "world": run.world},
                   cfg.keep)
