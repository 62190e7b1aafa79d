"""ModelScopeT2V's diffusers folder (and T2V-Turbo (MS)'s released unet_lora.pt) -> this project's checkpoints, which
sample.py samples and the tests read: OUT/teacher.safetensors, and with --lora OUT/turbo.safetensors (the student,
its LoRA merged). Each carries its configs, so nothing else is needed to rebuild it; nothing is downloaded.

The student is built as the release builds it (app_ms.py): the teacher's UNet with time_cond_proj_dim=256, the
released LoRA (rank 32, ms/models.py: load_release_lora) on it, then merged (collapse_lora). Its w projection's base
weight is zero here: the release's was drawn at random when the app built the UNet and was never saved, so no file
holds it (TUTORIAL.md section 9 says the same of VC2's).

    python -m ms.convert --ms text-to-video-ms-1.7b/ --out weights/ms --lora unet_lora.pt
    python sample.py --ckpt weights/ms --prompt "a corgi running on the beach"     # the student, 4 steps
    python -m ms.convert --export-release-lora runs/ms/turbo_lora.safetensors --out unet_lora.pt   # for app_ms.py
"""

import argparse
from pathlib import Path

import torch

from lora import add_lora, make_student, merge_lora
from machinery.checkpoint import (lora_list_from_file, model_meta, read_meta, safe_torch_load, save_checkpoint,
                                  written_atomically)
from machinery.cli import Parser, run_cli
from ms.models import MS_RANK, MSUNet, MSUNetConfig, load_ms_folder, load_release_lora

# what sample.py reads of a checkpoint's training config: the release's MS pipeline samples 16 frames of 256 x 256;
# ModelScope has no fps input (8 is what it was trained at); the teacher's CFG scale is diffusers' pipeline default
MS_TRAIN = {"frames": 16, "height": 256, "width": 256, "size": None, "fps": 8, "guidance": 9.0, "turbo_w": 7.5,
            "turbo_sample_steps": 4}


def convert(folder, out, lora=None, train=MS_TRAIN):
    """Writes OUT/teacher.safetensors (and OUT/turbo.safetensors with `lora`) -> the paths written. `train`: the
    sampling settings the checkpoints carry (the tests shrink the clip). Every input is loaded and checked before
    anything is written: a folder or a LoRA that does not load raises one ValueError, and OUT is left as it was."""
    models = load_ms_folder(folder)
    source = {"ms": str(folder)}
    files = {"teacher": (models, model_meta(models["unet"], models["text"], models["ae"], kind="teacher",
                                            train=train, source=source))}
    if lora:
        tensors = safe_torch_load(lora, "T2V-Turbo (MS) LoRA (jiachenli-ucsb/T2V-Turbo-MS on Hugging Face: "
                                        "unet_lora.pt)")
        student, _ = make_student(models["unet"], 0)          # a copy of the teacher + the zero w projection
        try:
            load_release_lora(student, tensors, MS_RANK)
        except ValueError as e:
            raise ValueError(f"--lora {lora}: {e}") from None
        merge_lora(student)
        files["turbo"] = ({**models, "unet": student.eval()},
                          model_meta(student, models["text"], models["ae"], kind="turbo", train=train,
                                     source={**source, "lora": str(lora)}))
    written = []
    try:
        for name, (parts, meta) in files.items():
            written.append(save_checkpoint(Path(out) / f"{name}.safetensors", parts, meta))
    except BaseException:              # a full disk on the second file: no half a conversion left behind either
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def export_release_lora(path):
    """A LoRA file train.py wrote for an MS student (OUT/turbo_lora.safetensors) -> the release's unet_lora.pt list:
    [up, down] per module in module order, fp32, no names (ms/models.py: release_lora_list's order), so app_ms.py
    loads a student trained here. A file that does not fit that layout raises ONE ValueError listing it all."""
    meta = read_meta(path)
    if meta.get("kind") != "lora" or meta.get("unet", {}).get("kind") != "ms":
        raise ValueError(f"{path} is not the LoRA file of a ModelScope student (train.py --preset ms writes one beside "
                         f"its student: turbo_lora.safetensors)")
    with torch.device("meta"):                             # the module walk, from the config alone
        student = MSUNet(MSUNetConfig(**meta["unet"]))
        add_lora(student, meta["rank"])
    return lora_list_from_file(path, student)


def main(argv=None):
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--ms", help="ali-vilab/text-to-video-ms-1.7b's folder (unet/, vae/, text_encoder/, tokenizer/; a "
                   "Hugging Face snapshot)")
    g.add_argument("--export-release-lora", metavar="LORA", help="a LoRA file train.py wrote for an MS student: write "
                   "it as the release's unet_lora.pt list to --out")
    p.add_argument("--out", required=True, help="the folder for teacher.safetensors (and turbo.safetensors); with "
                   "--export-release-lora, the unet_lora.pt to write")
    p.add_argument("--lora", help="T2V-Turbo (MS)'s unet_lora.pt: also write the student, its LoRA merged")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.export_release_lora:
        if out.exists():
            p.error(f"--out {out} exists; give a new file name")
        with written_atomically(out) as tmp:
            torch.save(export_release_lora(args.export_release_lora), tmp)
        print(f"wrote {out}")
        return
    if out.exists() and not out.is_dir():
        p.error(f"--out {out} is a file; give a folder for teacher.safetensors")
    if any((out / n).exists() for n in ("teacher.safetensors", "turbo.safetensors")):
        p.error(f"--out {out}: teacher.safetensors or turbo.safetensors exists there; give a new folder")
    if args.lora and not Path(args.lora).is_file():
        p.error(f"--lora {args.lora}: no such file")
    for path in convert(args.ms, out, args.lora):
        print(f"wrote {path}")


if __name__ == "__main__":
    run_cli(main)
