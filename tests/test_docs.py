"""Every command the documents show runs as written: README.md, TUTORIAL.md, RESULTS.md and every module's docstring
name only scripts and modules of this repository, with flags their command lines know (each command's --help lists
them), benchmark sections that exist, and repository files that exist. And the facts README states about the code
that a machine can check: the presets train.py has, what the method's modules import, and that every repository file
and function the three documents name in backticks exists."""
import ast
import importlib.util
import re
import shlex
import sys

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


# ----------------------------------------------------------------------------------------------------------------
# What README says of the code


README = " ".join((ROOT / "README.md").read_text().split())       # one line: sentences wrap anywhere


def test_readme_names_every_preset():
    named = re.search(r"presets ((?:`\w+`(?:, )?)+)", README)
    assert named, "README.md no longer names train.py's presets"
    listed = re.findall(r"`(\w+)`", named[1])
    assert listed == list(train.PRESETS), f"README.md lists the presets {listed}; train.py has {list(train.PRESETS)}"


def imported_packages(path):
    """The top-level name of every module `path` imports, at any depth (an import inside a function counts)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_readme_says_what_the_methods_modules_import():
    """README: "the method's modules (`a.py`, ...) import the standard library, each other, `pkg` (`a.py`, ... or
    all), ...;". Anything else a module imports (a package, or another folder of this repository) breaks it."""
    claim = re.search(r"the method's modules \(([^)]*)\) import (.*?);", README)
    assert claim, "README.md no longer says what the method's modules import"
    modules = re.findall(r"`(\w+)\.py`", claim[1])
    claimed = {package: set(modules) if users == "all" else set(re.findall(r"`(\w+)\.py`", users))
               for package, users in re.findall(r"`(\w+)` \(([^)]*)\)", claim[2])}
    found = {}
    for module in modules:
        for package in imported_packages(ROOT / f"{module}.py") - sys.stdlib_module_names - set(modules):
            found.setdefault(package, set()).add(module)
    assert claimed == found, f"README.md says {claimed}; the files import {found}"


# files of other projects that the documents name (the release's app, VBench's scripts): not in this repository
OUTSIDE = {"app_ms.py", "static_filter.py"}
REPO_DIRS = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".git")} - {"runs"}


def defined_names(path):
    """What `file.py: name` may point at in `path`: its top-level functions, classes (and Class.method) and names."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {f"{node.name}.{f.name}" for f in node.body if isinstance(f, ast.FunctionDef)}
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def named_in_backticks(doc):
    """(span, problem or None) for every backticked span of `doc` (outside ``` blocks) that names something here: a
    path under one of the repository's folders (`toy/world.py`, `tests/fixtures/...`), a bare `name.py` (a top-level
    file), a `file.py: name, Class.method` pointer (or a pytest id, file::test), or a `python -m module` command."""
    text = re.sub(r"```.*?```", "", (ROOT / doc).read_text(), flags=re.S)
    out = []
    for span in re.findall(r"`([^`]+)`", " ".join(text.split())):
        head, _, rest = span.replace(":: ", "::").replace("::", ": ").partition(": ")   # a pytest id: file::test
        first = head.split()[0] if head.split() else ""
        if re.fullmatch(r"python -m [\w.]+.*", span):
            name = span.split()[2]
            if name.split(".")[0] in REPO_DIRS:
                module = ROOT / name.replace(".", "/")
                ok = module.with_suffix(".py").is_file() or (module / "__main__.py").is_file()
            else:                                        # an installed tool's (pytest's)
                ok = importlib.util.find_spec(name) is not None
            out.append((span, None if ok else "no such module"))
        elif "/" in first and first.split("/")[0] in REPO_DIRS:
            path = ROOT / first
            if not path.exists():
                out.append((span, f"no {first}"))
            elif rest and path.suffix == ".py":
                names = [n for n in re.split(r",\s*", rest) if re.fullmatch(r"[A-Za-z_][\w.]*", n)]
                missing = [n for n in names if n not in defined_names(path)]
                out.append((span, f"{first} defines no {missing}" if missing else None))
            else:
                out.append((span, None))
        elif re.fullmatch(r"\w+\.py", first) and first not in OUTSIDE:   # a bare name: a top-level file
            if not (ROOT / first).is_file():
                out.append((span, f"no {first} at the top level (a file in a folder is named with its folder)"))
            else:
                names = [n for n in re.split(r",\s*", rest) if re.fullmatch(r"[A-Za-z_][\w.]*", n)]
                missing = [n for n in names if n not in defined_names(ROOT / first)]
                out.append((span, f"{first} defines no {missing}" if missing else None))
    return out


@pytest.mark.parametrize("doc", ["README.md", "TUTORIAL.md", "RESULTS.md"])
def test_every_file_and_function_a_document_names_exists(doc):
    named = named_in_backticks(doc)
    assert len(named) > 10, f"{doc}: the spans that name files were not found"
    problems = [f"`{span}`: {problem}" for span, problem in named if problem]
    assert not problems, f"{doc}: " + "; ".join(problems)

