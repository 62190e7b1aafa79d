"""Checkpoints: one safetensors file per trained model, carrying every config needed to rebuild it.

A checkpoint holds the weights of the UNet (`unet.*`), the text encoder (`text.*`) and the first stage (`ae.*`),
and in its safetensors metadata the configs of all three plus the training config that made it, as JSON. So
`sample.py --ckpt toy/assets/teacher.safetensors` needs nothing else, and nothing is unpickled: safetensors stores
plain tensors, so a checkpoint cannot run code when it is opened.

Memory. A VideoCrafter2-size checkpoint is 6.9 GiB (fp32), so neither direction ever holds two copies:
  - save_tensors streams the file one tensor at a time (a tensor may even be computed only when it is written,
    e.g. a LoRA merged into its base weight by vc2/convert.py);
  - load_models builds the models on the meta device (no memory, no init), reads one tensor at a time and hands it
    to the module as it is (load_state_dict(assign=True)): peak RSS is about the checkpoint's size (python -m
    benchmarks load measures it).

The toy's reward models are files of the same kind (save_reward, load_reward). Other people's torch files (VC2's
model.ckpt, the reward models' releases) are pickles: safe_torch_load opens them with weights_only=True, so one that
would run code is refused, and load_strict fills a module from a state dict or names every key that does not fit.

    python -m machinery.checkpoint toy/assets/teacher.safetensors   # prints what a checkpoint holds
"""

import json
import os
import pickle
import struct
import sys
import tempfile
import zipfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import open_clip
import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from encoders import TextConfig, TextEncoder, first_stage_from_config
from lora import LoRA, add_lora, lora_tensors
from machinery.cli import one_line
from rewards import ImageTextReward, ViCLIP, ViCLIPConfig, VideoTextReward
from tiny_unet3d import UNet3D, UNetConfig

META_KEY = "t2v_turbo"
PARTS = ("unet", "text", "ae")
# safetensors' dtype names (its format spec); the file stores raw little-endian bytes
_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}


def save_tensors(path, tensors, metadata, materialize=None):
    """Writes {name: tensor} as a safetensors file, one tensor at a time, with string metadata.
    A tensor on the meta device is a placeholder (shape, dtype): its data is `materialize(name)`, computed only when
    it is written and freed right after. Written to a temporary file first and renamed, so a killed run never
    leaves a half-written file.
    The format: u64 header length, the JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}
    padded with spaces to 8 bytes, then every tensor's bytes back to back in header order."""
    assert sys.byteorder == "little", "safetensors stores little-endian bytes"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header, offset = {}, 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keeps the data 8-byte aligned, as safetensors' own writer does
    with written_atomically(path) as tmp, torch.no_grad(), open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, t in tensors.items():
            data = materialize(name) if t.is_meta else t
            if data.shape != t.shape or data.dtype != t.dtype:
                raise ValueError(f"{name}: materialized {data.dtype} {tuple(data.shape)}, the header says "
                                 f"{t.dtype} {tuple(t.shape)}")
            # the bytes of a contiguous CPU tensor, written without another copy (reshape first: a 0-dim
            # tensor cannot be viewed as bytes)
            f.write(data.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return path


@contextmanager
def written_atomically(path):
    """with written_atomically(path) as tmp: write tmp (path + '.tmp'). When the block ends, tmp is renamed to path
    (atomic: a reader, or a kill, never meets a half-written path). When it fails (a full disk, a bad tensor, an
    interrupt), tmp is deleted, and an OSError's message names `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, f"could not write {path}: {e.strerror or e} (the partial file was removed)") \
                from e
        raise


def save_checkpoint(path, modules, meta):
    """modules: {'unet': nn.Module, 'text': ..., 'ae': ...}; meta: JSON-able dict (configs, kind, stats)."""
    tensors = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
    return save_tensors(path, tensors, {META_KEY: json.dumps(meta)})


def save_lora(path, adapters, meta, rank):
    """A LoRA student's adapters on their own: {'unet.<module>.up.weight', ...} (lora.lora_tensors, module order)
    with `meta` (the merged checkpoint's) marked kind 'lora'. About 0.44 GiB at VC2 size instead of 5.3 GiB, and named,
    unlike the release's list; vc2/convert.py --export-release-lora writes that list from it. No adapters: no file."""
    if not adapters:
        return None
    meta = {**meta, "kind": "lora", "rank": rank, "w_proj_base": "zero"}  # lora.make_student's layout
    meta.pop("stats", None)                                             # the merged checkpoint has them
    return save_tensors(path, {f"unet.{k}": v for k, v in adapters.items()}, {META_KEY: json.dumps(meta)})


def _open(path):
    """safe_open that reads each tensor into memory of its own (pread) where this safetensors has that backend:
    the tensors then outlive the file and no file-backed pages stay mapped. Older versions memory-map the file,
    which costs the same memory once the weights are used."""
    try:
        return safe_open(str(path), "pt", backend="pread")
    except TypeError:
        return safe_open(str(path), "pt")


def read_meta(path):
    """-> the meta dict of a checkpoint, without reading any tensor; a clear error for a missing, corrupt or
    foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with _open(path) as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors checkpoint ({str(e).splitlines()[0][:200]})") from None
    raw = metadata.get(META_KEY)
    if raw is None:
        other = {"reward": "a reward model (toy/prepare.py / save_reward wrote it)",
                 "t2v_turbo_state": "a resumable training state (--resume reads it)"}
        what = next((v for k, v in other.items() if k in metadata), None)
        raise ValueError(f"{path} is {what}, not a model checkpoint" if what else
                         f"{path} has no '{META_KEY}' metadata: not a checkpoint written by this project")
    return json.loads(raw)


def read_checkpoint(path):
    """-> (tensors by name, meta dict); every tensor in memory (fine for the toy; load_models streams)."""
    meta = read_meta(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors checkpoint ({e})") from None
    return tensors, meta


def build_models(meta):
    """{'unet', 'text', 'ae'} of a checkpoint's configs on the meta device: shapes only, no memory, no init."""
    with torch.device("meta"):
        return {"unet": UNet3D(UNetConfig(**meta["unet"])), "text": TextEncoder(TextConfig(**meta["text"])),
                "ae": first_stage_from_config(meta["ae"])}


def load_models(path, device="cpu", dtype=None, build=build_models):
    """Rebuilds {'unet', 'text', 'ae', 'meta'} from a checkpoint, in eval mode, frozen; `build` makes the empty
    models from its configs (ms/models.py: build_models also knows ModelScope's).
    Strict: every key and shape is checked against the configs before any data is read, and ONE ValueError
    lists every missing, unexpected and misshapen tensor. dtype (e.g. torch.float16) casts floating tensors as
    they are read; None keeps the stored dtype. Peak memory is one copy of the weights (see the docstring)."""
    meta = read_meta(path)
    if meta.get("kind") == "lora":
        raise ValueError(f"{path} is a LoRA on its own, not a whole model: sample the merged checkpoint written beside "
                         f"it (turbo.safetensors), or give it to vc2/convert.py --export-release-lora")
    models = build(meta)
    expected = {f"{name}.{k}": v for name, m in models.items() for k, v in m.state_dict().items()}
    try:
        with _open(path) as f:
            problems = key_problems({k: tuple(v.shape) for k, v in expected.items()}, stored_shapes(f), "config")
            if problems:
                raise ValueError(problem_report(f"{path}: weights do not match the configs in its metadata", problems))
            for name, m in models.items():
                sd = {}
                for k in m.state_dict():
                    t = f.get_tensor(f"{name}.{k}")
                    if dtype is not None and t.is_floating_point():
                        t = t.to(dtype)
                    sd[k] = t.to(device)  # one tensor at a time: a GPU load never holds the model in RAM
                # assign=True: the module adopts these tensors (a meta module has nothing to copy into)
                m.load_state_dict(sd, strict=True, assign=True)
    except SafetensorError as e:
        raise ValueError(f"{path} is not a readable safetensors checkpoint ({e})") from None
    for name, m in models.items():
        left = [k for k, v in [*m.named_parameters(), *m.named_buffers()] if v.is_meta]
        assert not left, f"{name}: still on the meta device after loading: {left[:5]}"
        m.eval().requires_grad_(False)
    return {**models, "meta": meta}


def model_meta(unet, text, ae, **extra):
    """The configs every checkpoint carries, as JSON-able dicts."""
    return {"unet": asdict(unet.config), "text": asdict(text.config), "ae": asdict(ae.config), **extra}


def find_checkpoint(path, error):
    """--ckpt FILE or FOLDER -> the checkpoint file (a folder: its student, else its teacher), or error(one line)."""
    ckpt = Path(path)
    if ckpt.is_dir():  # a run or converted folder: prefer the student
        ckpt = next((ckpt / n for n in ("turbo.safetensors", "teacher.safetensors") if (ckpt / n).exists()), None)
        if ckpt is None:
            error(f"--ckpt {path}: no turbo.safetensors or teacher.safetensors there (train one first: python "
                  f"train.py, or give --ckpt FILE)")
    elif not ckpt.exists():
        error(f"--ckpt {path}: no such file or folder (train one first: python train.py; or give --ckpt FILE)")
    try:
        kind = read_meta(ckpt).get("kind")
    except ValueError as e:
        error(f"--ckpt {one_line(e)}")
    if kind not in ("teacher", "turbo"):
        error(f"--ckpt {ckpt} is a {kind!r} checkpoint: sample.py samples a teacher or a T2V-Turbo student")
    return ckpt


# ----------------------------------------------------------------------------------------------------------------
# The toy's reward models: tensors plus a JSON config that rebuilds the exact module


def reward_state(module):
    """ImageTextReward | VideoTextReward -> (tensors dict, config dict)."""
    if isinstance(module, ImageTextReward):
        if module.clip_cfg is None:
            raise ValueError("this ImageTextReward was built without clip_cfg, so it cannot be rebuilt from a config")
        inner, config = module.clip, {"kind": "image", "clip": module.clip_cfg}
    elif isinstance(module, VideoTextReward):
        inner, config = module.viclip, {"kind": "video", "viclip": asdict(module.viclip.config)}
    else:
        raise TypeError(f"not a reward module: {type(module).__name__}")
    config.update(image_size=module.image_size, mean=list(module.mean), std=list(module.std),
                  antialias=module.antialias)
    # contiguous, unshared tensors: what safetensors' save_file wants
    return {k: v.detach().contiguous() for k, v in inner.state_dict().items()}, config


def reward_from_state(tensors, config):
    """Inverse of reward_state: rebuilds the module and loads the tensors strictly; returns it frozen, in eval."""
    kw = dict(image_size=config["image_size"], mean=config["mean"], std=config["std"], antialias=config["antialias"])
    # both paths load strictly (one ValueError names every mismatch), so a config that does not rebuild the exact
    # module fails loudly instead of leaving random weights behind
    if config["kind"] == "image":
        clip = open_clip.CLIP(**config["clip"])
        load_strict(clip, dict(tensors), "toy image reward")
        return ImageTextReward(clip, clip_cfg=config["clip"], **kw)
    if config["kind"] == "video":
        viclip = load_strict(ViCLIP(ViCLIPConfig(**config["viclip"])), dict(tensors), "toy video reward")
        return VideoTextReward(viclip, **kw)
    raise ValueError(f"unknown reward kind {config['kind']!r}")


def save_reward(path, module, stats=None):
    """One safetensors file: the tensors of reward_state, its config (and optional training stats) as JSON metadata
    under 'reward' (toy/prepare.py writes the toy ones; toy/assets/ holds the shipped pair)."""
    tensors, config = reward_state(module)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"reward": json.dumps({"config": config, "stats": stats or {}})})
    return path


def load_reward(path):
    """-> (reward module, stats) from save_reward's file; a clear ValueError when it is not one."""
    with safe_open(str(path), framework="pt") as f:            # reads the header only
        meta = (f.metadata() or {}).get("reward")
    if meta is None:
        raise ValueError(f"{path} has no 'reward' metadata: not written by save_reward")
    meta = json.loads(meta)
    return reward_from_state(load_file(str(path)), meta["config"]), meta["stats"]


# ----------------------------------------------------------------------------------------------------------------
# Other people's torch files (VC2's model.ckpt, HPSv2.1, ViCLIP, InternVideo2, T2V-Turbo's LoRA): read safely,
# load strictly


def safe_torch_load(path, what=""):
    """torch.load that can only build tensors and plain containers (weights_only=True), memory-mapped when the file
    is in torch's zip format (a legacy pre-1.6 file cannot be mapped and is read whole). A file whose pickle names
    anything else, e.g. a class whose __reduce__ would run code, is refused with a ValueError before any of it runs;
    there is deliberately no fallback that would unpickle it. `what` names the file's role in the messages."""
    path, where = Path(path).expanduser(), f"{what}: " if what else ""
    if not path.is_file():
        raise FileNotFoundError(f"{where}no such file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        # torch names the class a pickle wanted ("Unsupported global: ..."); garbage bytes fail on an opcode
        # instead. Its message goes on to advise turning the safety off: only the line naming the culprit is kept
        why = next((l.strip() for l in str(e).splitlines() if "Unsupported global" in l), "")
        why = why.split(" Please use")[0]       # the rest of that line advises allowlisting the culprit
        if why:
            raise ValueError(f"{where}refused to load {path}: it holds a pickled object other than tensors and "
                             f"containers, which could run code when unpickled; nothing in it was run. "
                             f"{why[:200]}".rstrip()) from None
        raise ValueError(f"{where}{path} is not a torch checkpoint (its bytes are not a pickle of tensors)") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:  # torch's errors for a damaged file
        raise ValueError(f"{where}{path} is not a readable torch checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None


def unwrap(checkpoint, wrappers=("state_dict",), strip_module=False, what="checkpoint"):
    """The state dict inside a loaded file: {'state_dict' | 'model' | 'module': {...}} (the first of `wrappers`
    present) or a bare one; strip_module drops DDP's 'module.' key prefix."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{what}: expected a state dict (name -> tensor), got {type(checkpoint).__name__}")
    for key in wrappers:                    # VC2 / HPS: 'state_dict'; ViCLIP: 'model'; InternVideo2: 'module'
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    if strip_module:
        checkpoint = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in checkpoint.items()}
    return checkpoint


def load_strict(model, state_dict, what, shown=8):
    """Copies state_dict into model, or raises ONE ValueError naming every kind of mismatch: its first line counts
    the missing / unexpected / misshapen keys, then up to `shown` of each kind follow ('  missing: key') and how many
    more there are. A model built on the meta device (fast, no memory) takes the checkpoint tensors themselves
    (assign=True)."""
    own = model.state_dict()
    problems = {"missing": sorted(set(own) - set(state_dict)), "unexpected": sorted(set(state_dict) - set(own)),
                "wrong shape": [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                                for k in own if k in state_dict and state_dict[k].shape != own[k].shape]}
    if any(problems.values()):
        counts = ", ".join(f"{len(v)} {kind}" for kind, v in problems.items() if v)
        lines = [f"{what}: state dict does not match the model ({len(own)} keys; {counts})"]
        for kind, items in problems.items():
            lines += [f"  {kind}: {k}" for k in items[:shown]]
            lines += [f"  ... and {len(items) - shown} more {kind}"] if len(items) > shown else []
        raise ValueError("\n".join(lines))
    # assign=True swaps in the checkpoint's tensors (copying into meta tensors would be a no-op); requires_grad
    # stays the module's own
    assign = any(t.is_meta for t in own.values())
    model.load_state_dict(state_dict, strict=True, assign=assign)
    return model


def load_lora_list(student, tensors, rank, skip=(), name=lambda n: n, order=None):
    """A LoRA in the release's unet_lora.pt format (a plain list, no names: up, down for each wrapped module, in
    named_modules() order) onto a student UNet as lora.py wrappers, matched purely by position as the release does
    (app.py: lora_up.weight = loras.pop(0)):
      - modules: every Linear/Conv2d/Conv3d of the student (lora.add_lora at `rank`, except `skip`), in
        named_modules() order;
      - tensors 2k and 2k+1 are module k's up (out, r[, 1, 1(, 1)]) and down (r, in[, kernel]);
      - `order` (optional): the release's module names, `name` turning ours into its spelling; ours must come in
        exactly that order.
    A wrong length or any wrong shape raises ONE ValueError listing every mismatch. The tensors are adopted, not
    copied, so a student built on the meta device costs nothing. Returns the number of tensors loaded. After an
    error the student is left wrapped but unloaded: build a fresh one."""
    if not isinstance(tensors, (list, tuple)) or not all(torch.is_tensor(t) for t in tensors):
        raise ValueError(f"a T2V-Turbo LoRA file holds a list of tensors, not a {type(tensors).__name__}")
    if not student.config.guidance_embed_dim:
        raise ValueError("the release's LoRA is for the student UNet (guidance_embed_dim=256); this one is a teacher")
    if any(isinstance(m, LoRA) for m in student.modules()):
        raise ValueError("this UNet already has LoRA wrappers")
    with torch.device(next(student.parameters()).device):  # a meta student gets meta wrappers: no memory, no init
        add_lora(student, rank, skip=skip)
    # the order the release walks: named_modules() after wrapping (a wrapper keeps its layer's slot). NB: add_lora's
    # own return value is not in this order (it wraps a module's direct children before descending)
    loras = [(name(n), m) for n, m in student.named_modules() if isinstance(m, LoRA)]
    problems = []
    if order is not None and list(order) != [n for n, _ in loras]:
        names = [n for n, _ in loras]
        i = next((i for i, (a, b) in enumerate(zip(names, order)) if a != b), min(len(names), len(order)))
        problems.append(f"  module order: ours and the release's first differ at module {i}: "
                        f"{names[i] if i < len(names) else '(end)'} vs {order[i] if i < len(order) else '(end)'} "
                        f"({len(names)} vs {len(order)} modules)")
    if len(tensors) != 2 * len(loras):
        problems.append(f"  list length: {len(tensors)} tensors; the student needs {2 * len(loras)} (up, down for "
                        f"each of {len(loras)} modules)")
    for k, (n, m) in enumerate(loras):
        for i, role, p in ((2 * k, "up", m.up.weight), (2 * k + 1, "down", m.down.weight)):
            if i < len(tensors) and tensors[i].shape != p.shape:
                problems.append(f"  wrong shape: tensor {i} ({n} {role}) {tuple(tensors[i].shape)}, "
                                f"expected {tuple(p.shape)}")
    if problems:
        raise ValueError(problem_report("the LoRA list does not fit the student UNet", problems))
    for k, (_, m) in enumerate(loras):
        m.up.weight = nn.Parameter(tensors[2 * k].to(m.up.weight.dtype), requires_grad=False)
        m.down.weight = nn.Parameter(tensors[2 * k + 1].to(m.down.weight.dtype), requires_grad=False)
    return 2 * len(loras)


def lora_list_from_file(path, student):
    """The release's unet_lora.pt list read from a LoRA file train.py wrote (OUT/turbo_lora.safetensors): `student`
    is the empty student wrapped as that file's layout (on the meta device, lora.add_lora); its module walk is the
    order, up before down, fp32, no names. A file that does not fit raises ONE ValueError listing every mismatch."""
    want = {f"unet.{k}": tuple(v.shape) for k, v in lora_tensors(student).items()}
    with _open(path) as f:
        problems = key_problems(want, stored_shapes(f), "the student")
        if problems:
            raise ValueError(problem_report(f"{path}: not the LoRA of a student with the release's layout", problems))
        return [f.get_tensor(k).float() for k in want]


def stored_shapes(f):
    """{name: shape} of an open safetensors file, read from its header alone."""
    return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def key_problems(want, got, wanted_by="config"):
    """{name: shape} wanted vs found -> problem_report's lines: every missing, unexpected and misshapen key."""
    return [f"  missing: {k}" for k in want if k not in got] + \
        [f"  unexpected: {k}" for k in got if k not in want] + \
        [f"  wrong shape: {k}: checkpoint {got[k]}, {wanted_by} {want[k]}"
         for k in want if k in got and got[k] != want[k]]


def problem_report(title, problems, shown=5):
    """One error message for a list of problems ('kind: detail' lines): its first line says how many of each kind,
    the first one, and, when there are more than `shown`, the file (in the temp folder) that lists them all; the
    first `shown` follow on lines of their own."""
    kinds = Counter(line.split(":")[0].strip() for line in problems)
    head = f"{title} ({len(problems)} problem{'s' * (len(problems) != 1)}: " + \
        ", ".join(f"{n} {kind}" for kind, n in kinds.items()) + f"; first: {problems[0].strip()}"
    if len(problems) > shown:
        fd, full = tempfile.mkstemp(prefix="t2v-turbo-problems-", suffix=".txt", text=True)
        with os.fdopen(fd, "w") as f:
            f.write(title + "\n" + "\n".join(problems) + "\n")
        head += f"; all {len(problems)} listed in {full}"
    return head + ")\n" + "\n".join(problems[:shown])


if __name__ == "__main__":
    for p in sys.argv[1:]:
        meta = read_meta(p)
        with _open(p) as f:
            n = sum(torch.Size(f.get_slice(k).get_shape()).numel() for k in f.keys())
            print(f"{p}: {len(list(f.keys()))} tensors, {n:,} numbers, kind={meta.get('kind')}")
        print(json.dumps(meta, indent=1)[:3000])
