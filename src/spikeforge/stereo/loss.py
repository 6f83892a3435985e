"""Stereo losses on a per-pixel disparity distribution, over valid ground-truth pixels only.

Shapes: ``log_prob [B, D, H, W]`` (log-probabilities over the candidate disparities
``d = 0, 1, ..., D-1`` pixels, e.g. a ``log_softmax`` over dim 1), disparities ``[B, H, W]`` (pixels).
A pixel is valid when its ground truth is finite and ``> 0`` (and ``< max_disparity`` if given).

- Sub-pixel cross-entropy (Tulyakov et al., Practical Deep Stereo, NeurIPS 2018; used by DDES):
  the target is a discretised Laplace distribution centred on the sub-pixel ground truth,
  ``p(d) = exp(-|d - d_gt| / b) / sum_d' exp(-|d' - d_gt| / b)`` with diversity ``b`` (pixels),
  and the loss is ``mean over valid pixels of -sum_d p(d) * log_prob(d)``.
- Smooth L1 (LEAStereo): ``torch.nn.functional.smooth_l1_loss`` (``beta = 1``) between the
  predicted and the true disparity, averaged over valid pixels.

Invalid pixels contribute neither to the value nor to the gradient, even where the inputs are
NaN/inf there: they are replaced by harmless values and selected out with ``torch.where``
before any arithmetic. With no valid pixel the losses are a zero that keeps the graph (its
gradients are zero). Nothing here synchronises with the device. Half-precision inputs are
computed in float32.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .metrics import valid_disparity_mask

__all__ = ["laplace_target", "subpixel_cross_entropy", "smooth_l1_disparity", "build_stereo_loss"]

#: ``(log_prob [B, D, H, W], disparity [B, H, W], target [B, H, W]) -> scalar``.
StereoLoss = Callable[[Tensor, Tensor, Tensor], Tensor]


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The promoted dtype of ``tensors``, at least float32 (float16/bfloat16 are upcast)."""
    dtype = torch.float32
    for x in tensors:
        dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def laplace_target(target: Tensor, num_disparities: int, diversity: float = 2.0) -> Tensor:
    """Laplace target distribution ``[B, D, H, W]`` over ``d = 0..D-1`` for ``target [B, H, W]`` (pixels).

    ``p(d)`` is proportional to ``exp(-|d - target| / diversity)`` and sums to 1 over ``D``; a target
    beyond ``D - 1`` puts most mass on ``D - 1``. The target must be finite (mask invalid pixels
    first). ``diversity = 2`` pixels is a best guess, unverified for SpikeDHS (the DDES code uses
    diversity 1 pixel on a disparity grid of step 2 for its deep network).
    """
    if target.dim() != 3:
        raise ValueError(f"target: expected [B, H, W], got shape {tuple(target.shape)}")
    if num_disparities < 1:
        raise ValueError(f"num_disparities must be >= 1, got {num_disparities}")
    if not diversity > 0:
        raise ValueError(f"diversity must be > 0, got {diversity}")
    target = target.detach().to(_compute_dtype(target))
    candidates = torch.arange(num_disparities, dtype=target.dtype, device=target.device).view(1, -1, 1, 1)
    return torch.softmax(-(candidates - target.unsqueeze(1)).abs() / diversity, dim=1)


def _check_distribution(log_prob: Tensor, target: Tensor) -> None:
    if log_prob.dim() != 4:
        raise ValueError(f"log_prob: expected [B, D, H, W], got shape {tuple(log_prob.shape)}")
    expected = (log_prob.shape[0], *log_prob.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"target shape {tuple(target.shape)} does not match log_prob's [B, H, W] {expected}")


def _masked_mean(per_pixel: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``per_pixel`` over ``mask`` (0 with a zero gradient when the mask is empty)."""
    total = torch.where(mask, per_pixel, per_pixel.new_zeros(())).sum()
    return total / mask.sum().clamp_min(1)


def subpixel_cross_entropy(
    log_prob: Tensor, target: Tensor, diversity: float = 2.0, max_disparity: float | None = None
) -> Tensor:
    """Sub-pixel cross-entropy (nats), mean over valid pixels; ``log_prob [B, D, H, W]``, ``target [B, H, W]``."""
    _check_distribution(log_prob, target)
    mask = valid_disparity_mask(target, max_disparity)
    dtype = _compute_dtype(log_prob, target)
    safe_target = torch.where(mask, target.to(dtype), torch.zeros((), dtype=dtype, device=target.device))
    p = laplace_target(safe_target, log_prob.shape[1], diversity)
    safe_log_prob = torch.where(mask.unsqueeze(1), log_prob.to(dtype), p.new_zeros(()))
    return _masked_mean(-(p * safe_log_prob).sum(dim=1), mask)


def smooth_l1_disparity(pred: Tensor, target: Tensor, max_disparity: float | None = None) -> Tensor:
    """Smooth L1 (``beta = 1``, pixels) between ``pred`` and ``target`` ``[B, H, W]``, mean over valid pixels."""
    if pred.shape != target.shape:
        raise ValueError(f"target shape {tuple(target.shape)} differs from pred shape {tuple(pred.shape)}")
    mask = valid_disparity_mask(target, max_disparity)
    dtype = _compute_dtype(pred, target)
    safe_target = torch.where(mask, target.detach().to(dtype), torch.zeros((), dtype=dtype, device=target.device))
    safe_pred = torch.where(mask, pred.to(dtype), safe_target)  # zero loss and gradient where invalid
    per_pixel = F.smooth_l1_loss(safe_pred, safe_target, reduction="none", beta=1.0)
    return _masked_mean(per_pixel, mask)


def _subpixel_ce_loss(log_prob: Tensor, disparity: Tensor, target: Tensor, **kw) -> Tensor:
    return subpixel_cross_entropy(log_prob, target, **kw)


def _smooth_l1_loss(log_prob: Tensor, disparity: Tensor, target: Tensor, **kw) -> Tensor:
    return smooth_l1_disparity(disparity, target, **kw)


_LOSSES = {
    "subpixel_ce": (_subpixel_ce_loss, subpixel_cross_entropy),
    "smooth_l1": (_smooth_l1_loss, smooth_l1_disparity),
}


def build_stereo_loss(name: str, **kw) -> StereoLoss:
    """Loss ``(log_prob, disparity, target) -> scalar`` by name (``subpixel_ce`` or ``smooth_l1``).

    ``kw`` are the keyword options of that loss (``diversity``, ``max_disparity``); they are checked
    here, not at the first call. ``subpixel_ce`` ignores ``disparity``, ``smooth_l1`` ``log_prob``.
    """
    if name not in _LOSSES:
        raise ValueError(f"unknown stereo loss {name!r}; choose one of {', '.join(sorted(_LOSSES))}")
    adapter, loss = _LOSSES[name]
    inspect.signature(loss).bind(None, None, **kw)  # TypeError for an option the loss does not take
    return functools.partial(adapter, **kw)
