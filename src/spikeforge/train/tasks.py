"""What a run optimises and measures: the task the one training loop is parameterised by.

A task turns a collated batch into ``(inputs, targets)`` on the device, gives the
training loss and the evaluation loss of a model output, and per-batch *sums*
(a float64 tensor, float32 on MPS, that adds over batches and ranks) from which an epoch's metrics
follow. ``metric`` names the metric that selects the best checkpoint.

- :class:`ClassificationTask`: ``(images, labels)`` batches, logits ``[T, B, K]``
  (or ``(logits, auxiliary logits...)``); metrics ``loss``, ``acc`` (top-1 of the
  time-averaged logits).
- :class:`StereoTask`: MVSEC dict batches (``left``, ``right``, ``disparity``),
  :class:`~spikeforge.stereo.StereoOutput`; metrics ``loss`` and the event-stereo
  errors of :func:`~spikeforge.stereo.metrics.summarize_stereo`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.devices import sum_dtype
from .config import TrainConfig
from .losses import build_loss, sdt_loss

__all__ = ["ClassificationTask", "StereoTask", "build_task", "time_first", "mean_logits"]


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


class StereoTask:
    """Event-based stereo (MVSEC): disparity regression from a left/right pair."""

    metric = "mean_disparity_error"
    higher_is_better = False

    def __init__(self, loss_fn, focal_baseline: float, max_disparity: float | None = None):
        self.loss_fn = loss_fn
        self.focal_baseline = float(focal_baseline)
        self.max_disparity = max_disparity

    def split(self, batch: dict, device: torch.device, memory_format=lambda x: torch.preserve_format):
        """``{"left", "right": [B, N, H, W], "disparity": [B, H, W]}`` -> views ``[B, 2, N, H, W]`` and disparity."""
        views = torch.stack([batch["left"], batch["right"]], dim=1)
        return views.to(device, non_blocking=True), batch["disparity"].to(device, non_blocking=True)

    def loss(self, outputs, disparity: Tensor) -> Tensor:
        return self.loss_fn(outputs.log_prob, outputs.disparity, disparity)

    eval_loss = loss

    def sums(self, outputs, disparity: Tensor, loss: Tensor) -> Tensor:
        """``[loss * B, B, *stereo_error_sums]`` (float64; float32 on MPS)."""
        from ..stereo.metrics import stereo_error_sums

        n = disparity.shape[0]
        dtype = sum_dtype(loss.device)
        errors = stereo_error_sums(outputs.disparity.detach(), disparity, self.focal_baseline, self.max_disparity)
        head = torch.stack([loss.detach().to(dtype) * n, torch.tensor(float(n), dtype=dtype, device=loss.device)])
        return torch.cat([head, errors.to(dtype)])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        from ..stereo.metrics import summarize_stereo

        values = summarize_stereo(sums[2:])
        values.pop("pixels")
        return {"loss": sums[0].item() / max(sums[1].item(), 1), **values}

    @staticmethod
    def describe(m: dict) -> str:
        return (f"loss {m['loss']:.4f} EPE {m['mean_disparity_error']:.3f}px 1PE {100 * m['one_pixel_error']:.2f}% "
                f"MDE {m['mean_depth_error']:.3f}m")


TASKS = ("classification", "stereo")


def build_task(config: TrainConfig, model: nn.Module, dataset) -> ClassificationTask | StereoTask:
    """The task of ``config.task`` with the recipe's loss (``loss.name``); ``config`` is a training or a
    search config (both have ``task`` and ``loss``); ``dataset`` is one of the run's sets (stereo reads
    its camera's ``focal_baseline``)."""
    loss = config.loss
    if config.task == "classification":
        name = loss.name or "sdt"
        options = {"lam": loss.lam, "phi": loss.phi} if name == "tet" else {}
        return ClassificationTask(build_loss(name, **options, label_smoothing=loss.label_smoothing),
                                  loss.aux_weight)
    if config.task == "stereo":
        from ..stereo.loss import build_stereo_loss

        focal_baseline = getattr(dataset, "focal_baseline", None)
        if focal_baseline is None:
            raise ValueError(f"task=stereo needs a data set with a focal_baseline (e.g. mvsec); "
                             f"{type(dataset).__name__} has none")
        max_disparity = getattr(model, "max_disparity", None)
        name = loss.name or "subpixel_ce"
        options = {"diversity": loss.diversity} if name == "subpixel_ce" else {}
        return StereoTask(build_stereo_loss(name, max_disparity=max_disparity, **options), focal_baseline,
                          max_disparity)
    raise ValueError(f"task must be one of {', '.join(TASKS)}, got {config.task!r}")
