"""``spikeforge search --recipe NAME [key=value ...]``: a SpikeDHS architecture search."""

from __future__ import annotations

import argparse
import shlex

from ..search.config import SearchConfig, build_search_config
from ..search.searcher import Searcher
from . import COMMANDS
from .common import add_run_arguments, fit_from_recipe


def add_parser(sub) -> None:
    p = sub.add_parser("search", help=COMMANDS["search"])
    add_run_arguments(p, None)
    p.set_defaults(func=run, config_class=SearchConfig)


def retrain_command(config, genotype_path) -> str:
    """The ``spikeforge train`` line that retrains a found genotype at the search recipe's scale, on
    the same data folder."""
    parts = ["spikeforge", "train", "--recipe", config.retrain(), "--genotype", str(genotype_path)]
    if config.data.root:
        parts += ["--data-root", str(config.data.root)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    done = fit_from_recipe(args, "search", Searcher, build_search_config, None)
    if done is None:
        return 0
    config, run_dir, log, result = done
    g = result["genotype"]
    parts = {"": g} if "cell" in g else {f"{name} ": part for name, part in g.items()}
    found = "; ".join(f"{name}cell {p['cell']} path {p['path']}" for name, p in parts.items())
    genotype = run_dir / "genotype.json"
    log(f"done: {found}; written to {genotype}; retrain with: {retrain_command(config, genotype)}")
    return 0
