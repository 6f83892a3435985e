"""The classification task (registered as ``task: classification``; see :mod:`spikeforge.runtime.tasks`):
``(images, labels)`` batches, logits ``[T, B, K]`` (or ``(logits, auxiliary logits...)``); metrics
``loss`` and ``acc`` (top-1 of the time-averaged logits)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.devices import sum_dtype
from ..runtime.tasks import register_task
from .losses import build_loss, sdt_loss

__all__ = ["ClassificationTask", "time_first", "mean_logits"]


def time_first(images: Tensor) -> Tensor:
    """A collated batch of frame sequences ``[B, T, C, H, W]`` as the models' ``[T, B, C, H, W]``;
    static image batches ``[B, C, H, W]`` pass unchanged."""
    return images.transpose(0, 1) if images.dim() == 5 else images


def mean_logits(outputs: Tensor) -> Tensor:
    """``[T, B, K]`` spiking outputs averaged over time; ANN outputs ``[B, K]`` as they are."""
    return outputs.mean(0) if outputs.dim() == 3 else outputs


def _to_device(x: Tensor, device: torch.device, memory_format) -> Tensor:
    return x.to(device, non_blocking=True, memory_format=memory_format(x))


class ClassificationTask:
    """Image / event-frame classification."""

    metric = "acc"
    higher_is_better = True

    def __init__(self, loss_fn: nn.Module, aux_weight: float = 0.4):
        self.loss_fn = loss_fn
        self.aux_weight = aux_weight

    def split(self, batch, device: torch.device, memory_format=lambda x: torch.preserve_format):
        """``(images, labels)`` -> inputs ``[B, C, H, W]`` / ``[T, B, C, H, W]`` and labels ``[B]`` on ``device``."""
        images, labels = batch[0], batch[1]
        return time_first(_to_device(images, device, memory_format)), labels.to(device, non_blocking=True)

    def loss(self, outputs, labels: Tensor) -> Tensor:
        """The training loss; a tuple ``(logits, aux...)`` adds ``aux_weight`` times each auxiliary loss."""
        if not isinstance(outputs, tuple):
            return self.loss_fn(outputs.float(), labels)
        logits, *aux = (o.float() for o in outputs)
        return self.loss_fn(logits, labels) + self.aux_weight * sum(self.loss_fn(a, labels) for a in aux)

    def eval_loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of the time-averaged logits (comparable across training losses)."""
        return sdt_loss(outputs.float(), labels)

    def sums(self, outputs, labels: Tensor, loss: Tensor) -> Tensor:
        """``[loss * B, correct, B]`` (float64; float32 on MPS)."""
        logits = outputs[0] if isinstance(outputs, tuple) else outputs
        dtype = sum_dtype(loss.device)
        correct = (mean_logits(logits).argmax(1) == labels).sum()
        n = labels.numel()
        return torch.stack([loss.detach().to(dtype) * n, correct.to(dtype), torch.tensor(float(n), device=loss.device,
                                                                                          dtype=dtype)])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        loss, correct, n = sums.tolist()
        return {"loss": loss / max(n, 1), "acc": correct / max(n, 1)}

    @staticmethod
    def describe(m: dict) -> str:
        return f"loss {m['loss']:.4f} acc {100 * m['acc']:.2f}%"


def _classification(config, model, dataset) -> ClassificationTask:
    """The recipe's classification loss (``loss.name``: sdt, the default, or tet)."""
    loss = config.loss
    name = loss.name or "sdt"
    options = {"lam": loss.lam, "phi": loss.phi} if name == "tet" else {}
    return ClassificationTask(build_loss(name, **options, label_smoothing=loss.label_smoothing), loss.aux_weight)


register_task("classification", ClassificationTask, _classification)
