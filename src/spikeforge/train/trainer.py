"""One training loop for every method: stages (TIT), checkpoints, exact resume, DDP.

Resume is exact, also inside an epoch: ``last.pt`` holds the model, optimiser,
gradient scaler, best value of the task's metric, every RNG and the position in
the data (epoch, training batches done, the partial sums of the epoch's training
metrics). The data order of each epoch and the augmentation of each batch are
functions of ``(seed, epoch)``, so a resumed run skips the batches already done
without loading them and ends with the same weights as an uninterrupted one.
``last.pt`` is written after every epoch, every ``checkpoint.every_minutes``
inside an epoch, and on Ctrl-C (after the step in progress; a second Ctrl-C
stops at once).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from ..core.neuron import SpikingNeuron
from ..core.norm import convert_sync_batchnorm
from ..runtime.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ..runtime.config import from_dict, to_dict
from ..runtime.devices import autocast, input_format, place_model, resolve_device
from ..runtime.distributed import DistInfo, cleanup_distributed, init_distributed
from ..runtime.divergence import TrainingDiverged, check_step, diverged, first_nonfinite, last_checkpoint, watched
from ..runtime.evaluation import evaluation_sums
from ..runtime.loaders import build_datasets, epoch_batches, num_classes_of, training_subset
from ..runtime.metrics_log import MetricsLog
from ..runtime.progress import Progress
from ..runtime.runfolder import RunFolder
from ..runtime.schedule import lr_at
from ..runtime.tasks import build_task
from .config import TrainConfig
from .runs import redraw_plots
from .trained import build_model

__all__ = ["Trainer", "TrainingDiverged", "EpochPosition"]


@dataclass
class EpochPosition:
    """How far the epoch in progress is: what a mid-epoch ``last.pt`` adds to an epoch checkpoint."""

    step: int = 0  # training batches done
    sums: Tensor | None = None  # the task's sums over those batches (of all ranks)
    searched: dict = field(default_factory=dict)  # the DGS entries of the epoch's record
    seconds: float = 0.0  # time spent in the epoch before the current session


class Trainer:
    """Trains ``config`` in ``run_dir``; ``resume=True`` continues from ``run_dir/last.pt``
    (after its epoch, or inside the epoch where a mid-epoch ``last.pt`` stopped; a run stopped before
    its first checkpoint starts over). The run owns ``run_dir`` until :meth:`fit` ends (see
    :class:`~spikeforge.runtime.runfolder.RunFolder`): a folder holding another run is refused unless
    ``overwrite=True`` (which deletes that run's files)."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        resume: bool = False,
        datasets: tuple[Dataset, Dataset] | None = None,
        log=print,
        overwrite: bool = False,
    ):
        self.config = config
        self.run_dir = Path(run_dir)
        self.log = log
        self.device = resolve_device(config.device)
        self.dist: DistInfo = init_distributed(self.device, config.distributed.timeout_minutes)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.stages = config.stage_list()
        self.total_epochs = sum(s.epochs for s in self.stages)
        torch.manual_seed(config.seed)
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

        full_train_set, self.test_set = datasets or build_datasets(config.data)
        self.train_set = training_subset(full_train_set, config.data.subset)
        self.num_classes = num_classes_of(full_train_set) if config.task == "classification" else 0
        model = build_model(config, self.num_classes, self.stages[0].timesteps)
        if config.sync_bn and self.dist.enabled:
            model = convert_sync_batchnorm(model)  # per-step batch norms stay per step
        self._format_for = input_format(config.channels_last)
        self.model = place_model(model, self.device, config.channels_last)
        self.net = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.dist.enabled
            else self.model
        )
        self.task = build_task(config, self.model, full_train_set)
        self.optimizer = self._build_optimizer()
        self.dgs = None
        if config.dgs.enabled:  # differentiable surrogate-gradient search (SpikeDHS)
            from ..search.dgs import DGS

            self.dgs = DGS.from_config(self.model, config.dgs, config.optim.momentum, config.optim.weight_decay)
        self.use_amp = config.amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.device.type == "cuda")
        self.epoch = 0  # epochs completed
        self.position = EpochPosition()  # inside the epoch in progress
        self.best: float | None = None  # best test value of task.metric so far
        self.elapsed_before = 0.0  # training seconds of earlier sessions of this run
        self.steps_per_epoch = 0
        self._stop_requested = False
        self._logged_sums: Tensor | None = None  # training sums at the last TensorBoard scalars
        # rank 0 owns the folder (and writes config.yaml once everything above is built)
        self.folder = RunFolder(self.run_dir, resume, overwrite) if self.dist.is_main else None
        with self.folder.released_on_error() if self.folder else nullcontext():
            saved = self.folder.start(to_dict(config), resume, self.log) if self.folder else (
                last_checkpoint(self.run_dir) if resume else None)
            self.metrics = MetricsLog(self.run_dir) if self.dist.is_main else None
            if saved is not None:
                self._restore(load_checkpoint(saved, map_location=self.device))
            elif self.dist.is_main:
                self.metrics.hparams(to_dict(config), [f"test/{self.task.metric}", "test/loss"])

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

    def _loader(self, dataset: Dataset, train: bool, epoch: int, start: int = 0):
        d = self.config.data
        return epoch_batches(dataset, d.batch_size if train else (d.eval_batch_size or d.batch_size), train=train,
                             seed=self.config.seed, epoch=epoch, device=self.device, workers=d.workers, dist=self.dist,
                             start=start)

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
        """Train every remaining epoch; returns the final summary.

        Ctrl-C (SIGINT, in the main thread) stops after the training step in progress with a
        resumable ``last.pt`` and raises KeyboardInterrupt; a second Ctrl-C stops at once.
        """
        self._session_start = self._last_save = time.perf_counter()
        try:
            with self._stop_on_sigint():
                while self.epoch < self.total_epochs:
                    self._finish_epoch(self._run_epoch(self.epoch))
                    if self.epoch < self.total_epochs and self._agree(self._stop_requested)[0]:
                        raise KeyboardInterrupt(f"stopped after epoch {self.epoch}; {self.run_dir / 'last.pt'} "
                                                "continues from there")
            history = self.metrics.read() if self.metrics else []
            if history:
                redraw_plots(history, self.run_dir, self.task.metric)
        finally:
            if self.metrics is not None:
                self.metrics.close()
            cleanup_distributed(self.dist)
            if self.folder is not None:
                self.folder.release()
        final = history[-1] if history else {}
        metric = self.task.metric
        return {"metric": metric, f"best_{metric}": self.best, f"final_{metric}": final.get(f"test_{metric}"),
                "epochs": self.epoch, "run_dir": str(self.run_dir)}

    def request_stop(self) -> None:
        """Stop after the training step in progress: write a resumable ``last.pt`` (rank 0), then
        raise KeyboardInterrupt from :meth:`fit` (what a first Ctrl-C does)."""
        self._stop_requested = True

    @property
    def resumable(self) -> bool:
        """Whether ``run_dir/last.pt`` exists, i.e. ``--resume`` can continue this run."""
        return last_checkpoint(self.run_dir) is not None

    def _finish_epoch(self, record: dict) -> None:
        """Count the epoch as done; rank 0 checkpoints, logs and reports it."""
        self.epoch += 1
        self.position = EpochPosition()
        if self.dist.is_main:
            record["elapsed"] = self._elapsed()
            # the record first: a stop between the two leaves it to the resumed run, which drops and redoes it
            self.metrics.write(record, step=self.epoch * self.steps_per_epoch, skip=("train_", "lr"))
            self._checkpoint(record)
            self.log(self._summary_line(record))
        self._last_save = time.perf_counter()

    def _run_epoch(self, epoch: int) -> dict:
        stage_index, stage, in_stage = self.stage_of(epoch)
        self._set_timesteps(stage.timesteps)
        self._epoch_start = time.perf_counter() - self.position.seconds
        if self.dgs is not None and self.position.step == 0:  # a resumed epoch had its round
            self.position.searched = self._dgs_record(epoch)
        train = self._train_epoch(epoch, stage_index, stage, in_stage)
        test = self.evaluate(self.test_set)
        extra = {"window_fraction": self.window_fractions()} if self.config.log_window_fraction else {}
        return extra | self.position.searched | {
            "epoch": epoch + 1,
            "stage": stage_index,
            "timesteps": stage.timesteps,
            "lr": self.optimizer.param_groups[0]["lr"],
            **{f"train_{k}": v for k, v in train.items()},
            **{f"test_{k}": v for k, v in test.items()},
            "epoch_time": time.perf_counter() - self._epoch_start,
        }

    def _train_epoch(self, epoch: int, stage_index: int, stage, in_stage: int) -> dict[str, float]:
        """The rest of the epoch's training steps (from ``position.step``); the epoch's training metrics."""
        self.net.train()
        pos = self.position
        loader = self._loader(self.train_set, True, epoch, start=pos.step)
        self.steps_per_epoch = steps = pos.step + len(loader)
        base_lr = stage.lr if stage.lr is not None else self.config.optim.lr
        sched = self.config.schedule
        warmup = sched.warmup_epochs if stage_index == 0 else 0.0
        self._logged_sums = pos.sums
        bar = Progress(loader, f"epoch {epoch + 1}/{self.total_epochs}", enabled=self.config.progress and self.dist.is_main,
                       total=steps, start=pos.step, every=self.config.progress_seconds,
                       per_step=self.config.data.batch_size * self.dist.world_size)
        for batch in bar:
            lr = lr_at(sched.name, base_lr, in_stage + pos.step / max(steps, 1), stage.epochs, warmup, sched.min_lr,
                       sched.milestones, sched.gamma)
            loss, sums = self._train_step(batch, lr, epoch)
            pos.sums = sums if pos.sums is None else pos.sums + sums
            pos.step += 1
            bar.set(loss=loss.detach(), lr=lr)
            self._after_step(epoch, lr)
        if pos.sums is None:
            raise ValueError(f"the training set gives no batch of {self.config.data.batch_size} (drop-last)")
        return self.task.metrics(self._all_reduce(pos.sums))

    def _train_step(self, batch, lr: float, epoch: int) -> tuple[Tensor, Tensor]:
        """One optimiser step at learning rate ``lr``; ``(loss, the task's sums of the batch)``."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = self.task.split(batch, self.device, self._format_for)
        with autocast(self.device, self.use_amp):
            outputs = self.net(inputs)
        loss = self.task.loss(outputs, targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        check_step(self.model, loss, self.scaler, f"at epoch {epoch + 1}, step {self.position.step + 1}", self.run_dir,
                   self._all_reduce)
        with torch.no_grad():
            return loss, self.task.sums(outputs, targets, loss)

    def _after_step(self, epoch: int, lr: float) -> None:
        """TensorBoard scalars when due; a mid-epoch ``last.pt`` when due or asked for (then stop)."""
        step = self.position.step
        if self.metrics is not None and self.metrics.tensorboard and (
                step % self.config.log_every == 0 or step == self.steps_per_epoch):
            self._log_step(epoch * self.steps_per_epoch + step, lr)
        every = self.config.checkpoint.every_minutes * 60
        due = every > 0 and time.perf_counter() - self._last_save >= every
        save, stop = self._agree(due, self._stop_requested)
        if save or stop:
            self._save_position()
        if stop:
            raise KeyboardInterrupt(f"stopped at epoch {epoch + 1}, step {step}/{self.steps_per_epoch}; "
                                    f"{self.run_dir / 'last.pt'} continues from there")

    def _log_step(self, global_step: int, lr: float) -> None:
        """TensorBoard (rank 0): training loss and metrics of this rank's batches since the last call,
        the learning rate and each spiking layer's firing rate on the last batch."""
        sums = self.position.sums
        window = sums if self._logged_sums is None else sums - self._logged_sums
        self._logged_sums = sums
        values = {f"train/{k}": v for k, v in self.task.metrics(window).items()} | {"lr": lr}
        for name, cell in self.model.named_modules():
            if isinstance(cell, SpikingNeuron) and cell.firing_rate is not None:
                values[f"spikes/rate/{name}"] = cell.firing_rate
        self.metrics.scalars(values, global_step)

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
    def _all_reduce(self, sums: torch.Tensor) -> torch.Tensor:
        """``sums`` added over the ranks (as is without distributed training)."""
        if self.dist.enabled:
            sums = sums.clone()
            torch.distributed.all_reduce(sums)
        return sums

    def _agree(self, *flags: bool) -> list[bool]:
        """Each flag true on any rank (as is without distributed training), so that all ranks save
        and stop at the same step."""
        if not self.dist.enabled:
            return list(flags)
        votes = torch.tensor(flags, dtype=torch.int32, device=self.device)
        torch.distributed.all_reduce(votes, op=torch.distributed.ReduceOp.MAX)
        return [bool(v) for v in votes.tolist()]

    def _elapsed(self) -> float:
        """Training seconds of this run so far, earlier sessions included."""
        return self.elapsed_before + time.perf_counter() - self._session_start

    @contextmanager
    def _stop_on_sigint(self):
        """While training: a first SIGINT requests a stop, a second raises KeyboardInterrupt at once;
        the previous handler comes back afterwards (nothing changes outside the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self.request_stop()

        previous = signal.signal(signal.SIGINT, handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

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

    def _state(self) -> dict:
        """Everything ``last.pt`` holds about the run, whatever the position in the epoch (never
        non-finite weights: TrainingDiverged instead)."""
        bad = first_nonfinite(watched(self.model))
        if bad:
            raise diverged(f"{bad} when saving a checkpoint", self.run_dir)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "best": self.best,
            "rng": rng_state(),
            "config": to_dict(self.config),
            "num_classes": self.num_classes,
            "elapsed": self._elapsed(),
        }

    def _checkpoint(self, record: dict) -> None:
        """``last.pt`` after an epoch, and ``best.pt`` when the epoch improved the task's metric."""
        value = record[f"test_{self.task.metric}"]
        improved = self._improves(value)
        if improved:
            self.best = value
        state = self._state() | {"record": record}
        if improved or self.epoch == 1:
            save_checkpoint({k: state[k] for k in ("model", "epoch", "config", "num_classes", "record")}, self.run_dir / "best.pt")
        save_checkpoint(state, self.run_dir / "last.pt")

    def _save_position(self) -> None:
        """A mid-epoch ``last.pt`` (written by rank 0; every rank adds its training sums)."""
        pos = self.position
        sums = self._all_reduce(pos.sums)
        if self.dist.is_main:
            seconds = time.perf_counter() - self._epoch_start
            position = EpochPosition(pos.step, sums, pos.searched, seconds)
            save_checkpoint(self._state() | {"position": asdict(position)}, self.run_dir / "last.pt")
        self._last_save = time.perf_counter()

    def _restore(self, state: dict) -> None:
        saved = from_dict(TrainConfig, state["config"])
        if to_dict(saved) != to_dict(self.config):
            self.log("note: resuming with a config that differs from the checkpoint's; using the new one")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.best = state.get("best", state.get("best_acc"))  # best_acc: checkpoints before tasks
        self.elapsed_before = float(state.get("elapsed", 0.0))
        if "position" in state:
            self.position = self._position_of(state["position"])
        set_rng_state(state["rng"])
        if self.metrics is not None:
            self.metrics.rewind(self.epoch, state.get("record"), warn=self.log)
        where = (f"at epoch {self.epoch + 1}, step {self.position.step}" if self.position.step
                 else f"after epoch {self.epoch}/{self.total_epochs}")
        self.log(f"resumed {self.run_dir} {where}")

    def _position_of(self, saved: dict) -> EpochPosition:
        """The saved position; its sums (those of all ranks) go to rank 0, the other ranks start from zero."""
        sums = saved["sums"] if self.dist.is_main else torch.zeros_like(saved["sums"])
        return EpochPosition(int(saved["step"]), sums, saved["searched"], float(saved["seconds"]))


