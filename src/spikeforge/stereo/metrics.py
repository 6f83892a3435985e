"""Event-stereo metrics on MVSEC, with the definitions of the DDES/DTC evaluation code.

Shapes: predicted and ground-truth disparity ``[B, H, W]`` in pixels (any equal shapes work).
A pixel is *valid* when its ground-truth disparity is finite and ``> 0`` (and ``< max_disparity``
when that is given); only valid pixels count. With ``e = |d_pred - d_gt|`` (pixels):

- mean disparity error (EPE, pixels): mean of ``e``;
- one / three pixel error (fractions in [0, 1], not percent): share of pixels with ``e > 1`` / ``e > 3``;
- mean / median depth error (metres): mean / median of ``|f*B / (d_pred + 1e-7) - f*B / (d_gt + 1e-7)|``,
  with ``d_pred`` clamped at ``>= 0`` for the depth only (the disparity errors use it as predicted).

:func:`stereo_error_sums` returns additive sums, so per-batch results can be added up and
all-reduced across ranks before :func:`summarize_stereo` divides them. The summary is therefore
*pixel-weighted* over everything summed: every valid pixel of the data set weighs the same.
DDES instead averages per-frame means (test batch size 1), which weighs frames with few valid
pixels more; the two agree when every frame has the same number of valid pixels.
The median is not additive: :func:`median_depth_error` is for one batch only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.devices import sum_dtype

__all__ = ["valid_disparity_mask", "stereo_error_sums", "summarize_stereo", "median_depth_error"]

#: Added to disparities before the reciprocal (as in DDES), so a zero disparity gives a finite depth.
DEPTH_EPS = 1e-7
#: Order of the entries of :func:`stereo_error_sums`.
SUM_FIELDS = ("pixels", "abs_disparity_error", "over_1px", "abs_depth_error", "over_3px")


def valid_disparity_mask(target: Tensor, max_disparity: float | None = None) -> Tensor:
    """``bool`` mask of ``target``'s shape: finite and ``> 0`` (and ``< max_disparity`` if given)."""
    mask = torch.isfinite(target) & (target > 0)
    if max_disparity is not None:
        mask &= target < max_disparity
    return mask


def _check_same_shape(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"target shape {tuple(target.shape)} differs from pred shape {tuple(pred.shape)}")


def _abs_errors(pred: Tensor, target: Tensor, focal_baseline: float, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Disparity (pixels) and depth (metres) absolute errors, 0 outside ``mask``; high precision."""
    dtype = sum_dtype(pred.device)
    gt = torch.where(mask, target.detach().to(dtype), 1.0)  # placeholder keeps NaN/inf out of the math
    est = torch.where(mask, pred.detach().to(dtype), 1.0)
    disparity = (est - gt).abs()
    depth = (focal_baseline / (est.clamp_min(0) + DEPTH_EPS) - focal_baseline / (gt + DEPTH_EPS)).abs()
    zero = disparity.new_zeros(())
    return torch.where(mask, disparity, zero), torch.where(mask, depth, zero)


def stereo_error_sums(
    pred: Tensor, target: Tensor, focal_baseline: float, max_disparity: float | None = None
) -> Tensor:
    """Additive error sums ``[5]`` of ``pred``/``target`` ``[B, H, W]`` (pixels), on their device.

    Entries (see :data:`SUM_FIELDS`): valid pixel count, sum ``|d_pred - d_gt|`` (pixels), count of
    ``> 1`` px, sum of depth errors (metres), count of ``> 3`` px. ``focal_baseline`` is ``f*B`` in
    pixel-metres. float64 (float32 on MPS); no host synchronisation, so it can be accumulated
    and ``all_reduce``-d as is. Any input float dtype (float16/bfloat16 too).
    """
    _check_same_shape(pred, target)
    mask = valid_disparity_mask(target, max_disparity)
    disparity, depth = _abs_errors(pred, target, focal_baseline, mask)
    dtype = disparity.dtype
    return torch.stack([
        mask.sum().to(dtype),
        disparity.sum(),
        (disparity > 1).sum().to(dtype),
        depth.sum(),
        (disparity > 3).sum().to(dtype),
    ])


def summarize_stereo(sums: Tensor) -> dict[str, float]:
    """Metrics from (possibly accumulated) :func:`stereo_error_sums`, pixel-weighted over all of them.

    Keys: ``mean_disparity_error`` (EPE, pixels), ``one_pixel_error`` and ``three_pixel_error``
    (fractions), ``mean_depth_error`` (metres), ``pixels`` (valid pixel count, an int).
    Errors are NaN when there is no valid pixel.
    """
    if sums.shape != (len(SUM_FIELDS),):
        raise ValueError(f"sums: expected shape ({len(SUM_FIELDS)},), got {tuple(sums.shape)}")
    pixels, disparity, over_1px, depth, over_3px = sums.detach().cpu().double().tolist()

    def rate(total: float) -> float:
        return total / pixels if pixels > 0 else math.nan

    return {
        "mean_disparity_error": rate(disparity),
        "one_pixel_error": rate(over_1px),
        "three_pixel_error": rate(over_3px),
        "mean_depth_error": rate(depth),
        "pixels": int(round(pixels)),
    }


def median_depth_error(
    pred: Tensor, target: Tensor, focal_baseline: float, max_disparity: float | None = None
) -> float:
    """Median absolute depth error (metres) over the valid pixels of one batch ``[B, H, W]``.

    Not additive: it cannot be combined across batches or ranks (report it per batch/frame).
    For an even count it is the lower of the two middle values (``torch.median``, as in DDES).
    NaN when there is no valid pixel. Synchronises with the device (returns a Python float).
    """
    _check_same_shape(pred, target)
    mask = valid_disparity_mask(target, max_disparity)
    _, depth = _abs_errors(pred, target, focal_baseline, mask)
    valid = depth[mask]
    return valid.median().item() if valid.numel() > 0 else math.nan
