import torch, time, statistics, sys
from torch import nn
from spikeforge import models
from spikeforge.core.fused_norm import norm_fusion
from spikeforge.runtime.devices import autocast
torch.manual_seed(0)
amp = "amp" in sys.argv
cl = torch.channels_last
m = models.create("resnet19", num_classes=10, neuron="lif", timesteps=4).to(memory_format=cl)
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(32,3,32,32).contiguous(memory_format=cl); y = torch.randint(0,10,(32,))
def step(f):
    with autocast(x.device, amp), norm_fusion(f):
        loss = nn.functional.cross_entropy(m(x).mean(0).float(), y)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
res = {True: [], False: []}
for f in (True, False): step(f)
for r in range(int(sys.argv[1])):
    for f in (True, False):
        t = time.perf_counter(); step(f); res[f].append(time.perf_counter()-t)
for f, v in res.items(): print("fused" if f else "unfused", [round(a,2) for a in v], "median", round(statistics.median(v),3))
