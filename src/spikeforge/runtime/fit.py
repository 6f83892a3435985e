"""The one fit loop that training and architecture search run on: epochs of steps, checkpoints, exact
resume, Ctrl-C, divergence checks and several processes (torchrun).

Resume is exact, also inside an epoch: ``last.pt`` holds the model, the optimisers, the gradient
scalers, the best value of the task's metric, every RNG and the position in the data (epoch, training
batches done, the partial sums of the epoch's training metrics, the record entries gathered at the
epoch's start). The data order of each epoch and the augmentation of each batch are functions of
``(seed, epoch)``, so a resumed run skips the batches already done without loading them and ends with
the same weights as an uninterrupted one. ``last.pt`` is written after every epoch, every
``checkpoint.every_minutes`` inside an epoch, and on Ctrl-C (after the step in progress; a second
Ctrl-C stops at once).

A run is a :class:`FitLoop` subclass (:class:`~spikeforge.train.Trainer`,
:class:`~spikeforge.search.Searcher`) that builds its model, optimisers and sets, then calls
:meth:`FitLoop.open` and fills in the hooks: :meth:`~FitLoop.train_step` (one step on a batch, e.g. a
weight step then an architecture step), :meth:`~FitLoop.epoch_record` (evaluation after the epoch),
:meth:`~FitLoop.finish` (what the run leaves behind). :class:`Callback` objects add record entries at
the start and the end of every epoch (TIT stages, DGS rounds, window fractions).

With ``memory.pack_spikes: true`` (the default) the model's forward in every training step runs inside
:class:`~spikeforge.core.packing.pack_spikes` (spikes saved for backward as bits; the same gradients),
entered by :class:`~spikeforge.core.packing.pack_spikes_in` around the unwrapped model only. With
``memory.reuse_freed: true`` (the default) a run on the CPU makes glibc's malloc keep freed memory for
the next step (:func:`~spikeforge.runtime.allocator.reuse_freed_memory`).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..core.neuron import SpikingNeuron
from ..core.packing import pack_spikes_in
from .allocator import reuse_freed_memory
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import RunConfig, StageConfig, from_dict, to_dict
from .devices import input_format, resolve_device
from .distributed import DistInfo, cleanup_distributed, init_distributed
from .divergence import check_step, diverged, first_nonfinite, last_checkpoint, watched
from .loaders import epoch_batches
from .metrics_log import MetricsLog, tensorboard_tag
from .progress import Progress
from .runfolder import RunFolder
from .schedule import lr_at

__all__ = ["FitLoop", "Callback", "EpochPosition"]


@dataclass
class EpochPosition:
    """How far the epoch in progress is: what a mid-epoch ``last.pt`` adds to an epoch checkpoint."""

    step: int = 0  # training batches done
    sums: Tensor | None = None  # the task's sums over those batches (of all ranks)
    started: dict = field(default_factory=dict)  # the record entries of the callbacks' epoch start (DGS)
    seconds: float = 0.0  # time spent in the epoch before the current session


class Callback:
    """Adds to a run's epochs; every method is optional. Entries returned go into the epoch's record."""

    def setup_epoch(self, loop: FitLoop, epoch: int, stage: StageConfig) -> None:
        """Before the epoch's steps, each time they (re)start (also when a resumed run continues inside it)."""

    def on_epoch_start(self, loop: FitLoop, epoch: int, stage: StageConfig) -> dict:
        """Before the epoch's first step (not again when a resumed run continues inside the epoch)."""
        return {}

    def on_epoch_end(self, loop: FitLoop, epoch: int) -> dict:
        """After the epoch's last step, before its record is written."""
        return {}


class FitLoop:
    """Epochs of training steps on ``config`` in ``run_dir`` (see the module doc). Subclasses set
    :attr:`model`, :attr:`train_set`, :attr:`task` and their optimisers in their ``__init__`` and call
    :meth:`open` last. The run owns ``run_dir`` until :meth:`fit` ends (see
    :class:`~spikeforge.runtime.runfolder.RunFolder`): a folder holding another run is refused unless
    ``overwrite=True`` (which deletes that run's files).

    Attributes a subclass provides: ``model`` (the module whose state is saved), ``task`` (see
    :mod:`~spikeforge.runtime.tasks`), ``train_set``, :meth:`optimizers` and :meth:`scalers`.
    """

    #: The word of the progress bar and the summary line ("epoch", "search epoch").
    epoch_word = "epoch"
    #: Whether ``best.pt`` keeps the epoch with the best test value of the task's metric.
    keeps_best = True
    #: The record prefix of the evaluation after each epoch ("test", or "val" for a search's held-out part).
    eval_split = "test"

    def __init__(self, config: RunConfig, run_dir: str | Path, stages: list[StageConfig], log=print,
                 callbacks: list[Callback] | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.log = log
        self.stages = stages
        self.total_epochs = sum(s.epochs for s in stages)
        self.callbacks: list[Callback] = list(callbacks or [])
        self.device = resolve_device(config.device)
        self.dist: DistInfo = init_distributed(self.device, config.distributed.timeout_minutes)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if self.device.type == "cpu" and config.memory.reuse_freed:
            reuse_freed_memory()
        torch.manual_seed(config.seed)
        self.format_for = input_format(config.channels_last)
        self.use_amp = config.amp
        self.epoch = 0  # epochs completed
        self.position = EpochPosition()  # inside the epoch in progress
        self.best: float | None = None  # best test value of task.metric so far
        self.elapsed_before = 0.0  # training seconds of earlier sessions of this run
        self.steps_per_epoch = 0
        self._stop_requested = False
        self._logged_sums: Tensor | None = None  # training sums at the last TensorBoard scalars

    def new_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler for one optimiser: float16 loss scaling on CUDA; CPU bfloat16 needs none."""
        return torch.amp.GradScaler("cuda", enabled=self.use_amp and self.device.type == "cuda")

    def open(self, resume: bool, overwrite: bool) -> None:
        """Take the run folder (rank 0; it writes ``config.yaml``) and continue from its ``last.pt`` when
        ``resume``; call once everything :meth:`state` saves is built."""
        self.folder = RunFolder(self.run_dir, resume, overwrite) if self.dist.is_main else None
        with self.folder.released_on_error() if self.folder else nullcontext():
            saved = self.folder.start(to_dict(self.config), resume, self.log) if self.folder else (
                last_checkpoint(self.run_dir) if resume else None)
            self.metrics = MetricsLog(self.run_dir) if self.dist.is_main else None
            if saved is not None:
                self._restore(load_checkpoint(saved, map_location=self.device))
            elif self.dist.is_main:
                split = self.eval_split
                self.metrics.hparams(to_dict(self.config), [f"{split}/{self.task.metric}", f"{split}/loss"])

    # ----------------------------------------------------------------- hooks
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The run's optimisers by checkpoint key."""
        raise NotImplementedError

    def scalers(self) -> dict[str, torch.amp.GradScaler]:
        """The run's loss scalers by checkpoint key."""
        raise NotImplementedError

    def train_step(self, batch, lr: float) -> tuple[Tensor, Tensor]:
        """One training step on ``batch`` at learning rate ``lr``: ``(loss, the task's sums of the batch)``."""
        raise NotImplementedError

    def train_metrics(self, sums: Tensor) -> dict[str, float]:
        """Record entries of training sums (those :meth:`train_step` returns, added over steps and ranks)."""
        return {f"train_{k}": v for k, v in self.task.metrics(sums).items()}

    def epoch_record(self, epoch: int, train: dict[str, float]) -> dict:
        """The record entries of a finished epoch beyond ``train_*`` (e.g. ``test_*`` or ``val_*``)."""
        raise NotImplementedError

    def finish(self, history: list[dict]) -> dict:
        """What the run leaves behind when every epoch is done (plots, a genotype), from its epoch records
        ``history``; rank 0 only. Returns entries of :meth:`fit`'s result."""
        return {}

    def summary_line(self, record: dict) -> str:
        raise NotImplementedError

    # ----------------------------------------------------------------- loop
    def fit(self) -> dict:
        """Run every remaining epoch; returns the final summary.

        Ctrl-C (SIGINT, in the main thread) stops after the step in progress with a resumable
        ``last.pt`` and raises KeyboardInterrupt; a second Ctrl-C stops at once.
        """
        self._session_start = self._last_save = time.perf_counter()
        try:
            with self._stop_on_sigint():
                while self.epoch < self.total_epochs:
                    self._finish_epoch(self._run_epoch(self.epoch))
                    if self.epoch < self.total_epochs and self.agree(self._stop_requested)[0]:
                        raise KeyboardInterrupt(f"stopped after {self.epoch_word} {self.epoch}; "
                                                f"{self.run_dir / 'last.pt'} continues from there")
            history = self.metrics.read() if self.metrics else []
            result = self.finish(history) if self.dist.is_main else {}
        finally:
            if self.metrics is not None:
                self.metrics.close()
            cleanup_distributed(self.dist)
            if self.folder is not None:
                self.folder.release()
        final = history[-1] if history else {}
        metric = self.task.metric
        return {"metric": metric, f"best_{metric}": self.best, f"final_{metric}": final.get(f"test_{metric}"),
                "epochs": self.epoch, "run_dir": str(self.run_dir), "record": final} | result

    def request_stop(self) -> None:
        """Stop after the training step in progress: write a resumable ``last.pt`` (rank 0), then
        raise KeyboardInterrupt from :meth:`fit` (what a first Ctrl-C does)."""
        self._stop_requested = True

    @property
    def resumable(self) -> bool:
        """Whether ``run_dir/last.pt`` exists, i.e. ``--resume`` can continue this run."""
        return last_checkpoint(self.run_dir) is not None

    def stage_of(self, epoch: int) -> tuple[int, StageConfig, int]:
        """(stage index, stage, epoch within the stage) for a global epoch index."""
        start = 0
        for i, stage in enumerate(self.stages):
            if epoch < start + stage.epochs:
                return i, stage, epoch - start
            start += stage.epochs
        raise IndexError(epoch)

    def loader(self, dataset: Dataset, train: bool, epoch: int, start: int = 0, seed: int | None = None):
        """The batches of ``dataset`` for ``epoch`` (this rank's shard), from batch ``start`` on."""
        d = self.config.data
        return epoch_batches(dataset, d.batch_size if train else (d.eval_batch_size or d.batch_size), train=train,
                             seed=self.config.seed if seed is None else seed, epoch=epoch, device=self.device,
                             workers=d.workers, dist=self.dist, start=start)

    def _finish_epoch(self, record: dict) -> None:
        """Count the epoch as done; rank 0 checkpoints, logs and reports it."""
        self.epoch += 1
        self.position = EpochPosition()
        if self.dist.is_main:
            record["elapsed"] = self._elapsed()
            # the record first: a stop between the two leaves it to the resumed run, which drops and redoes it
            self.metrics.write(record, step=self.epoch * self.steps_per_epoch, skip=("train_", "lr"))
            self._checkpoint(record)
            self.log(self.summary_line(record))
        self._last_save = time.perf_counter()

    def _run_epoch(self, epoch: int) -> dict:
        stage_index, stage, _ = self.stage_of(epoch)
        self._epoch_start = time.perf_counter() - self.position.seconds
        for callback in self.callbacks:
            callback.setup_epoch(self, epoch, stage)
        if self.position.step == 0:  # a resumed epoch had its start
            self.position.started = {}
            for callback in self.callbacks:
                self.position.started |= callback.on_epoch_start(self, epoch, stage)
        train = self._train_epoch(epoch)
        record = self.epoch_record(epoch, train)
        for callback in self.callbacks:
            record |= callback.on_epoch_end(self, epoch)
        return self.position.started | {
            "epoch": epoch + 1,
            "stage": stage_index,
            "timesteps": stage.timesteps,
            "lr": next(iter(self.optimizers().values())).param_groups[0]["lr"],
        } | train | record | {"epoch_time": time.perf_counter() - self._epoch_start}

    def lr_at(self, epoch: int, fraction: float) -> float:
        """The learning rate ``fraction`` of the way through ``epoch``: the schedule of the epoch's stage at
        its rate (``stage.lr``, else ``optim.lr``), with the warm-up in the first stage only."""
        stage_index, stage, in_stage = self.stage_of(epoch)
        sched = self.config.schedule
        base_lr = stage.lr if stage.lr is not None else self.config.optim.lr
        warmup = sched.warmup_epochs if stage_index == 0 else 0.0
        return lr_at(sched.name, base_lr, in_stage + fraction, stage.epochs, warmup, sched.min_lr, sched.milestones,
                     sched.gamma)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """The rest of the epoch's training steps (from ``position.step``); the epoch's training record entries."""
        self.model.train()
        pos = self.position
        loader = self.loader(self.train_set, True, epoch, start=pos.step)
        self.steps_per_epoch = steps = pos.step + len(loader)
        self._logged_sums = pos.sums
        bar = Progress(loader, f"{self.epoch_word} {epoch + 1}/{self.total_epochs}",
                       enabled=self.config.progress and self.dist.is_main, total=steps, start=pos.step,
                       every=self.config.progress_seconds, per_step=self.config.data.batch_size * self.dist.world_size)
        with pack_spikes_in(self.model) if self.config.memory.pack_spikes else nullcontext():
            for batch in bar:
                lr = self.lr_at(epoch, pos.step / max(steps, 1))
                loss, sums = self.train_step(batch, lr)
                pos.sums = sums if pos.sums is None else pos.sums + sums
                pos.step += 1
                bar.set(loss=loss.detach(), lr=lr)
                self._after_step(epoch, lr)
        if pos.sums is None:
            raise ValueError(f"the training set gives no batch of {self.config.data.batch_size} (drop-last)")
        return self.train_metrics(self.all_reduce(pos.sums))

    def optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: Tensor,
                       params: Iterable[nn.Parameter], clip: float | None, before_step=None) -> None:
        """Backward of ``loss``, then a step of ``optimizer`` (``params``' gradient norm clipped to ``clip``
        when set); ``before_step()`` runs between the two (e.g. averaging gradients over ranks).
        TrainingDiverged when the step leaves a NaN or infinity in the loss, gradients, weights or buffers."""
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if before_step is not None:
            before_step()
        if clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, clip)
        scaler.step(optimizer)
        scaler.update()
        check_step(self.model, loss, scaler, f"at {self.epoch_word} {self.epoch + 1}, step {self.position.step + 1}",
                   self.run_dir, self.all_reduce)

    def _after_step(self, epoch: int, lr: float) -> None:
        """TensorBoard scalars when due; a mid-epoch ``last.pt`` when due or asked for (then stop)."""
        step = self.position.step
        if self.metrics is not None and self.metrics.tensorboard and (
                step % self.config.log_every == 0 or step == self.steps_per_epoch):
            self._log_step(epoch * self.steps_per_epoch + step, lr)
        every = self.config.checkpoint.every_minutes * 60
        due = every > 0 and time.perf_counter() - self._last_save >= every
        save, stop = self.agree(due, self._stop_requested)
        if save or stop:
            self._save_position()
        if stop:
            raise KeyboardInterrupt(f"stopped at {self.epoch_word} {epoch + 1}, step {step}/{self.steps_per_epoch}; "
                                    f"{self.run_dir / 'last.pt'} continues from there")

    def _log_step(self, global_step: int, lr: float) -> None:
        """TensorBoard (rank 0): training loss and metrics of this rank's batches since the last call,
        the learning rate and each spiking layer's firing rate on the last batch."""
        sums = self.position.sums
        window = sums if self._logged_sums is None else sums - self._logged_sums
        self._logged_sums = sums
        values = {tensorboard_tag(k): v for k, v in self.train_metrics(window).items() if v is not None} | {"lr": lr}
        for name, neuron in self.model.named_modules():
            if isinstance(neuron, SpikingNeuron) and neuron.firing_rate is not None:
                values[f"spikes/rate/{name}"] = neuron.firing_rate
        self.metrics.scalars(values, global_step)

    # ----------------------------------------------------------------- processes
    def all_reduce(self, sums: Tensor) -> Tensor:
        """``sums`` added over the ranks (as is without distributed training)."""
        if self.dist.enabled:
            sums = sums.clone()
            torch.distributed.all_reduce(sums)
        return sums

    def agree(self, *flags: bool) -> list[bool]:
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

    # ----------------------------------------------------------------- checkpoints
    def improves(self, value: float) -> bool:
        """Whether a test value of the task's metric beats the best so far (NaN never does)."""
        if math.isnan(value):  # e.g. a stereo test set without a valid pixel: never the best
            return False
        if self.best is None or math.isnan(self.best):
            return True
        return value > self.best if self.task.higher_is_better else value < self.best

    def state(self) -> dict:
        """Everything ``last.pt`` holds about the run, whatever the position in the epoch (never
        non-finite weights: TrainingDiverged instead)."""
        bad = first_nonfinite(watched(self.model))
        if bad:
            raise diverged(f"{bad} when saving a checkpoint", self.run_dir)
        return {
            "model": self.model.state_dict(),
            **{key: opt.state_dict() for key, opt in self.optimizers().items()},
            **{key: scaler.state_dict() for key, scaler in self.scalers().items()},
            "epoch": self.epoch,
            "best": self.best,
            "rng": rng_state(),
            "config": to_dict(self.config),
            "elapsed": self._elapsed(),
        }

    def _checkpoint(self, record: dict) -> None:
        """``last.pt`` after an epoch, and ``best.pt`` when the epoch improved the task's metric."""
        state = self.state() | {"record": record}
        if self.keeps_best:
            improved = self.improves(record[f"test_{self.task.metric}"])
            if improved:
                self.best = record[f"test_{self.task.metric}"]
                state["best"] = self.best
            if improved or self.epoch == 1:
                best_keys = ("model", "epoch", "config", "num_classes", "record")
                save_checkpoint({k: state[k] for k in best_keys if k in state}, self.run_dir / "best.pt")
        save_checkpoint(state, self.run_dir / "last.pt")

    def _save_position(self) -> None:
        """A mid-epoch ``last.pt`` (written by rank 0; every rank adds its training sums)."""
        pos = self.position
        sums = self.all_reduce(pos.sums)
        if self.dist.is_main:
            seconds = time.perf_counter() - self._epoch_start
            position = EpochPosition(pos.step, sums, pos.started, seconds)
            save_checkpoint(self.state() | {"position": asdict(position)}, self.run_dir / "last.pt")
        self._last_save = time.perf_counter()

    def _restore(self, state: dict) -> None:
        saved = from_dict(type(self.config), state["config"])
        if to_dict(saved) != to_dict(self.config):
            self.log("note: resuming with a config that differs from the checkpoint's; using the new one")
        self.model.load_state_dict(state["model"])
        for key, optimizer in self.optimizers().items():
            optimizer.load_state_dict(state[key])
        for key, scaler in self.scalers().items():
            scaler.load_state_dict(state[key])
        self.epoch = int(state["epoch"])
        self.best = state.get("best", state.get("best_acc"))  # best_acc: checkpoints before tasks
        self.elapsed_before = float(state.get("elapsed", 0.0))
        if "position" in state:
            self.position = self._position_of(state["position"])
        set_rng_state(state["rng"])
        if self.metrics is not None:
            self.metrics.rewind(self.epoch, state.get("record"), warn=self.log)
        where = (f"at {self.epoch_word} {self.epoch + 1}, step {self.position.step}" if self.position.step
                 else f"after {self.epoch_word} {self.epoch}/{self.total_epochs}")
        self.log(f"resumed {self.run_dir} {where}")

    def _position_of(self, saved: dict) -> EpochPosition:
        """The saved position; its sums (those of all ranks) go to rank 0, the other ranks start from zero."""
        sums = saved["sums"] if self.dist.is_main else torch.zeros_like(saved["sums"])
        started = saved.get("started", saved.get("searched", {}))  # "searched": checkpoints before the fit loop
        return EpochPosition(int(saved["step"]), sums, started, float(saved["seconds"]))
