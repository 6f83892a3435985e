"""Training steps of ResNet-19 (T=4, batch 32, channels-last) with batch norm and neuron fused and apart,
alternating in one process: ``python step_ab.py ROUNDS [amp]``; prints each step's seconds and the medians."""

import statistics
import sys
import time

import torch
from torch import nn

from spikeforge import models
from spikeforge.core.fused_norm import norm_fusion
from spikeforge.runtime.devices import autocast

torch.manual_seed(0)
amp = "amp" in sys.argv
model = models.create("resnet19", num_classes=10, neuron="lif", timesteps=4).to(memory_format=torch.channels_last)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(32, 3, 32, 32).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (32,))


def step(fused: bool) -> None:
    with autocast(x.device, amp), norm_fusion(fused):
        loss = nn.functional.cross_entropy(model(x).mean(0).float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


seconds = {True: [], False: []}
for fused in seconds:  # warm-up
    step(fused)
for _ in range(int(sys.argv[1])):
    for fused in seconds:
        tic = time.perf_counter()
        step(fused)
        seconds[fused].append(time.perf_counter() - tic)
for fused, values in seconds.items():
    print("fused" if fused else "unfused", [round(v, 2) for v in values], "median", round(statistics.median(values), 3))
