"""Non-finite membranes: one documented rule, identical in every backend, and NaN is never silent.

The rule (see :mod:`spikeforge.core.neuron`): IEEE arithmetic; +inf fires and -inf does not;
the hard reset replaces the membrane by ``v_reset``, the soft one subtracts ``v_th``; a NaN
membrane emits a NaN spike and stays NaN. The oracle is a slow loop over Python floats.
"""

import math

import pytest
import torch
from kernel_cases import COLUMNS, INF, NAN, RESETS, expected_rule

import spikeforge as sf
from spikeforge import surrogate as sg
from spikeforge.core.kernels import NeuronSpec, cpu, run_multistep

BACKENDS = ["reference", "fused", "auto"] + (["cpu"] if cpu.compiler_available() else [])


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("timing", ["now", "next_step"])
@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("decay", [0.5, 1.0])
def test_every_backend_follows_the_documented_rule_on_inf_and_nan(reset, timing, strict, decay):
    spec = NeuronSpec(sg.Triangle, *RESETS[reset], False, strict, timing)
    want_spikes, want_state = expected_rule(reset, timing, strict, decay)
    assert want_spikes.isnan().any() and (want_spikes == 1).any()
    for dtype in (torch.float32, torch.float64):
        for grad in (False, True):
            x = torch.tensor(COLUMNS, dtype=dtype).T.contiguous().requires_grad_(grad)
            for backend in BACKENDS:
                spikes, state, _ = run_multistep(x, spec, decay, 1.0, 1.0, torch.tensor(1.0, dtype=dtype), 0.0,
                                                 backend)
                where = f"{backend}, {dtype}, grad={grad}"
                torch.testing.assert_close(spikes.detach().double(), want_spikes, rtol=0, atol=0, equal_nan=True,
                                           msg=lambda m, where=where: f"{where}: spikes differ from the rule\n{m}")
                torch.testing.assert_close(state.detach().double(), want_state, rtol=0, atol=0, equal_nan=True,
                                           msg=lambda m, where=where: f"{where}: final state differs from the rule"
                                                                      f"\n{m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_nan_input_makes_the_loss_nan_and_is_not_counted_as_a_spike(backend):
    x = torch.full((6, 2, 5), 0.75)
    x[2, 1, 3] = NAN
    neuron = sf.LIF(decay=0.5, backend=backend)
    spikes = neuron(x.requires_grad_())
    nan_steps = spikes[:, 1, 3].isnan().tolist()
    assert nan_steps == [False, False, True, True, True, True], f"NaN spikes at {nan_steps}: NaN must persist"
    assert spikes.isnan().sum() == 4 and torch.isnan(spikes.sum()), "the loss must become NaN"
    assert neuron.spike_counts.tolist() == spikes.detach().nansum(dim=(1, 2)).tolist()
    assert math.isfinite(neuron.firing_rate)
    spikes.sum().backward()  # the backward pass runs (its values are not specified)


def test_single_steps_follow_the_same_rule():
    lif = sf.LIF(decay=0.5, v_th=1.0)
    state = lif.initial_state(torch.zeros(3))
    outs = []
    for x_t in torch.tensor([[INF, NAN, -INF], [0.5, 0.5, 0.5]]):
        s, state = lif.step(x_t, state)
        outs.append(s)
    torch.testing.assert_close(torch.stack(outs), torch.tensor([[1.0, NAN, 0.0], [0.0, NAN, 0.0]]), equal_nan=True)
