"""The trainer: direct training of a recipe's network on the runtime's fit loop
(:mod:`spikeforge.runtime.fit`: checkpoints, exact resume, Ctrl-C, divergence checks, DDP), with the
TIT stages, DGS and window fractions as callbacks (:mod:`spikeforge.train.callbacks`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from ..core.norm import convert_sync_batchnorm
from ..runtime.devices import autocast, place_model
from ..runtime.divergence import TrainingDiverged
from ..runtime.evaluation import evaluation_sums
from ..runtime.fit import Callback, FitLoop
from ..runtime.loaders import build_datasets, num_classes_of, training_subset
from ..runtime.tasks import build_task
from .callbacks import callbacks_for
from .config import TrainConfig
from .runs import redraw_plots
from .trained import build_model

__all__ = ["Trainer", "TrainingDiverged"]


class Trainer(FitLoop):
    """Trains ``config`` in ``run_dir``; ``resume=True`` continues from ``run_dir/last.pt`` (after its
    epoch, or inside the epoch where a mid-epoch ``last.pt`` stopped; a run stopped before its first
    checkpoint starts over). ``overwrite=True`` replaces another run in ``run_dir``. ``callbacks`` run
    after the recipe's own (TIT stages, window fractions, DGS)."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        resume: bool = False,
        datasets: tuple[Dataset, Dataset] | None = None,
        log=print,
        overwrite: bool = False,
        callbacks: list[Callback] | None = None,
    ):
        super().__init__(config, run_dir, config.stage_list(), log)
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        full_train_set, self.test_set = datasets or build_datasets(config.data)
        self.train_set = training_subset(full_train_set, config.data.subset)
        self.num_classes = num_classes_of(full_train_set) if config.task == "classification" else 0
        model = build_model(config, self.num_classes, self.stages[0].timesteps)
        if config.sync_bn and self.dist.enabled:
            model = convert_sync_batchnorm(model)  # per-step batch norms stay per step
        self.model = place_model(model, self.device, config.channels_last)
        self.net = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.dist.enabled
            else self.model
        )
        self.task = build_task(config, self.model, full_train_set)
        self.optimizer = self._build_optimizer()
        self.scaler = self.new_scaler()
        self.callbacks = [factory(self) for factory in callbacks_for(config)] + list(callbacks or [])
        self.open(resume, overwrite)

    # ----------------------------------------------------------------- set-up
    def _build_optimizer(self) -> torch.optim.Optimizer:
        o = self.config.optim
        decay, no_decay = [], []
        for module in self.model.modules():
            for name, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                is_norm_or_bias = isinstance(module, nn.modules.batchnorm._NormBase) or name.endswith("bias")
                (no_decay if is_norm_or_bias and not o.decay_norm_and_bias else decay).append(p)
        groups = [{"params": decay, "weight_decay": o.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        if o.name == "sgd":
            return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
        if o.name == "adam":
            return torch.optim.Adam(groups, lr=o.lr, betas=o.betas)
        if o.name == "adamw":
            return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas)
        raise ValueError(f"unknown optimiser {o.name!r}: expected sgd, adam or adamw")

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def scalers(self) -> dict[str, torch.amp.GradScaler]:
        return {"scaler": self.scaler}

    def state(self) -> dict:
        return super().state() | {"num_classes": self.num_classes}

    def train_step(self, batch, lr: float) -> tuple[Tensor, Tensor]:
        """One optimiser step at learning rate ``lr``; ``(loss, the task's sums of the batch)``."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = self.task.split(batch, self.device, self.format_for)
        with autocast(self.device, self.use_amp):
            outputs = self.net(inputs)
        loss = self.task.loss(outputs, targets)
        self.optimizer_step(self.optimizer, self.scaler, loss, self.model.parameters(), self.config.grad_clip)
        with torch.no_grad():
            return loss, self.task.sums(outputs, targets, loss)

    def epoch_record(self, epoch: int, train: dict) -> dict:
        return {f"test_{k}": v for k, v in self.evaluate(self.test_set).items()}

    @torch.no_grad()
    def evaluate(self, dataset: Dataset) -> dict[str, float]:
        """The task's test metrics on ``dataset`` (classification: loss of the time-averaged output, top-1)."""
        self.net.eval()
        sums = evaluation_sums(self.net, self.loader(dataset, False, 0), self.device, self.task, self.use_amp,
                               self.format_for)
        return self.task.metrics(self.all_reduce(sums))

    def finish(self, history: list[dict]) -> dict:
        if history:
            redraw_plots(history, self.run_dir, self.task.metric)
        return {}

    def summary_line(self, r: dict) -> str:
        strip = lambda prefix: {k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)}  # noqa: E731
        metric = self.task.metric
        best = self.best
        best_text = "none yet" if best is None else f"{100 * best:.2f}%" if metric == "acc" else f"{best:.4g}"
        return (
            f"epoch {r['epoch']}/{self.total_epochs} T={r['timesteps']} lr {r['lr']:.4g} | "
            f"train {self.task.describe(strip('train_'))} | test {self.task.describe(strip('test_'))} | "
            f"{r['epoch_time']:.1f}s (best {metric} {best_text})"
        )
