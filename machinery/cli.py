"""Command lines: a dataclass config as flags (one --flag per field, its comment as the help line), one clear line
per bad input, and the device a flag names. Every script here builds its command line with these.

    python train.py --help      # cli_config's output: the fields of train.Config, in order, with their comments
"""

import argparse
import dataclasses
import inspect
import math
import re
import sys
from pathlib import Path

import torch


def program():
    """The running script as a user typed it: 'train.py' for a top-level file, 'toy.prepare' for a module of a
    folder run with python -m (its messages then name the command, not a bare 'prepare.py')."""
    path = Path(sys.argv[0]).resolve()
    if path.parent.joinpath("__init__.py").exists():
        return f"{path.parent.name}.{path.stem}" if path.stem != "__main__" else path.parent.name
    return path.name


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is ONE line on stderr ('prog: error: ...', exit code 2): the usage summary that
    argparse prints first is left to --help."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"prog": program(), **kwargs})

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def field_help(cls):
    """{field: its comment} read from the dataclass's source: each flag's one-line help is the comment beside it."""
    return {m[1]: m[2] for m in re.finditer(r"^\s+(\w+): [^#\n]*#\s*(.*)$", inspect.getsource(cls), re.M)}


def field_groups(cls):
    """{field: the comment lines above its block in the dataclass's source, or None}: --help lists each block of
    fields under its comment, in the order of the source."""
    groups, title, pending = {}, None, []
    for line in inspect.getsource(cls).splitlines()[1:]:
        if m := re.match(r"^\s+#\s?(.*)$", line):
            pending.append(m[1])
        elif m := re.match(r"^\s+(\w+): ", line):
            title, pending = (" ".join(pending) or title), []
            groups[m[1]] = title
    return groups


def cli_config(cls, argv=None, doc=None, check=None, presets=None):
    """A dataclass config from the command line: --preset NAME picks a preset function (when `presets` is given),
    then every field is a --flag that overrides it. --help shows each flag's one-line help and its default under
    the chosen preset. check(cfg, error) validates; error(msg) prints one line and exits with code 2."""
    name = None
    if presets:  # the preset first: the other flags' defaults (and --help) depend on it
        pre = Parser(add_help=False)
        pre.add_argument("--preset", default=next(iter(presets)), choices=list(presets))
        name = pre.parse_known_args(argv)[0].preset
    base = presets[name]() if presets else cls()
    p = Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if presets:
        p.add_argument("--preset", default=name, choices=list(presets),
                       help=f"a preset function of this file: {', '.join(presets)} (default {next(iter(presets))})")
    helps, groups, sections = field_help(cls), field_groups(cls), {}
    under = f" under --preset {name}" if presets else ""
    for f in dataclasses.fields(cls):
        flag, h = "--" + f.name.replace("_", "-"), helps.get(f.name, "").replace("%", "%%")
        default, title = getattr(base, f.name), groups.get(f.name)
        group = sections.setdefault(title, p.add_argument_group(title.replace("%", "%%"))) if title else p
        if f.type is bool or f.type == "bool":  # --flag / --no-flag: a preset may have turned it on
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=f"{h} ({default}{under})")
        else:
            group.add_argument(flag, type=type(f.default), default=None, help=f"{h} (default {default!r}{under})")
    args = vars(p.parse_args(argv))
    args.pop("preset", None)
    cfg = dataclasses.replace(base, **{k: v for k, v in args.items() if v is not None})
    check_numbers(cfg, p.error)                 # nan and inf parse as floats: every float flag must be finite
    if hasattr(cfg, "device"):
        check_device(cfg.device, p.error)
    if check:
        check(cfg, p.error)
    return cfg


def check_fields(cfg, error, positive=(), choices=None):
    """The checks every config makes: each field named in `positive` is >= 1, each key of `choices` one of its
    allowed values; the first one that is not -> error('--flag must be ...')."""
    for name in positive:
        if getattr(cfg, name) < 1:
            error(f"--{name.replace('_', '-')} must be >= 1")
    for name, allowed in (choices or {}).items():
        if getattr(cfg, name) not in allowed:
            error(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}")


def check_numbers(cfg, error, ranges=None):
    """Every float of `cfg` (a dataclass config, or argparse's namespace) must be finite: float() reads 'nan' and
    'inf', and a run would only meet them steps later as a non-finite loss that names no flag. `ranges`: {field:
    interval}, written as math writes one ('[0, 1)', '(0, inf)'), for ints too; a None value (a flag left to its
    default) is skipped. The first value that fails -> error('--flag VALUE: must be ...')."""
    flag = lambda name: "--" + name.replace("_", "-")
    for name, value in vars(cfg).items():
        if isinstance(value, float) and not math.isfinite(value):
            error(f"{flag(name)} {value}: must be a finite number")
    for name, interval in (ranges or {}).items():
        value = getattr(cfg, name)
        if value is not None and not in_interval(value, interval):
            error(f"{flag(name)} {value:g}: must be {interval_words(interval)}")


def _ends(interval):
    """'[0, 1)' -> ('[', 0.0, 1.0, ')')."""
    m = re.fullmatch(r"([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])", interval)
    if not m:
        raise ValueError(f"not an interval: {interval!r} (write it as '[0, 1)' or '(0, inf)')")
    return m[1], float(m[2]), float(m[3]), m[4]


def in_interval(x, interval):
    """x in an interval written as math writes one: in_interval(1, '[0, 1)') is False."""
    left, lo, hi, right = _ends(interval)
    return (lo <= x if left == "[" else lo < x) and (x <= hi if right == "]" else x < hi)


def interval_words(interval):
    """'[0, inf)' -> '>= 0', '(0, inf)' -> '> 0', '[0, 1)' -> 'in [0, 1)'."""
    left, lo, hi, _ = _ends(interval)
    return f"{'>=' if left == '[' else '>'} {lo:g}" if hi == math.inf else f"in {interval}"


def run_cli(main):
    """Every script's entry point: main(), and a run that fails (a file that does not load, a run of non-finite
    steps, a full disk) ends with ONE line on stderr and exit code 1; `--debug` anywhere shows the traceback."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        main()
    except (ValueError, OSError, RuntimeError) as e:
        if debug:
            raise
        sys.exit(f"{program()}: error: {one_line(e)} (--debug shows where)")
    except KeyboardInterrupt:
        sys.exit(f"{program()}: interrupted (the newest saved state is kept; --resume goes on)")


def check_device(name, error):
    """--device NAME -> the device to use (auto: CUDA when there is one, else CPU), or error(one line) for a name
    that is not auto, cpu, cuda or cuda:N, or a CUDA device on a machine without one."""
    if name not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", name):
        error(f"--device {name}: use auto, cpu, cuda or cuda:N")
    device = resolve_device(name)
    if device.startswith("cuda") and not torch.cuda.is_available():
        error(f"--device {name}, but torch sees no CUDA GPU")
    return device


def one_line(e):
    """An exception as one line: its first line, and how many more it had (e.g. a list of missing keys)."""
    lines = str(e).strip().splitlines() or [type(e).__name__]
    return lines[0] + (f" (and {len(lines) - 1} more lines)" if len(lines) > 1 else "")


def resolve_device(name):
    """--device auto -> 'cuda' when torch sees a GPU, else 'cpu'; any other name as it is."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
