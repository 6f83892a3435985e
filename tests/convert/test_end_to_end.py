"""Train a tiny QCFS ANN on the embedded digits, convert it, and check that lambda learns and
the SNN approaches the ANN as T grows (spec section 7)."""

import pytest
import torch
from torch.utils.data import DataLoader

from spikeforge import models
from spikeforge.convert import QCFS, evaluate_over_time, to_snn
from spikeforge.data import build_dataset


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    train_set, test_set = build_dataset("digits", train=True), build_dataset("digits", train=False)
    ann = models.create("digits_cnn", 10, neuron="qcfs", neuron_kwargs={"levels": 4, "threshold": 4.0}, width=8)
    opt = torch.optim.SGD(ann.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    ann.train()
    for _ in range(2):
        for x, y in DataLoader(train_set, batch_size=64, shuffle=True):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ann(x), y).backward()
            opt.step()
    return ann.eval(), test_set


def test_trained_qcfs_converts_and_converges(trained):
    ann, test_set = trained
    lams = [m.threshold for m in ann.modules() if isinstance(m, QCFS)]
    assert any(abs(lam - 4.0) > 1e-3 for lam in lams) and min(lams) > 0  # lambda is trained
    loader = DataLoader(test_set, batch_size=512)
    with torch.no_grad():
        ann_acc = sum((ann(x).argmax(-1) == y).sum().item() for x, y in loader) / len(test_set)
    assert ann_acc > 0.5
    plain = evaluate_over_time(to_snn(ann), loader, timesteps=32, chunk=16)
    assert abs(plain.at(32) - ann_acc) < 0.05
    assert plain.at(32) >= plain.at(1)
    srp = evaluate_over_time(to_snn(ann, bn="fold"), loader, timesteps=4, srp_tau=4)
    assert srp.samples == len(test_set) and srp.total_steps == [5, 6, 7, 8]
