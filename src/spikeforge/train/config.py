"""The training recipe: :class:`TrainConfig` (model, TIT stages, DGS and the sections every run has).

The shared sections, recipe loading and overrides are :mod:`spikeforge.runtime.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..runtime.config import (CheckpointConfig, ConfigError, DataConfig, DistributedConfig, LossConfig, OptimConfig,
                              ScheduleConfig, apply_overrides, at_least, check_loop, from_dict, load_recipe, positive)

__all__ = ["ModelConfig", "StageConfig", "DGSConfig", "TrainConfig", "build_config"]


@dataclass
class ModelConfig:
    name: str = "digits_cnn"
    neuron: str = "lif"
    neuron_kwargs: dict = field(default_factory=dict)
    kwargs: dict = field(default_factory=dict)


@dataclass
class StageConfig:
    """One stage of time inheritance training: ``epochs`` at ``timesteps``, weights carried on."""

    epochs: int
    timesteps: int
    lr: float | None = None  # None: the recipe's optim.lr


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
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    dgs: DGSConfig = field(default_factory=DGSConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    task: str = "classification"  # classification | stereo (see spikeforge.train.tasks)
    epochs: int = 10
    timesteps: int = 4
    stages: list[StageConfig] = field(default_factory=list)  # TIT; empty: one stage (epochs, timesteps)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = False  # mixed precision: float16 + loss scaling on CUDA, bfloat16 on a CPU that has it natively
    channels_last: bool = False
    grad_clip: float | None = None  # largest gradient norm (None or 0: no clipping)
    deterministic: bool = False
    sync_bn: bool = False  # batch norm statistics over all processes (per step for bn_stats=per_step models)
    output_dir: str = "runs"
    run_name: str | None = None
    progress: bool = True  # a live bar on a terminal, plain lines in a log
    progress_seconds: float = 60.0  # seconds between plain progress lines (also one at each tenth of an epoch)
    log_every: int = 50  # training steps between TensorBoard scalars (when tensorboard is installed)
    log_window_fraction: bool = False  # LSG's gradient-blocking measure per spiking layer, every epoch
    description: str = ""

    def __post_init__(self):
        check_loop(self)
        for i, stage in enumerate(self.stages):
            at_least(f"stages[{i}].epochs", stage.epochs, 1)
            at_least(f"stages[{i}].timesteps", stage.timesteps, 1)
            positive(f"stages[{i}].lr", stage.lr, optional=True)
        at_least("log_every", self.log_every, 1)

    def stage_list(self) -> list[StageConfig]:
        """The training stages: the TIT list, or a single stage from ``epochs``/``timesteps``."""
        return list(self.stages) or [StageConfig(self.epochs, self.timesteps)]


def build_config(recipe: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Recipe + overrides -> validated :class:`TrainConfig`."""
    data = apply_overrides(load_recipe(recipe), overrides or [])
    if "supernet" in data:
        raise ConfigError(f"recipe {recipe!r} is an architecture search: run it with 'spikeforge search --recipe {recipe}'")
    return from_dict(TrainConfig, data)
