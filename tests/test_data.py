"""data.py: bad inputs give one line and write nothing, unusable rows are skipped and named, --help works."""
import json
import sys

import imageio.v3 as iio
import numpy as np
import pytest

import data
from data import VideoFolder, check_data_args, read_captions

GOOD_CSV = "path,caption\nramp.gif,a ramp\n"

# (id, files to write under tmp_path (text, or bytes), argv with {d} = tmp_path, exit code, a phrase of the
# message, whether the Python API (check_data_args) must give the same message). The folder v/ always exists.
BAD_INPUTS = [
    ("no arguments", {}, [], 2, "required: VIDEO_DIR, CAPTIONS", False),
    ("unknown flag", {"c.csv": GOOD_CSV}, ["{d}/v", "{d}/c.csv", "--bogus"], 2, "unrecognized arguments", False),
    ("frames 0", {"c.csv": GOOD_CSV}, ["{d}/v", "{d}/c.csv", "--frames", "0"], 2,
     "--frames: '0' is not a whole number >= 1", False),
    ("width not a number", {"c.csv": GOOD_CSV}, ["{d}/v", "{d}/c.csv", "--width", "wide"], 2,
     "--width: 'wide' is not a whole number", False),
    ("missing folder", {"c.csv": GOOD_CSV}, ["{d}/nope", "{d}/c.csv"], 2, "no video folder at", True),
    ("folder is a file", {"c.csv": GOOD_CSV}, ["{d}/c.csv", "{d}/c.csv"], 2, "is a file, not a folder", True),
    ("missing caption file", {}, ["{d}/v", "{d}/nope.csv"], 2, "no caption file at", True),
    ("caption file is a folder", {}, ["{d}/v", "{d}/v"], 2, "is a folder: give the caption file", True),
    ("empty CSV", {"c.csv": ""}, ["{d}/v", "{d}/c.csv"], 2, "is empty: write a header row", True),
    ("header only", {"c.csv": "path,caption\n"}, ["{d}/v", "{d}/c.csv"], 2, "has a header row but no rows", True),
    ("no caption column", {"c.csv": "path,label\na.gif,x\n"}, ["{d}/v", "{d}/c.csv"], 2,
     "has no caption column (one of caption,", True),
    ("no path column", {"c.csv": "clip,caption\na.gif,x\n"}, ["{d}/v", "{d}/c.csv"], 2,
     "has no video column (one of path,", True),
    ("not UTF-8", {"c.csv": b"path,caption\na.gif,caf\xe9 au lait\n"}, ["{d}/v", "{d}/c.csv"], 2,
     "line 2 is not UTF-8 text", True),
    ("CSV field over csv's limit", {"c.csv": "path,caption\na.gif," + "x" * 140000 + "\n"}, ["{d}/v", "{d}/c.csv"], 2,
     "the row after line 1 is not CSV (field larger than field limit", True),
    ("empty JSONL", {"c.jsonl": "\n\n"}, ["{d}/v", "{d}/c.jsonl"], 2, "is empty: write one JSON object", True),
    ("JSONL line not JSON", {"c.jsonl": '{"path": "a.gif", "caption": "x"}\n{"path": "b.gif", caption}\n'},
     ["{d}/v", "{d}/c.jsonl"], 2, "line 2 is not JSON", True),
    ("JSONL line not an object", {"c.jsonl": '["a.gif", "x"]\n'}, ["{d}/v", "{d}/c.jsonl"], 2,
     "line 1 is a JSON list, not an object", True),
    ("no row has a caption", {"c.csv": "path,caption\na.gif,\nb.gif\n"}, ["{d}/v", "{d}/c.csv"], 2,
     "none of its 2 rows has both a video and a caption (no caption: 2)", True),
    ("--skipped-out exists", {"c.csv": GOOD_CSV, "list.txt": "keep me"},
     ["{d}/v", "{d}/c.csv", "--skipped-out", "{d}/list.txt"], 2, "list.txt exists: give a new file name", False),
    ("--skipped-out folder missing", {"c.csv": GOOD_CSV}, ["{d}/v", "{d}/c.csv", "--skipped-out", "{d}/no/l.txt"],
     2, "no folder", False),
]


def snapshot(root):
    """Every file and folder under root with its bytes: a test compares it before and after a command."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def run_main(argv, capsys):
    """data.main(argv) in this process -> (exit code, stdout, stderr)."""
    try:
        data.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1  # sys.exit("message") prints it and exits 1
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("files, argv, code, phrase, api", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, files, argv, code, phrase, api):
    (tmp_path / "v").mkdir()
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(tmp_path)
    got, out, err = run_main([a.format(d=tmp_path) for a in argv], capsys)
    assert got == code and phrase in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("data.py: error: ") and "Traceback" not in err
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
    code, out, err = run_main([str(tmp_path / "v"), str(caps), *flags, "--show", "2"], capsys)
    assert code == 0 and err == ""
    assert "7 rows in" in out and "1 give a clip" in out and "no caption: 3" in out and "no path: 1" in out
    assert "  no caption  line 3 (ramp.gif)" in out and "... and 4 more" in out
    listed = (tmp_path / "v.skipped.txt").read_text().splitlines()
    assert listed[0] == "reason\trow\tdetail" and len(listed) == 1 + 6
    assert "no path\tline 6\t" in listed and any(l.startswith("missing\tgone.gif") for l in listed)
    assert any(l.startswith("too short\tshort.gif\t2 frames at 25 fps") for l in listed)
    # a second scan never overwrites the first list: it picks a new name and says so
    code, out, _ = run_main([str(tmp_path / "v"), str(caps), *flags], capsys)
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
    code, out, err = run_main([str(tmp_path / "v"), str(tmp_path / "c.jsonl"), "--skipped-out",
                               str(tmp_path / "why.tsv")], capsys)
    assert code == 1 and "none of the 4 rows gives a clip" in err and len(err.strip().splitlines()) == 1
    assert "missing: 2" in out and "no caption: 2" in out and (tmp_path / "why.tsv").read_text().count("\n") == 1 + 4


def test_help(capsys):
    code, out, err = run_main(["--help"], capsys)
    assert code == 0 and "VIDEO_DIR" in out and "--frames" in out and "--skipped-out" in out and err == ""
