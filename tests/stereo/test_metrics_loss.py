"""Stereo metrics and losses against hand-computed values and independent (numpy/float64) references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeforge.stereo.loss import (
    build_stereo_loss,
    laplace_target,
    smooth_l1_disparity,
    subpixel_cross_entropy,
)
from spikeforge.stereo.metrics import median_depth_error, stereo_error_sums, summarize_stereo

NAN, INF = float("nan"), float("inf")
FB = 20.0  # focal length x baseline (pixel-metres), round so depths are easy by hand

# Hand example, B=1, H=2, W=3. Pixel (0,1) is NaN and (1,0) is zero: both invalid, and their
# predictions (9 and 3) are far off to show they are ignored. Valid pixels (gt -> pred):
#   4 -> 4.5   |e| = 0.5   depth 20/4 = 5  vs 20/4.5 = 40/9   |err| = 5/9
#   2 -> 0.5   |e| = 1.5   depth 20/2 = 10 vs 20/0.5 = 40     |err| = 30
#  10 -> 6     |e| = 4     depth 20/10 = 2 vs 20/6 = 10/3     |err| = 4/3
#   5 -> 5     |e| = 0     depth 4 vs 4                       |err| = 0
# EPE = 6/4 = 1.5; 1PE = #{1.5, 4}/4 = 0.5; 3PE = #{4}/4 = 0.25;
# MDE = (5/9 + 30 + 4/3 + 0)/4 = (287/9)/4 = 287/36; median of {0, 5/9, 4/3, 30}: lower middle = 5/9.
TARGET = torch.tensor([[[4.0, NAN, 2.0], [0.0, 10.0, 5.0]]])
PRED = torch.tensor([[[4.5, 9.0, 0.5], [3.0, 6.0, 5.0]]])
REL = 1e-6  # the 1e-7 added to disparities moves depths by ~1e-8 relative


def test_hand_example():
    sums = stereo_error_sums(PRED, TARGET, FB)
    assert sums.dtype == torch.float64 and sums.shape == (5,)
    m = summarize_stereo(sums)
    assert m["pixels"] == 4
    assert m["mean_disparity_error"] == pytest.approx(1.5, rel=REL)
    assert m["one_pixel_error"] == pytest.approx(0.5)
    assert m["three_pixel_error"] == pytest.approx(0.25)
    assert m["mean_depth_error"] == pytest.approx(287 / 36, rel=REL)
    assert median_depth_error(PRED, TARGET, FB) == pytest.approx(5 / 9, rel=REL)


def test_max_disparity_excludes_pixels():
    # max_disparity = 8 drops gt 10: valid {4, 2, 5} with |e| {0.5, 1.5, 0}, depth errors {5/9, 30, 0}.
    m = summarize_stereo(stereo_error_sums(PRED, TARGET, FB, max_disparity=8))
    assert m["pixels"] == 3
    assert m["mean_disparity_error"] == pytest.approx(2 / 3, rel=REL)
    assert m["one_pixel_error"] == pytest.approx(1 / 3)
    assert m["three_pixel_error"] == 0.0
    assert m["mean_depth_error"] == pytest.approx((5 / 9 + 30) / 3, rel=REL)
    assert median_depth_error(PRED, TARGET, FB, max_disparity=8) == pytest.approx(5 / 9, rel=REL)
    # The bound is strict: max_disparity = 5 also drops gt 5, leaving {4, 2}.
    assert summarize_stereo(stereo_error_sums(PRED, TARGET, FB, max_disparity=5))["pixels"] == 2


def test_inf_and_negative_targets_are_invalid():
    target = torch.tensor([[[INF, -2.0, 3.0]]])
    pred = torch.tensor([[[1.0, 1.0, 3.5]]])
    m = summarize_stereo(stereo_error_sums(pred, target, FB))
    assert m["pixels"] == 1 and m["mean_disparity_error"] == pytest.approx(0.5)


def test_negative_prediction_is_clamped_for_depth_only():
    # gt 2, pred -1: |e| = 3 (not > 3); depth of pred uses 0 -> 20 / 1e-7 = 2e8 m, gt depth 10 m.
    m = summarize_stereo(stereo_error_sums(torch.tensor([[[-1.0]]]), torch.tensor([[[2.0]]]), FB))
    assert m["mean_disparity_error"] == pytest.approx(3.0)
    assert m["one_pixel_error"] == 1.0 and m["three_pixel_error"] == 0.0
    assert m["mean_depth_error"] == pytest.approx(2e8 - 10, rel=REL)


def test_no_valid_pixel_gives_nan():
    target = torch.tensor([[[NAN, 0.0]]])
    m = summarize_stereo(stereo_error_sums(torch.ones(1, 1, 2), target, FB))
    assert m["pixels"] == 0
    for key in ("mean_disparity_error", "one_pixel_error", "three_pixel_error", "mean_depth_error"):
        assert math.isnan(m[key])
    assert math.isnan(median_depth_error(torch.ones(1, 1, 2), target, FB))


def random_pair(seed: int, batch: int, invalid: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, 5, 7, generator=g) * 40
    target[torch.rand(target.shape, generator=g) < invalid] = NAN
    pred = target.nan_to_num(20.0) + torch.randn(target.shape, generator=g) * 3
    return pred, target


def test_sums_add_over_batches():
    (p1, t1), (p2, t2) = random_pair(0, 2), random_pair(1, 3)
    added = summarize_stereo(stereo_error_sums(p1, t1, FB) + stereo_error_sums(p2, t2, FB))
    joint = summarize_stereo(stereo_error_sums(torch.cat([p1, p2]), torch.cat([t1, t2]), FB))
    assert added.keys() == joint.keys()
    for key in added:
        assert added[key] == pytest.approx(joint[key], rel=1e-12)


def test_half_precision_prediction():
    pred, target = random_pair(2, 2)
    half = pred.half()
    expected = stereo_error_sums(half.double(), target.double(), FB)
    torch.testing.assert_close(stereo_error_sums(half, target, FB), expected)
    torch.testing.assert_close(stereo_error_sums(pred.bfloat16(), target, FB),
                               stereo_error_sums(pred.bfloat16().double(), target, FB))


def test_shape_mismatch_names_the_arguments():
    with pytest.raises(ValueError, match=r"target shape \(1, 3, 2\).*pred shape \(1, 2, 3\)"):
        stereo_error_sums(PRED, TARGET.view(1, 3, 2), FB)
    with pytest.raises(ValueError, match="target"):
        median_depth_error(PRED, TARGET[:, :1], FB)
    with pytest.raises(ValueError, match="target"):
        smooth_l1_disparity(PRED, TARGET[:, :1])
    with pytest.raises(ValueError, match="target"):
        subpixel_cross_entropy(torch.zeros(1, 4, 2, 3), TARGET[:, :1])
    with pytest.raises(ValueError, match="log_prob"):
        subpixel_cross_entropy(torch.zeros(4, 2, 3), TARGET)
    with pytest.raises(ValueError, match="sums"):
        summarize_stereo(torch.zeros(4))


# ----------------------------------------------------------------------------------- losses
def test_laplace_target_by_hand():
    # D = 3, diversity 2. gt 0.5: |d - 0.5| = (0.5, 0.5, 1.5) -> exp(-0.25), exp(-0.25), exp(-0.75)
    # = 0.778801, 0.778801, 0.472367 (sum 2.029968) -> (0.383652, 0.383652, 0.232697).
    # gt 2: |d - 2| = (2, 1, 0) -> exp(-1), exp(-0.5), 1 = 0.367879, 0.606531, 1 (sum 1.974410)
    # -> (0.186324, 0.307196, 0.506480).
    p = laplace_target(torch.tensor([[[0.5, 2.0]]]), 3, diversity=2.0)
    assert p.shape == (1, 3, 1, 2)
    expected = torch.tensor([[0.383652, 0.186324], [0.383652, 0.307196], [0.232697, 0.506480]])
    torch.testing.assert_close(p[0, :, 0], expected, rtol=0, atol=2e-6)


def numpy_subpixel_ce(log_prob: np.ndarray, target: np.ndarray, diversity: float) -> float:
    """Direct float64 reference: loop over valid pixels, normalise the Laplace weights, average."""
    b, d, h, w = log_prob.shape
    losses = []
    for i in range(b):
        for y in range(h):
            for x in range(w):
                gt = target[i, y, x]
                if not (np.isfinite(gt) and gt > 0):
                    continue
                weights = np.exp(-np.abs(np.arange(d) - gt) / diversity)
                losses.append(-np.sum(weights / weights.sum() * log_prob[i, :, y, x]))
    return float(np.mean(losses))


def random_distribution(seed: int, b=2, d=6, h=3, w=4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    log_prob = torch.log_softmax(torch.randn(b, d, h, w, generator=g, dtype=torch.float64), dim=1)
    target = torch.rand(b, h, w, generator=g, dtype=torch.float64) * (d + 1)
    target[0, 0, 0], target[0, 1, 2], target[1, 2, 3], target[1, 0, 1] = NAN, INF, 0.0, -1.0
    return log_prob, target


@pytest.mark.parametrize("diversity", [0.5, 2.0])
def test_subpixel_ce_matches_numpy(diversity):
    log_prob, target = random_distribution(3)
    loss = subpixel_cross_entropy(log_prob, target, diversity=diversity)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(numpy_subpixel_ce(log_prob.numpy(), target.numpy(), diversity), rel=1e-12)


def test_invalid_pixels_neither_count_nor_poison_gradients():
    log_prob, target = random_distribution(4)
    valid = torch.isfinite(target) & (target > 0)
    poisoned = log_prob.clone()
    poisoned[(~valid).unsqueeze(1).expand_as(poisoned)] = NAN  # garbage where there is no ground truth
    poisoned.requires_grad_(True)
    loss = subpixel_cross_entropy(poisoned, target)
    loss.backward()
    assert torch.isfinite(poisoned.grad).all()
    assert (poisoned.grad.permute(0, 2, 3, 1)[~valid] == 0).all()
    # Reference: the loss on the valid pixels alone, laid out as a [1, D, 1, N] image.
    only = log_prob.permute(0, 2, 3, 1)[valid].T.reshape(1, -1, 1, int(valid.sum())).requires_grad_(True)
    reference = subpixel_cross_entropy(only, target[valid].view(1, 1, -1))
    reference.backward()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(poisoned.grad.permute(0, 2, 3, 1)[valid], only.grad[0, :, 0].T)


def test_no_valid_pixel_gives_a_connected_zero():
    log_prob = torch.randn(1, 4, 2, 2, requires_grad=True)
    pred = torch.randn(1, 2, 2, requires_grad=True)
    target = torch.tensor([[[NAN, 0.0], [INF, -3.0]]])
    for loss, leaf in ((subpixel_cross_entropy(log_prob, target), log_prob), (smooth_l1_disparity(pred, target), pred)):
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert (leaf.grad == 0).all()


def test_smooth_l1_matches_torch_on_valid_pixels():
    pred, target = random_pair(5, 2)
    target[0, 0, 0], target[0, 0, 1], target[1, 2, 2] = 0.0, INF, 45.0
    pred[0, 0, 0] = NAN  # garbage at an invalid pixel
    pred.requires_grad_(True)
    valid = torch.isfinite(target) & (target > 0) & (target < 42)
    loss = smooth_l1_disparity(pred, target, max_disparity=42)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[~valid] == 0).all()
    leaf = pred.detach()[valid].requires_grad_(True)
    reference = F.smooth_l1_loss(leaf, target[valid], beta=1.0)
    reference.backward()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(pred.grad[valid], leaf.grad)


def test_cross_entropy_is_minimised_by_the_target():
    # Gibbs' inequality: -sum p log q >= -sum p log p, with equality only at q = p.
    d = 8
    target = torch.tensor([[[1.3, 4.0], [6.7, 0.2]]], dtype=torch.float64)
    p = laplace_target(target, d)
    g = torch.Generator().manual_seed(6)
    candidates = {
        "target": p.log(),
        "uniform": torch.full_like(p, -math.log(d)),
        "shifted": laplace_target(target + 1, d).log(),
        "sharper": laplace_target(target, d, diversity=1.0).log(),
        "wider": laplace_target(target, d, diversity=4.0).log(),
        "random": torch.log_softmax(torch.randn(p.shape, generator=g, dtype=torch.float64), dim=1),
    }
    losses = {name: subpixel_cross_entropy(lp, target).item() for name, lp in candidates.items()}
    assert min(losses, key=losses.get) == "target"
    entropy = -(p * p.log()).sum(1).mean().item()
    assert losses["target"] == pytest.approx(entropy, rel=1e-12)


def test_half_precision_log_prob_is_computed_in_float32():
    log_prob, target = random_distribution(7)
    loss = subpixel_cross_entropy(log_prob.bfloat16(), target.float())
    assert loss.dtype == torch.float32
    expected = subpixel_cross_entropy(log_prob.bfloat16().double(), target)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_build_stereo_loss():
    log_prob, target = random_distribution(8)
    disparity = target.nan_to_num(1.0, posinf=1.0) + 0.5
    ce = build_stereo_loss("subpixel_ce", diversity=1.0, max_disparity=5.0)
    torch.testing.assert_close(ce(log_prob, disparity, target),
                               subpixel_cross_entropy(log_prob, target, diversity=1.0, max_disparity=5.0))
    l1 = build_stereo_loss("smooth_l1")
    torch.testing.assert_close(l1(None, disparity, target), smooth_l1_disparity(disparity, target))
    with pytest.raises(ValueError, match="smooth_l1.*subpixel_ce"):
        build_stereo_loss("l2")
    with pytest.raises(TypeError):
        build_stereo_loss("smooth_l1", diversity=2.0)  # smooth L1 has no diversity
