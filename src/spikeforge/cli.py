"""The ``spikeforge`` command line.

``spikeforge train [--recipe NAME] [key=value ...]`` trains (with no arguments:
a spiking CNN on the embedded digits set), ``spikeforge search --recipe NAME``
runs a SpikeDHS architecture search, ``spikeforge evaluate --checkpoint
PATH`` re-tests a checkpoint, ``spikeforge convert --checkpoint PATH`` turns a
QCFS ANN into an IF SNN and tabulates accuracy over time steps (with SRP on
request), ``spikeforge runs DIR...`` tabulates and plots finished runs side by side,
``spikeforge recipes`` lists shipped recipes.
Every command exits non-zero with a one-line reason on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import spikeforge as sf

DEFAULT_RECIPE = "digits"


def _rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


#: Command-line options that stand for a recipe key (``--data-root D`` is ``data.root=D``); a command
#: may define any of them.
OPTION_KEYS = {"data_root": "data.root", "genotype": "model.kwargs.genotype"}


def resolve_run(args: argparse.Namespace, build_config, default_recipe: str | None):
    """``(config, run_dir)`` from ``--recipe``/overrides/``--data-root``/``--genotype``/``--run-dir``/``--resume``."""
    # Option values are paths, not YAML: quoted, so "runs/a: b" or "2024" stay strings.
    overrides = list(args.overrides) + [f"{key}={json.dumps(getattr(args, option))}"
                                        for option, key in OPTION_KEYS.items() if getattr(args, option, None)]
    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"--resume {run_dir}: no config.yaml there (not a spikeforge run folder)")
        return build_config(str(saved), overrides), run_dir
    recipe = args.recipe or default_recipe
    if recipe is None:
        raise ValueError("--recipe is required")
    config = build_config(recipe, overrides)
    name = config.run_name or f"{Path(recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    return config, Path(args.run_dir) if args.run_dir else Path(config.output_dir) / name


def add_run_arguments(p: argparse.ArgumentParser, default_recipe: str | None) -> None:
    """The options shared by ``train`` and ``search``."""
    p.add_argument("--recipe", help="shipped recipe name or YAML path" + (f" (default: {default_recipe})" if default_recipe else ""))
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. optim.lr=0.05 epochs=3")
    p.add_argument("--data-root", help="data folder (same as data.root=...)")
    p.add_argument("--run-dir", help="run folder (default: <output_dir>/<recipe>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")


def _best_and_final(summary: dict) -> str:
    """``best test accuracy 91.20%, final 91.05%`` (or the task's metric, e.g. mean disparity error)."""
    metric = summary["metric"]
    best, final = summary[f"best_{metric}"], summary[f"final_{metric}"]
    if metric == "acc":
        return f"best test accuracy {100 * (best or 0):.2f}%, final {100 * (final or 0):.2f}%"
    show = lambda v: "n/a" if v is None else f"{v:.4g}"  # noqa: E731
    return f"best test {metric.replace('_', ' ')} {show(best)}, final {show(final)}"


def cmd_train(args: argparse.Namespace) -> int:
    from .train import Trainer, build_config

    config, run_dir = resolve_run(args, build_config, DEFAULT_RECIPE)
    log = print if _rank0() else (lambda *a, **k: None)
    if not args.resume:
        log(f"run folder: {run_dir}")
    summary = Trainer(config, run_dir, resume=bool(args.resume), log=log).fit()
    log(f"done: {_best_and_final(summary)} after {summary['epochs']} epochs; checkpoints in {summary['run_dir']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .train import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, data_root=args.data_root, timesteps=args.timesteps, device=args.device)
    metric = result["metric"]
    value = result[f"test_{metric}"]
    shown = f"test accuracy {100 * value:.2f}%" if metric == "acc" else f"test {metric.replace('_', ' ')} {value:.4g}"
    print(f"{shown} (loss {result['test_loss']:.4f}, {result['samples']} samples, T={result['timesteps']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from .train.runs import comparison_table, load_run, plot_comparison, redraw_plots

    runs = [load_run(path) for path in args.run_dirs]
    print(comparison_table(runs, window_fraction=args.window_fraction))
    if args.redraw:
        for run in runs:
            for path in redraw_plots(run.records, run.path, run.metric):
                print(f"wrote {path}")
    if args.plot:
        path = plot_comparison(runs, args.plot)
        print(f"wrote {path}" if path else "--plot: matplotlib is not installed (pip install matplotlib)")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from .train import list_recipes

    recipes = list_recipes()
    width = max(map(len, recipes), default=0)
    for name, description in recipes.items():
        print(f"{name:<{width}}  {description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikeforge", description="Deep spiking neural networks: train, search, evaluate, convert, energy, export.")
    parser.add_argument("--version", action="version", version=f"spikeforge {sf.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train from a recipe (default: spiking CNN on the embedded digits)")
    add_run_arguments(p, DEFAULT_RECIPE)
    p.add_argument("--genotype", metavar="PATH_OR_NAME",
                   help="genotype of a spikedhs/spikedhs_stereo model, e.g. a search's genotype.json (same as model.kwargs.genotype=...)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test accuracy of a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root")
    p.add_argument("--timesteps", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("runs", help="compare run folders: a Markdown table of their test metrics, plots")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--window-fraction", action="store_true",
                   help="add the final fraction of membranes inside the surrogate window per spiking layer")
    p.add_argument("--plot", metavar="PNG", help="write the runs' test curves (and window fractions) to PNG")
    p.add_argument("--redraw", action="store_true", help="redraw each run's own plots into its folder")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("recipes", help="list shipped recipes")
    p.set_defaults(func=cmd_recipes)

    from .search.cli import add_search_parser

    add_search_parser(sub)
    from .convert.cli import add_convert_parser

    add_convert_parser(sub)
    from .analysis.cli import add_energy_parser

    add_energy_parser(sub)
    from .export.cli import add_export_parser

    add_export_parser(sub)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that ``key=value`` overrides may also come after options
    (``train --recipe cpu --data-root D epochs=3``), which argparse alone rejects."""
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(build_parser(), argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"\ninterrupted: continue with `spikeforge {args.command} --resume <run folder>` "
              "(restarts from the last completed epoch)", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, NotImplementedError) as err:
        print(f"spikeforge {args.command}: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
