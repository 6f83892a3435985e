"""The training recipe: :class:`TrainConfig` (model, TIT stages, DGS and the sections every run has).

The shared sections, recipe loading and overrides are :mod:`spikeforge.runtime.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..runtime.config import ConfigError, RunConfig, StageConfig, apply_overrides, from_dict, load_recipe

__all__ = ["ModelConfig", "DGSConfig", "TrainConfig", "build_config"]


@dataclass
class ModelConfig:
    name: str = "digits_cnn"
    neuron: str = "lif"
    neuron_kwargs: dict = field(default_factory=dict)
    kwargs: dict = field(default_factory=dict)


@dataclass
class DGSConfig:
    """Differentiable surrogate-gradient search (SpikeDHS); see :mod:`spikeforge.search.dgs`.

    Candidate copies take SGD steps with ``optim.momentum`` / ``optim.weight_decay`` at
    ``candidate_lr``, or at the main optimiser's current learning rate when that is None (set it
    when the main optimiser is Adam: an Adam-sized rate such as 1e-3 barely moves SGD copies, so
    the candidates would hardly differ).
    """

    enabled: bool = False
    period: int = 5  # a round before epochs period, 2 period, ... (0-based; never before the first)
    minibatches: int = 201  # training batches per round
    deltas: list[float] = field(default_factory=lambda: [-0.4, -0.2, 0.0, 0.2, 0.4])
    layers: str | list[str] = "stem"  # "stem" | "all" | module names
    alpha_lr: float = 0.01
    candidate_lr: float | None = None  # SGD rate of the candidate copies (None: the main current lr)
    b_min: float = 1.0
    b_max: float = 6.0
    step_order: str = "candidates_first"  # candidates_first | interleaved (the official code's, biased)


@dataclass
class TrainConfig(RunConfig):
    """A training recipe: the sections every run has (:class:`~spikeforge.runtime.config.RunConfig`),
    the model, TIT stages and DGS."""

    model: ModelConfig = field(default_factory=ModelConfig)
    dgs: DGSConfig = field(default_factory=DGSConfig)
    stages: list[StageConfig] = field(default_factory=list)  # TIT; empty: one stage (epochs, timesteps)
    deterministic: bool = False
    sync_bn: bool = False  # batch norm statistics over all processes (per step for bn_stats=per_step models)
    log_window_fraction: bool = False  # LSG's gradient-blocking measure per spiking layer, every epoch

    def __post_init__(self):
        super().__post_init__()
        for i, stage in enumerate(self.stages):
            stage.check(f"stages[{i}]")

    def stage_list(self) -> list[StageConfig]:
        """The training stages: the TIT list, or a single stage from ``epochs``/``timesteps``."""
        return list(self.stages) or super().stage_list()


def build_config(recipe: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Recipe + overrides -> validated :class:`TrainConfig`."""
    data = apply_overrides(load_recipe(recipe), overrides or [])
    if "supernet" in data:
        raise ConfigError(f"recipe {recipe!r} is an architecture search: "
                          f"run it with 'spikeforge search --recipe {recipe}'")
    if "srp_tau" in data:
        raise ConfigError(f"recipe {recipe!r} is a conversion: run it with "
                          f"'spikeforge convert --recipe {recipe} --checkpoint RUN/best.pt'")
    return from_dict(TrainConfig, data)
