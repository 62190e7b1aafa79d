"""LoRA on every Linear / Conv2d / Conv3d of the UNet, as T2V-Turbo's release trains its VC2 student.

W x  ->  W x + dropout(up(down(x))) * scale, with `down` drawn with std 1/r and `up` zero, so a fresh LoRA changes
nothing (the student starts as exactly the teacher). The dropout is the release's: p = 0.1 on the branch of every
Linear and Conv2d, none on a Conv3d (cloneofsimo's lora.py, which T2V-Turbo uses; its --lora_dropout flag never
reaches it). It acts in train mode only, so the EMA target and sampling never see it. For a conv, `down` is a
conv with the layer's own kernel and stride to r channels and `up` a 1x1 (x1x1) conv back, so up @ down is again a
kernel of the layer's shape and the LoRA merges into W exactly (`merge_lora`). The rank is clipped to min(in, out)
per layer (the release does the same, which is why its conv_in / out conv get rank 4). With LoRA, one UNet serves
as the student, the teacher (`AdaptersOff`) and the target network (`EMAAdapters`): the teacher's weights are the
student's frozen base. `lora_tensors` is the LoRA on its own, in the release's unet_lora.pt order. `make_student`
builds the student as the release does: the teacher's UNet plus a zero w projection, LoRA on the modules it wraps.

Why hand-written and not `peft`: the release's unet_lora.pt is an unnamed list of (up, down) tensors in module
order, and loading it needs exactly this module order and rank rule; the few lines here are easier to read and to
match than peft's wrappers, and requirements.txt needs no peft.

    python lora.py     # wraps the toy UNet: trainable / total parameters, and how far merged is from unmerged
"""

import copy
import dataclasses
from contextlib import contextmanager

import torch
import torch.nn as nn

from tiny_unet3d import UNet3D, toy_unet

LORA_TYPES = (nn.Linear, nn.Conv2d, nn.Conv3d)
# VC2's init_attn proj_in/proj_out are Conv1d, which the release's injector does not search (Linear here): a student
# that must round-trip through the release's unet_lora.pt leaves them unwrapped (train.py, vc2/convert.py)
RELEASE_UNWRAPPED = ("init_attn.0.proj_in", "init_attn.0.proj_out")


class LoRA(nn.Module):
    """Wraps one layer: base (frozen) + dropout(up(down(x))) * scale."""

    def __init__(self, base, rank, scale=1.0, dropout=0.1):
        super().__init__()
        self.base, self.scale = base, scale
        self.dropout = nn.Dropout(0.0 if isinstance(base, nn.Conv3d) else dropout)  # the release: none on Conv3d
        if isinstance(base, nn.Linear):
            fan_in, fan_out = base.in_features, base.out_features
            r = min(rank, fan_in, fan_out)
            self.down, self.up = nn.Linear(fan_in, r, bias=False), nn.Linear(r, fan_out, bias=False)
        else:  # a conv: down keeps the kernel, stride, padding; up is pointwise
            conv = type(base)
            r = min(rank, base.in_channels, base.out_channels)
            self.down = conv(base.in_channels, r, base.kernel_size, base.stride, base.padding, bias=False)
            self.up = conv(r, base.out_channels, 1, bias=False)
        nn.init.normal_(self.down.weight, std=1.0 / r)  # the release: down normal with std 1/r, up zero
        nn.init.zeros_(self.up.weight)
        self.rank, self.enabled = r, True

    @property
    def weight(self):  # the wrapped layer's weight, so code that reads `layer.weight.dtype` still works
        return self.base.weight

    def forward(self, x):
        if not self.enabled:                      # adapters_off: the frozen base layer alone (the teacher)
            return self.base(x)
        return self.base(x) + self.dropout(self.up(self.down(x))) * self.scale

    def delta(self):
        """The weight change up @ down, in the base weight's shape."""
        up, down = self.up.weight.flatten(1), self.down.weight.flatten(1)  # (out, r), (r, in * kernel)
        return (up @ down).view_as(self.base.weight) * self.scale


def add_lora(model, rank, scale=1.0, dropout=0.1, skip=()):
    """Replaces every Linear/Conv2d/Conv3d in `model` by a LoRA wrapper, except the modules named in `skip`. Freezes
    the base weights; returns the list of LoRA modules (their down/up are the trainable ones). NB: the list is not
    in named_modules() order (a module's direct children are wrapped before its grandchildren); lora_tensors is.
    dropout: on the LoRA branch of Linear and Conv2d layers (0.1, the release's)."""
    model.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LORA_TYPES) and f"{name}.{child_name}".lstrip(".") not in skip:
                lora = LoRA(child, rank, scale, dropout).to(child.weight.device, child.weight.dtype)
                lora.train(child.training)  # a new module starts in train mode: take the wrapped layer's mode
                setattr(module, child_name, lora)
                wrapped.append(lora)
    return wrapped


def lora_tensors(model):
    """-> {'<module>.up.weight': (out, r[, 1...]), '<module>.down.weight': (r, in[, kernel])} for every LoRA of
    `model`, in named_modules() order (the release's unet_lora.pt order, convert.export_release_lora): the
    student's LoRA on its own, about 0.44 GiB at VC2 size instead of a 5.3 GiB merged UNet."""
    return {f"{n}.{role}.weight": getattr(m, role).weight.detach()
            for n, m in model.named_modules() if isinstance(m, LoRA) for role in ("up", "down")}


# ----------------------------------------------------------------------------------------------------------------
# One UNet, three networks. With LoRA the student's base weights ARE the teacher's (frozen, never changed), so
#   the teacher          = the student with its adapters off (w_proj's base is zero)       (AdaptersOff)
#   the target theta^-   = the student's base + an EMA copy of the trained tensors only    (EMAAdapters)
# both exact, and at VideoCrafter2 size they save a 5.3 GiB teacher and a 5.7 GiB EMA student (RESULTS.md;
# LCM-LoRA's distillation does the same).


@contextmanager
def swapped(params, tensors):
    """Inside: every parameter in `params` holds the matching tensor of `tensors` (their storages are exchanged,
    no copy, and no autograd version bump, so a graph built before stays valid: the originals are back when the
    block ends, before any backward pass).

    Autocast: inside a torch.autocast region, the bf16 copy of every trainable leaf weight is cast once and cached
    for the rest of the region, keyed on the Parameter object. An exchange of storages keeps the object, so without
    care the target network would compute with the online student's cached copies (the EMA tensors silently
    ignored). The cache is therefore emptied on the way in and on the way out: the swapped-in tensors are cast
    afresh, and the student called after the block does not meet theirs. The cache holds trainable weights only
    (the adapters, not the frozen UNet), so the cost is one re-cast of the adapters; a graph built before keeps
    its own casts."""
    params = list(params)
    torch.clear_autocast_cache()
    for p, t in zip(params, tensors):
        p.data, t.data = t.data, p.data
    try:
        yield
    finally:
        for p, t in zip(params, tensors):
            p.data, t.data = t.data, p.data
        torch.clear_autocast_cache()


@contextmanager
def eval_mode(model):
    """Inside: `model` in eval mode (no dropout, no gradient checkpointing); its mode is restored after."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


@contextmanager
def adapters_off(model):
    """Inside: every LoRA of `model` computes its base layer alone."""
    loras = [m for m in model.modules() if isinstance(m, LoRA)]
    for m in loras:
        m.enabled = False
    try:
        yield
    finally:
        for m in loras:
            m.enabled = True


class AdaptersOff(nn.Module):
    """The frozen teacher, read off a LoRA student: adapters off, eval mode, no gradient. The student's w projection
    is a zero base weight plus its LoRA (lora.make_student), so with the adapters off w adds exactly 0 to the
    timestep embedding. Called as the teacher is: (x, t, context, fps)."""

    def __init__(self, student):
        super().__init__()
        self._student = [student]                  # a list: not registered, so it is not saved or moved twice
        self.config = student.config

    @torch.no_grad()
    def forward(self, x, t, context, fps=16):
        student = self._student[0]
        with adapters_off(student), eval_mode(student):
            return student(x, t, context, fps, w=torch.zeros(x.shape[0], device=x.device))


class EMAAdapters(nn.Module):
    """The target network theta^- of a LoRA student: the student's frozen base plus an EMA copy of its trained
    tensors (`params`: the adapters), in eval mode, no gradient. Its parameters() are the
    EMA copies, in `params` order, so turbo.ema_update(target.parameters(), params, mu) updates it."""

    def __init__(self, student, params):
        super().__init__()
        self._student = [student]
        self.config = student.config
        self.ema = nn.ParameterList([nn.Parameter(p.detach().clone(), requires_grad=False) for p in params])
        self._params = list(params)

    @torch.no_grad()
    def forward(self, x, t, context, fps=16, w=None):
        student = self._student[0]
        with swapped(self._params, list(self.ema)), eval_mode(student):
            return student(x, t, context, fps, w=w)


@torch.no_grad()
def merge_lora(model):
    """Folds every LoRA into its base weight and puts the plain layer back: W <- W + up @ down."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRA):
                child.base.weight += child.delta()
                setattr(module, child_name, child.base)
    return model


def make_student(teacher_unet, lora_rank, temporal_dropout=0.1, grad_ckpt=False, lora_dropout=0.1):
    """Student = teacher + the w projection w_proj, zero (at step 0 it predicts exactly what the teacher does), with
    LoRA on every Linear/Conv the release wraps (w_proj too: its zero base stays frozen, vc2/convert.py W_PROJ_POLICY),
    so the release's unet_lora.pt carries the whole student. Returns (student, trainable parameters)."""
    with torch.device("meta"):  # shapes only: the weights come from the teacher, no init; the teacher's own class
        student = type(teacher_unet)(dataclasses.replace(teacher_unet.config, guidance_embed_dim=256,
                                                         temporal_dropout=temporal_dropout, use_checkpoint=grad_ckpt))
    sd = teacher_unet.state_dict()                  # LoRA: the frozen base IS the teacher's tensors (shared, no copy)
    sd = {k: v if lora_rank else v.clone() for k, v in sd.items()}     # full fine-tuning changes them: a copy
    (w_key,) = set(student.state_dict()) - set(sd)                     # the one new tensor: the w projection
    sd[w_key] = torch.zeros_like(student.w_proj.weight, device=next(teacher_unet.parameters()).device)  # zero
    student.load_state_dict(sd, strict=True, assign=True)                # ... so that at step 0 student == teacher
    if not lora_rank:                                                       # full fine-tuning (the toy)
        return student, list(student.parameters())
    loras = add_lora(student, lora_rank, dropout=lora_dropout, skip=RELEASE_UNWRAPPED)
    return student, [p for l in loras for p in (l.down.weight, l.up.weight)]


if __name__ == "__main__":
    torch.manual_seed(0)
    unet = UNet3D(toy_unet()).eval()
    loras = add_lora(unet, rank=16)
    for l in loras:
        nn.init.normal_(l.up.weight, std=0.02)
    n_train = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in unet.parameters())
    x, ctx = torch.randn(2, 8, 8, 8, 8), torch.randn(2, 16, 64)
    y = unet(x, torch.tensor([10, 500]), ctx)
    merged = merge_lora(copy.deepcopy(unet))
    print(f"{len(loras)} LoRA layers, {n_train:,} trainable of {n_all:,}; merged vs unmerged max diff "
          f"{(merged(x, torch.tensor([10, 500]), ctx) - y).abs().max():.2e}")
