"""spikeforge -> NIR (file) -> spikeforge gives identical spikes; unsupported layers are named."""

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge import models
from spikeforge.convert import QCFS, apply_masks, scaled_neurons, to_snn
from spikeforge.models import activation_factory, fold_bn
from spikeforge.models.resnet import BasicBlock, ResNet
from spikeforge.models.sew_resnet import SEWBlock

nir = pytest.importorskip("nir")
from nir_helpers import randomise_bn, run_recording  # noqa: E402

from spikeforge.export import from_nir, neuron_to_node, to_nir  # noqa: E402


def folded(net: nn.Module) -> nn.Module:
    """The network with batch norm folded: the reference the export must reproduce bit for bit."""
    ref = copy.deepcopy(net).eval()
    fold_bn(ref)
    return ref


def round_trip(net: nn.Module, sample: torch.Tensor, tmp_path, **kwargs) -> nn.Module:
    path = tmp_path / "net.nir"
    nir.write(str(path), to_nir(net, sample, **kwargs))
    return from_nir(path)


def assert_same_spikes(net, again, x):
    out, spikes = run_recording(folded(net), x)
    out_again, spikes_again = run_recording(again, x)
    assert len(spikes) == len(spikes_again) > 0
    for ours, theirs in zip(spikes, spikes_again):
        assert torch.equal(ours, theirs)
    assert torch.equal(out, out_again)
    assert sum(float(s.sum()) for s in spikes) > 0


def test_small_conv_net_round_trip_gives_identical_spikes(tmp_path):
    torch.manual_seed(0)
    net = randomise_bn(models.create("digits_cnn", 10, neuron="lif", timesteps=5, width=4))
    again = round_trip(net, torch.rand(2, 1, 16, 16), tmp_path)
    assert again.timesteps == 5 and not any(isinstance(m, nn.BatchNorm2d) for m in again.modules())
    assert_same_spikes(net, again, torch.rand(3, 1, 16, 16) * 2)
    assert_same_spikes(net, again, torch.rand(5, 2, 1, 16, 16) * 2)  # an event-frame sequence [T, B, C, H, W]


def test_converted_qcfs_net_round_trip_gives_identical_spikes(tmp_path):
    torch.manual_seed(1)
    ann = randomise_bn(models.create("digits_cnn", 10, neuron="qcfs", neuron_kwargs={"levels": 4}, width=4))
    with torch.no_grad():
        for i, q in enumerate(m for m in ann.modules() if isinstance(m, QCFS)):
            q.lam.fill_(0.6 + 0.5 * i)
    snn = to_snn(ann, timesteps=8)  # BN kept: the export folds it
    again = round_trip(snn, torch.rand(1, 1, 16, 16), tmp_path)
    neurons = sf.neurons(again)
    assert [n.v_init for n in neurons] == pytest.approx([0.3, 0.55]) and all(not n.spec.hard_reset for n in neurons)
    assert_same_spikes(snn, again, torch.rand(2, 1, 16, 16))


@pytest.mark.parametrize("block", [BasicBlock, SEWBlock])
def test_residual_networks_round_trip(block, tmp_path):
    torch.manual_seed(2)
    act = activation_factory("lif", {"v_th": 0.5})
    net = sf.SpikingNetwork(randomise_bn(ResNet(act, block, (4, 8), (1, 2), num_classes=3, pool="avg")), timesteps=3)
    graph = to_nir(net, torch.rand(1, 3, 8, 8))
    sums = [name for name in graph.nodes if sum(dst == name for _, dst in graph.edges) == 2]
    assert sums  # residual sums are nodes with two incoming edges
    again = round_trip(net, torch.rand(1, 3, 8, 8), tmp_path)
    assert_same_spikes(net, again, torch.rand(2, 3, 8, 8) * 2)


def test_export_leaves_the_model_unchanged_and_records_dt():
    net = models.create("digits_cnn", 10, neuron="lif", timesteps=3, width=4).eval()
    before = copy.deepcopy(net.state_dict())
    graph = to_nir(net, torch.rand(1, 1, 16, 16), dt=1e-3)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert graph.metadata["spikeforge.dt"] == 1e-3 and graph.metadata["spikeforge.timesteps"] == 3
    assert np.allclose(graph.nodes["0.act"].tau, 2e-3)
    assert from_nir(graph).backbone.layers[1].decay == pytest.approx(0.5)
    assert from_nir(graph, dt=2e-3).backbone.layers[1].decay == pytest.approx(0.0)


def test_a_net_in_training_mode_exports_its_evaluation_mode(tmp_path):
    torch.manual_seed(4)
    net = models.create("digits_cnn", 10, neuron="lif", timesteps=4, width=4).train()
    with torch.no_grad():
        for _ in range(3):  # training-mode passes move the running statistics
            net(torch.rand(8, 1, 16, 16) * 2)
    x = torch.rand(3, 1, 16, 16) * 2
    again = round_trip(net, x, tmp_path)
    assert all(m.training for m in net.modules())  # the model's mode is left as it was
    with torch.no_grad():
        batch_statistics = copy.deepcopy(net)(x)  # a copy: a training-mode pass would move the statistics again
        net.eval()
        logits = net(x)
        assert (batch_statistics - logits).abs().max() > 0.05  # the two modes differ: the check below can fail
        torch.testing.assert_close(again(x), logits, rtol=0, atol=1e-5)


def test_a_single_channel_graph_keeps_its_channel():
    """Input [1, 8, 8] and Output [1, 8, 8] from spikeforge: a channel, not the batch of 1 nirtorch leaves."""
    torch.manual_seed(5)
    net = sf.SpikingNetwork(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), sf.LIF()), timesteps=2).eval()
    graph = to_nir(net, torch.rand(1, 1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = from_nir(graph)
    x = torch.rand(2, 1, 8, 8) * 3
    with torch.no_grad():
        assert torch.equal(again(x), net(x))


class Doubled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(1, 2, 3), sf.LIF()

    def forward(self, x):
        return self.act(self.conv(x) * 2)


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = sf.LIF()

    def forward(self, x):
        return self.act(self.act(x))


@pytest.mark.parametrize("make, shape, message", [
    (lambda: models.create("cifar_fast", 10, neuron="lif", widths=(4, 4, 4), stem_width=4), (3, 32, 32),
     r"layer 1\.pool \(MaxPool2d\)"),
    (lambda: nn.Sequential(nn.Conv2d(3, 2, 3), sf.LIF(), nn.ReLU()), (3, 8, 8), r"layer 2 \(ReLU\)"),
    (lambda: ResNet(activation_factory("lif"), lambda *a: SEWBlock(*a, connect="and"), (4,), (1,), pool="avg"),
     (3, 8, 8), r"mul"),
    (lambda: Doubled(), (1, 8, 8), r"mul"),
    (lambda: Twice(), (1, 8, 8), r"layer act: it is called more than once"),
    (lambda: models.create("digits_cnn", 10, neuron="relu", width=4), (1, 16, 16), r"no spiking neurons"),
])
def test_unsupported_layers_are_named(make, shape, message):
    with pytest.raises(ValueError, match=message):
        to_nir(make().eval(), torch.rand(1, *shape))


def test_srp_mask_is_not_exportable():
    ann = models.create("digits_cnn", 10, neuron="qcfs", width=4).eval()
    snn = to_snn(ann, timesteps=2)
    neuron = scaled_neurons(snn)[0]
    with apply_masks({neuron: torch.ones(1)}), pytest.raises(ValueError, match="SRP mask"):
        to_nir(snn, torch.rand(1, 1, 16, 16))


def test_import_names_unsupported_nodes_and_cycles():
    ones = np.ones(2)
    cuba = nir.CubaLIF(tau_syn=ones, tau_mem=ones, r=ones, v_leak=0 * ones, v_threshold=ones)
    graph = nir.NIRGraph(nodes={"in": nir.Input(np.array([2])), "syn": cuba, "out": nir.Output(np.array([2]))},
                         edges=[("in", "syn"), ("syn", "out")])
    with pytest.raises(ValueError, match="node syn \\(CubaLIF\\)"):
        from_nir(graph)
    lif = nir.LIF(tau=ones, r=ones, v_leak=0 * ones, v_threshold=ones)
    loop = nir.NIRGraph(nodes={"in": nir.Input(np.array([2])), "lif": lif, "rec": nir.Linear(np.eye(2)),
                               "out": nir.Output(np.array([2]))},
                        edges=[("in", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out")], type_check=False)
    with pytest.raises(ValueError, match="recurrent"):
        from_nir(loop)


def test_import_names_the_node_that_cannot_take_its_input():
    flatten = nir.Flatten({"input": np.array([2, 4, 4])}, start_dim=0)
    flat = nir.NIRGraph(nodes={"in": nir.Input(np.array([2, 4, 4])), "flat": flatten,
                               "fc": nir.Affine(np.ones((3, 16)), np.zeros(3)), "out": nir.Output(np.array([3]))},
                        edges=[("in", "flat"), ("flat", "fc"), ("fc", "out")], type_check=False)
    with pytest.raises(ValueError, match=r"node fc \(Linear\) cannot take an input of shape \[32\]"):
        from_nir(flat)
    fork = nir.NIRGraph(nodes={"in": nir.Input(np.array([4])), "a": nir.Linear(np.ones((3, 4))),
                               "b": nir.Linear(np.ones((2, 4))), "out": nir.Output(np.array([3]))},
                        edges=[("in", "a"), ("in", "b"), ("a", "out"), ("b", "out")], type_check=False)
    with pytest.raises(ValueError, match=r"node out sums inputs of different shapes: a \[3\], b \[2\]"):
        from_nir(fork)


def test_a_neuron_that_resets_at_the_next_step_exports_only_where_nir_means_the_same():
    with pytest.raises(ValueError, match="cannot export neuron lif: reset_timing='next_step'"):
        neuron_to_node(sf.LIF(decay=0.9, reset="soft", reset_timing="next_step"), (3,), 1e-4, "lif")
    hard = neuron_to_node(sf.LIF(decay=0.9, reset_timing="next_step"), (3,), 1e-4, "lif")  # reset to 0: same spikes
    assert float(hard.v_reset[0]) == 0.0
