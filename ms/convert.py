"""ModelScopeT2V's diffusers folder (and T2V-Turbo (MS)'s released unet_lora.pt) -> this project's checkpoints, which
sample.py samples and the tests read: OUT/teacher.safetensors, and with --lora OUT/turbo.safetensors (the student,
its LoRA merged). Each carries its configs, so nothing else is needed to rebuild it; nothing is downloaded.

The student is built as the release builds it (app_ms.py): the teacher's UNet with time_cond_proj_dim=256, the
released LoRA (rank 32, ms/models.py: load_release_lora) on it, then merged (collapse_lora). Its w projection's base
weight is zero here: the release's was drawn at random when the app built the UNet and was never saved, so no file
holds it (TUTORIAL.md section 9 says the same of VC2's).

    python -m ms.convert --ms text-to-video-ms-1.7b/ --out weights/ms --lora unet_lora.pt
    python sample.py --ckpt weights/ms --prompt "a corgi running on the beach"     # the student, 4 steps
"""

import argparse
from pathlib import Path

from lora import make_student, merge_lora
from machinery.checkpoint import model_meta, safe_torch_load, save_checkpoint
from machinery.cli import Parser, run_cli
from ms.models import MS_RANK, load_ms_folder, load_release_lora

# what sample.py reads of a checkpoint's training config: the release's MS pipeline samples 16 frames of 256 x 256;
# ModelScope has no fps input (8 is what it was trained at); the teacher's CFG scale is diffusers' pipeline default
MS_TRAIN = {"frames": 16, "height": 256, "width": 256, "size": None, "fps": 8, "guidance": 9.0, "turbo_w": 7.5,
            "turbo_sample_steps": 4}


def convert(folder, out, lora=None, train=MS_TRAIN):
    """Writes OUT/teacher.safetensors (and OUT/turbo.safetensors with `lora`) -> the paths written. `train`: the
    sampling settings the checkpoints carry (the tests shrink the clip)."""
    models = load_ms_folder(folder)
    source = {"ms": str(folder)}
    out, written = Path(out), []
    meta = model_meta(models["unet"], models["text"], models["ae"], kind="teacher", train=train, source=source)
    written.append(save_checkpoint(out / "teacher.safetensors", models, meta))
    if lora:
        tensors = safe_torch_load(lora, "T2V-Turbo (MS) LoRA (jiachenli-ucsb/T2V-Turbo-MS on Hugging Face: "
                                        "unet_lora.pt)")
        student, _ = make_student(models["unet"], 0)          # a copy of the teacher + the zero w projection
        load_release_lora(student, tensors, MS_RANK)
        merge_lora(student)
        parts = {**models, "unet": student.eval()}
        meta = model_meta(student, models["text"], models["ae"], kind="turbo", train=train,
                          source={**source, "lora": str(lora)})
        written.append(save_checkpoint(out / "turbo.safetensors", parts, meta))
    return written


def main(argv=None):
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ms", required=True, help="ali-vilab/text-to-video-ms-1.7b's folder (unet/, vae/, "
                   "text_encoder/, tokenizer/; a Hugging Face snapshot)")
    p.add_argument("--out", required=True, help="the folder for teacher.safetensors (and turbo.safetensors)")
    p.add_argument("--lora", help="T2V-Turbo (MS)'s unet_lora.pt: also write the student, its LoRA merged")
    args = p.parse_args(argv)
    out = Path(args.out)
    if any((out / n).exists() for n in ("teacher.safetensors", "turbo.safetensors")):
        p.error(f"--out {out}: teacher.safetensors or turbo.safetensors exists there; give a new folder")
    if args.lora and not Path(args.lora).is_file():
        p.error(f"--lora {args.lora}: no such file")
    for path in convert(args.ms, out, args.lora):
        print(f"wrote {path}")


if __name__ == "__main__":
    run_cli(main)
