"""The SpikeDHS bi-level search loop (first-order, alternating).

The training (sub)set is split by index: the first ``train_portion`` trains the
supernet's weights (SGD, cosine schedule), the rest trains the architecture
weights alpha and beta (Adam). Every iteration takes one weight step on a batch
of the first part, then (after ``arch.warmup_epochs``) one architecture step on
a batch of the second; the weight step covers the classifier too. After every
epoch the run folder gets a record (losses, accuracies, softmaxed alpha, the
transition weights, the decoded genotype), an evaluation on up to
``eval_samples`` un-augmented samples of the architecture part, and an atomic
checkpoint from which ``resume=True`` continues. At the end the genotype is
written as ``genotype.json`` with a picture ``architecture.png``.

``task`` selects the supernet, its loss and metrics (:mod:`spikeforge.train.tasks`):
``classification`` searches :class:`~spikeforge.search.supernet.SearchNetwork`
(SDT loss, accuracy), ``stereo`` the feature and matching trellises of
:class:`~spikeforge.stereo.search.StereoSearchNet` (the recipe's stereo loss,
disparity errors; MVSEC pairs).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..core.norm import set_bn_stats
from ..core.time import SpikingNetwork
from ..data import MemoryImageSet, build_dataset, dataset_info
from ..runtime.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ..runtime.config import from_dict, to_dict
from ..runtime.metrics_log import MetricsLog
from ..runtime.progress import Progress
from ..runtime.runfolder import RunFolder
from ..runtime.schedule import lr_at
from ..runtime.tasks import build_task
from ..runtime.divergence import check_step
from ..runtime.devices import autocast, place_model, resolve_device
from ..runtime.evaluation import evaluation_sums
from ..runtime.loaders import epoch_batches
from .config import SearchConfig
from ..models.spikedhs.genotype import save_genotype
from .plots import plot_architecture
from .supernet import SearchNetwork

__all__ = ["Searcher", "split_for_search", "build_supernet"]


def _subset(dataset: Dataset, indices: range, augment: bool | None = None) -> Dataset:
    if isinstance(dataset, MemoryImageSet):
        return dataset.subset(list(indices), augment=augment)
    return Subset(dataset, list(indices))


def split_for_search(train_set: Dataset, subset: int | None, portion: float) -> tuple[range, range]:
    """Index ranges ``(weights, architecture)`` of the first ``subset`` images (all if None)."""
    n = len(train_set) if subset is None else min(subset, len(train_set))
    cut = int(n * portion)
    if not 0 < cut < n:
        raise ValueError(f"arch.train_portion={portion} of {n} images leaves one part empty")
    return range(cut), range(cut, n)


def build_supernet(config: SearchConfig, train_set: Dataset) -> tuple[nn.Module, nn.Module]:
    """``(supernet, model)`` for ``config.task``: the module with ``arch_parameters``, ``weight_parameters``,
    ``genotype`` and ``arch_record``, and the module to call on inputs (the supernet in time). Its batch
    norms have the statistics of ``supernet.bn_stats`` (:func:`~spikeforge.core.norm.set_bn_stats`)."""
    s = config.supernet
    if config.task == "classification":
        info = dataset_info(config.data.name)
        supernet = SearchNetwork(info.num_classes, info.in_channels, s.layers, s.levels, s.base_channels, s.nodes,
                                 tuple(s.primitives))
        set_bn_stats(supernet, s.bn_stats)
        return supernet, SpikingNetwork(supernet, config.timesteps)
    if config.task == "stereo":
        from ..stereo.search import StereoSearchNet

        sample = train_set[0]
        if not isinstance(sample, dict) or "left" not in sample:
            raise ValueError(f"task=stereo needs left/right stereo samples (e.g. data.name=mvsec); "
                             f"data set {config.data.name!r} gives {type(sample).__name__}")
        supernet = StereoSearchNet(sample["left"].shape[0], s.layers, s.matching_layers, s.levels, s.base_channels,
                                   s.max_disparity, s.feature_channels, config.timesteps, s.nodes, tuple(s.primitives))
        set_bn_stats(supernet, s.bn_stats)
        return supernet, supernet
    raise ValueError(f"task must be classification or stereo, got {config.task!r}")


class Searcher:
    """Runs ``config`` in ``run_dir``; ``resume=True`` continues from ``run_dir/last.pt``. The search
    owns ``run_dir`` until :meth:`fit` ends, as a :class:`~spikeforge.train.Trainer` does (``overwrite``:
    replace the run already there).

    ``datasets``: optional ``(augmented train set, un-augmented train set)`` instead of building them.
    """

    def __init__(self, config: SearchConfig, run_dir: str | Path, resume: bool = False,
                 datasets: tuple[Dataset, Dataset] | None = None, log=print, overwrite: bool = False):
        self.config, self.run_dir, self.log = config, Path(run_dir), log
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        train_set, plain_set = datasets or self._build_datasets()
        weight_idx, arch_idx = split_for_search(train_set, config.subset, config.arch.train_portion)
        if min(len(weight_idx), len(arch_idx)) < config.data.batch_size:
            raise ValueError(f"data.batch_size={config.data.batch_size} is larger than a search part "
                             f"({len(weight_idx)} weight / {len(arch_idx)} architecture images)")
        self.weight_set = _subset(train_set, weight_idx)
        self.arch_set = _subset(train_set, arch_idx)
        self.eval_set = _subset(plain_set, arch_idx[: config.eval_samples], augment=False)
        self.supernet, model = build_supernet(config, train_set)
        self.task = build_task(config, self.supernet, train_set)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = place_model(model, self.device, config.channels_last)
        o, a = config.optim, config.arch
        self.weight_optimizer = torch.optim.SGD(self.supernet.weight_parameters(), lr=o.lr, momentum=o.momentum,
                                                nesterov=o.nesterov, weight_decay=o.weight_decay)
        self.arch_optimizer = torch.optim.Adam(self.supernet.arch_parameters(), lr=a.lr, betas=a.betas,
                                               weight_decay=a.weight_decay)
        # float16 loss scaling on CUDA (one scaler per optimiser); CPU bfloat16 needs none
        use_scaler = config.amp and self.device.type == "cuda"
        self.scalers = [torch.amp.GradScaler("cuda", enabled=use_scaler) for _ in range(2)]
        self.epoch = 0
        self.folder = RunFolder(self.run_dir, resume, overwrite)
        with self.folder.released_on_error():
            saved = self.folder.start(to_dict(config), resume, self.log)
            self.metrics = MetricsLog(self.run_dir)
            if saved is not None:
                self._restore(load_checkpoint(saved, map_location=self.device))

    def _build_datasets(self) -> tuple[Dataset, Dataset]:
        d = self.config.data
        options = dict(d.options, root=d.root, train=True)
        if d.download:
            options["download"] = True
        augmented = build_dataset(d.name, **options)
        accepted = dataset_info(d.name).options
        if "augment" in accepted:
            return augmented, build_dataset(d.name, **options | {"augment": False})
        if "crop" in accepted:  # MVSEC: random crops are its augmentation; validate on whole frames
            return augmented, build_dataset(d.name, **options | {"crop": None})
        return augmented, augmented

    def genotype(self):
        """The genotype the current architecture weights decode to (a ``StereoGenotype`` for stereo)."""
        return self.supernet.genotype()

    def fit(self) -> dict:
        """Search every remaining epoch; returns the genotype and the final record."""
        start = time.perf_counter()
        record: dict = {}
        try:
            while self.epoch < self.config.epochs:
                record = self._run_epoch(self.epoch)
                self.epoch += 1
                record["elapsed"] = time.perf_counter() - start
                self.metrics.write(record)  # before the checkpoint, as in the Trainer
                self._checkpoint(record)
                self.log(self._summary_line(record))
            genotype = self.genotype()
            save_genotype(genotype, self.run_dir / "genotype.json")
            plot_architecture(genotype, self.supernet, self.run_dir / "architecture.png")
        finally:
            self.metrics.close()
            self.folder.release()
        return {"genotype": genotype.to_dict(), "run_dir": str(self.run_dir), "record": record}

    def _batches(self, dataset: Dataset, epoch: int, stream: int):
        d = self.config.data
        seed = self.config.seed + 7919 * stream
        return epoch_batches(dataset, d.batch_size, train=True, seed=seed, epoch=epoch, device=self.device,
                             workers=d.workers)

    def _endless_arch_batches(self, epoch: int) -> Iterator:
        """Architecture batches for one epoch of weight steps, restarting the part if it runs out."""
        round_ = 0
        while True:
            for batch in self._batches(self.arch_set, epoch * 1000 + round_, stream=1):
                yield batch
            round_ += 1

    def _input_format(self, x: torch.Tensor):
        return self.memory_format if x.dim() == 4 else torch.preserve_format

    def _step(self, optimizer, batch, params_with_grad) -> torch.Tensor:
        """One step of ``optimizer`` on ``batch``; returns the task's sums of the batch (TrainingDiverged
        when the step leaves a NaN or infinity in the loss, gradients, weights or buffers)."""
        inputs, targets = self.task.split(batch, self.device, self._input_format)
        with autocast(self.device, self.config.amp):
            outputs = self.model(inputs)
            loss = self.task.loss(outputs, targets)
        scaler = self.scalers[0 if optimizer is self.weight_optimizer else 1]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.config.grad_clip and optimizer is self.weight_optimizer:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params_with_grad, self.config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        check_step(self.model, loss, scaler, f"at search epoch {self.epoch + 1}", self.run_dir)
        return self.task.sums(outputs, targets, loss)

    def _run_epoch(self, epoch: int) -> dict:
        c = self.config
        self.model.train()
        tic = time.perf_counter()
        weight_batches = self._batches(self.weight_set, epoch, stream=0)
        arch_batches = self._endless_arch_batches(epoch)
        steps = max(len(self.weight_set) // c.data.batch_size, 1)
        search_arch = epoch >= c.arch.warmup_epochs
        weights, arch = self.supernet.weight_parameters(), self.supernet.arch_parameters()
        weight_sums = arch_sums = 0
        bar = Progress(weight_batches, f"search epoch {epoch + 1}/{c.epochs}", enabled=c.progress,
                       per_step=c.data.batch_size, every=c.progress_seconds)
        for i, batch in enumerate(bar):
            lr = lr_at(c.schedule.name, c.optim.lr, epoch + i / steps, c.epochs, c.schedule.warmup_epochs,
                       c.schedule.min_lr, c.schedule.milestones, c.schedule.gamma)
            for group in self.weight_optimizer.param_groups:
                group["lr"] = lr
            for p in arch:
                p.requires_grad_(False)
            weight_sums = weight_sums + self._step(self.weight_optimizer, batch, weights)
            for p in arch:
                p.requires_grad_(True)
            if search_arch:
                for p in weights:
                    p.requires_grad_(False)
                arch_sums = arch_sums + self._step(self.arch_optimizer, next(arch_batches), arch)
                for p in weights:
                    p.requires_grad_(True)
            if i % 10 == 0:
                bar.set(loss=self.task.metrics(weight_sums)["loss"], lr=lr)
        self.model.eval()
        with torch.no_grad():
            val = self.task.metrics(evaluation_sums(
                self.model, epoch_batches(self.eval_set, c.data.eval_batch_size or c.data.batch_size, train=False,
                                          seed=c.seed, epoch=0, device=self.device), self.device, self.task,
                c.amp, self._input_format))
        record: dict = {"epoch": epoch + 1, "lr": lr}
        record |= {f"train_{k}": v for k, v in self.task.metrics(weight_sums).items()}
        arch_metrics = self.task.metrics(arch_sums) if search_arch else dict.fromkeys(val)
        record |= {f"arch_{k}": v for k, v in arch_metrics.items()}
        record |= {f"val_{k}": v for k, v in val.items()}
        return record | self.supernet.arch_record() | {"genotype": self.genotype().to_dict(),
                                                       "epoch_time": time.perf_counter() - tic}

    def _summary_line(self, r: dict) -> str:
        def part(prefix: str) -> dict:
            return {k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)}

        describe = self.task.describe
        arch = f"arch {describe(part('arch_'))}" if r["arch_loss"] is not None else "arch warm-up"
        g = r["genotype"]
        paths = g["path"] if "path" in g else {name: part_g["path"] for name, part_g in g.items()}
        return (f"search epoch {r['epoch']}/{self.config.epochs} lr {r['lr']:.4g} | train {describe(part('train_'))} "
                f"| {arch} | val {describe(part('val_'))} | path {paths} | {r['epoch_time']:.1f}s")

    def _checkpoint(self, record: dict) -> None:
        save_checkpoint({
            "model": self.model.state_dict(), "weight_optimizer": self.weight_optimizer.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "scalers": [scaler.state_dict() for scaler in self.scalers], "epoch": self.epoch, "rng": rng_state(),
            "config": to_dict(self.config), "record": record,
        }, self.run_dir / "last.pt")

    def _restore(self, state: dict) -> None:
        if to_dict(from_dict(SearchConfig, state["config"])) != to_dict(self.config):
            self.log("note: resuming with a config that differs from the checkpoint's; using the new one")
        self.model.load_state_dict(state["model"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        for scaler, saved in zip(self.scalers, state.get("scalers", [])):  # absent before mixed precision
            scaler.load_state_dict(saved)
        self.epoch = int(state["epoch"])
        set_rng_state(state["rng"])
        self.metrics.rewind(self.epoch, state.get("record"), warn=self.log)
        self.log(f"resumed {self.run_dir} after search epoch {self.epoch}/{self.config.epochs}")
