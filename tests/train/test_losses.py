"""SDT and TET losses against their per-step definitions."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.train.losses import build_loss, sdt_loss, tet_loss


def logits(seed, t=4, b=5, k=7):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(t, b, k, generator=gen, dtype=torch.float64) * 3, torch.randint(0, k, (b,), generator=gen)


def test_tet_without_regulariser_is_mean_of_per_step_cross_entropies():
    out, y = logits(0)
    expected = sum(F.cross_entropy(out[t], y) for t in range(out.shape[0])) / out.shape[0]
    torch.testing.assert_close(tet_loss(out, y, lam=0.0), expected)


def test_tet_at_one_step_is_cross_entropy_and_equals_sdt():
    out, y = logits(1, t=1)
    torch.testing.assert_close(tet_loss(out, y, lam=0.0), F.cross_entropy(out[0], y))
    torch.testing.assert_close(sdt_loss(out, y), F.cross_entropy(out[0], y))


def test_mse_term_matches_per_step_definition():
    out, y = logits(2)
    lam, phi = 0.3, 1.0
    mse = sum(((out[t] - phi) ** 2).mean() for t in range(out.shape[0])) / out.shape[0]
    ce = sum(F.cross_entropy(out[t], y) for t in range(out.shape[0])) / out.shape[0]
    torch.testing.assert_close(tet_loss(out, y, lam=lam, phi=phi), (1 - lam) * ce + lam * mse)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.integers(1, 6))
def test_sdt_never_exceeds_tet(seed, t):
    """Jensen: CE is convex in the logits, so CE(mean_t o_t) <= mean_t CE(o_t) (TET Lemma 4.1)."""
    out, y = logits(seed, t=t)
    assert sdt_loss(out, y) <= tet_loss(out, y, lam=0.0) + 1e-12


def test_ann_output_is_one_step_and_bad_shapes_fail():
    out, y = logits(3, t=1)
    torch.testing.assert_close(sdt_loss(out[0], y), sdt_loss(out, y))
    with pytest.raises(ValueError, match=r"expected outputs \[T, B, K\]"):
        sdt_loss(out.reshape(-1), y)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("focal")
