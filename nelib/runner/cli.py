"""Command-line parsing for ``python -m nelib.runner.train`` / ``nelib.runner.vectorized`` /
``nelib.runner.sweep``: every config field is an option, ``--help`` shows the value each takes, and every
mistake is one line naming the closest valid option."""

from __future__ import annotations

import argparse
import difflib

from nelib.runner import presets, schema
from nelib.runner.config import TrainConfig, fields, make_config
from nelib.runner.methods import METHODS

DESCRIPTION = "Train one agent: nelib.run(config) from Python, python -m nelib.runner.train ... from the shell."


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (argparse prints the whole usage first), that takes
    no abbreviated options (``--agent.l`` must not silently mean ``--agent.lr``), and that names the
    closest option to an unknown one."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            flag = next((a for a in extra if a.startswith("-")), None)
            if flag is None:
                self.error(f"unexpected argument {extra[0]!r}")
            name = flag.split("=", 1)[0]
            options = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            self.error(f"unknown option {name}; the closest is {closest(name, options)}")
        return ns


def closest(name: str, names: list[str]) -> str:
    """The entry of ``names`` most like ``name``, preferring those in the same dotted section."""
    section = name.rpartition(".")[0]
    same = [n for n in names if section and n.rpartition(".")[0] == section]
    return difflib.get_close_matches(name, same or names, n=1, cutoff=0.0)[0]


def parse_args(argv: list[str] | None = None, prog: str = "python -m nelib.runner.train",
               ) -> tuple[TrainConfig, argparse.Namespace]:
    """CLI -> config. Every config field is an option, nested ones dotted (``--agent.lr 1e-3``); ``--help``
    shows the value each takes for the task, method and preset given (the preset and method set many)."""
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in ("--task", "--method", "--seed", "--preset"):
        first.add_argument(name)
    given, _ = first.parse_known_args(argv)
    try:
        shown = make_config(given.task or "HalfCheetah-v5", given.method, int(given.seed or 0),
                            given.preset or presets.DEFAULT)
    except ValueError:  # reported below, once the whole command line is parsed
        shown = TrainConfig()
    defaults = schema.flat(shown.to_dict())
    p = OneLineParser(prog=prog, description=DESCRIPTION, epilog=(
        f"Defaults shown are those of task {shown.task}, method {shown.method}, preset {shown.preset}: "
        "give --task, --method or --preset with --help to see theirs."))
    p.add_argument("--task", default="HalfCheetah-v5", help="gymnasium MuJoCo task id, or dmc:<domain>-<task> "
                   "(pixels, DrQ), e.g. dmc:cheetah-run (default: HalfCheetah-v5)")
    p.add_argument("--method", default=None,
                   help=f"one of: {', '.join(METHODS)} (default: td3, or drq for dmc: tasks)")
    p.add_argument("--seed", type=int, default=0, help="seed, >= 0 (default: 0)")
    p.add_argument("--preset", default=presets.DEFAULT,
                   help=f"one of: {', '.join(presets.PRESETS)} (default: {presets.DEFAULT})")
    p.add_argument("--data-dir", default=None, help="results store root (default: $NELIB_DATA or ./data)")
    p.add_argument("--overwrite", action="store_true", help="replace a stored result with another config")
    for name, (_, doc) in fields().items():
        if name not in ("task", "method", "seed", "preset"):
            value = defaults[name] if defaults[name] != "" else "''"
            p.add_argument(f"--{name}", dest=f"cfg:{name}", default=None, metavar="V",
                           help=f"{doc} (default: {value})".replace("%", "%%"))  # argparse formats help with %
    args = p.parse_args(argv)
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None}
    try:
        cfg = make_config(args.task, args.method, args.seed, args.preset, **overrides)
    except ValueError as e:
        p.exit(2, f"error: {e}\n")
    return cfg, args


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; a one-line ``ValueError`` for anything but non-negative integers."""
    seeds = []
    for part in text.split(","):
        if not part.strip().isdigit():
            raise ValueError(f"--seeds: {part.strip()!r} is not a seed; give non-negative integers separated "
                             "by commas, e.g. 0,1,2")
        seeds.append(int(part))
    return seeds
