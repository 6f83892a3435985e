"""Run configuration shared by training and search: typed sections, YAML recipes, overrides.

A recipe is a YAML mapping whose keys are exactly the fields of a config dataclass
(:class:`~spikeforge.train.config.TrainConfig`, :class:`~spikeforge.search.config.SearchConfig`);
nested sections map onto nested dataclasses. The CLI loads a recipe and applies
``key=value`` overrides with dotted keys (``optim.lr=0.05``); unknown keys, wrong types and
values out of range are rejected with the key's name. Floats may be written ``1e-3`` (YAML 1.1
alone reads that as a string). A recipe may extend another (``extends: NAME``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from .schedule import SCHEDULES

__all__ = [
    "DataConfig", "OptimConfig", "ScheduleConfig", "LossConfig", "CheckpointConfig", "DistributedConfig",
    "MemoryConfig", "ConfigError", "from_dict", "to_dict", "load_recipe", "list_recipes", "apply_overrides",
    "load_yaml", "check", "at_least", "positive", "fraction", "StageConfig", "RunConfig",
]


class ConfigError(ValueError):
    """A recipe or override that does not fit the config dataclasses."""


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loading that also reads ``1e-3`` and ``1.5E6`` as floats."""


# YAML 1.1 floats need a dot and a signed exponent; this adds the exponent forms without them.
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
                              list("-+0123456789."))


def load_yaml(text: str):
    """``yaml.safe_load`` that also reads ``1e-3`` as a float."""
    return yaml.load(text, Loader=_Loader)


def check(key: str, value, ok: bool, expected: str) -> None:
    """The one-line ConfigError ``<key> must be <expected>, got <value>`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key} must be {expected}, got {value!r}")


def at_least(key: str, value, low, optional: bool = False) -> None:
    """``value >= low`` (a count, a size, a number of seconds); None too when ``optional``."""
    if not (optional and value is None):
        check(key, value, value >= low, f">= {low}" + (" (or null)" if optional else ""))


def positive(key: str, value, optional: bool = False) -> None:
    """``value`` a finite number > 0 (a rate, a factor); None too when ``optional``."""
    if not (optional and value is None):
        check(key, value, 0 < value < math.inf, "finite and > 0" + (" (or null)" if optional else ""))


def fraction(key: str, value, closed: bool = False) -> None:
    """``0 <= value < 1`` (``<= 1`` when ``closed``)."""
    check(key, value, 0 <= value <= 1 if closed else 0 <= value < 1, f"in [0, 1{']' if closed else ')'}")


@dataclass
class DataConfig:
    name: str = "digits"
    root: str | None = None
    batch_size: int = 64
    eval_batch_size: int | None = None
    workers: int = 0
    download: bool = False
    options: dict = field(default_factory=dict)
    subset: int | None = None  # train on the first N training samples, an equal share per class (test set unchanged)

    def __post_init__(self):
        at_least("data.batch_size", self.batch_size, 1)
        at_least("data.eval_batch_size", self.eval_batch_size, 1, optional=True)
        at_least("data.workers", self.workers, 0)
        at_least("data.subset", self.subset, 1, optional=True)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = True  # False: no weight decay on BN parameters and biases
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self):
        positive("optim.lr", self.lr)
        fraction("optim.momentum", self.momentum, closed=True)
        at_least("optim.weight_decay", self.weight_decay, 0)
        for i, beta in enumerate(self.betas):
            fraction(f"optim.betas[{i}]", beta)


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # cosine | multistep | constant
    warmup_epochs: float = 0.0
    min_lr: float = 0.0  # cosine
    milestones: list[float] = field(default_factory=list)  # multistep: epochs where the rate is multiplied by gamma
    gamma: float = 0.1  # multistep

    def __post_init__(self):
        check("schedule.name", self.name, self.name in SCHEDULES, f"one of {', '.join(SCHEDULES)}")
        at_least("schedule.warmup_epochs", self.warmup_epochs, 0)
        at_least("schedule.min_lr", self.min_lr, 0)
        for i, epoch in enumerate(self.milestones):
            at_least(f"schedule.milestones[{i}]", epoch, 0)
        positive("schedule.gamma", self.gamma)


@dataclass
class LossConfig:
    # sdt | tet (classification; default sdt); subpixel_ce | smooth_l1 (stereo; default subpixel_ce)
    name: str | None = None
    lam: float = 0.05
    phi: float = 1.0
    label_smoothing: float = 0.0
    aux_weight: float = 0.4  # weight of auxiliary-head losses, for models that return (logits, aux, ...)
    diversity: float = 2.0  # subpixel_ce: scale (pixels) of the Laplace target (DDES: 1 on its step-2 grid = 2 px)

    def __post_init__(self):
        fraction("loss.lam", self.lam, closed=True)
        fraction("loss.label_smoothing", self.label_smoothing, closed=True)
        at_least("loss.aux_weight", self.aux_weight, 0)
        positive("loss.diversity", self.diversity)


@dataclass
class CheckpointConfig:
    """Mid-epoch saves of ``last.pt`` (with the position inside the epoch, for ``--resume``)."""

    every_minutes: float = 10.0  # 0: only at the end of each epoch

    def __post_init__(self):
        at_least("checkpoint.every_minutes", self.every_minutes, 0)


@dataclass
class DistributedConfig:
    """Multi-process (torchrun) training."""

    timeout_minutes: float = 30.0  # a rank that waits longer for the others (one stopped) fails

    def __post_init__(self):
        positive("distributed.timeout_minutes", self.timeout_minutes)


@dataclass
class MemoryConfig:
    """Training memory: what the training steps save for backward, and how the process reuses freed memory."""

    # Save spikes for backward as bits (spikeforge.core.packing): the same gradients, less memory, a little slower.
    pack_spikes: bool = True
    # CPU runs: glibc's malloc keeps freed memory for the next step instead of mapping every large tensor afresh
    # (spikeforge.runtime.allocator): 5-18% faster steps, about 25% more resident memory at the peak.
    reuse_freed: bool = True


@dataclass
class StageConfig:
    """One stage of a run: ``epochs`` at ``timesteps`` (time inheritance training chains several, carrying
    the weights on), its learning-rate schedule restarting at ``lr``."""

    epochs: int
    timesteps: int
    lr: float | None = None  # None: the recipe's optim.lr

    def check(self, key: str) -> None:
        at_least(f"{key}.epochs", self.epochs, 1)
        at_least(f"{key}.timesteps", self.timesteps, 1)
        positive(f"{key}.lr", self.lr, optional=True)


@dataclass
class RunConfig:
    """The sections and keys every run has (training and search recipes extend it)."""

    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    task: str = "classification"  # classification | stereo (see spikeforge.runtime.tasks)
    epochs: int = 10
    timesteps: int = 4
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = False  # mixed precision: float16 + loss scaling on CUDA, bfloat16 on a CPU that has it natively
    channels_last: bool = False
    grad_clip: float | None = None  # largest gradient norm (None or 0: no clipping)
    output_dir: str = "runs"
    run_name: str | None = None
    progress: bool = True  # a live bar on a terminal, plain lines in a log
    progress_seconds: float = 60.0  # seconds between plain progress lines (also one at each tenth of an epoch)
    log_every: int = 50  # training steps between TensorBoard scalars (when tensorboard is installed)
    description: str = ""

    def __post_init__(self):
        at_least("epochs", self.epochs, 1)
        at_least("timesteps", self.timesteps, 1)
        at_least("grad_clip", self.grad_clip, 0, optional=True)
        at_least("progress_seconds", self.progress_seconds, 0)
        at_least("log_every", self.log_every, 1)

    def stage_list(self) -> list[StageConfig]:
        """The run's stages: one of ``epochs`` at ``timesteps``."""
        return [StageConfig(self.epochs, self.timesteps)]


def _check_type(value, hint, key: str):
    """Convert ``value`` to ``hint`` where lossless (int -> float, list -> tuple), else raise."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, prefix=key + ".")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_type(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_check_type(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value


def from_dict(cls, data, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'recipe'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {k: _check_type(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{prefix.rstrip('.') or 'recipe'}: {err}") from None


def to_dict(config) -> dict:
    """Plain nested dict of a config (tuples as lists), suitable for YAML/JSON."""

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(config))


def _recipe_dir():
    return resources.files("spikeforge") / "recipes"


def list_recipes() -> dict[str, str]:
    """Shipped recipe names and their one-line descriptions."""
    out = {}
    for entry in sorted(_recipe_dir().iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            data = load_yaml(entry.read_text()) or {}
            lines = str(data.get("description", "")).strip().splitlines()
            out[entry.name[: -len(".yaml")]] = lines[0] if lines else ""
    return out


def merge_recipes(base: dict, child: dict) -> dict:
    """``child`` laid over ``base``: sections merge key by key, any other value replaces."""
    merged = dict(base)
    for key, value in child.items():
        both_sections = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge_recipes(merged[key], value) if both_sections else value
    return merged


def load_recipe(name_or_path: str | None, _chain: tuple[str, ...] = ()) -> dict:
    """Raw mapping of a shipped recipe (by name) or a YAML file (by path); None: defaults.
    A recipe with ``extends: NAME`` (a shipped name or a path) is laid over that recipe."""
    if name_or_path is None:
        return {}
    if name_or_path in _chain:
        raise ConfigError(f"recipe {name_or_path}: 'extends' loops ({' -> '.join(_chain + (name_or_path,))})")
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        text = path.read_text()
    else:
        entry = _recipe_dir() / f"{name_or_path}.yaml"
        if not entry.is_file():
            raise ConfigError(f"unknown recipe {name_or_path!r}: available: {', '.join(list_recipes())}")
        text = entry.read_text()
    try:
        data = load_yaml(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {name_or_path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {name_or_path}: expected a mapping at the top level")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"recipe {name_or_path}: extends must be a recipe name or path, got {base!r}")
    if path.is_file() and Path(base).suffix in (".yaml", ".yml") and not Path(base).is_absolute():
        base = str(path.parent / base)  # a YAML file's base path is relative to that file
    return merge_recipes(load_recipe(base, _chain + (name_or_path,)), data)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` overrides (dotted keys, YAML values) to a raw recipe mapping."""
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        try:
            value = load_yaml(raw)
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = value
    return data
