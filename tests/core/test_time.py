"""Time convention: folding wrapper, encoders, explicit state scopes."""

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.core.synapse import Synapse


def small_backbone():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        sf.LIF(decay=0.5),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3),
    ).eval()


def test_folded_network_equals_stepwise_computation():
    backbone = small_backbone()
    net = sf.SpikingNetwork(backbone, timesteps=3)
    x = torch.randn(2, 2, 5, 5)
    out = net(x)
    assert out.shape == (3, 2, 3)
    # By hand: stateless layers per step, neuron over the time-first sequence.
    conv, bn, lif, flat, fc = backbone
    current = torch.stack([bn(conv(x))] * 3)
    spikes = lif(current)
    expected = torch.stack([fc(flat(spikes[t])) for t in range(3)])
    torch.testing.assert_close(out, expected)
    assert lif.timesteps is None  # the wrapper leaves no T behind


def test_timesteps_can_change_and_sequences_pass_through():
    net = sf.SpikingNetwork(small_backbone(), timesteps=2)
    assert net(torch.randn(4, 2, 5, 5)).shape == (2, 4, 3)
    net.timesteps = 5
    assert net(torch.randn(4, 2, 5, 5)).shape == (5, 4, 3)
    assert net(torch.randn(7, 4, 2, 5, 5)).shape == (7, 4, 3)
    with pytest.raises(ValueError, match="expected a static batch of rank 4"):
        net(torch.randn(4, 5, 5))


def test_folded_neuron_rejects_rows_not_divisible_by_t():
    lif = sf.LIF()
    lif.timesteps = 3
    with pytest.raises(ValueError, match="not a multiple of T=3"):
        lif(torch.randn(7, 2))


def test_poisson_encoder_rate():
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0, 1.7])
    spikes = sf.poisson_encode(p.expand(1000, -1), steps=20, generator=gen)
    assert spikes.shape == (20, 1000, 6)
    rate = spikes.mean(dim=(0, 1))
    target = p.clamp(0, 1)
    n = 20 * 1000
    assert torch.all((rate - target).abs() <= 5 * torch.sqrt(target * (1 - target) / n) + 1e-9)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_state_scope_chunks_equal_one_long_run(backend):
    lif = sf.LIF(decay=0.8, backend=backend)
    x = torch.rand(12, 3, 4) * 1.5
    whole = lif(x)
    with sf.state_scope(lif) as state:
        chunks = torch.cat([lif(x[:5]), lif(x[5:9]), lif(x[9:])])
        final = state[lif]
    assert torch.equal(chunks, whole)
    # The exposed membrane is the one the recurrence ends on.
    _, u_ref = sf.core.kernels.reference_multistep(x, lif.spec, 0.8, 1.0, 1.0, lif.surrogate.width, 0.0)
    torch.testing.assert_close(final, u_ref)
    # Outside the scope nothing is carried.
    assert torch.equal(lif(x[5:9]), whole[:4] * 0 + lif(x[5:9]))
    assert lif._scope is None


def test_state_scope_bptt_across_chunks_matches_whole_sequence():
    x = torch.rand(10, 6, dtype=torch.float64) * 1.5
    lif = sf.LIF(decay=0.7, learn_decay=True)
    x1 = x.clone().requires_grad_()
    lif(x1).sum().backward()
    grad_whole, grad_decay = x1.grad.clone(), lif.decay_logit.grad.clone()
    lif.zero_grad()
    x2 = x.clone().requires_grad_()
    with sf.state_scope(lif, detach=False):
        out = torch.cat([lif(x2[:4]), lif(x2[4:])])
    out.sum().backward()
    torch.testing.assert_close(x2.grad, grad_whole)
    torch.testing.assert_close(lif.decay_logit.grad, grad_decay)


def test_state_scope_record_only_and_shape_check():
    net = sf.SpikingNetwork(small_backbone(), timesteps=4)
    lif = net.backbone[2]
    x = torch.randn(2, 2, 5, 5)
    with sf.state_scope(net, carry=False) as state:
        a = net(x)
        b = net(x)
        assert state[lif].shape == (2, 4, 5, 5)
    assert torch.equal(a, b)
    with sf.state_scope(net) as state:
        net(x)
        with pytest.raises(ValueError, match="call state.clear"):
            net(torch.randn(3, 2, 5, 5))
        state.clear()
        net(torch.randn(3, 2, 5, 5))


def test_nested_scopes_are_refused():
    lif = sf.LIF()
    with sf.state_scope(lif):
        with pytest.raises(RuntimeError, match="already inside a state_scope"):
            with sf.state_scope(lif):
                pass


def test_batch_first_layout_and_time_mean():
    """input_layout="BT" takes a plain DataLoader batch [B, T, ...]; mean_over_time gives [B, K]."""
    backbone = small_backbone()
    seq = torch.randn(3, 2, 2, 5, 5)  # [T, B, C, H, W]
    per_step = sf.SpikingNetwork(backbone)(seq)
    batch_first = sf.SpikingNetwork(backbone, input_layout="BT")
    torch.testing.assert_close(batch_first(seq.transpose(0, 1)), per_step)
    mean = sf.SpikingNetwork(backbone, timesteps=3, mean_over_time=True)
    torch.testing.assert_close(mean(seq), per_step.mean(0))
    image = torch.randn(2, 2, 5, 5)
    torch.testing.assert_close(mean(image), sf.SpikingNetwork(backbone, timesteps=3)(image).mean(0))
    assert "input_layout='BT'" in repr(batch_first) and "mean_over_time=True" in repr(mean)
    with pytest.raises(ValueError, match="input_layout must be 'TB'"):
        sf.SpikingNetwork(backbone, input_layout="NT")


def test_network_steps_equal_one_call_in_values_and_gradients():
    """SpikingNetwork.step in a loop (closed-loop use) = one call on the stacked steps (eval-mode BN)."""
    torch.manual_seed(1)
    backbone = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), sf.LIF(decay=0.6, learn_threshold=True),
        nn.Flatten(), nn.Linear(4 * 5 * 5, 6),
        Synapse(0.5), sf.LIF(decay=0.8, reset="soft", reset_timing="next_step"),
        nn.Linear(6, 3),
    ).eval()
    net = sf.SpikingNetwork(backbone)
    seq = torch.randn(5, 2, 2, 5, 5) * 2
    upstream = torch.randn(5, 2, 3)
    whole = net(seq)
    (whole * upstream).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    state, outs = None, []
    for x_t in seq:
        out, state = net.step(x_t, state)
        outs.append(out)
    stepped = torch.stack(outs)
    (stepped * upstream).sum().backward()
    torch.testing.assert_close(stepped, whole)
    for p, g in zip(net.parameters(), grads):
        torch.testing.assert_close(p.grad, g)
    assert len(state) == 3 and all(n._scope is None for n in sf.neurons(net))
    with pytest.raises(ValueError, match="step expects one time step of rank 4"):
        net.step(seq, None)
