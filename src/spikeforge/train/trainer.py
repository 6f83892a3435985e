"""One training loop for every method: stages (TIT), checkpoints, exact resume, DDP.

Resume is exact at epoch granularity: the model, optimiser, gradient scaler,
epoch counter, best value of the task's metric and every RNG are restored from ``last.pt``, and
the data order of each epoch is a function of ``(seed, epoch)``, so a run
resumed after a crash ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math

import time
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from ..data.memory import MemoryImageSet
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, from_dict, to_dict
from .distributed import DistInfo, cleanup_distributed, init_distributed
from .logging import MetricsLog
from .runs import redraw_plots
from .tasks import build_task
from .progress import Progress
from .schedule import lr_at

__all__ = ["Trainer", "TrainingDiverged", "resolve_device", "num_classes_of", "build_model", "build_datasets",
           "place_model", "evaluation_sums", "load_trained", "evaluate_checkpoint"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def num_classes_of(dataset: Dataset) -> int:
    for attr in ("num_classes", "classes"):
        value = getattr(dataset, attr, None)
        if value is not None:
            return value if isinstance(value, int) else len(value)
    raise ValueError(f"cannot tell the number of classes of {type(dataset).__name__}: set model.kwargs.num_classes")


def build_split(config: TrainConfig, train: bool) -> Dataset:
    """The recipe's training (``train=True``) or test set."""
    from ..data import build_dataset

    d = config.data
    common = dict(root=d.root, **d.options)
    if d.download:
        common["download"] = True
    return build_dataset(d.name, train=train, **common)


def build_datasets(config: TrainConfig) -> tuple[Dataset, Dataset]:
    """``(training set, test set)`` of the recipe."""
    return build_split(config, True), build_split(config, False)


def build_model(config: TrainConfig, num_classes: int, timesteps: int) -> nn.Module:
    from .. import models

    kwargs = dict(config.model.kwargs)
    kwargs.setdefault("num_classes", num_classes)
    return models.create(
        config.model.name,
        neuron=config.model.neuron,
        timesteps=timesteps,
        neuron_kwargs=config.model.neuron_kwargs,
        **kwargs,
    )


def epoch_batches(dataset: Dataset, batch_size: int, *, train: bool, seed: int, epoch: int,
                  device: torch.device, workers: int = 0, dist: DistInfo | None = None):
    """Batches ``(images, labels)`` of one epoch: shuffled with drop-last for training (order fixed
    by ``seed`` and ``epoch``), in order otherwise; sharded over ranks when ``dist`` is enabled.
    In-memory sets (:class:`MemoryImageSet`) batch themselves on ``device``; others go through a DataLoader."""
    dist = dist or DistInfo()
    if isinstance(dataset, MemoryImageSet):
        return dataset.batches(batch_size, shuffle=train, seed=seed * 100_003 + epoch, drop_last=train,
                               device=device, rank=dist.rank, world_size=dist.world_size)
    if dist.enabled:
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=train)
        sampler.set_epoch(epoch)
    elif train:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=train, persistent_workers=False,
                      generator=torch.Generator().manual_seed(seed + epoch))


def place_model(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """``model`` on ``device``; with ``channels_last`` its 2D convolutions' weights in that layout
    (3D convolutions, as in the stereo networks, keep theirs)."""
    model = model.to(device)
    if channels_last:
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.to(memory_format=torch.channels_last)
    return model


def autocast(device: torch.device, enabled: bool):
    """Mixed precision for ``device``: float16 autocast on CUDA (with loss scaling in the trainer),
    bfloat16 on a CPU with native bfloat16 (e.g. AVX-512 BF16/AMX), off elsewhere."""
    if device.type == "cpu":
        enabled = enabled and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)
    return torch.autocast(device.type, enabled=enabled and device.type == "cuda")  # the loss scaler is CUDA's


def evaluation_sums(model: nn.Module, batches, device, task, use_amp: bool = False,
                    memory_format=lambda x: torch.preserve_format) -> torch.Tensor:
    """The task's sums (:mod:`~spikeforge.train.tasks`) of the evaluation loss and metrics over ``batches``."""
    total = None
    for batch in batches:
        inputs, targets = task.split(batch, device, memory_format)
        with autocast(device, use_amp):
            outputs = model(inputs)
        sums = task.sums(outputs, targets, task.eval_loss(outputs, targets))
        total = sums if total is None else total + sums
    if total is None:
        raise ValueError("evaluation got no batches (is the test set empty?)")
    return total


class Trainer:
    """Trains ``config`` in ``run_dir``; ``resume=True`` continues from ``run_dir/last.pt``."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        resume: bool = False,
        datasets: tuple[Dataset, Dataset] | None = None,
        log=print,
    ):
        self.config = config
        self.run_dir = Path(run_dir)
        self.log = log
        self.device = resolve_device(config.device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.stages = config.stage_list()
        self.total_epochs = sum(s.epochs for s in self.stages)
        torch.manual_seed(config.seed)
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

        self.train_set, self.test_set = datasets or build_datasets(config)
        self.num_classes = num_classes_of(self.train_set) if config.task == "classification" else 0
        model = build_model(config, self.num_classes, self.stages[0].timesteps)
        if config.sync_bn and self.dist.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = place_model(model, self.device, config.channels_last)
        self.net = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.dist.enabled
            else self.model
        )
        self.task = build_task(config, self.model, self.train_set)
        self.optimizer = self._build_optimizer()
        self.dgs = None
        if config.dgs.enabled:  # differentiable surrogate-gradient search (SpikeDHS)
            from ..search.dgs import DGS

            self.dgs = DGS.from_config(self.model, config.dgs, config.optim.momentum, config.optim.weight_decay)
        self.use_amp = config.amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.device.type == "cuda")
        self.epoch = 0
        self.best: float | None = None  # best test value of task.metric so far
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsLog(self.run_dir) if self.dist.is_main else None
        if resume:
            self._restore(load_checkpoint(self.run_dir / "last.pt", map_location=self.device))
        elif self.dist.is_main:
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))

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

    def _loader(self, dataset: Dataset, train: bool, epoch: int):
        d = self.config.data
        return epoch_batches(dataset, d.batch_size if train else (d.eval_batch_size or d.batch_size), train=train,
                             seed=self.config.seed, epoch=epoch, device=self.device, workers=d.workers, dist=self.dist)

    def stage_of(self, epoch: int):
        """(stage index, stage, epoch within the stage) for a global epoch index."""
        start = 0
        for i, stage in enumerate(self.stages):
            if epoch < start + stage.epochs:
                return i, stage, epoch - start
            start += stage.epochs
        raise IndexError(epoch)

    def _set_timesteps(self, timesteps: int) -> None:
        if hasattr(self.model, "timesteps"):
            self.model.timesteps = timesteps

    # ----------------------------------------------------------------- loop
    def fit(self) -> dict:
        """Train every remaining epoch; returns the final summary."""
        start = time.perf_counter()
        try:
            while self.epoch < self.total_epochs:
                record = self._run_epoch(self.epoch)
                self.epoch += 1
                if self.dist.is_main:
                    record["elapsed"] = time.perf_counter() - start
                    self._checkpoint(record)
                    self.metrics.write(record)
                    self.log(self._summary_line(record))
        finally:
            if self.metrics is not None:
                self.metrics.close()
            cleanup_distributed(self.dist)
        history = self.metrics.read() if self.metrics else []
        if self.dist.is_main and history:
            redraw_plots(history, self.run_dir, self.task.metric)
        final = history[-1] if history else {}
        metric = self.task.metric
        return {"metric": metric, f"best_{metric}": self.best, f"final_{metric}": final.get(f"test_{metric}"),
                "epochs": self.epoch, "run_dir": str(self.run_dir)}

    def _run_epoch(self, epoch: int) -> dict:
        stage_index, stage, in_stage = self.stage_of(epoch)
        self._set_timesteps(stage.timesteps)
        tic = time.perf_counter()
        searched = self._dgs_record(epoch) if self.dgs is not None else {}
        train = self._train_epoch(epoch, stage_index, stage, in_stage)
        test = self.evaluate(self.test_set)
        extra = {"window_fraction": self.window_fractions()} if self.config.log_window_fraction else {}
        return extra | searched | {
            "epoch": epoch + 1,
            "stage": stage_index,
            "timesteps": stage.timesteps,
            "lr": self.optimizer.param_groups[0]["lr"],
            **{f"train_{k}": v for k, v in train.items()},
            **{f"test_{k}": v for k, v in test.items()},
            "epoch_time": time.perf_counter() - tic,
        }

    def _train_epoch(self, epoch: int, stage_index: int, stage, in_stage: int) -> dict[str, float]:
        self.net.train()
        loader = self._loader(self.train_set, True, epoch)
        base_lr = stage.lr if stage.lr is not None else self.config.optim.lr
        sched = self.config.schedule
        warmup = sched.warmup_epochs if stage_index == 0 else 0.0
        steps = max(len(loader), 1)
        sums = None
        bar = Progress(loader, f"epoch {epoch + 1}/{self.total_epochs}", enabled=self.config.progress and self.dist.is_main)
        for i, batch in enumerate(bar):
            lr = lr_at(sched.name, base_lr, in_stage + i / steps, stage.epochs, warmup, sched.min_lr,
                       sched.milestones, sched.gamma)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = self.task.split(batch, self.device, self._format_for)
            with autocast(self.device, self.use_amp):
                outputs = self.net(inputs)
            loss = self.task.loss(outputs, targets)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at epoch {epoch + 1}, step {i + 1}: stopped; "
                    f"the last good checkpoint is {self.run_dir / 'last.pt'}"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            with torch.no_grad():
                batch_sums = self.task.sums(outputs, targets, loss)
            sums = batch_sums if sums is None else sums + batch_sums
            if i % 10 == 0:
                bar.set(loss=loss.item(), lr=lr)
        if sums is None:
            raise ValueError(f"the training set gives no batch of {self.config.data.batch_size} (drop-last)")
        return self.task.metrics(self._all_reduce(sums))

    def training_loss(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        """The task's training loss of a model output (DGS scores its candidates with it)."""
        return self.task.loss(outputs, targets)

    def _dgs_record(self, epoch: int) -> dict:
        """DGS entries of the epoch record: ``dgs_b`` per searched layer (the temperatures this epoch
        trains with), after a round on this epoch's training batches when one is due (then also
        ``dgs_weights``, the round's mean mixing weights per layer, in the order of ``dgs.deltas``)."""
        if not self.dgs.due(epoch):
            return {"dgs_b": self.dgs.temperatures()}
        self.net.train()
        batches = (self.task.split(batch, self.device, self._format_for) for batch in self._loader(self.train_set, True, epoch))
        weights = self.dgs.run_round(batches, self.training_loss, lr=self.optimizer.param_groups[0]["lr"])
        return {"dgs_b": self.dgs.temperatures(), "dgs_weights": weights}

    @torch.no_grad()
    def evaluate(self, dataset: Dataset) -> dict[str, float]:
        """The task's test metrics on ``dataset`` (classification: loss of the time-averaged output, top-1)."""
        self.net.eval()
        sums = evaluation_sums(self.net, self._loader(dataset, False, 0), self.device, self.task, self.use_amp,
                               self._format_for)
        return self.task.metrics(self._all_reduce(sums))

    @torch.no_grad()
    def window_fractions(self, samples: int = 256) -> dict[str, float]:
        """Per spiking layer, the fraction of membrane values inside the surrogate's non-zero
        window (LSG's gradient-blocking measure), on the first ``samples`` training samples (with
        the training set's own augmentation, if it has any) in evaluation mode."""
        from ..core.neuron import SpikingNeuron

        cells = {name: m for name, m in self.model.named_modules() if isinstance(m, SpikingNeuron)}
        first = next(iter(epoch_batches(self.train_set, samples, train=False, seed=0, epoch=0, device=self.device)))
        inputs, _ = self.task.split(first, self.device, self._format_for)
        self.model.eval()
        for cell in cells.values():
            cell.record_window = True
        try:
            self.model(inputs)
        finally:
            for cell in cells.values():
                cell.record_window = False
        return {name: cell.window_fraction for name, cell in cells.items()}

    # ----------------------------------------------------------------- helpers
    def _format_for(self, images: torch.Tensor):
        return self.memory_format if images.dim() == 4 else torch.preserve_format

    def _all_reduce(self, sums: torch.Tensor) -> torch.Tensor:
        """``sums`` added over the ranks (as is without distributed training)."""
        if self.dist.enabled:
            sums = sums.clone()
            torch.distributed.all_reduce(sums)
        return sums

    def _improves(self, value: float) -> bool:
        if math.isnan(value):  # e.g. a stereo test set without a valid pixel: never the best
            return False
        if self.best is None or math.isnan(self.best):
            return True
        return value > self.best if self.task.higher_is_better else value < self.best

    def _summary_line(self, r: dict) -> str:
        strip = lambda prefix: {k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)}  # noqa: E731
        metric = self.task.metric
        best = r[f"test_{metric}"] if self._improves(r[f"test_{metric}"]) else self.best
        best_text = f"{100 * best:.2f}%" if metric == "acc" else f"{best:.4g}"
        return (
            f"epoch {r['epoch']}/{self.total_epochs} T={r['timesteps']} lr {r['lr']:.4g} | "
            f"train {self.task.describe(strip('train_'))} | test {self.task.describe(strip('test_'))} | "
            f"{r['epoch_time']:.1f}s (best {metric} {best_text})"
        )

    def _checkpoint(self, record: dict) -> None:
        value = record[f"test_{self.task.metric}"]
        improved = self._improves(value)
        if improved:
            self.best = value
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "best": self.best,
            "rng": rng_state(),
            "config": to_dict(self.config),
            "num_classes": self.num_classes,
            "record": record,
        }
        if improved or self.epoch == 1:
            save_checkpoint({k: state[k] for k in ("model", "epoch", "config", "num_classes", "record")}, self.run_dir / "best.pt")
        save_checkpoint(state, self.run_dir / "last.pt")

    def _restore(self, state: dict) -> None:
        saved = from_dict(TrainConfig, state["config"])
        if to_dict(saved) != to_dict(self.config):
            self.log("note: resuming with a config that differs from the checkpoint's; using the new one")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.best = state.get("best", state.get("best_acc"))  # best_acc: checkpoints before tasks
        set_rng_state(state["rng"])
        if self.metrics is not None:
            self.metrics.truncate_after(self.epoch)
        self.log(f"resumed {self.run_dir} after epoch {self.epoch}/{self.total_epochs}")


def load_trained(path: str | Path, timesteps: int | None = None) -> tuple[nn.Module, TrainConfig, dict]:
    """A training checkpoint's network (CPU, eval mode), its recipe and the raw checkpoint.

    ``timesteps`` overrides the ``T`` of the recipe's last stage. A file that is
    not a spikeforge training checkpoint gives a one-line ValueError naming it.
    """
    state = load_checkpoint(path)
    for key in ("model", "config", "num_classes"):
        if key not in state:
            raise ValueError(f"{path}: not a spikeforge training checkpoint (no {key!r} entry)")
    config = from_dict(TrainConfig, state["config"])
    steps = timesteps or config.stage_list()[-1].timesteps
    if steps < 1:
        raise ValueError(f"timesteps must be >= 1, got {steps}")
    model = build_model(config, int(state["num_classes"]), steps)
    model.load_state_dict(state["model"])
    return model.eval(), config, state


def evaluate_checkpoint(path: str | Path, data_root: str | None = None, timesteps: int | None = None, device: str = "auto") -> dict:
    """Load a checkpoint with its recipe and report the task's test metrics (``test_<name>`` keys)."""
    model, config, _ = load_trained(path, timesteps)
    if data_root is not None:
        config.data.root = data_root
    config.device = device
    steps = timesteps or config.stage_list()[-1].timesteps
    test_set = build_split(config, False)
    dev = resolve_device(device)
    model.to(dev).eval()
    task = build_task(config, model, test_set)
    loader = DataLoader(test_set, batch_size=config.data.eval_batch_size or config.data.batch_size)
    with torch.no_grad():
        metrics = task.metrics(evaluation_sums(model, loader, dev, task))
    return {"checkpoint": str(path), "timesteps": steps, "metric": task.metric, "samples": len(test_set),
            **{f"test_{k}": v for k, v in metrics.items()}}
