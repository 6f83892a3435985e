"""Firing-rate monitor against rates computed from the neurons' output spikes."""

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.analysis import FiringRateMonitor


def small_snn(timesteps: int) -> sf.SpikingNetwork:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), sf.LIF(decay=0.5, v_th=0.5), nn.Flatten(),
                         nn.Linear(4 * 36, 6), sf.LIF(decay=0.5, v_th=0.5, backend="reference"))
    return sf.SpikingNetwork(body, timesteps=timesteps).eval()


def spikes_by_hand(model: nn.Module, calls) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per neuron layer: spikes and neurons per step, summed over the calls, read from the outputs."""
    sums = {}

    def keep(name):
        def hook(module, inputs, output):
            steps = module.timesteps
            per_step = output.reshape(steps, -1)  # [T*B, ...] -> [T, B*features]
            spikes, neurons = sums.get(name, (torch.zeros(0), torch.zeros(0)))
            size = max(len(spikes), steps)
            spikes = torch.nn.functional.pad(spikes, (0, size - len(spikes)))
            neurons = torch.nn.functional.pad(neurons, (0, size - len(neurons)))
            spikes[:steps] += per_step.sum(1)
            neurons[:steps] += per_step.shape[1]
            sums[name] = (spikes, neurons)
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in model.named_modules() if isinstance(m, sf.SpikingNeuron)]
    with torch.no_grad():
        for steps, x in calls:
            model.timesteps = steps
            model(x)
    for h in handles:
        h.remove()
    return sums


def test_rates_per_layer_and_step_match_the_output_spikes():
    model = small_snn(3)
    calls = [(3, torch.rand(3, 1, 6, 6)), (3, torch.rand(5, 1, 6, 6)), (2, torch.rand(4, 1, 6, 6))]
    expected = spikes_by_hand(model, calls)
    with torch.no_grad(), FiringRateMonitor(model) as monitor:
        for steps, x in calls:
            model.timesteps = steps
            model(x)
    rates = monitor.rates()
    assert [r.name for r in rates] == ["backbone.1", "backbone.4"]
    for rate in rates:
        spikes, neurons = expected[rate.name]
        assert rate.rate_per_step == pytest.approx((spikes / neurons).tolist())
        assert rate.rate == pytest.approx((spikes.sum() / neurons.sum()).item())
        assert rate.neuron_steps == neurons.sum().item()
    assert len(rates[0].rate_per_step) == 3 and 0 < rates[0].rate < 1


def test_monitor_is_attached_only_inside_the_context():
    model = small_snn(2)
    neurons = sf.neurons(model)
    for n in neurons:
        n.record_rate = False  # the monitor turns counting on while it runs, and restores the flag
    with FiringRateMonitor(model) as monitor:
        assert all(n.record_rate for n in neurons)
        model(torch.rand(2, 1, 6, 6))
    assert all(not n.record_rate and not n._forward_hooks for n in neurons)
    model(torch.rand(2, 1, 6, 6))  # not recorded
    assert monitor.rates()[0].neuron_steps == 2 * 2 * 4 * 36
    monitor.reset()
    assert monitor.rates() == []


def test_converted_network_reports_its_if_neurons():
    from spikeforge import models
    from spikeforge.convert import to_snn

    ann = models.create("digits_cnn", neuron="qcfs", width=2).eval()
    snn = to_snn(ann, timesteps=4)
    with torch.no_grad(), FiringRateMonitor(snn) as monitor:
        snn(torch.rand(2, 1, 16, 16))
    assert [r.name for r in monitor.rates()] == ["backbone.0.act", "backbone.2.act"]
    assert all(len(r.rate_per_step) == 4 for r in monitor.rates())
