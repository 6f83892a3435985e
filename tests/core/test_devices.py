import torch

from spikeforge.core.devices import sum_dtype
from spikeforge.train.losses import sdt_loss
from spikeforge.train.tasks import ClassificationTask


def test_metric_sums_are_float64_except_on_mps():
    assert sum_dtype(torch.device("cpu")) == torch.float64
    assert sum_dtype(torch.device("mps")) == torch.float32  # MPS has no float64
    outputs = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]])  # [T=1, B=3, K=2]
    labels = torch.tensor([0, 0, 0])
    sums = ClassificationTask(sdt_loss).sums(outputs, labels, torch.tensor(0.5))
    assert sums.dtype == torch.float64 and sums.tolist() == [1.5, 2.0, 3.0]
