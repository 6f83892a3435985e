"""What several commands share: run folders from recipes (``train``, ``search``), and for the commands that
run a training checkpoint (``evaluate``, ``convert``, ``energy``, ``export``) its options, its network and its
recipe's test set.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from pathlib import Path

import yaml
from torch.utils.data import Dataset, Subset

from ..convert import to_snn
from ..runtime.config import to_dict
from ..runtime.loaders import evaluation_set
from ..runtime.runfolder import check_available
from ..train.trained import load_trained, trained_timesteps
from .interrupt import run_interruptibly

__all__ = ["OPTION_KEYS", "add_recipe_arguments", "add_run_arguments", "option_overrides", "resolve_run", "config_yaml",
           "positive_int", "log_on_rank0", "fit_from_recipe", "add_checkpoint_arguments", "output_folder", "is_qcfs",
           "load_networks", "load_network", "build_test_set", "first_samples"]

#: Command-line options that stand for a recipe key (``--data-root D`` is ``data.root=D``); a command
#: may define any of them.
OPTION_KEYS = {"data_root": "data.root", "genotype": "model.kwargs.genotype"}


def add_recipe_arguments(p: argparse.ArgumentParser, default_recipe: str | None, example: str) -> None:
    """``--recipe NAME`` and the ``key=value`` overrides (``example`` shows two) of a command run from a recipe."""
    default = f" (default: {default_recipe})" if default_recipe else ""
    p.add_argument("--recipe", help=f"shipped recipe name or YAML path{default}")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=f"recipe overrides, e.g. {example}")


def add_run_arguments(p: argparse.ArgumentParser, default_recipe: str | None) -> None:
    """The options shared by ``train`` and ``search``."""
    add_recipe_arguments(p, default_recipe, "optim.lr=0.05 epochs=3")
    p.add_argument("--data-root", help="data folder (same as data.root=...)")
    p.add_argument("--run-dir", help="run folder (default: <output_dir>/<recipe>-<time>-<4 hex digits>); "
                                     "one that holds a run is refused unless --overwrite")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint "
                                                       "(from the start if it stopped before one)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --run-dir: delete its config.yaml, metrics, checkpoints, plots and "
                        "tensorboard/ first")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def option_overrides(options: dict, keys: dict[str, str]) -> list[str]:
    """One ``key=value`` override for each option of ``keys`` given in ``options`` (not None): ``data_root: "D"``
    -> ``data.root="D"``. Values go as JSON, never read as YAML: "runs/a: b" or "2024" stay strings, lists lists."""
    return [f"{key}={json.dumps(options[option])}" for option, key in keys.items() if options.get(option) is not None]


def resolve_run(args: argparse.Namespace, build_config, default_recipe: str | None):
    """``(config, run_dir)`` from ``--recipe``/overrides/``--data-root``/``--genotype``/``--run-dir``/``--resume``;
    a run folder that the run could not claim (in use, holding another run) fails here, before any set-up."""
    config, run_dir = _config_and_folder(args, build_config, default_recipe)
    if not args.print_config:
        check_available(run_dir, resume=bool(args.resume), overwrite=args.overwrite)
    return config, run_dir


def _config_and_folder(args: argparse.Namespace, build_config, default_recipe: str | None):
    """The config and run folder the arguments name (on disk, only --resume's config.yaml is looked at)."""
    overrides = list(args.overrides) + option_overrides(vars(args), OPTION_KEYS)
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


def add_checkpoint_arguments(p: argparse.ArgumentParser, checkpoint: str, *, timesteps: str | None = None,
                             test_set: bool = False, out: str | None = None, batch_size: int | None = None) -> None:
    """The options of a command that runs a training checkpoint: ``--checkpoint`` (``checkpoint`` says which),
    ``--timesteps T`` when ``timesteps`` (its help) is given; with ``test_set``, ``--data-root`` and ``--device``
    of a run over the recipe's test set; with ``out`` (a folder name), ``--out DIR`` (default:
    ``<checkpoint dir>/<out>``) and ``--batch-size`` (default ``batch_size``; None: the recipe's)."""
    p.add_argument("--checkpoint", required=True, help=f"{checkpoint} (best.pt / last.pt)")
    if timesteps is not None:
        p.add_argument("--timesteps", type=positive_int, metavar="T", help=timesteps)
    if test_set:
        p.add_argument("--data-root", help="data folder (default: the checkpoint recipe's data.root)")
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    if out is not None:
        p.add_argument("--out", help=f"output folder (default: <checkpoint dir>/{out})")
        default = batch_size or "the checkpoint recipe's eval batch size"
        p.add_argument("--batch-size", type=positive_int, default=batch_size,
                       help=f"test batch size (default: {default})")


def output_folder(args: argparse.Namespace, name: str) -> Path:
    """``--out``, else ``<checkpoint folder>/<name>``."""
    return Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / name


def is_qcfs(config) -> bool:
    """Whether a training recipe makes a QCFS ANN (to be converted before it runs as an SNN)."""
    return config.model.neuron.lower() == "qcfs"


def load_networks(checkpoint: str, timesteps: int | None = None, bn: str = "keep"):
    """``(trained, network, config, T)`` of a training checkpoint: the network as trained (CPU, eval mode) and
    the one that runs as an SNN: ``trained`` itself, or a QCFS ANN's IF SNN of ``T`` steps (batch norm kept
    or folded). ``T`` is ``timesteps``, else the recipe's last stage's."""
    trained, config, _ = load_trained(checkpoint, timesteps)
    steps = trained_timesteps(config, timesteps)
    return trained, (to_snn(trained, timesteps=steps, bn=bn) if is_qcfs(config) else trained), config, steps


def load_network(checkpoint: str, timesteps: int | None = None, bn: str = "keep"):
    """``(network, config, T)`` of a training checkpoint: :func:`load_networks` less the network as trained."""
    return load_networks(checkpoint, timesteps, bn)[1:]


def build_test_set(config, data_root: str | None = None) -> Dataset:
    """The test set of a checkpoint's recipe, from ``data_root`` (default: the recipe's ``data.root``), never
    downloaded."""
    return evaluation_set(config.data, data_root)


def first_samples(dataset: Dataset, n: int | None) -> Dataset:
    """The first ``n`` samples of ``dataset`` (all when ``n`` is None or larger)."""
    return dataset if n is None else Subset(dataset, range(min(n, len(dataset))))
