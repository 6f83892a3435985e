"""``spikeforge recipes [NAME [key=value ...]]``: list shipped recipes, or print one resolved.

A recipe is resolved as the command that runs it reads it: ``search`` when it has a ``supernet`` section,
``convert`` when it sets a key that only a conversion recipe has (``srp_tau``, ``bn``, ...), ``train`` otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses

from ..convert.config import ConversionConfig, build_conversion_config
from ..runtime.config import list_recipes, load_recipe
from ..search.config import build_search_config
from ..train.config import TrainConfig, build_config
from . import COMMANDS
from .common import config_yaml

__all__ = ["add_parser", "run", "CONVERSION_KEYS", "build_recipe"]

#: The keys that only a conversion recipe has (a training recipe has its own ``timesteps`` and ``description``).
CONVERSION_KEYS = frozenset(f.name for f in dataclasses.fields(ConversionConfig)) - {
    f.name for f in dataclasses.fields(TrainConfig)}


def add_parser(sub) -> None:
    p = sub.add_parser("recipes", help=COMMANDS["recipes"])
    p.add_argument("name", nargs="?", metavar="NAME", help="a shipped recipe name or YAML path to print resolved")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides to apply before printing")
    p.set_defaults(func=run, config_class=TrainConfig)


def build_recipe(name: str, overrides: list[str] | None = None):
    """The config of recipe ``name`` with ``overrides``, built for the command that runs it (search, convert or
    train: see the module's docstring)."""
    data = load_recipe(name)
    if "supernet" in data:
        return build_search_config(name, overrides)
    if CONVERSION_KEYS & set(data):
        return build_conversion_config(name, overrides)
    return build_config(name, overrides)


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        if args.overrides:
            raise ValueError("key=value overrides need a recipe NAME to apply to")
        recipes = list_recipes()
        width = max(map(len, recipes), default=0)
        for name, description in recipes.items():
            print(f"{name:<{width}}  {description}")
        return 0
    if "=" in args.name:
        raise ValueError(f"recipe name {args.name!r}: the NAME comes first, then key=value overrides")
    print(config_yaml(build_recipe(args.name, args.overrides)), end="")
    return 0
