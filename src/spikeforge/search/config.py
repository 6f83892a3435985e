"""Search recipes: typed configuration of a SpikeDHS architecture search.

A search recipe is a YAML file in ``spikeforge/recipes`` with a ``supernet``
and an ``arch`` section (this is how it differs from a training recipe); the
``task``, ``data``, ``optim``, ``schedule`` and ``loss`` sections are those of
training recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.norm import BN_STATS
from ..models.spikedhs.operations import PRIMITIVES
from ..runtime.config import (
    ConfigError,
    DataConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    apply_overrides,
    at_least,
    check,
    fraction,
    from_dict,
    load_recipe,
    positive,
)

__all__ = ["SupernetConfig", "ArchConfig", "SearchConfig", "RETRAIN_RECIPES", "build_search_config"]

#: The full-scale retrain recipe of a genotype found by each task (a search recipe may name another).
RETRAIN_RECIPES = {"classification": "spikedhs-retrain-cifar10", "stereo": "spikedhs-stereo-mvsec"}


@dataclass
class SupernetConfig:
    layers: int = 8  # trellis depth (stereo: of the feature network)
    levels: int = 4
    base_channels: int = 8
    nodes: int = 3  # nodes per cell
    primitives: list[str] = field(default_factory=lambda: list(PRIMITIVES))
    bn_stats: str = "folded"  # batch norm statistics in training: folded (time and batch) | per_step (official code)
    # task=stereo only (spikeforge.stereo.search.StereoSearchNet):
    matching_layers: int = 4  # depth of the matching network's trellis
    max_disparity: int = 63
    feature_channels: int | None = None  # channels entering the cost volume (None: 2 * base_channels)

    def __post_init__(self):
        for key in ("layers", "levels", "base_channels", "nodes", "matching_layers", "max_disparity"):
            at_least(f"supernet.{key}", getattr(self, key), 1)
        at_least("supernet.feature_channels", self.feature_channels, 1, optional=True)
        check("supernet.bn_stats", self.bn_stats, self.bn_stats in BN_STATS, " or ".join(BN_STATS))


@dataclass
class ArchConfig:
    """Adam on the architecture weights (alpha, beta), on the second half of the training set."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-3
    warmup_epochs: int = 0  # weight-only epochs before the first architecture step
    train_portion: float = 0.5  # fraction of the (sub)set that trains the weights; the rest trains alpha/beta

    def __post_init__(self):
        positive("arch.lr", self.lr)
        for i, beta in enumerate(self.betas):
            fraction(f"arch.betas[{i}]", beta)
        at_least("arch.weight_decay", self.weight_decay, 0)
        at_least("arch.warmup_epochs", self.warmup_epochs, 0)
        check("arch.train_portion", self.train_portion, 0 < self.train_portion < 1, "in (0, 1)")


@dataclass
class SearchConfig(RunConfig):
    """A search recipe: the sections every run has (:class:`~spikeforge.runtime.config.RunConfig`; ``task``:
    classification searches :class:`~spikeforge.search.supernet.SearchNetwork`, stereo
    :class:`~spikeforge.stereo.search.StereoSearchNet` on MVSEC), the supernet and the architecture step."""

    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(name="cifar10", batch_size=100))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.1, weight_decay=3e-4, decay_norm_and_bias=True))
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(min_lr=1e-3))
    subset: int | None = None  # search on the first N training images only (None: all)
    eval_samples: int = 1000  # architecture-half images evaluated after every epoch
    epochs: int = 50
    timesteps: int = 6
    grad_clip: float | None = 5.0  # largest gradient norm of the weight steps (None or 0: no clipping)
    retrain_recipe: str | None = None  # recipe that retrains the genotype (None: RETRAIN_RECIPES[task])

    def __post_init__(self):
        super().__post_init__()
        at_least("subset", self.subset, 1, optional=True)
        at_least("eval_samples", self.eval_samples, 1)

    def retrain(self) -> str:
        """The recipe that retrains this search's genotype (at the search's scale)."""
        return self.retrain_recipe or RETRAIN_RECIPES[self.task]


def build_search_config(recipe: str | None = None, overrides: list[str] | None = None) -> SearchConfig:
    """Recipe + ``key=value`` overrides -> validated :class:`SearchConfig`."""
    data = apply_overrides(load_recipe(recipe), overrides or [])
    if recipe is not None and "supernet" not in data and "arch" not in data:
        raise ConfigError(f"recipe {recipe!r} is a training recipe: run it with 'spikeforge train --recipe {recipe}'")
    config = from_dict(SearchConfig, data)
    if config.data.subset is not None:
        raise ConfigError("data.subset: a search takes its images with subset=N (the first N, split into the "
                          "weight and architecture halves)")
    return config
