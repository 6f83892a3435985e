"""ResNet-19 (T=4, batch 32, channels-last) training steps alternating between the compiled kernels' two ways
of running their ranges, in one process: on torch's OpenMP threads ("omp") and on the host's thread pool
("pool"); freed memory reused as the trainer does. Run from the repository root:

    python docs/measurements/train-step-openmp-2026-12-05/step_ab_openmp.py ours-amp 12
"""

import statistics
import sys
import time

import torch

sys.path.insert(0, "benchmarks")
import train_step as ts  # noqa: E402

from spikeforge.core.kernels import bits, cpu  # noqa: E402
from spikeforge.core.neuron import SpikingNeuron  # noqa: E402
from spikeforge.runtime.allocator import reuse_freed_memory  # noqa: E402

reuse_freed_memory()
kind, rounds, T = sys.argv[1], int(sys.argv[2]), 4
torch.manual_seed(0)
x = torch.randn(32, 3, 32, 32).to(memory_format=torch.channels_last)
y = torch.randint(0, 10, (32,))
net = ts.build(kind, "resnet19", T, 10).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
for _ in range(2):
    ts.step_fn(kind, net, opt, x, y, T)
specs = {m.spec for m in net.modules() if isinstance(m, SpikingNeuron)}
libs = [bits.load_codec()] + [cpu.load_kernel(s, d) for s in specs for d in (torch.float32, torch.bfloat16)]
times = {"omp": [], "pool": []}
for r in range(rounds):
    for mode in ("omp", "pool") if r % 2 == 0 else ("pool", "omp"):
        for lib in libs:
            lib.openmp = mode == "omp"
        tic = time.perf_counter()
        ts.step_fn(kind, net, opt, x, y, T)
        times[mode].append(time.perf_counter() - tic)
print(kind, {k: round(statistics.median(v), 3) for k, v in times.items()})
