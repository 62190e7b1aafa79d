"""Bad inputs, as a new user would give them, to every command line: one clear line on stderr naming the file or
flag, exit code 2 (usage) or 1 (a failed run), no traceback, and nothing written or changed. Table-driven: a new
case is one line of cases.CLI_CASES (vc2/data.py's are cases.DATA_CASES, run by vc2/test_data.py; vc2/evaluate.py's
are cases.REAL_EVAL_CASES, run by test_real_evaluate.py); test_the_count prints the total."""
import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

import sample
import train
from cases import CLI_CASES, DATA_CASES, REAL_EVAL_CASES
from conftest import RunsCode, edit_json, run_main, snapshot, write_ms_folder
from machinery.checkpoint import read_checkpoint, read_meta, save_tensors
from machinery.cli import run_cli
from machinery.loop import ADAMW8BIT_MISSING
from ms import convert as ms_convert
from toy import evaluate, prepare
from vc2 import convert


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
    torch.save({"state_dict": {}, "x": RunsCode(str(d / "side_effect"))}, f["pickle"])
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
    f["other_state"] = d / "other_state"      # --resume for vcm where only turbo's state is
    save_tensors(f["other_state"] / "turbo.state-0000100.safetensors", {"x": torch.zeros(1)},
                 {"t2v_turbo_state": json.dumps({"step": 100, "config": {}})})
    # ModelScope folders (ms/convert.py): a good one, and one bad thing each
    f["ms"] = write_ms_folder(d / "ms")
    f["ms_lpb"] = write_ms_folder(d / "ms_lpb", layers_per_block=2, block_out_channels=[32, 32])
    edit_json(f["ms_lpb"] / "unet" / "config.json", layers_per_block=1)   # every shape fits: 212 weights unused
    for name, file, change in (("ms_int", "unet/config.json", {"block_out_channels": 32}),
                               ("ms_pad", "tokenizer/special_tokens_map.json", {"pad_token": ["!"]})):
        f[name] = d / name
        shutil.copytree(f["ms"], f[name])
        edit_json(f[name] / file, **change)
    # bad LoRA lists for --lora: cut short, empty, the wrong length, a dict ({random} and {pickle} above too)
    torch.save([torch.zeros(64, 64)] * 4, d / "lora_full.pt")
    f["lora_cut"] = d / "lora_cut.pt"
    f["lora_cut"].write_bytes((d / "lora_full.pt").read_bytes()[:9000])
    f["lora_empty"] = d / "lora_empty.pt"
    f["lora_empty"].write_bytes(b"")
    f["lora_short"] = d / "lora_short.pt"
    torch.save([torch.zeros(2, 2)] * 3, f["lora_short"])
    f["lora_dict"] = d / "lora_dict.pt"
    torch.save({"unet.conv_in.lora_up.weight": torch.zeros(2, 2)}, f["lora_dict"])
    return f


# a failed run ends in run_cli's one line, as `python -m ms.convert` does
MAINS = {"sample": sample.main, "train": train.main, "evaluate": evaluate.main, "convert": convert.main,
         "prepare": prepare.main, "ms_convert": lambda argv: run_cli(lambda: ms_convert.main(argv))}


# the cases: cases.CLI_CASES (a new one is one line there)
@pytest.mark.parametrize("i", range(len(CLI_CASES)), ids=[f"{c[0]}-{i}" for i, c in enumerate(CLI_CASES)])
def test_bad_input(i, files, capsys):
    command, argv, code, phrase = CLI_CASES[i]
    fill = lambda s: s.format(**{k: str(v) for k, v in files.items()})
    before = snapshot(files["dir"], files["toy_models"])
    got, _, err = run_main(MAINS[command], [fill(a) for a in argv], capsys)
    lines = [l for l in err.splitlines() if l.strip()]
    assert got == code and len(lines) == 1 and fill(phrase) in lines[0], (argv, got, err)
    assert "Traceback" not in err and "weights_only=False" not in err and "add_safe_globals" not in err
    after = snapshot(files["dir"], files["toy_models"])
    assert after == before, sorted(set(after) ^ set(before)) or "a file changed"
    assert not (files["dir"] / "side_effect").exists()


@pytest.mark.parametrize("argv", [["--preset", "vc2"], ["--optim", "adamw8bit"]], ids=["vc2", "flag"])
def test_adamw8bit_without_bitsandbytes_is_refused_before_anything_loads(argv, files, capsys, monkeypatch):
    """The vc2 preset trains with bitsandbytes' 8-bit AdamW, an optional install: without it, train.py and
    toy/prepare.py say what to install in one line at parse time (not after every model and the data are loaded)."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else
                        find_spec(name, *a))                  # as on a machine without it, wherever this runs
    for main in (train.main, prepare.main):
        if main is prepare.main and argv[0] == "--preset":
            continue                                          # toy/prepare.py has no presets
        with pytest.raises(SystemExit) as e:
            main(argv + ["--out", str(files["dir"] / "side_effect")])
        err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
        assert e.value.code == 2 and len(err) == 1 and err[0].endswith(ADAMW8BIT_MISSING), err
    assert not (files["dir"] / "side_effect").exists()


def test_the_count():
    n = len(CLI_CASES) + len(DATA_CASES) + len(REAL_EVAL_CASES) + 1    # + adamw8bit's
    print(f"{n} distinct bad inputs across train.py, sample.py, toy/evaluate.py, toy/prepare.py, vc2/evaluate.py, "
          f"vc2/convert.py, ms/convert.py and vc2/data.py")
    assert n >= 40


def test_a_failed_run_is_one_line_unless_debug(monkeypatch):
    """Every script's __main__ runs machinery.cli.run_cli(main): a run that fails ends with one line and exit code 1;
    --debug re-raises, with the traceback."""

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
