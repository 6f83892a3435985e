"""Direct training: losses (SDT, TET), schedules, TIT stages, the trainer, checkpoints, DDP."""

from .config import TrainConfig, build_config, list_recipes
from .losses import SDTLoss, TETLoss, build_loss, sdt_loss, tet_loss
from .trainer import Trainer, TrainingDiverged, evaluate_checkpoint

__all__ = [
    "TrainConfig",
    "build_config",
    "list_recipes",
    "SDTLoss",
    "TETLoss",
    "build_loss",
    "sdt_loss",
    "tet_loss",
    "Trainer",
    "TrainingDiverged",
    "evaluate_checkpoint",
]
