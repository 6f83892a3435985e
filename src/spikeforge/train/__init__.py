"""Direct training: losses (SDT, TET), schedules, TIT stages, the trainer, checkpoints, DDP."""

from ..runtime.config import list_recipes
from . import tasks as _tasks  # noqa: F401  (registers the classification task)
from .config import TrainConfig, build_config
from .losses import SDTLoss, TETLoss, build_loss, sdt_loss, tet_loss
from .trained import evaluate_checkpoint, load_trained
from .trainer import Trainer, TrainingDiverged

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
    "load_trained",
]
