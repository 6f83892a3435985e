"""The event-stereo task (registered as ``task: stereo``; see :mod:`spikeforge.runtime.tasks`): MVSEC dict
batches (``left``, ``right``, ``disparity``), :class:`~spikeforge.models.spikedhs.stereo.StereoOutput`
outputs; metrics ``loss`` and the event-stereo errors of :func:`~spikeforge.stereo.metrics.summarize_stereo`."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.devices import sum_dtype
from ..runtime.tasks import register_task
from .loss import build_stereo_loss
from .metrics import stereo_error_sums, summarize_stereo

__all__ = ["StereoTask"]


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
        n = disparity.shape[0]
        dtype = sum_dtype(loss.device)
        errors = stereo_error_sums(outputs.disparity.detach(), disparity, self.focal_baseline, self.max_disparity)
        head = torch.stack([loss.detach().to(dtype) * n, torch.tensor(float(n), dtype=dtype, device=loss.device)])
        return torch.cat([head, errors.to(dtype)])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        values = summarize_stereo(sums[2:])
        values.pop("pixels")
        return {"loss": sums[0].item() / max(sums[1].item(), 1), **values}

    @staticmethod
    def describe(m: dict) -> str:
        return (f"loss {m['loss']:.4f} EPE {m['mean_disparity_error']:.3f}px 1PE {100 * m['one_pixel_error']:.2f}% "
                f"MDE {m['mean_depth_error']:.3f}m")


def _stereo(config, model, dataset) -> StereoTask:
    """The recipe's stereo loss (``loss.name``: subpixel_ce, the default, or smooth_l1) for ``model``'s
    disparity range, with the camera of ``dataset`` (its ``focal_baseline``)."""
    loss = config.loss
    focal_baseline = getattr(dataset, "focal_baseline", None)
    if focal_baseline is None:
        raise ValueError(f"task=stereo needs a data set with a focal_baseline (e.g. mvsec); "
                         f"{type(dataset).__name__} has none")
    max_disparity = getattr(model, "max_disparity", None)
    name = loss.name or "subpixel_ce"
    options = {"diversity": loss.diversity} if name == "subpixel_ce" else {}
    return StereoTask(build_stereo_loss(name, max_disparity=max_disparity, **options), focal_baseline, max_disparity)


register_task("stereo", StereoTask, _stereo)
