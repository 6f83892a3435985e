"""Synaptic current layer: the documented filter, folding, state scopes, steps, and Norse's LIFCell."""

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge import surrogate as sg
from spikeforge.core.synapse import Synapse


def test_current_matches_a_slow_python_loop():
    x = torch.randn(9, 4, dtype=torch.float64)
    currents = Synapse(0.8)(x)
    for i in range(4):
        current = 0.0
        for t in range(9):
            current = 0.8 * current + x[t, i].item()
            assert currents[t, i].item() == pytest.approx(current, rel=1e-12)


def test_folded_chunked_and_stepped_runs_agree():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(3, 5), Synapse(0.7), sf.LIF(decay=0.9, input_scale=0.3))
    seq = torch.randn(6, 2, 3, dtype=torch.float64) * 3
    backbone.double()
    whole = sf.SpikingNetwork(backbone, static_ndim=2)(seq)
    assert 0 < whole.mean() < 1
    torch.testing.assert_close(backbone(seq), whole)  # direct [T, B, ...] call, no folding
    with sf.state_scope(backbone) as state:
        chunks = torch.cat([backbone(seq[:2]), backbone(seq[2:])])
        assert state[backbone[1]].shape == (2, 5)
    torch.testing.assert_close(chunks, whole)
    synapse, x = Synapse(0.6), seq.clone().requires_grad_()
    current, outs = synapse.initial_state(x[0]), []
    for x_t in x:
        out, current = synapse.step(x_t, current)
        outs.append(out)
    torch.stack(outs).sum().backward()
    x_whole = seq.clone().requires_grad_()
    synapse(x_whole).sum().backward()
    torch.testing.assert_close(torch.stack(outs), synapse(seq))
    torch.testing.assert_close(x.grad, x_whole.grad)
    with pytest.raises(ValueError, match=r"Synapse decay must lie in \[0, 1\]"):
        Synapse(1.5)


def test_norse_lifcell_is_a_synapse_then_a_lif():
    """Norse ``LIFCell()`` (dt = 1 ms, tau_syn = 5 ms, tau_mem = 10 ms, SuperSpike) =
    ``Synapse(1 - dt/tau_syn)`` then ``LIF(decay=1 - dt/tau_mem, input_scale=dt/tau_mem, strict=True,
    surrogate=SuperSpike(1.0))``: same spikes, input gradients within rounding."""
    norse = pytest.importorskip("norse.torch")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, 64, generator=gen, dtype=torch.float64) * 3 + 2
    upstream = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    x_peer, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    cell, state, peer = norse.LIFCell(), None, []
    for x_t in x_peer:
        z, state = cell(x_t, state)
        peer.append(z)
    peer = torch.stack(peer)
    lif = sf.LIF(decay=0.9, input_scale=0.1, strict=True, surrogate=sg.SuperSpike(1.0))
    ours = nn.Sequential(Synapse(0.8), lif)(x_ours)
    assert torch.equal(ours, peer) and 0.1 < peer.mean() < 0.9
    (peer * upstream).sum().backward()
    (ours * upstream).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_peer.grad, rtol=1e-6, atol=1e-6 * x_peer.grad.abs().max().item())
