"""``spikeforge recipes [NAME [key=value ...]]``: list shipped recipes, or print one resolved."""

from __future__ import annotations

import argparse

from .common import config_yaml


def add_parser(sub) -> None:
    p = sub.add_parser("recipes", help="list shipped recipes, or print one resolved (extends and defaults applied)")
    p.add_argument("name", nargs="?", metavar="NAME", help="a shipped recipe name or YAML path to print resolved")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides to apply before printing")
    p.set_defaults(func=run, config_class=_config_class)


def _config_class():
    from ..train.config import TrainConfig

    return TrainConfig


def run(args: argparse.Namespace) -> int:
    from ..runtime.config import list_recipes, load_recipe

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
    if "supernet" in load_recipe(args.name):
        from ..search.config import build_search_config as build
    else:
        from ..train.config import build_config as build
    print(config_yaml(build(args.name, args.overrides)), end="")
    return 0
