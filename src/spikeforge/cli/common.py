"""What several commands share: run folders from recipes, checkpoint loading, test sets, messages.

Imports here are light (standard library); each helper imports the library part it needs when called.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import time
from pathlib import Path

__all__ = ["OPTION_KEYS", "add_run_arguments", "resolve_run", "config_yaml", "positive_int", "log_on_rank0",
           "Interrupted", "run_interruptibly", "fit_from_recipe", "load_network", "dotted_keys"]

#: Command-line options that stand for a recipe key (``--data-root D`` is ``data.root=D``); a command
#: may define any of them.
OPTION_KEYS = {"data_root": "data.root", "genotype": "model.kwargs.genotype"}


def add_run_arguments(p: argparse.ArgumentParser, default_recipe: str | None) -> None:
    """The options shared by ``train`` and ``search``."""
    p.add_argument("--recipe", help="shipped recipe name or YAML path" + (f" (default: {default_recipe})" if default_recipe else ""))
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. optim.lr=0.05 epochs=3")
    p.add_argument("--data-root", help="data folder (same as data.root=...)")
    p.add_argument("--run-dir", help="run folder (default: <output_dir>/<recipe>-<time>-<4 hex digits>); "
                                     "one that holds a run is refused unless --overwrite")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint "
                                                       "(from the start if it stopped before one)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --run-dir: delete its config.yaml, metrics, checkpoints, plots and "
                        "tensorboard/ first")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def resolve_run(args: argparse.Namespace, build_config, default_recipe: str | None):
    """``(config, run_dir)`` from ``--recipe``/overrides/``--data-root``/``--genotype``/``--run-dir``/``--resume``;
    a run folder that the run could not claim (in use, holding another run) fails here, before any set-up."""
    config, run_dir = _config_and_folder(args, build_config, default_recipe)
    if not args.print_config:
        from ..runtime.runfolder import check_available

        check_available(run_dir, resume=bool(args.resume), overwrite=args.overwrite)
    return config, run_dir


def _config_and_folder(args: argparse.Namespace, build_config, default_recipe: str | None):
    """The config and run folder the arguments name (on disk, only --resume's config.yaml is looked at)."""
    # Option values are paths, not YAML: quoted, so "runs/a: b" or "2024" stay strings.
    overrides = list(args.overrides) + [f"{key}={json.dumps(getattr(args, option))}"
                                        for option, key in OPTION_KEYS.items() if getattr(args, option, None)]
    if args.resume:
        if args.overwrite:
            raise ValueError("--resume continues a run and --overwrite replaces it: give one of them")
        run_dir = Path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"--resume {run_dir}: no config.yaml there (not a spikeforge run folder)")
        return build_config(str(saved), overrides), run_dir
    recipe = args.recipe or default_recipe
    if recipe is None:
        raise ValueError("--recipe is required")
    config = build_config(recipe, overrides)
    if args.run_dir:
        return config, Path(args.run_dir)
    if config.run_name is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("a distributed run needs --run-dir (or run_name=...): every process must name the same "
                         "folder, and default names are made per process")
    return config, Path(config.output_dir) / (config.run_name or _default_name(recipe))


def _default_name(recipe: str) -> str:
    """``<recipe>-<date>-<time>-<4 random hex digits>``: runs started in the same second get different folders."""
    return f"{Path(recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def config_yaml(config) -> str:
    """A config dataclass as the YAML recipe that reproduces it (the run folder's ``config.yaml``)."""
    import yaml

    from ..runtime.config import to_dict

    return yaml.safe_dump(to_dict(config), sort_keys=False)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def log_on_rank0():
    """``print`` on the first process of a distributed run (and outside one), a no-op elsewhere."""
    return print if int(os.environ.get("RANK", "0")) == 0 else (lambda *a, **k: None)


class Interrupted(Exception):
    """Ctrl-C during a run; the message says how to continue (or that nothing was saved)."""


def run_interruptibly(command: str, run_dir: Path, fit):
    """``fit()``, turning Ctrl-C into :class:`Interrupted` with a resume hint only when a checkpoint exists."""
    try:
        return fit()
    except KeyboardInterrupt as stop:
        where = str(stop).split(";")[0] + "; " if str(stop) else ""  # "stopped at epoch 2, step 3/6; "
        if (Path(run_dir) / "last.pt").is_file():
            message = f"{where}continue with `spikeforge {command} --resume {run_dir}`"
        else:
            message = f"no checkpoint had been written to {run_dir} yet: nothing was saved"
        raise Interrupted(message) from None


def fit_from_recipe(args: argparse.Namespace, command: str, runner_class, build_config, default_recipe: str | None):
    """What ``train`` and ``search`` share: resolve the run, print the config and stop (``--print-config``:
    None), or build ``runner_class(config, run_dir, resume=, log=, overwrite=)`` and fit it with Ctrl-C
    turned into a resume hint; returns ``(config, run_dir, log, fit result)``."""
    config, run_dir = resolve_run(args, build_config, default_recipe)
    if args.print_config:
        print(config_yaml(config), end="")
        return None
    log = log_on_rank0()
    if not args.resume:
        log(f"run folder: {run_dir}")
    result = run_interruptibly(command, run_dir, lambda: runner_class(
        config, run_dir, resume=bool(args.resume), log=log, overwrite=args.overwrite).fit())
    return config, run_dir, log, result


def load_network(checkpoint: str, timesteps: int | None, bn: str = "keep"):
    """``(network, config, T)`` of a training checkpoint: the trained SNN as it is, or a QCFS ANN
    converted to its IF SNN running ``T`` steps (batch norm kept or folded). ``T`` is ``timesteps``,
    else the recipe's last stage's."""
    from ..train.trained import load_trained, trained_timesteps

    model, config, _ = load_trained(checkpoint, timesteps)
    steps = trained_timesteps(config, timesteps)
    if config.model.neuron.lower() == "qcfs":
        from ..convert import to_snn

        model = to_snn(model, timesteps=steps, bn=bn)
    return model, config, steps


def dotted_keys(config_class, prefix: str = "") -> list[str]:
    """Every settable key of a config dataclass, dotted (``optim.lr``), sections expanded."""
    import typing

    keys = []
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += dotted_keys(hints[f.name], prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys
