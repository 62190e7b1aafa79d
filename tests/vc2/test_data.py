"""vc2/data.py: bad inputs give one line and write nothing, unusable rows are skipped and named, --help works; a seek
decodes the frames the sequential decode does; a latent cache gives what the encoders give, and train.py reads it.
(Worker processes: tests/machinery/test_batches.py.)"""
import json
import wave

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import train
from cases import DATA_CASES
from conftest import TRAIN_CPU, moving_frames, run_main, snapshot
from encoders import AEConfig, AutoencoderKL
from machinery.checkpoint import load_models, read_meta
from vc2 import data
from vc2.data import (LatentCache, VideoFolder, cache_rng, cached_latents, check_data_args, encode_first_stage,
                      exact_fps, read_captions, read_frames)


# the cases: cases.DATA_CASES (a new one is one line there)
@pytest.mark.parametrize("files, argv, code, phrase, api", [b[1:] for b in DATA_CASES], ids=[b[0] for b in DATA_CASES])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, files, argv, code, phrase, api):
    (tmp_path / "v").mkdir()
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(tmp_path)
    got, out, err = run_main(data.main, [a.format(d=tmp_path) for a in argv], capsys)
    assert got == code and phrase in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("vc2.data: error: ") and "Traceback" not in err
    assert snapshot(tmp_path) == before, "nothing written or changed"
    if api:  # the same line from the Python API that train.py calls at parse time
        args = [a.format(d=tmp_path) for a in argv[:2]]
        assert phrase in check_data_args(*args)


def test_the_python_api_raises_one_line(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"path": "a.gif", "caption": "x"}\n{"path": "b.gif", caption}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_captions(tmp_path / "c.jsonl")  # was a JSONDecodeError from deep inside json
    with pytest.raises(FileNotFoundError, match="no video folder at"):
        VideoFolder(tmp_path / "nope", tmp_path / "c.jsonl")
    (tmp_path / "c.csv").write_text("path,caption\na.gif,\n")
    with pytest.raises(ValueError, match="none of its 1 rows"):
        VideoFolder(tmp_path, tmp_path / "c.csv")
    assert check_data_args("", "") is None and "go together" in check_data_args(str(tmp_path), "")


def write_gifs(root):
    """A 12-frame GIF at 25 fps and a 2-frame one; 8 x 8 pixels (GIFs decode fast, without ffmpeg)."""
    root.mkdir()
    ramp = np.stack([np.full((8, 8, 3), 16 * k, np.uint8) for k in range(12)])
    iio.imwrite(root / "ramp.gif", ramp, duration=40, loop=0)
    iio.imwrite(root / "short.gif", ramp[:2], duration=40, loop=0)


def test_rows_without_a_caption_or_path_are_skipped_and_named(tmp_path, capsys):
    write_gifs(tmp_path / "v")
    caps = tmp_path / "v.csv"
    # line 3: an empty caption, 4: a row cut short (csv gives None: it trained as 'None'), 5: a blank caption,
    # 6: no path, then a missing file and a too-short one
    caps.write_text('path,caption\nramp.gif,a ramp\nramp.gif,\nramp.gif\nramp.gif,"  "\n,orphan caption\n'
                    "gone.gif,lost\nshort.gif,brief\n")
    flags = ["--frames", "4", "--fps", "12", "--height", "8", "--width", "8"]
    code, out, err = run_main(data.main, [str(tmp_path / "v"), str(caps), *flags, "--show", "2"], capsys)
    assert code == 0 and err == ""
    assert "7 rows in" in out and "1 give a clip" in out and "no caption: 3" in out and "no path: 1" in out
    assert "  no caption  line 3 (ramp.gif)" in out and "... and 4 more" in out
    listed = (tmp_path / "v.skipped.txt").read_text().splitlines()
    assert listed[0] == "reason\trow\tdetail" and len(listed) == 1 + 6
    assert "no path\tline 6\t" in listed and any(l.startswith("missing\tgone.gif") for l in listed)
    assert any(l.startswith("too short\tshort.gif\t2 frames at 25 fps") for l in listed)
    # a second scan never overwrites the first list: it picks a new name and says so
    code, out, _ = run_main(data.main, [str(tmp_path / "v"), str(caps), *flags], capsys)
    assert code == 0 and f"listed in {tmp_path / 'v.skipped-2.txt'}" in out
    assert (tmp_path / "v.skipped.txt").read_text().splitlines() == listed

    # the Python API: skipped counts by reason (train.py's interface), the rows named, no empty caption served
    ds = VideoFolder(tmp_path / "v", caps, height=8, width=8, frames=4, fps=12)
    assert ds.rows == [("ramp.gif", "a ramp", ""), ("gone.gif", "lost", ""), ("short.gif", "brief", "")]
    assert ds.skipped == {"no caption": 3, "no path": 1} == ds.caption_skipped
    video, texts = ds.batch(6, np.random.default_rng(0))
    assert video.shape == (6, 3, 4, 8, 8) and texts == ["a ramp"] * 6
    assert ds.skipped == {"no caption": 3, "no path": 1, "missing": 1, "too short": 1}
    assert {(r, why) for r, why, _ in ds.skipped_files} >= {("gone.gif", "missing"), ("line 6", "no path")}


def test_jsonl_rows_without_a_caption_are_skipped_and_a_scan_with_no_clip_fails(tmp_path, capsys):
    (tmp_path / "v").mkdir()
    rows = [{"video": "a.gif", "text": "one"}, {"video": "b.gif"}, {"video": "c.gif", "text": None},
            {"video": 7, "text": "an id"}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dropped = []
    assert read_captions(tmp_path / "c.jsonl", dropped) == [("a.gif", "one", ""), ("7", "an id", "")]
    assert dropped == [("line 2 (b.gif)", "no caption", ""), ("line 3 (c.gif)", "no caption", "")]
    # no file exists: the scan lists why (in a file it names) and exits 1 with one line
    code, out, err = run_main(data.main, [str(tmp_path / "v"), str(tmp_path / "c.jsonl"), "--skipped-out",
                                          str(tmp_path / "why.tsv")], capsys)
    assert code == 1 and "none of the 4 rows gives a clip" in err and len(err.strip().splitlines()) == 1
    assert "missing: 2" in out and "no caption: 2" in out and (tmp_path / "why.tsv").read_text().count("\n") == 1 + 4


def test_help(capsys):
    code, out, err = run_main(data.main, ["--help"], capsys)
    assert code == 0 and "VIDEO_DIR" in out and "--frames" in out and "--skipped-out" in out and err == ""


# ----------------------------------------------------------------------------------------------------------------
# a data path that keeps a GPU busy: seeks, workers, the latent cache


def write_with_audio(path, frames, fps, tmp):
    """An mp4 with an AAC track of noise that outlasts the video (the header's duration is then the audio's)."""
    with wave.open(str(tmp / "noise.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes((np.random.default_rng(1).random(8000 * 20) * 3000).astype(np.int16).tobytes())
    gen = imageio_ffmpeg.write_frames(str(path), frames.shape[2:0:-1], fps=fps, audio_path=str(tmp / "noise.wav"),
                                      audio_codec="aac")
    gen.send(None)
    for f in frames:
        gen.send(f)
    gen.close()


def test_a_seek_decodes_the_frames_the_sequential_decode_does(tmp_path, monkeypatch):
    """12 s of video, so a clip late in it takes ffmpeg's fast (keyframe) seek as well as the exact one; NTSC's
    30000/1001 fps as ffmpeg prints it (29.97); webm, mkv, mov; an audio track. The seek must serve each clip
    itself (the sequential decode is disabled while it runs), and give the very frames the sequential decode does."""
    assert exact_fps(25.0) == 25 and exact_fps(29.97) == 30000 / 1001 and exact_fps(23.98) == 24000 / 1001
    assert exact_fps(12.34) is None and exact_fps(0.0) == 0                     # (0: ffmpeg found no rate)
    frames = moving_frames(300, 16, 16)
    for name, fps, n in (("a.mp4", 25, 300), ("b.mkv", 30000 / 1001, 80), ("c.webm", 24, 50), ("d.mov", 25, 50)):
        iio.imwrite(tmp_path / name, frames[:n], fps=fps, codec="libvpx-vp9" if name.endswith(".webm") else "libx264")
    write_with_audio(tmp_path / "e.mp4", frames[:50], 25, tmp_path)
    sequential = iio.imiter
    for name, starts in (("a.mp4", (0, 1, 290)), ("b.mkv", (1, 70)), ("c.webm", (1, 40)), ("d.mov", (1, 40)),
                         ("e.mp4", (1, 40))):
        path, fps = tmp_path / name, iio.immeta(tmp_path / name)["fps"]
        for start, stride in zip(starts, (1, 2, 1)):
            monkeypatch.setattr(data.iio, "imiter", sequential)
            want = read_frames(path, start, 5, stride, fps, seek=False)
            monkeypatch.setattr(data.iio, "imiter", lambda *a, **k: pytest.fail(f"{name} {start}: no seek"))
            got = read_frames(path, start, 5, stride, fps, seek=True)
            assert len(want) == 5 and all(np.array_equal(a, b) for a, b in zip(want, got)), (name, start)
    # past the end: the seek ends short, and the sequential decode has the last word (here: too few frames)
    monkeypatch.setattr(data.iio, "imiter", sequential)
    assert len(read_frames(tmp_path / "a.mp4", 297, 5, 1, 25.0)) == 3


def test_cached_kl_latents_are_sampled_as_encode_samples_them():
    """The KL first stage: the cache keeps the posterior's mean and log-variance; cached_latents then draws the
    same eps from the same global RNG state as AutoencoderKL.encode, so z0 is the same, bit for bit."""
    ae = AutoencoderKL(AEConfig(ch=8, ch_mult=(1, 2), num_res_blocks=1, norm_groups=4)).eval()
    video = torch.rand(2, 3, 3, 16, 16) * 2 - 1                                # (b, 3, t, H, W)
    with torch.no_grad():
        x = encode_first_stage(ae, video)
        assert set(x) == {"mean", "logvar"} and x["mean"].shape == (2, 4, 3, 8, 8)
        torch.manual_seed(7)
        want = ae.encode(video)
        torch.manual_seed(7)
        assert torch.equal(cached_latents(ae, x, "cpu"), want)


def test_a_latent_cache_holds_what_the_encoders_give_and_train_reads_it(tmp_path, toy_models, capsys):
    (tmp_path / "v").mkdir()
    frames = moving_frames(20, 32, 32)
    for k in range(3):
        iio.imwrite(tmp_path / "v" / f"{k}.gif", np.roll(frames, 7 * k, axis=2), duration=40, loop=0)
    (tmp_path / "v" / "broken.gif").write_bytes(b"GIF89a, not really")
    (tmp_path / "c.csv").write_text("path,caption\n0.gif,a red circle moving left\nbroken.gif,x\n"
                                    "1.gif,a blue square moving up\n2.gif,a green triangle moving down\n")
    teacher, cache = toy_models / "teacher.safetensors", tmp_path / "cache"
    flags = ["--frames", "8", "--height", "32", "--width", "32", "--fps", "16"]
    code, out, err = run_main(data.main, [str(tmp_path / "v"), str(tmp_path / "c.csv"), *flags, "--cache", str(cache),
                                          "--ckpt", str(teacher), "--device", "cpu", "--batch", "2", "--show", "0"],
                              capsys)
    assert code == 0 and "unreadable: 1" in out
    assert f"wrote a latent cache of 3 clips to {cache} in 1 shard file(s)" in out
    index = json.loads((cache / "index.json").read_text())
    assert (index["frames"], index["height"], index["fps"]) == (8, 32, 16)
    assert index["shards"] == [["shard-00000.safetensors", 3]] and index["skipped"] == {"unreadable": 1}

    # each row: what the teacher's first stage and text tower give for its clip (cache_rng picks the clip)
    ds = VideoFolder(tmp_path / "v", tmp_path / "c.csv", 32, 32, 8, 16)
    models, shard = load_models(teacher, dtype=torch.float32), load_file(str(cache / "shard-00000.safetensors"))
    with torch.no_grad():
        for k, i in enumerate((0, 2, 3)):
            z0 = models["ae"].encode(ds.clip(i, cache_rng(0, i))[None])
            assert torch.allclose(shard["z0"][k], z0[0], atol=1e-6)
            assert torch.equal(shard["context"][k], models["text"].encode_text([ds.rows[i][1]])[0])
    x, caps = LatentCache(cache).batch(5, np.random.default_rng(0), rows=range(1, 4))
    assert x["z0"].shape == (3, *shard["z0"].shape[1:]) and x["context"].shape[0] == 3 and len(caps) == 3
    assert torch.equal(cached_latents(models["ae"], x, "cpu"), x["z0"])

    # train.py --cache: bad flags get one line; good ones train from it
    base = ["--toy-models", str(toy_models), *TRAIN_CPU]
    for more, phrase in ((["--data-workers", "-1"], "--data-workers -1: give 0"),
                         (["--cache", str(tmp_path / "nope")], "nope: no such folder"),
                         (["--cache", str(tmp_path / "v")], "no index.json in"),
                         (["--cache", str(cache), "--frames", "4"], "holds clips of 8 frames of 32 x 32 at 16 fps: "
                                                                     "give --frames 8"),
                         (["--cache", str(cache), "--data", str(tmp_path / "v"), "--captions", str(tmp_path / "c.csv")],
                          "--cache takes the place of --data/--captions"),
                         (["--cache", str(cache)], "real data needs a real image reward model: give --hps PATH")):
        with pytest.raises(SystemExit):
            train.parse_config(base + more)
        err = capsys.readouterr().err.strip()
        assert phrase in err and len(err.splitlines()) == 1, (more, err)
    run = tmp_path / "run"
    train.main(base + ["--cache", str(cache), "--out", str(run), "--turbo-steps", "2", "--turbo-batch", "2",
                       "--rewards", "none", "--data-workers", "1"])
    assert len(read_meta(run / "vcm.safetensors")["stats"]["log"]) == 2
