"""``spikeforge train [--recipe NAME] [key=value ...]``: train from a recipe (default: the embedded digits)."""

from __future__ import annotations

import argparse

from ..train import Trainer, build_config
from ..train.config import TrainConfig
from . import COMMANDS
from .common import add_run_arguments, fit_from_recipe

DEFAULT_RECIPE = "digits"


def add_parser(sub) -> None:
    p = sub.add_parser("train", help=COMMANDS["train"],
                       description="Train from a recipe; key=value overrides use the recipe's dotted keys.")
    add_run_arguments(p, DEFAULT_RECIPE)
    p.add_argument("--genotype", metavar="PATH_OR_NAME",
                   help="genotype of a spikedhs/spikedhs_stereo model, e.g. a search's genotype.json "
                        "(same as model.kwargs.genotype=...)")
    p.set_defaults(func=run, config_class=TrainConfig)


def best_and_final(summary: dict) -> str:
    """``best test accuracy 91.20%, final 91.05%`` (or the task's metric, e.g. mean disparity error)."""
    metric = summary["metric"]
    best, final = summary[f"best_{metric}"], summary[f"final_{metric}"]
    if metric == "acc":
        return f"best test accuracy {100 * (best or 0):.2f}%, final {100 * (final or 0):.2f}%"
    show = lambda v: "n/a" if v is None else f"{v:.4g}"  # noqa: E731
    return f"best test {metric.replace('_', ' ')} {show(best)}, final {show(final)}"


def run(args: argparse.Namespace) -> int:
    done = fit_from_recipe(args, "train", Trainer, build_config, DEFAULT_RECIPE)
    if done is not None:
        _, _, log, summary = done
        log(f"done: {best_and_final(summary)} after {summary['epochs']} epochs; checkpoints in {summary['run_dir']}")
    return 0
