"""Operation counts: a network with known spikes counted by hand, ANN MACs against
torch.utils.flop_counter, and the pooling / residual-add conventions."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import spikeforge as sf
from spikeforge import models
from spikeforge.analysis import EnergyModel, OperationCounter, energy_report


def known_spikes_network() -> sf.SpikingNetwork:
    """conv1 (1->2, 3x3, pad 1) passes the image to channel 0 and nothing to channel 1;
    conv2 (2->3, 3x3, stride 2, pad 1) sums channel 0's 3x3 window into its channel 0;
    IF neurons (threshold 1, hard reset, fire on v >= 1); linear 12 -> 5. T = 2."""
    conv1 = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    conv2 = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False)
    with torch.no_grad():
        conv1.weight.zero_()
        conv1.weight[0, 0, 1, 1] = 1.0
        conv2.weight.zero_()
        conv2.weight[0, 0] = 1.0
    body = nn.Sequential(conv1, sf.IF(v_th=1.0, reset="hard"), conv2, sf.IF(v_th=1.0, reset="hard"),
                         nn.Flatten(), nn.Linear(12, 5))
    return sf.SpikingNetwork(body, timesteps=2)


def known_image() -> torch.Tensor:
    """Inputs 1.0 at (0,0) and (3,1) fire at both steps; 0.5 at (1,2) fires at step 2 only."""
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = x[0, 0, 3, 1] = 1.0
    x[0, 0, 1, 2] = 0.5
    return x


def test_hand_counted_sops_macs_and_energy():
    # second batch: a blank image (no spikes), so per-sample SOPs are half of the first image's
    report = energy_report(known_spikes_network(), [known_image(), torch.zeros(1, 1, 4, 4)])
    conv1, conv2, fc = report.ops.layers
    assert report.ops.samples == 2 and report.ops.timesteps == 2 and report.ops.static_input
    # conv1 sees the image: dense MACs 16 positions x 2 out x 1 in x 9 taps = 288 per step, at both steps
    assert (conv1.kind, conv1.analog_input, conv1.input_rate) == ("conv", True, None)
    assert (conv1.ann_macs, conv1.snn_macs, conv1.snn_sops) == (288, 576, 0)
    # conv2: 2x2 outputs x 3 out x 2 in x 9 = 216 MACs. Along one axis, rows 0..3 are read by
    # 1, 2, 1, 1 output windows, so a spike at (i, j) reaches r(i) r(j) x 3 outputs:
    # step 1: (0,0) -> 3, (3,1) -> 6; step 2: the same plus (1,2) -> 6. Total 24 over the two images.
    assert (conv2.ann_macs, conv2.snn_macs, conv2.snn_sops) == (216, 0, 24 / 2)
    assert conv2.input_rate == 5 / (2 * 2 * 32)  # 5 spikes over 2 images x 2 steps x 32 neurons
    # neuron 2 (output 0 = window sums of channel 0): step 1 fires at (0,0), (1,0), (1,1);
    # step 2 at all four positions: 7 spikes x 5 outputs = 35 SOPs
    assert (fc.kind, fc.ann_macs, fc.snn_sops) == ("linear", 60, 35 / 2)
    assert fc.input_rate == 7 / (2 * 2 * 12)

    totals = report.totals()
    assert totals["ann_energy_pj"] == pytest.approx((288 + 216 + 60) * 4.6)
    assert totals["snn_energy_pj"] == pytest.approx(576 * 4.6 + (24 + 35) / 2 * 0.9)
    assert totals["ann_over_snn"] == pytest.approx(totals["ann_energy_pj"] / totals["snn_energy_pj"])
    assert totals["snn_macs_static_once"] == 288
    assert totals["snn_energy_static_once_pj"] == pytest.approx(288 * 4.6 + 59 / 2 * 0.9)

    first, second = report.rates
    assert first.rate_per_step == [2 / 64, 3 / 64]  # 2 images x 32 neurons per step
    assert second.rate_per_step == [3 / 24, 4 / 24]


def test_energy_model_is_configurable_and_checked():
    report = energy_report(known_spikes_network(), [known_image()], EnergyModel(e_mac=3.0, e_ac=0.5))
    assert report.totals()["snn_energy_pj"] == pytest.approx(576 * 3.0 + 59 * 0.5)
    with pytest.raises(ValueError, match="e_ac"):
        EnergyModel(e_ac=-1.0)


def test_spike_input_counts_sops_in_the_first_layer():
    x = (torch.rand(2, 1, 4, 4) < 0.5).float()
    report = energy_report(known_spikes_network(), [x], input_is_spikes=True)
    conv1 = report.ops.layers[0]
    assert conv1.snn_macs == 0 and not conv1.analog_input
    # 3x3 stride-1 pad-1 on 4x4: rows read by 2, 3, 3, 2 windows; 2 output channels; same input at both steps
    reads = torch.tensor([2.0, 3, 3, 2])
    assert conv1.snn_sops == pytest.approx(2 * 2 * (x[:, 0] * reads[:, None] * reads).sum().item() / 2)


def test_poisson_encoding_counts_the_input_as_spikes():
    net = known_spikes_network()
    net.encoding = "poisson"
    report = energy_report(net, [torch.rand(2, 1, 4, 4)])
    assert report.ops.layers[0].snn_macs == 0 and not report.ops.static_input


class TwoNeuronBlock(nn.Module):
    """Two IF neurons on the same input (thresholds 1 and 2), their spikes added, then 2x2 average pooling."""

    def __init__(self):
        super().__init__()
        self.fast = sf.IF(v_th=1.0, reset="hard")
        self.slow = sf.IF(v_th=2.0, reset="hard")
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        both = self.fast(x) + self.slow(x)
        return self.pool(both + both)  # a second add, counted as <module>.add2


def test_residual_adds_and_pooling_accumulate_nonzero_inputs_only():
    net = sf.SpikingNetwork(nn.Sequential(TwoNeuronBlock(), nn.Flatten()), timesteps=2)
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, :2] = 1.0  # two pixels: fast fires at steps 1 and 2, slow at step 2
    report = energy_report(net, [x])
    add, add2, pool = report.ops.layers
    assert (add.name, add2.name, pool.name) == ("backbone.0.add", "backbone.0.add2", "backbone.0.pool")
    # ANN: one accumulate per operand element (2 x 16); SNN: per nonzero operand element (4 + 2 spikes)
    assert (add.kind, add.ann_acs, add.snn_sops, add.ann_macs) == ("add", 32, 6, 0)
    assert add.input_rate == 6 / 64
    # add2: `both` nonzero at 2 pixels per step in both operands; pool: non-overlapping, each input read once
    assert (add2.ann_acs, add2.snn_sops) == (32, 8)
    assert (pool.kind, pool.ann_acs, pool.snn_sops) == ("pool", 16, 4)


def test_adds_inside_neurons_and_with_scalars_are_not_counted():
    net = sf.SpikingNetwork(nn.Sequential(nn.Conv2d(1, 2, 3), sf.LIF(backend="reference"), nn.Flatten()), 3)
    report = energy_report(net, [torch.rand(2, 1, 5, 5)])
    assert [layer.kind for layer in report.ops.layers] == ["conv"]


def flop_counter_macs(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2


@pytest.mark.parametrize("name, kwargs", [
    ("cifar_fast", {}),
    ("resnet20", {}),
    ("vgg11", {}),
    ("sew_resnet18", {}),
])
def test_ann_macs_agree_with_torch_flop_counter(name, kwargs):
    x = torch.randn(2, 3, 32, 32)
    ann = models.create(name, neuron="relu", **kwargs).eval()
    reference = flop_counter_macs(ann, x) / 2  # per sample
    ann_report = energy_report(ann, [x])
    assert ann_report.ops.total("ann_macs") == reference
    assert ann_report.ops.total("snn_macs") == reference  # no neurons: everything is analog
    # the same architecture as an SNN: the ANN-equivalent MACs are those of one step
    snn = models.create(name, neuron="lif", timesteps=2, **kwargs).eval()
    assert energy_report(snn, [x]).ops.total("ann_macs") == reference
    residual_blocks = {"resnet20": 9, "sew_resnet18": 8}.get(name, 0)
    assert sum(layer.kind == "add" for layer in ann_report.ops.layers) == residual_blocks


def test_uncounted_layers_are_listed():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ConvTranspose2d(2, 1, 3))
    report = energy_report(model, [torch.rand(1, 1, 6, 6)])
    assert report.ops.uncounted == ["1"]


def test_max_samples_cuts_the_last_batch():
    batches = [(torch.rand(3, 1, 4, 4), torch.zeros(3)) for _ in range(3)]
    assert energy_report(known_spikes_network(), batches, max_samples=4).ops.samples == 4
    with pytest.raises(ValueError, match="max_samples"):
        energy_report(known_spikes_network(), batches, max_samples=0)


def test_sequence_input_is_cut_on_its_batch_dimension():
    seq = torch.rand(3, 5, 1, 4, 4)  # [T, B, C, H, W]
    report = energy_report(known_spikes_network(), [seq], max_samples=2)
    assert (report.ops.samples, report.ops.timesteps, report.ops.static_input) == (2, 3, False)
    assert report.totals()["snn_macs_static_once"] is None


def test_calls_with_different_timesteps_are_refused():
    net = known_spikes_network()
    with torch.no_grad(), OperationCounter(net) as counter:
        net(known_image())
        net.timesteps = 3
        net(known_image())
    with pytest.raises(ValueError, match="different numbers of time steps"):
        counter.result()


def test_counter_leaves_no_hooks_behind():
    net = known_spikes_network()
    with torch.no_grad(), OperationCounter(net):
        net(known_image())
    for module in net.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    with pytest.raises(ValueError, match="no forward call"):
        OperationCounter(net).result()
