"""Scale-out: video folders, torchrun DDP on 2 CPU processes, kill -9 and --resume, non-finite steps."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import train
import turbo
from conftest import ROOT, TRAIN_CPU
from machinery.checkpoint import read_meta, save_tensors
from machinery.cli import one_line
from machinery.loop import resume
from vc2.data import VideoFolder, read_captions

TINY = ["--warmup", "1", "--temporal-dropout", "0", *TRAIN_CPU]


def student_args(toy_models, out, *more):
    """train.py's flags for a tiny student distilled from the test run's toy/prepare.py folder."""
    return ["--toy-models", str(toy_models), "--out", str(out), *TINY, *more]


def unet_weights(path):
    return {k: v for k, v in load_file(str(path)).items() if k.startswith("unet.")}


def test_two_processes_equal_one_process_on_the_same_global_batch(tmp_path, toy_models):
    """torchrun --nproc_per_node=2 with 1 clip each == 1 process with 2 clips == 1 process with 1 clip x 2
    micro-batches: same loss terms at every step, same weights up to float rounding. 2 processes and 2
    micro-batches agree bit for bit: each computes the same per-clip gradients, halves them (exact) and adds them."""
    steps = ["--turbo-steps", "2", "--turbo-lr", "1e-3"]
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    # the two-process run in the background while this process does the two one-process runs
    p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(ROOT / "train.py"), *student_args(toy_models, two, "--turbo-batch", "1", *steps)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    one = tmp_path / "one"
    train.main(student_args(toy_models, one, "--turbo-batch", "2", *steps))
    acc = tmp_path / "acc"
    train.main(student_args(toy_models, acc, "--turbo-batch", "1", "--grad-accum", "2", *steps))
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr[-3000:]
    assert "2 process(es) x 1 clips" in stdout

    logs = {d.name: read_meta(d / "turbo.safetensors")["stats"]["log"] for d in (two, one, acc)}
    assert len(logs["two"]) == 2 and {"cd", "r_img", "r_vid", "loss"} <= set(logs["two"][0])
    for other in ("one", "acc"):
        for a, b in zip(logs["two"], logs[other]):
            for k in a:
                assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (other, k)
    w2, w1, wa = (unet_weights(d / "turbo.safetensors") for d in (two, one, acc))
    t0 = {k: v for k, v in load_file(str(toy_models / "teacher.safetensors")).items() if k in w2}
    moved = sum((w1[k] - t0[k]).abs().sum() for k in t0)
    assert all(torch.equal(w2[k], wa[k]) for k in w2)
    # 2 clips in one batch round differently; Adam turns float-rounding-sized gradients into +-lr steps on a few
    # elements, but the bulk must agree (measured: 7e-6 of the distance moved)
    diff = sum((w2[k] - w1[k]).abs().sum() for k in w1)
    assert diff < 0.01 * moved, (diff, moved)


def test_a_full_disk_during_a_state_save_leaves_nothing_half_written(tmp_path, toy_models):
    """train.py whose first state save hits the end of the disk (here: a 1 MiB file-size limit on this process, so
    the write fails with EFBIG, as a full disk fails with ENOSPC): an OSError whose one line names the file (what
    run_cli prints), and no temporary file left behind."""
    import resource

    out = tmp_path / "full"
    args = student_args(toy_models, out, "--turbo-steps", "3", "--turbo-batch", "1", "--save-every", "1",
                        "--rewards", "none")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    xfsz = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # a write past the limit fails instead of killing
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 ** 20, hard))
        with pytest.raises(OSError) as e:
            train.main(args)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, xfsz)
    state = out / "vcm.state-0000001.safetensors"
    assert one_line(e.value) == str(e.value) and f"could not write {state}: " in str(e.value)
    assert "partial file was removed" in str(e.value)
    assert not list(out.glob("*.tmp")) and not state.exists()


def test_kill_minus_9_then_resume(tmp_path, toy_models, capsys):
    """SIGKILL mid-run: every checkpoint file left behind is whole, --resume restarts from the newest state (at
    most one save interval lost) and ends with the very weights of an uninterrupted run."""
    args = ["--turbo-steps", "10", "--turbo-batch", "1", "--save-every", "2", "--keep", "2", "--rewards", "none"]
    killed = tmp_path / "killed"
    killed.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *student_args(toy_models, killed, *args)],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(killed.glob("vcm.state-0000004.safetensors")) and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (killed / "vcm.safetensors").exists(), "the run finished before it could be killed"
    states = sorted(killed.glob("vcm.state-*.safetensors"))
    assert states and len(states) <= 2                                    # --keep 2
    for s in killed.glob("*.safetensors"):                                # nothing half-written
        with safe_open(str(s), "pt") as f:
            [f.get_tensor(k) for k in f.keys()]
    newest = int(states[-1].name.split("-")[-1].split(".")[0])
    assert newest >= 4

    capsys.readouterr()
    train.main(student_args(toy_models, killed, *args, "--resume"))
    assert f"resuming from {states[-1]} (step {newest} of 10)" in capsys.readouterr().out
    assert not list(killed.glob("vcm.state-*")), "a finished stage drops its resumable states"

    straight = tmp_path / "straight"
    straight.mkdir()
    train.main(student_args(toy_models, straight, *args))
    a, b = unet_weights(killed / "vcm.safetensors"), unet_weights(straight / "vcm.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    la = read_meta(killed / "vcm.safetensors")["stats"]["log"]
    assert la == read_meta(straight / "vcm.safetensors")["stats"]["log"] and len(la) == 10


def test_a_write_that_dies_leaves_no_file(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(ValueError):
        save_tensors(path, {"a": torch.zeros(3), "b": torch.empty(2, device="meta")}, {},
                     materialize=lambda name: torch.zeros(5))            # dies after the header and tensor a
    assert not path.exists()


def test_non_finite_steps_are_skipped_then_the_run_stops(tmp_path, toy_models, monkeypatch):
    real, calls = turbo.cd_loss, {"n": 0}

    def flaky(*a, **k):  # steps 1 and 2 (0-based calls) produce NaN
        loss, f, info = real(*a, **k)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] in (2, 3) else loss), f, info

    monkeypatch.setattr(turbo, "cd_loss", flaky)
    out = tmp_path / "flaky"
    train.main(student_args(toy_models, out, "--turbo-steps", "5", "--turbo-batch", "1", "--rewards", "none"))
    meta = read_meta(out / "vcm.safetensors")
    assert meta["stats"]["bad_steps"] == 2 and len(meta["stats"]["log"]) == 3
    assert all(torch.isfinite(v).all() for v in unet_weights(out / "vcm.safetensors").values())

    monkeypatch.setattr(turbo, "cd_loss", lambda *a, **k: (lambda l, f, i: (l * float("nan"), f, i))(*real(*a, **k)))
    out = tmp_path / "nan"
    with pytest.raises(RuntimeError, match="3 steps in a row with a non-finite loss"):
        train.main(student_args(toy_models, out, "--turbo-steps", "5", "--turbo-batch", "1", "--rewards", "none",
                                "--max-bad-steps", "3", "--save-every", "1"))
    assert not list(out.glob("vcm*.safetensors")), "nothing saved from a run of NaNs"


def write_videos(root):
    """Two good clips (an MP4 at 24 fps, a GIF at 25 fps whose frame k has brightness 8k), a 3-frame one, a corrupt
    one, and a row whose file is missing."""
    root.mkdir()
    ramp = np.stack([np.full((40, 60, 3), 8 * k, np.uint8) for k in range(30)])
    iio.imwrite(root / "ramp.gif", ramp, duration=40, loop=0)
    iio.imwrite(root / "noise.mp4", (np.random.default_rng(0).random((48, 64, 96, 3)) * 255).astype(np.uint8), fps=24)
    iio.imwrite(root / "short.gif", ramp[:3], duration=40, loop=0)
    (root / "broken.mp4").write_bytes(b"not a video" * 50)
    rows = [("ramp.gif", "a ramp"), ("noise.mp4", "noise"), ("short.gif", "too short"), ("broken.mp4", "broken"),
            ("gone.mp4", "missing")]
    with open(root / "captions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption"])
        w.writerows(rows)
    return root / "captions.csv"


def test_video_folder_samples_strides_crops_and_skips(tmp_path):
    caps = write_videos(tmp_path / "videos")
    ds = VideoFolder(tmp_path / "videos", caps, height=32, width=48, frames=8, fps=12)
    clip = ds.clip(0, np.random.default_rng(0))                        # the GIF: 25 fps -> stride 2 at 12 fps
    assert clip.shape == (3, 8, 32, 48) and -1 <= clip.min() and clip.max() <= 1
    level = ((clip[0, :, 16, 24] + 1) * 127.5 / 8).round()             # frame k of the file has brightness 8k
    assert torch.equal(level.diff(), torch.full((7,), 2.0))
    video, texts = ds.batch(40, np.random.default_rng(1))
    assert video.shape == (40, 3, 8, 32, 48) and set(texts) <= {"a ramp", "noise"}
    assert set(ds.skipped) == {"too short", "unreadable", "missing"} and sum(ds.skipped.values()) == 3
    # a process loads only its rows, and they equal the same rows of the whole batch
    part, ptexts = VideoFolder(tmp_path / "videos", caps, 32, 48, 8, 12).batch(40, np.random.default_rng(1),
                                                                               rows=range(20, 40))
    assert torch.equal(part, video[20:]) and ptexts == texts[20:]


def test_caption_files(tmp_path):
    webvid = tmp_path / "webvid.csv"
    webvid.write_text('videoid,contentUrl,duration,page_dir,name\n31353427,http://x,PT00H00M15S,1066_1070,'
                      '"a dog, running"\n')
    assert read_captions(webvid) == [("31353427", "a dog, running", "1066_1070")]
    jl = tmp_path / "c.jsonl"
    jl.write_text(json.dumps({"video": "a.mp4", "text": "hello"}) + "\n")
    assert read_captions(jl) == [("a.mp4", "hello", "")]
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="caption column"):
        read_captions(bad)


def test_student_trains_on_a_video_folder(tmp_path, toy_models, capsys):
    caps = write_videos(tmp_path / "videos")
    out = tmp_path / "run"
    train.main(student_args(toy_models, out, "--data", str(tmp_path / "videos"), "--captions", str(caps),
                            "--turbo-steps", "2", "--turbo-batch", "4", "--rewards", "none"))
    meta = read_meta(out / "vcm.safetensors")
    assert len(meta["stats"]["log"]) == 2 and sum(meta["stats"]["skipped_videos"].values()) >= 1
    with pytest.raises(SystemExit):
        train.parse_config(student_args(toy_models, out, "--data", str(tmp_path / "videos")))  # --captions missing
    assert "--data/--captions: a folder of videos and its caption file go together" in capsys.readouterr().err


def test_a_corrupt_state_gives_a_clear_error(tmp_path, toy_models):
    out = tmp_path / "corrupt"
    out.mkdir()
    (out / "vcm.state-0000002.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ValueError, match="not a readable training state"):
        train.main(student_args(toy_models, out, "--turbo-steps", "3", "--turbo-batch", "1", "--rewards", "none",
                                "--resume"))


def test_resume_with_nothing_of_this_run_to_resume(tmp_path, toy_models, capsys):
    """--resume where OUT holds no state of the run: train.py refuses it at parse time in one line that says what
    OUT holds (another --rewards' state, or nothing), instead of training from step 0; a finished student there is
    fine (train.py compares it). machinery/loop.py's resume, which toy/prepare.py calls too, starts from step 0 when
    OUT holds no state at all (prepare's --resume also keeps finished files, so its first start has none) and
    refuses another stage's state."""
    out = tmp_path / "run"
    save_tensors(out / "turbo.state-0000004.safetensors", {"x": torch.zeros(1)}, {"t2v_turbo_state": "{}"})
    for argv, says in (([], None), (["--rewards", "none"], "no state of vcm in {out}; it holds "
                                                          "turbo.state-0000004.safetensors (a run with --rewards "
                                                          "image+video): give that run's flags"),
                       (["--out", str(tmp_path / "new")], "no state of turbo in {new} (no such folder): drop "
                                                          "--resume")):
        if says is None:
            assert train.parse_config(student_args(toy_models, out, "--resume", *argv)).resume
            continue
        with pytest.raises(SystemExit) as e:
            train.parse_config(student_args(toy_models, out, "--resume", *argv))
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1
        assert says.format(out=out, new=tmp_path / "new") in err, err
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "turbo.safetensors").write_bytes(b"a finished student")
    assert train.parse_config(student_args(toy_models, tmp_path / "new", "--resume")).resume

    run = SimpleNamespace(main=True, world=1, device=torch.device("cpu"))
    empty = SimpleNamespace(out=str(tmp_path / "empty"), resume=True)
    assert resume(empty, run, "teacher", 3, {}, None) == (0, [], {"steps": 0, "in_a_row": 0})
    assert f"teacher: --resume found no saved state in {tmp_path / 'empty'}: starting from step 0" in \
        capsys.readouterr().out
    with pytest.raises(SystemExit, match="no state of teacher in .*; it holds turbo.state-0000004.safetensors: "):
        resume(SimpleNamespace(out=str(out), resume=True), run, "teacher", 3, {}, None)
