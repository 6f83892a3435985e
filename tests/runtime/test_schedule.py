"""Learning-rate schedules against torch's own schedulers (whole epochs, no warm-up)."""

import pytest
import torch

from spikeforge.runtime.schedule import lr_at


def torch_rates(make_scheduler, epochs: int, base_lr: float) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = make_scheduler(optimizer)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_multistep_matches_torch_multisteplr():
    expected = torch_rates(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [3, 5, 8], gamma=0.5), 10, 1e-3)
    ours = [lr_at("multistep", 1e-3, epoch, 10, milestones=[3, 5, 8], gamma=0.5) for epoch in range(10)]
    assert ours == pytest.approx(expected, rel=1e-12)


def test_cosine_matches_torch_cosine_annealing():
    expected = torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12, eta_min=0.01), 12, 0.4)
    ours = [lr_at("cosine", 0.4, epoch, 12, min_lr=0.01) for epoch in range(12)]
    assert ours == pytest.approx(expected, rel=1e-9)


def test_warmup_is_linear_and_unknown_names_are_rejected():
    assert lr_at("multistep", 0.1, 0.25, 10, warmup=0.5, milestones=[1]) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="expected 'cosine', 'multistep' or 'constant'"):
        lr_at("step", 0.1, 1, 10)
