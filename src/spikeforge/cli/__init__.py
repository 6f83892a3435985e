"""The ``spikeforge`` command line: one module per command, each imported with its options only.

``spikeforge train [--recipe NAME] [key=value ...]`` trains (with no arguments: a spiking CNN on the
embedded digits set), ``search`` runs a SpikeDHS architecture search, ``evaluate`` re-tests a
checkpoint, ``convert [--recipe NAME] [key=value ...]`` turns a QCFS ANN into an IF SNN and tabulates
accuracy over time steps (with SRP on request), ``energy`` counts operations and firing rates,
``export`` writes a NIR graph, ``import-weights`` turns an official checkpoint of the seed papers into
a spikeforge one, ``runs`` compares finished runs, ``recipes`` lists (or prints) shipped recipes.

A command module ``spikeforge.cli.<name>`` defines ``add_parser(subparsers)`` and ``run(args) -> exit code``
and imports the library parts it needs at its top. This module imports only light modules (the standard
library, :mod:`spikeforge.optional`, :mod:`.interrupt`) and, of the command modules, only the one named
(after :mod:`.methods`, which imports every method room for what it registers),
so ``spikeforge --help`` lists the commands from :data:`COMMANDS` without loading any of them. Optional
packages are imported (through :func:`spikeforge.optional.require`) by the functions that need them, so
every command and its ``--help`` work with the required dependencies alone. Every command exits non-zero
with a one-line reason on bad input: 2 for bad input or a missing optional package, 3 when training or a
search diverged (a NaN or infinite loss, gradient, weight or batch-norm statistic), 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import sys
import typing
from importlib.metadata import PackageNotFoundError, version

from ..optional import MissingDependency
from .interrupt import Interrupted

__all__ = ["COMMANDS", "build_parser", "parse_arguments", "main"]

#: Every command with its line in ``spikeforge --help``, in that order; its options and ``run`` are in
#: module ``spikeforge.cli.<name>`` (``_`` for ``-``), imported only when the command is named.
COMMANDS = {
    "train": "train from a recipe (default: spiking CNN on the embedded digits)",
    "search": "SpikeDHS search of a spiking cell and network path (writes genotype.json)",
    "evaluate": "test accuracy of a checkpoint",
    "convert": "convert a QCFS checkpoint to an IF SNN and test it over time (QCFS, SRP)",
    "energy": "firing rates, operation counts and energy of a checkpoint, against the same network as an ANN",
    "export": "write a checkpoint as a NIR graph (neuromorphic hardware, snnTorch, Norse, ...)",
    "import-weights": "import an official checkpoint (SpikeDHS, TET, QCFS, SRP)",
    "runs": "compare run folders: a Markdown table of their test metrics, plots",
    "recipes": "list shipped recipes, or print one resolved (extends and defaults applied)",
}


def _version() -> str:
    try:
        return version("spikeforge")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser(commands: typing.Collection[str] = COMMANDS) -> argparse.ArgumentParser:
    """The ``spikeforge`` parser: the full sub-parser of each of ``commands`` (importing its module), the
    others by name and help line alone (enough for ``spikeforge --help``)."""
    parser = _Parser(
        prog="spikeforge",
        description="Deep spiking neural networks: train, search, evaluate, convert, energy, export.")
    parser.add_argument("--version", action="version", version=f"spikeforge {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if commands:
        importlib.import_module(f"{__name__}.methods")  # a command may run a recipe of any method
    for name, summary in COMMANDS.items():
        if name in commands:
            importlib.import_module(f"{__name__}.{name.replace('-', '_')}").add_parser(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def _named(argv: list[str]) -> tuple[str, ...]:
    """The command ``argv`` names (its first word that is not an option), if it is one."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return (word,) if word in COMMANDS else ()


def _dotted_keys(config_class, prefix: str = "") -> list[str]:
    """Every settable key of a config dataclass, dotted (``optim.lr``), sections expanded."""
    keys = []
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _dotted_keys(hints[f.name], prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def _override_spelling(option: str, value: str | None, config_class) -> str:
    """``--epochs`` (with value ``1``) -> ``epochs=1``; ``--lr`` -> ``optim.lr=...``: the recipe key
    the option names, matched on the key's last part, as a ``did you mean`` hint ('' when none fits)."""
    name = option.lstrip("-").split("=", 1)[0].replace("-", "_")
    keys = _dotted_keys(config_class)
    matches = [k for k in keys if k == name or k.endswith("." + name)]
    matches = matches or difflib.get_close_matches(name, keys, n=1, cutoff=0.8)
    if not matches:
        return ""
    value = option.split("=", 1)[1] if "=" in option else (value if value is not None else "VALUE")
    return f" (did you mean {matches[0]}={value}? recipe keys are given as key=value)"


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args``, except that ``key=value`` overrides may also come after options
    (``train --recipe cpu --data-root D epochs=3``), which argparse alone rejects, and that an unknown
    ``--key value`` option of a command with overrides answers with its ``key=value`` spelling."""
    argv = list(argv)
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    takes_overrides = hasattr(args, "overrides")
    if stray or (extra and not takes_overrides):
        hint = ""
        option = next((a for a in stray if a.startswith("--")), None)
        if option is not None and takes_overrides:
            following = argv[argv.index(option) + 1:]
            value = following[0] if following and not following[0].startswith("-") else None
            hint = _override_spelling(option, value, args.config_class)
        prog = f"{parser.prog} {args.command}"
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(stray or extra)}{hint} "
                       f"(see '{prog} --help')\n")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` names (default: the process's arguments); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_arguments(build_parser(_named(argv)), argv)
    except SystemExit as done:  # --help, --version, or a usage error (already printed)
        return done.code if isinstance(done.code, int) else 2
    try:
        return args.func(args)
    except Interrupted as stop:
        print(f"\ninterrupted: {stop}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (MissingDependency, ValueError, TypeError, FileNotFoundError, RuntimeError, NotImplementedError) as err:
        print(f"spikeforge {args.command}: error: {_first_line(err)}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
