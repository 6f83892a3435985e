"""``spikeforge search --recipe NAME [key=value ...]``: a SpikeDHS architecture search."""

from __future__ import annotations

import argparse

#: The full-scale retrain recipe suggested for a genotype found by each task.
RETRAIN_RECIPES = {"classification": "spikedhs-retrain-cifar10", "stereo": "spikedhs-stereo-mvsec"}


def cmd_search(args: argparse.Namespace) -> int:
    from ..cli import resolve_run
    from .config import build_search_config
    from .searcher import Searcher

    config, run_dir = resolve_run(args, build_search_config, None)
    if not args.resume:
        print(f"run folder: {run_dir}")
    result = Searcher(config, run_dir, resume=bool(args.resume)).fit()
    g = result["genotype"]
    parts = {"": g} if "cell" in g else {f"{name} ": part for name, part in g.items()}
    found = "; ".join(f"{name}cell {p['cell']} path {p['path']}" for name, p in parts.items())
    retrain = RETRAIN_RECIPES[config.task]
    print(f"done: {found}; written to {run_dir / 'genotype.json'}; retrain with: "
          f"spikeforge train --recipe {retrain} --genotype {run_dir / 'genotype.json'}")
    return 0


def add_search_parser(sub) -> None:
    """Register ``search`` on the main parser's sub-commands."""
    from ..cli import add_run_arguments

    p = sub.add_parser("search", help="SpikeDHS search of a spiking cell and network path (writes genotype.json)")
    add_run_arguments(p, None)
    p.set_defaults(func=cmd_search)
