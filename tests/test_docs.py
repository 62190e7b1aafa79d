"""Every command the documents show runs as written: README.md, TUTORIAL.md, RESULTS.md and every module's docstring
name only scripts and modules of this repository, with flags their command lines know (each command's --help lists
them), benchmark sections that exist, and repository files that exist."""
import ast
import re
import shlex

import pytest

import sample
import train
from benchmarks import __main__ as benchmarks, internvideo2 as bench_internvideo2
from conftest import ROOT
from ms import convert as ms_convert
from toy import evaluate, prepare, world
from vc2 import convert, data, evaluate as real_evaluate

# the command lines with flags, by what a user types after `python` (or `torchrun`)
MAINS = {"train.py": train.main, "sample.py": sample.main, "toy.prepare": prepare.main, "toy.evaluate": evaluate.main,
         "toy.world": world.main, "vc2.convert": convert.main, "vc2.data": data.main,
         "vc2.evaluate": real_evaluate.main, "benchmarks": benchmarks.main,
         "benchmarks.internvideo2": bench_internvideo2.main, "ms.convert": ms_convert.main}
# the ones that take no flags: a module's demo, or one file to print
PLAIN = {"turbo.py", "tiny_unet3d.py", "encoders.py", "rewards.py", "lora.py", "toy.diffusion", "vc2.internvideo2",
         "vc2.release", "machinery.checkpoint", "ms.models"}
REPO_PATH = re.compile(r"^(toy|vc2|ms|machinery|benchmarks|tests)/[\w./-]*$|^\w+\.py$")


def documented_commands():
    """(where, command) for every `python ...` / `torchrun ...` line of the documents and module docstrings (a
    trailing backslash joins the next line) and every inline `python ...` code span."""
    texts = {doc: (ROOT / doc).read_text() for doc in ("README.md", "TUTORIAL.md", "RESULTS.md")}
    for path in sorted(ROOT.rglob("*.py")):
        if not {"tests", "runs"} & set(path.relative_to(ROOT).parts):
            texts[str(path.relative_to(ROOT))] = ast.get_docstring(ast.parse(path.read_text())) or ""
    found = []
    for where, text in texts.items():
        text = re.sub(r"\\\n\s*", " ", text)
        spans = re.findall(r"`((?:python|torchrun) [^`]+)`", text)
        lines = [l.strip() for l in text.splitlines() if re.match(r"\s*(python|torchrun|/usr/bin/time) ", l)]
        for command in spans + lines:
            found += [(where, c.strip()) for c in command.split("&&")]
    return sorted(set(found))


COMMANDS = documented_commands()


def program(tokens):
    """['python', '-m', 'toy.evaluate', ...] -> ('toy.evaluate', the arguments after it)."""
    if tokens[0] == "/usr/bin/time":
        tokens = tokens[tokens.index("python"):]
    if tokens[0] == "torchrun":
        rest = [t for t in tokens[1:] if not t.startswith("--nproc") and not t.startswith("--standalone")]
        return rest[0], rest[1:]
    if tokens[1] == "-m":
        return tokens[2], tokens[3:]
    return tokens[1], tokens[2:]


_HELP = {}


def known_flags(name, capsys):
    """The flags `name --help` lists."""
    if name not in _HELP:
        with pytest.raises(SystemExit):
            MAINS[name](["--help"])
        _HELP[name] = set(re.findall(r"--[a-z][\w-]*", capsys.readouterr().out))
    return _HELP[name]


def test_the_documents_show_commands():
    assert len(COMMANDS) > 60 and {w for w, _ in COMMANDS} >= {"README.md", "TUTORIAL.md", "RESULTS.md", "train.py"}


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}: {c[:60]}" for w, c in COMMANDS])
def test_a_documented_command_names_what_exists(where, command, capsys):
    tokens = shlex.split(command, comments=True)
    name, args = program(tokens)
    if name == "pytest":
        assert all((ROOT / a.split("::")[0]).exists() for a in args if "/" in a), command
        return
    assert name in MAINS or name in PLAIN, f"{where}: {command}: no such script or module here"
    assert (ROOT / name).is_file() if name.endswith(".py") else True
    flags = [a.split("=")[0] for a in args if a.startswith("--")]
    if name in PLAIN:
        assert not flags, f"{where}: {command}: {name} takes no flags"
    else:
        unknown = set(flags) - known_flags(name, capsys)
        assert not unknown, f"{where}: {command}: {name} has no {sorted(unknown)}"
    if name == "benchmarks":
        sections = [a for a in args if re.fullmatch(r"[a-z][a-z_0-9]*", a) and a not in ("...",)]
        assert set(sections) <= set(benchmarks.SECTIONS), f"{where}: {command}"
    missing = [a for a in args if REPO_PATH.match(a) and "*" not in a and not (ROOT / a).exists()]
    assert not missing, f"{where}: {command}: no {missing} in the repository"
