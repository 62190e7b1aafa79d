"""Bad inputs, as a new user would give them, to every command line: one clear line on stderr naming the file or
flag, exit code 2 (usage) or 1 (a failed run), no traceback, and nothing written or changed. Table-driven: a new
case is one line. data.py's own cases are in test_data.py, evaluate.py's real mode's in test_evaluate_real.py;
test_the_count prints the total."""
import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

import convert
import data
import evaluate
import sample
import train
from checkpoint import read_checkpoint, read_meta, save_tensors

import test_data
import test_evaluate_real


class _RunsCode:  # a pickle that would open a file when unpickled
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory, toy_models):
    """Inputs good and bad, made once: {name: path}. The cases below only read them."""
    d = tmp_path_factory.mktemp("inputs")
    f = {"teacher": toy_models / "teacher.safetensors", "reward": toy_models / "reward_image.safetensors",
         "toy_models": toy_models, "missing": d / "missing.safetensors", "empty_dir": d / "empty", "dir": d}
    f["empty_dir"].mkdir()
    (d / "text.safetensors").write_text("hello, I am text")
    f["text"] = d / "text.safetensors"
    f["truncated"] = d / "truncated.safetensors"
    f["truncated"].write_bytes(f["teacher"].read_bytes()[:5000])
    f["random"] = d / "random.ckpt"
    f["random"].write_bytes(bytes(range(256)) * 40)
    f["pickle"] = d / "runs_code.ckpt"
    torch.save({"state_dict": {}, "x": _RunsCode(str(d / "side_effect"))}, f["pickle"])
    f["v2"] = d / "t2v_turbo_v2.ckpt"
    torch.save({"model.diffusion_model.motion_cond_proj.weight": torch.zeros(2, 2)}, f["v2"])
    f["not_vc2"] = d / "not_vc2.ckpt"
    torch.save({"state_dict": {f"foo.{i}": torch.zeros(1) for i in range(40)}}, f["not_vc2"])
    tensors, meta = read_checkpoint(f["teacher"])
    f["state"] = d / "state" / "turbo.state-0000002.safetensors"  # a resumable state trained at another lr
    cfg = {**dataclasses.asdict(train.toy()), "turbo_lr": 0.5, "toy_models": str(toy_models), "out": "elsewhere"}
    save_tensors(f["state"], {"x": torch.zeros(1)}, {"t2v_turbo_state": json.dumps({"step": 2, "config": cfg})})
    f["state_dir"] = f["state"].parent
    f["world_dir"] = d / "world"                               # a state of a run on 2 processes (torchrun)
    save_tensors(f["world_dir"] / "turbo.state-0000002.safetensors", {"x": torch.zeros(1)},
                 {"t2v_turbo_state": json.dumps({"step": 2, "config": {}, "world": 2})})
    f["vocab"] = d / "vocab.txt"
    f["vocab"].write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n")
    f["prompts_empty"] = d / "empty.txt"
    f["prompts_empty"].write_text("# only a comment\n\n")
    f["prompts_binary"] = d / "binary.txt"
    f["prompts_binary"].write_bytes(b"\xff\xfe\x00caption\x80\n")
    f["videos"] = d / "videos"
    f["videos"].mkdir()
    (d / "videos.csv").write_text("path,caption\na.mp4,a dog\n")
    f["csv"] = d / "videos.csv"
    f["vbench"] = d / "vbench"
    (f["vbench"] / "videos").mkdir(parents=True)
    (f["vbench"] / "videos" / "a red circle moving left-0.mp4").write_bytes(b"an earlier video")
    f["converted"] = d / "converted"
    f["converted"].mkdir()
    (f["converted"] / "teacher.safetensors").write_bytes(b"an earlier conversion")
    save_file({"a": torch.zeros(1)}, str(d / "plain.safetensors"))
    f["plain"] = d / "plain.safetensors"
    unet = {**read_meta(f["teacher"])["unet"], "guidance_embed_dim": 256}
    meta = {"kind": "lora", "rank": 4, "w_proj_base": "zero", "unet": unet}
    f["lora"] = d / "vcm_lora.safetensors"   # a LoRA file of the right kind whose tensors fit no student
    save_tensors(f["lora"], {"unet.w_proj.up.weight": torch.zeros(3, 3)}, {"t2v_turbo": json.dumps(meta)})
    return f


T = ["--device", "cpu", "--threads", "1", "--compare-per-caption", "0"]
# (command, argv with {name} = files[name], exit code, a phrase of the one line)
CASES = [
    # sample.py
    ("sample", ["--ckpt", "{missing}", "--prompt", "x"], 2, "no such file or folder (train one first"),
    ("sample", ["--ckpt", "{empty_dir}", "--prompt", "x"], 2, "no turbo.safetensors or teacher.safetensors"),
    ("sample", ["--ckpt", "{text}", "--prompt", "x"], 2, "not a readable safetensors checkpoint"),
    ("sample", ["--ckpt", "{truncated}", "--prompt", "x"], 2, "not a readable safetensors checkpoint"),
    ("sample", ["--ckpt", "{reward}", "--prompt", "x"], 2, "is a reward model"),
    ("sample", ["--ckpt", "{state}", "--prompt", "x"], 2, "is a resumable training state"),
    ("sample", ["--ckpt", "{plain}", "--prompt", "x"], 2, "not a checkpoint written by this project"),
    ("sample", ["--ckpt", "{teacher}", "--prompts", "{dir}/nope.txt"], 2, "--prompts {dir}/nope.txt: no such file"),
    ("sample", ["--ckpt", "{teacher}", "--prompts", "{prompts_empty}"], 2, "has no captions"),
    ("sample", ["--ckpt", "{teacher}", "--prompts", "{prompts_binary}"], 2, "cannot read it as a text file"),
    ("sample", ["--ckpt", "{teacher}"], 2, "give --prompt TEXT or --prompts FILE"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "x", "--num-per-prompt", "0"], 2, "--num-per-prompt must be"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "x", "--steps", "0"], 2, "--steps must be >= 1"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "x", "--dtype", "fp8"], 2, "invalid choice: 'fp8'"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "x", "--device", "tpu"], 2, "--device tpu"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "a red circle moving left", "--vbench", "--out", "{vbench}"], 1,
     "exists (1 of the VBench names are taken): give a new --out"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "a red circle moving left", "--origin-steps", "2"], 2,
     "--origin-steps 2: need --steps (4) <= it <= 1000"),
    # train.py
    ("train", ["--teacher", "{missing}", *T], 2, "no teacher checkpoint at"),
    ("train", ["--teacher", "{reward}", *T], 2, "is a reward model"),
    ("train", ["--toy-models", "{toy_models}", "--data", "{dir}/nope", "--captions", "{csv}", *T], 2,
     "--data/--captions: no video folder at"),
    ("train", ["--toy-models", "{toy_models}", "--data", "{videos}", "--captions", "{videos}", *T], 2,
     "--data/--captions:"),
    ("train", ["--toy-models", "{toy_models}", "--data", "{videos}", "--captions", "{csv}", *T], 2,
     "real data needs a real image reward model: give --hps PATH"),
    ("train", ["--toy-models", "{toy_models}", "--lr-schedule", "linear", *T], 2, "--lr-schedule must be one of"),
    ("train", ["--toy-models", "{toy_models}", "--internvideo2", "{missing}", *T], 2, "needs --bert-vocab"),
    ("train", ["--toy-models", "{toy_models}", "--internvideo2", "{missing}", "--viclip", "{missing}", "--bert-vocab",
               "{vocab}", *T], 2, "--internvideo2 takes the place of --viclip"),
    ("train", ["--toy-models", "{toy_models}", "--internvideo2", "{missing}", "--bert-vocab", "{vocab}", *T], 2,
     "no video reward model at {missing}"),
    ("train", ["--toy-models", "{toy_models}", "--lora-dropout", "1", *T], 2, "0 <= --lora-dropout < 1"),
    ("train", ["--toy-models", "{toy_models}", "--turbo-lr", "fast", *T], 2, "--turbo-lr: invalid float value"),
    ("train", ["--toy-models", "{toy_models}", "--out", "{state_dir}", "--resume", *T], 1,
     "which was trained with other values: --turbo-lr 0.0001 (saved: 0.5). Give the saved values"),
    ("train", ["--toy-models", "{toy_models}", "--out", "{world_dir}", "--resume", *T], 1,
     "which was trained with other values: 1 process(es) (saved: 2; torchrun --nproc_per_node=2)"),
    # evaluate.py
    ("evaluate", ["--ckpt", "{missing}"], 2, "no such file or folder"),
    ("evaluate", ["--ckpt", "{reward}"], 2, "is a reward model"),
    ("evaluate", ["--ckpt", "{teacher}", "--per-seen", "-1"], 2, "--per-seen and --per-heldout must be >= 0"),
    ("evaluate", ["--ckpt", "{teacher}", "--per-seen", "0", "--per-heldout", "0"], 2, "and not both 0"),
    ("evaluate", ["--ckpt", "{teacher}", "--steps", "0"], 2, "--steps must be >= 1"),
    ("evaluate", ["--ckpt", "{teacher}", "--train"], 2, "--train and --tune-guidance go with --table"),
    ("evaluate", ["--table", "{dir}/no_run"], 2, "--table {dir}/no_run: no such folder"),
    ("evaluate", ["--table", "{dir}", "--toy-models", "{empty_dir}"], 2, "no teacher.safetensors there"),
    # convert.py
    ("convert", ["--vc2", "{missing}", "--out", "{dir}/out"], 2, "no such file"),
    ("convert", ["--vc2", "{random}", "--out", "{dir}/out"], 1, "is not a torch checkpoint"),
    ("convert", ["--vc2", "{pickle}", "--out", "{dir}/out"], 1, "refused to load"),
    ("convert", ["--vc2", "{not_vc2}", "--out", "{dir}/out"], 1, "problems: 40 unknown key, "),
    ("convert", ["--vc2", "{teacher}", "--out", "{dir}/out"], 2, "is already a teacher checkpoint of this project"),
    ("convert", ["--vc2", "{v2}", "--out", "{dir}/out"], 1, "a T2V-Turbo-v2 checkpoint (model.diffusion_model.motion"),
    ("convert", ["--vc2", "{not_vc2}", "--out", "{converted}"], 2, "teacher.safetensors exists there"),
    ("convert", ["--vc2", "{not_vc2}", "--out", "{dir}/out", "--lora", "{missing}"], 2, "--lora"),
    ("convert", ["--vc2", "{not_vc2}", "--out", "{dir}/out", "--lora", "a", "--merged-unet", "b"], 2,
     "not allowed with argument"),
    ("convert", ["--vc2", "{not_vc2}"], 2, "the following arguments are required: --out"),
    ("convert", ["--out", "{dir}/out"], 2, "give --vc2 model.ckpt (a conversion) or --export-release-lora"),
    ("convert", ["--vc2", "{lora}", "--out", "{dir}/out"], 2, "a LoRA trained here: convert.py --export-release-lora"),
    ("convert", ["--export-release-lora", "{missing}", "--out", "{dir}/u.pt"], 2, "no such file"),
    ("convert", ["--export-release-lora", "{lora}", "--out", "{text}"], 2, "exists; give a new file name"),
    ("convert", ["--export-release-lora", "{lora}", "--vc2", "{not_vc2}", "--out", "{dir}/u.pt"], 2, "takes only"),
    ("convert", ["--export-release-lora", "{teacher}", "--out", "{dir}/u.pt"], 1, "is a 'teacher' checkpoint, not a "
                                                                               "LoRA file"),
    ("convert", ["--export-release-lora", "{lora}", "--out", "{dir}/u.pt"], 1, "not the LoRA of a student with the "
                                                                            "release's layout ("),
    ("sample", ["--ckpt", "{lora}", "--prompt", "x"], 2, "is a 'lora' checkpoint"),
    # data.py (more in test_data.py)
    ("data", ["{videos}", "{dir}/nope.csv"], 2, "no caption file at"),
]
MAINS = {"sample": sample.main, "train": train.main, "evaluate": evaluate.main, "convert": convert.main,
         "data": data.main}


def snapshot(*roots):
    return {str(p): p.read_bytes() if p.is_file() else None for r in roots for p in sorted(r.rglob("*"))}


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input(i, files, capsys):
    command, argv, code, phrase = CASES[i]
    fill = lambda s: s.format(**{k: str(v) for k, v in files.items()})
    before = snapshot(files["dir"], files["toy_models"])
    with pytest.raises(SystemExit) as e:
        MAINS[command]([fill(a) for a in argv])
    err = capsys.readouterr().err + (e.value.code if isinstance(e.value.code, str) else "")
    got = 1 if isinstance(e.value.code, str) else e.value.code
    lines = [l for l in err.splitlines() if l.strip()]
    assert got == code and len(lines) == 1 and fill(phrase) in lines[0], (argv, got, err)
    assert "Traceback" not in err and "weights_only=False" not in err
    after = snapshot(files["dir"], files["toy_models"])
    assert after == before, sorted(set(after) ^ set(before)) or "a file changed"
    assert not (files["dir"] / "side_effect").exists()


@pytest.mark.parametrize("argv", [["--preset", "vc2"], ["--optim", "adamw8bit"]], ids=["vc2", "flag"])
def test_adamw8bit_without_bitsandbytes_is_refused_before_anything_loads(argv, files, capsys, monkeypatch):
    """The vc2 preset trains with bitsandbytes' 8-bit AdamW, an optional install: without it, train.py and
    prepare_toy.py say what to install in one line at parse time (not after every model and the data are loaded)."""
    import importlib.util
    import prepare_toy
    from loop import ADAMW8BIT_MISSING
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else
                        find_spec(name, *a))                  # as on a machine without it, wherever this runs
    for main in (train.main, prepare_toy.main):
        if main is prepare_toy.main and argv[0] == "--preset":
            continue                                          # prepare_toy.py has no presets
        with pytest.raises(SystemExit) as e:
            main(argv + ["--out", str(files["dir"] / "side_effect")])
        err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
        assert e.value.code == 2 and len(err) == 1 and err[0].endswith(ADAMW8BIT_MISSING), err
    assert not (files["dir"] / "side_effect").exists()


def test_the_count():
    n = len(CASES) + len(test_data.BAD_INPUTS) + len(test_evaluate_real.BAD) + 1    # + adamw8bit's
    print(f"{n} distinct bad inputs across train.py, sample.py, evaluate.py, convert.py and data.py")
    assert n >= 40


def test_sample_names_never_collide_and_prompts_jsonl_appends(tmp_path, files):
    """Two captions with the same slug, the same caption twice, and a second run into the same folder: every video
    has a file of its own, prompts.jsonl lists each once (with its checkpoint, steps and guidance) and keeps the
    first run's lines."""
    out = tmp_path / "s"
    argv = ["--ckpt", str(files["teacher"]), "--prompt", "a red circle moving left", "--prompt",
            "A red circle moving left!", "--prompt", "a red circle moving left", "--steps", "2", "--out", str(out),
            "--device", "cpu", "--quiet", "--mp4"]
    first = sample.main(argv)
    second = sample.main(argv)
    rows = [json.loads(l) for l in (out / "prompts.jsonl").read_text().splitlines()]
    assert rows == first + second and len(rows) == 6
    files_written = [f for r in rows for f in r["files"]]
    assert len(set(files_written)) == 12 and all((out / f).exists() for f in files_written)
    assert {r["steps"] for r in rows} == {2} and {r["ckpt"] for r in rows} == {str(files["teacher"])}
    assert all(r["guidance"] == 5.0 for r in rows) and len(list(out.glob("grid*.gif"))) == 2
    shutil.rmtree(out)


def test_a_failed_run_is_one_line_unless_debug(monkeypatch):
    """Every script's __main__ runs loop.run_cli(main): a run that fails ends with one line and exit code 1;
    --debug re-raises, with the traceback."""
    from loop import run_cli

    def fails():
        raise RuntimeError("3 steps in a row with a non-finite loss\nmore detail")
    monkeypatch.setattr("sys.argv", ["train.py"])
    with pytest.raises(SystemExit) as e:
        run_cli(fails)
    assert e.value.code == "train.py: error: 3 steps in a row with a non-finite loss (and 1 more lines) (--debug " \
                          "shows where)"
    monkeypatch.setattr("sys.argv", ["train.py", "--debug"])
    with pytest.raises(RuntimeError):
        run_cli(fails)
