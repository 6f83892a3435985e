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

The search runs on the runtime's fit loop (:mod:`spikeforge.runtime.fit`): mid-epoch checkpoints
and exact resume, Ctrl-C, divergence checks, and several processes under torchrun: each rank
searches on its shard of both parts, gradients of the weight and the architecture steps are averaged
over the ranks before each step (so the architecture weights stay identical on every rank), and the
batch-norm statistics of rank 0 are used for the evaluation and the checkpoint.

``task`` selects the supernet, its loss and metrics (:mod:`spikeforge.runtime.tasks`):
``classification`` searches :class:`~spikeforge.search.supernet.SearchNetwork`
(SDT loss, accuracy), ``stereo`` the feature and matching trellises of
:class:`~spikeforge.stereo.search.StereoSearchNet` (the recipe's stereo loss,
disparity errors; MVSEC pairs).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from ..data import MemoryImageSet, dataset_info
from ..models.spikedhs.genotype import save_genotype
from ..runtime.devices import autocast, place_model
from ..runtime.distributed import average_gradients, broadcast_state
from ..runtime.evaluation import evaluation_sums
from ..runtime.fit import FitLoop
from ..runtime.loaders import build_split
from ..runtime.tasks import build_task
from .config import SearchConfig
from .plots import plot_architecture
from .supernet import build_supernet

__all__ = ["Searcher", "split_for_search"]


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


class Searcher(FitLoop):
    """Runs ``config`` in ``run_dir``; ``resume=True`` continues from ``run_dir/last.pt``. The search
    owns ``run_dir`` until :meth:`fit` ends, as a :class:`~spikeforge.train.Trainer` does (``overwrite``:
    replace the run already there).

    ``datasets``: optional ``(augmented train set, un-augmented train set)`` instead of building them.
    """

    epoch_word = "search epoch"
    keeps_best = False
    eval_split = "val"

    def __init__(self, config: SearchConfig, run_dir: str | Path, resume: bool = False,
                 datasets: tuple[Dataset, Dataset] | None = None, log=print, overwrite: bool = False):
        super().__init__(config, run_dir, config.stage_list(), log)
        train_set, plain_set = datasets or self._build_datasets()
        weight_idx, arch_idx = split_for_search(train_set, config.subset, config.arch.train_portion)
        world = self.dist.world_size
        if min(len(weight_idx), len(arch_idx)) // world < config.data.batch_size:
            raise ValueError(f"data.batch_size={config.data.batch_size} is larger than a search part "
                             f"({len(weight_idx)} weight / {len(arch_idx)} architecture images"
                             + (f", over {world} processes)" if world > 1 else ")"))
        self.train_set = _subset(train_set, weight_idx)  # the weight part: the fit loop's epochs run over it
        self.arch_set = _subset(train_set, arch_idx)
        self.eval_set = _subset(plain_set, arch_idx[: config.eval_samples], augment=False)
        self.supernet, model = build_supernet(config, train_set)
        self.task = build_task(config, self.supernet, train_set)
        self.model = place_model(model, self.device, config.channels_last)
        broadcast_state(self.model, self.dist)  # every rank starts from rank 0's supernet
        o, a = config.optim, config.arch
        self.weights, self.arch = self.supernet.weight_parameters(), self.supernet.arch_parameters()
        self.weight_optimizer = torch.optim.SGD(self.weights, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                                weight_decay=o.weight_decay)
        self.arch_optimizer = torch.optim.Adam(self.arch, lr=a.lr, betas=a.betas, weight_decay=a.weight_decay)
        self.weight_scaler, self.arch_scaler = self.new_scaler(), self.new_scaler()
        self._arch_batches = None
        self.open(resume, overwrite)

    def _build_datasets(self) -> tuple[Dataset, Dataset]:
        """The augmented training set, and the same images without augmentation (validation)."""
        d = self.config.data
        augmented = build_split(d, True)
        accepted = dataset_info(d.name).options
        if "augment" in accepted:
            return augmented, build_split(d, True, augment=False)
        if "crop" in accepted:  # MVSEC: random crops are its augmentation; validate on whole frames
            return augmented, build_split(d, True, crop=None)
        return augmented, augmented

    def genotype(self):
        """The genotype the current architecture weights decode to (a ``StereoGenotype`` for stereo)."""
        return self.supernet.genotype()

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"weight_optimizer": self.weight_optimizer, "arch_optimizer": self.arch_optimizer}

    def scalers(self) -> dict[str, torch.amp.GradScaler]:
        return {"weight_scaler": self.weight_scaler, "arch_scaler": self.arch_scaler}

    def _searching(self, epoch: int) -> bool:
        return epoch >= self.config.arch.warmup_epochs

    def _arch_stream(self, epoch: int, skip: int):
        """Architecture batches for ``epoch`` after the first ``skip``, restarting the part (reshuffled)
        whenever it runs out."""
        per_round = len(self.loader(self.arch_set, True, epoch * 1000, seed=self.config.seed + 7919))
        round_, start = divmod(skip, per_round)
        while True:
            yield from self.loader(self.arch_set, True, epoch * 1000 + round_, start=start,
                                   seed=self.config.seed + 7919)
            round_, start = round_ + 1, 0

    def _step(self, optimizer, scaler, batch, params: list[nn.Parameter], frozen: list[nn.Parameter],
              clip: float | None) -> tuple[Tensor, Tensor]:
        """One step of ``optimizer`` on ``batch`` with ``frozen`` held out of the backward pass;
        ``(loss, the task's sums of the batch)``."""
        for p in frozen:
            p.requires_grad_(False)
        try:
            inputs, targets = self.task.split(batch, self.device, self.format_for)
            with autocast(self.device, self.use_amp):
                outputs = self.model(inputs)
                loss = self.task.loss(outputs, targets)
            self.optimizer_step(optimizer, scaler, loss, params, clip,
                                before_step=lambda: average_gradients(params, self.dist))
        finally:
            for p in frozen:
                p.requires_grad_(True)
        with torch.no_grad():
            return loss, self.task.sums(outputs, targets, loss)

    def train_step(self, batch, lr: float) -> tuple[Tensor, Tensor]:
        """A weight step on ``batch`` (the classifier's too), then an architecture step on the next batch of
        the architecture part once the warm-up is over; sums ``[weight sums, architecture sums]``."""
        epoch = self.epoch
        for group in self.weight_optimizer.param_groups:
            group["lr"] = lr
        loss, weight_sums = self._step(self.weight_optimizer, self.weight_scaler, batch, self.weights, self.arch,
                                       self.config.grad_clip)
        arch_sums = torch.zeros_like(weight_sums)
        if self._searching(epoch):
            if self._arch_batches is None or self._arch_epoch != epoch:
                self._arch_batches, self._arch_epoch = self._arch_stream(epoch, self.position.step), epoch
            _, arch_sums = self._step(self.arch_optimizer, self.arch_scaler, next(self._arch_batches), self.arch,
                                      self.weights, None)
        return loss, torch.cat([weight_sums, arch_sums])

    def train_metrics(self, sums: Tensor) -> dict:
        weight, arch = (self.task.metrics(part) for part in sums.chunk(2))
        if not self._searching(self.epoch):  # warm-up: no architecture step yet
            arch = dict.fromkeys(arch)
        return {f"train_{k}": v for k, v in weight.items()} | {f"arch_{k}": v for k, v in arch.items()}

    def epoch_record(self, epoch: int, train: dict) -> dict:
        """Validation metrics on the held-out images, the architecture weights and the decoded genotype."""
        self._arch_batches = None
        broadcast_state(self.model, self.dist, buffers_only=True)  # rank 0's statistics, as in the checkpoint
        self.model.eval()
        with torch.no_grad():
            val = self.task.metrics(self.all_reduce(evaluation_sums(
                self.model, self.loader(self.eval_set, False, 0), self.device, self.task, self.use_amp,
                self.format_for)))
        return ({f"val_{k}": v for k, v in val.items()} | self.supernet.arch_record()
                | {"genotype": self.genotype().to_dict()})

    def finish(self, history: list[dict]) -> dict:
        """``genotype.json`` and its picture ``architecture.png``."""
        genotype = self.genotype()
        save_genotype(genotype, self.run_dir / "genotype.json")
        plot_architecture(genotype, self.supernet, self.run_dir / "architecture.png")
        return {"genotype": genotype.to_dict()}

    def summary_line(self, r: dict) -> str:
        def part(prefix: str) -> dict:
            return {k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)}

        describe = self.task.describe
        arch = f"arch {describe(part('arch_'))}" if r["arch_loss"] is not None else "arch warm-up"
        g = r["genotype"]
        paths = g["path"] if "path" in g else {name: part_g["path"] for name, part_g in g.items()}
        return (f"search epoch {r['epoch']}/{self.config.epochs} lr {r['lr']:.4g} | train {describe(part('train_'))} "
                f"| {arch} | val {describe(part('val_'))} | path {paths} | {r['epoch_time']:.1f}s")
