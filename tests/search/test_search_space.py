"""SpikeDHS search space, decoding and retrained network, against independent references."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from spikeforge import models
from spikeforge.core.time import SpikingNetwork
from spikeforge.models.spikedhs.operations import SpikingNode, edge_inputs, resize_nearest, spikedhs_neuron
from spikeforge.search import (
    GENOTYPES,
    Genotype,
    decode_cell,
    load_genotype,
    save_genotype,
    transition_log_weights,
    viterbi_path,
)
from spikeforge.search.supernet import MixedCell, SearchNetwork


def _lif_by_hand(current: torch.Tensor) -> torch.Tensor:
    """SpikeDHS LIF as published: u = 0.2 u (1 - o) + I, o = [u > 0.5]; current [T, ...]."""
    u = torch.zeros_like(current[0])
    o = torch.zeros_like(current[0])
    out = []
    for i_t in current:
        u = 0.2 * u * (1 - o) + i_t
        o = (u > 0.5).float()
        out.append(o)
    return torch.stack(out)


def test_node_fires_like_one_lif_on_the_summed_current():
    torch.manual_seed(0)
    a, b = torch.randn(6, 3, 5), torch.randn(6, 3, 5)
    node = SpikingNode()
    spikes = node([(a, 3.0), (b, 5.0)])
    assert torch.equal(spikes, _lif_by_hand(a + b))


def test_each_current_gets_the_gradient_of_its_own_temperature():
    torch.manual_seed(1)
    a = torch.randn(5, 4, 7, requires_grad=True)
    b = torch.randn(5, 4, 7, requires_grad=True)
    weights = torch.randn(5, 4, 7)
    (SpikingNode()([(a, 3.0), (b, 5.0)]) * weights).sum().backward()
    for current, temperature in ((a, 3.0), (b, 5.0)):
        total = (a + b).detach().requires_grad_(True)
        (spikedhs_neuron(temperature)(total) * weights).sum().backward()
        torch.testing.assert_close(current.grad, total.grad)
    assert not torch.allclose(a.grad, b.grad)


def test_edge_numbering():
    assert edge_inputs(3) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (2, 3)]


def test_mixed_cell_shapes_and_strides():
    cell = MixedCell(c_s0=6, c_s1=12, channels=4, s0_stride=2, s1_stride=1)
    s0, s1 = torch.rand(2, 6, 8, 8), torch.rand(2, 12, 4, 4)
    spikedhs = [n.neuron for n in cell.nodes]
    for n in spikedhs:
        n.timesteps = 1
    out = cell(s0, s1, torch.softmax(torch.randn(9, 3), -1))
    assert out.shape == (2, 12, 4, 4)
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_a_cell_without_s0_sums_only_the_edges_from_s1_and_earlier_nodes():
    """Reference: the same cell with s0, its s0 edges (0, 2, 5) weighted 0 (their currents then add nothing)."""
    torch.manual_seed(0)
    alone = MixedCell(c_s0=None, c_s1=6, channels=4, s0_stride=1, s1_stride=1)
    both = MixedCell(c_s0=5, c_s1=6, channels=4, s0_stride=1, s1_stride=1)
    assert [len(ops) for ops in alone.ops] == [0, 3, 0, 3, 3, 0, 3, 3, 3]
    missing, unexpected = both.load_state_dict(alone.state_dict(), strict=False)
    assert not unexpected and {k.split(".")[1] for k in missing} == {"0", "2", "5"}
    for n in alone.nodes + both.nodes:
        n.neuron.timesteps = 1
    weights = torch.softmax(torch.randn(9, 3), -1)
    s1 = 2 * torch.rand(3, 6, 5, 5)
    without = alone(None, s1, weights)
    with_zero_s0 = both(torch.rand(3, 5, 5, 5), s1, weights.index_fill(0, torch.tensor([0, 2, 5]), 0.0))
    assert without.sum() > 0
    torch.testing.assert_close(without, with_zero_s0)


def test_decode_cell_keeps_the_two_strongest_non_skip_edges():
    alpha = torch.zeros(9, 3)
    alpha[1, 2] = 3.0  # node 0: s1 with snn_b5 ...
    alpha[0, 1] = 2.0  # ... and s0 with snn_b3
    alpha[2, 0] = 9.0  # node 1: a strong skip does not count for ranking ...
    alpha[4, 1] = 2.0  # node 1: node0 with snn_b3
    alpha[3, 2] = 1.0  #         s1 with snn_b5
    alpha[8, 2] = 4.0  # node 2: node1 snn_b5
    alpha[5, 1] = 3.5  #         s0 snn_b3
    cell = decode_cell(alpha)
    assert cell == ((0, "snn_b3"), (1, "snn_b5"), (3, "snn_b5"), (4, "snn_b3"), (5, "snn_b3"), (8, "snn_b5"))


def test_decode_cell_keeps_skip_connect_where_it_is_a_kept_edge_s_strongest_operation():
    alpha = torch.zeros(9, 3)
    alpha[0] = torch.tensor([4.0, 3.0, 0.0])  # node 0: ranked by snn_b3, but skip weighs more
    alpha[1, 2] = 2.0
    alpha[3, 1] = 2.0  # node 1
    alpha[4] = torch.tensor([1.0, 0.0, 1.5])
    alpha[6, 2] = 2.0  # node 2
    alpha[7] = torch.tensor([2.5, 2.0, 0.0])
    assert decode_cell(alpha) == ((0, "skip_connect"), (1, "snn_b5"), (3, "snn_b3"), (4, "snn_b5"),
                                  (6, "snn_b5"), (7, "skip_connect"))


def _brute_force_path(beta: torch.Tensor, moves: tuple[int, ...] = (0, 1)) -> tuple[int, ...]:
    """Every path from level 0 changing by one of ``moves`` per layer inside the levels, scored by the
    product of the softmax over the moves that stay inside times their share of all moves (the published
    weighting: 1/2 for the lowest level's one move of two, 2/3 at the boundaries of a 3-way trellis),
    written out per level, without masking."""
    layers, levels, _ = beta.shape
    best, best_path = -1.0, None
    for choice in itertools.product(moves, repeat=layers):
        level, score, path = 0, 1.0, []
        for layer, move in enumerate(choice):
            allowed = [m for m in moves if 0 <= level + m < levels]
            if move not in allowed:
                score = -1.0
                break
            logits = beta[layer, level].double()
            denominator = sum(math.exp(float(logits[moves.index(m)])) for m in allowed)
            score *= math.exp(float(logits[moves.index(move)])) / denominator * len(allowed) / len(moves)
            level += move
            path.append(level)
        if score > best:
            best, best_path = score, tuple(path)
    return best_path


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_matches_brute_force(seed):
    torch.manual_seed(seed)
    beta = 2 * torch.randn(7, 4, 2)
    assert viterbi_path(beta) == _brute_force_path(beta)


@pytest.mark.parametrize("trellis, moves", [("down", 2), ("updown", 3)])
def test_uniform_beta_decodes_to_the_highest_resolution_path(trellis, moves):
    # every path is equally likely: the tie-break (smaller move, higher resolution) keeps level 0
    assert viterbi_path(torch.zeros(8, 4, moves), trellis) == (0,) * 8


def test_viterbi_on_a_known_table():
    beta = torch.zeros(8, 4, 2)
    beta[:, :, 0] = 1.0  # stay everywhere ...
    beta[2, 0] = torch.tensor([0.0, 3.0])  # ... except: go down at layer 2 from level 0
    beta[5, 1] = torch.tensor([0.0, 3.0])  # and at layer 5 from level 1
    assert viterbi_path(beta) == (0, 0, 1, 1, 1, 2, 2, 2)


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_on_the_updown_trellis_matches_brute_force(seed):
    torch.manual_seed(seed)
    beta = 2 * torch.randn(6, 4, 3)
    path = viterbi_path(beta, "updown")
    assert path == _brute_force_path(beta, (-1, 0, 1))
    Genotype(GENOTYPES["spikedhs_cifar"].cell, path, trellis="updown")  # a valid stereo path


def test_transition_weights_mask_the_moves_that_leave_the_trellis():
    beta = torch.randn(5, 4, 3)
    w = transition_log_weights(beta, "updown").exp()
    torch.testing.assert_close(w.sum(-1), torch.tensor([2 / 3, 1, 1, 2 / 3]).expand(5, 4))
    assert torch.all(w[:, 0, 0] == 0) and torch.all(w[:, -1, 2] == 0)  # no up from level 0, no down from the lowest
    torch.testing.assert_close(w[:, 1], torch.softmax(beta[:, 1], -1))  # inner levels: the plain softmax
    torch.testing.assert_close(w[:, 0], torch.softmax(beta[:, 0].masked_fill(torch.tensor([True, False, False]),
                                                                              -math.inf), -1) * 2 / 3)
    down = transition_log_weights(beta[..., :2], "down").exp()
    torch.testing.assert_close(down[:, -1], torch.tensor([0.5, 0.0]).expand(5, 2))  # the lowest level's one move
    with pytest.raises(ValueError, match=r"beta of the 'updown' trellis must be \[layers, levels, 3\]"):
        transition_log_weights(beta[..., :2], "updown")


def test_genotype_json_round_trip_and_validation(tmp_path):
    g = GENOTYPES["spikedhs_cifar"]
    assert g.cell == ((1, "snn_b3"), (0, "snn_b3"), (3, "snn_b5"), (2, "snn_b3"), (7, "snn_b3"), (8, "snn_b3"))
    path = save_genotype(g, tmp_path / "g.json")
    assert load_genotype(path) == g == load_genotype(json.loads(path.read_text())) == load_genotype("spikedhs_cifar")
    with pytest.raises(ValueError, match="does not enter node 1"):
        Genotype(((0, 1), (1, 1), (0, 1), (3, 1), (7, 1), (8, 1)), (0,))
    with pytest.raises(ValueError, match="change by 0 or 1 per layer"):
        Genotype(g.cell, (0, 2))
    with pytest.raises(ValueError, match="change by 0 or 1 per layer"):
        Genotype(g.cell, (1, 0))  # going up needs the stereo trellis
    updown = Genotype(g.cell, (1, 2, 2, 1, 0), trellis="updown")
    assert load_genotype(json.loads(json.dumps(updown.to_dict()))) == updown
    with pytest.raises(ValueError, match=r"change by -1 or 0 or 1 per layer \(trellis 'updown'\)"):
        Genotype(g.cell, (1, 3), trellis="updown")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json is not valid genotype JSON"):
        load_genotype(tmp_path / "bad.json")


def test_genotype_files_with_the_old_steps_key_still_load(tmp_path):
    """Genotype JSON written before ``steps`` was renamed ``nodes`` loads; saving writes ``nodes``."""
    g = GENOTYPES["spikedhs_cifar"]
    old = {key: value for key, value in g.to_dict().items() if key != "nodes"} | {"steps": 3}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert load_genotype(tmp_path / "old.json") == g
    assert "steps" not in g.to_dict() and g.to_dict()["nodes"] == 3 == g.nodes
    four = Genotype(g.cell + ((11, "skip_connect"), (12, "snn_b5")), g.path, nodes=4)
    assert load_genotype({**{k: v for k, v in four.to_dict().items() if k != "nodes"}, "steps": 4}) == four
    with pytest.raises(ValueError, match=r"genotype keys nodes \(3\) and steps \(its old name, 4\) disagree"):
        Genotype.from_dict({**g.to_dict(), "steps": 4})


def test_published_network_parameter_count(build_on_meta):
    """Spec: 14,315,363 in the official log = 14,293,758 network + 5 DGS stem copies (5 x 4,320) + 5 alphas."""
    net = build_on_meta("spikedhs", num_classes=10, neuron="lif")
    count = sum(p.numel() for p in net.parameters())
    assert count + 5 * 4320 + 5 == 14_315_363
    aux = build_on_meta("spikedhs", num_classes=10, neuron="lif", auxiliary=True)
    assert sum(p.numel() for p in aux.parameters()) - count == 477_342


def test_decoded_operations_stay_distinct_in_the_retrained_net():
    """Same weights, one edge labelled snn_b3 vs snn_b5: equal spikes and logits, different gradients there."""
    base = GENOTYPES["spikedhs_cifar"]
    relabelled = Genotype(tuple((e, "snn_b3") for e, _ in base.cell), base.path[:4])
    original = Genotype(base.cell, base.path[:4])
    torch.manual_seed(0)
    nets = [models.create("spikedhs", 10, timesteps=2, genotype=g, base_channels=4) for g in (original, relabelled)]
    nets[1].load_state_dict(nets[0].state_dict())
    x = torch.rand(4, 3, 16, 16)
    grads, outputs = [], []
    for net in nets:
        net.train()
        out = net(x)
        out.square().sum().backward()
        outputs.append(out.detach())
        b5_edge = net.backbone.cells[0].edges[1][1]  # node 1, input s1: the snn_b5 edge of the published cell
        grads.append(b5_edge.conv.weight.grad.clone())
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.allclose(grads[0], grads[1])


def test_retrained_net_reduces_where_the_path_goes_down_and_has_an_aux_head():
    net = models.create("spikedhs", 10, timesteps=2, base_channels=2, auxiliary=True)
    sizes = []
    hooks = [c.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for c in net.backbone.cells]
    net.train()
    logits, aux = net(torch.rand(2, 3, 32, 32))
    assert sizes == [32, 32, 16, 16, 16, 8, 8, 8]
    assert logits.shape == aux.shape == (2, 2, 10)
    net.eval()
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 2, 10)
    [h.remove() for h in hooks]
    with pytest.raises(ValueError, match="not spiking"):
        models.create("spikedhs", 10, neuron="relu")


def test_supernet_trellis_and_gradients():
    net = SearchNetwork(10, layers=3, levels=3, base_channels=2)
    # layer 0: levels 0 (same), 1 (down); layer 1: 0, 1 (same+down), 2 (down); layer 2: 0, 1, 2 (same+down) and 2 down
    assert sorted(net.cells) == sorted([
        "l0_k0_same", "l0_k1_down", "l1_k0_same", "l1_k1_same", "l1_k1_down", "l1_k2_down",
        "l2_k0_same", "l2_k1_same", "l2_k1_down", "l2_k2_same", "l2_k2_down"])
    model = SpikingNetwork(net, timesteps=2)
    x = torch.rand(3, 3, 16, 16)
    stem = net.stem(x)
    assert (stem < 0).any() and (stem.frac() != 0).any()  # analog: conv + BN, no LIF, no ReLU (spec 1.2)
    out = model(x)
    assert out.shape == (2, 3, 10)
    out.mean(0).logsumexp(-1).sum().backward()
    assert net.alpha.grad.abs().sum() > 0 and net.beta.grad[:, :-1].abs().sum() > 0
    assert net.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())  # every module is on the forward path
    assert {id(p) for p in net.weight_parameters()}.isdisjoint({id(net.alpha), id(net.beta)})
    assert any(p is net.classifier.weight for p in net.weight_parameters())  # the classifier trains (spec B4)
    w = net.transition_weights()
    torch.testing.assert_close(w.sum(-1), torch.tensor([1.0, 1.0, 0.5]).expand(3, 3))
    assert torch.equal(w[:, -1, 0], torch.full((3,), 0.5))  # the lowest level's one move weighs 1/2 (published)
    with pytest.raises(ValueError, match="cannot reach"):
        SearchNetwork(10, layers=2, levels=4)


def test_published_supernet_has_29_cell_positions():
    net = SearchNetwork(10, layers=8, levels=4, base_channels=1)
    positions = {key.rsplit("_", 1)[0] for key in net.cells}
    assert len(positions) == 2 + 3 + 4 * 6 == 29
    assert math.isclose(len(net.cells), 47)


def _conv_bn(c_in: int, c_out: int, kernel: int = 3, conv_bias: bool = False) -> int:
    """Parameters of a conv (weight, bias if any) followed by a BN (weight and bias per channel)."""
    return kernel * kernel * c_in * c_out + (c_out if conv_bias else 0) + 2 * c_out


def _search_cell(c_s0: int | None, c_s1: int, c: int) -> int:
    """Spec 4.1, 3 nodes: each node has one edge from s1 and (unless the cell has none) one from s0, each
    carrying 3 ops of conv 3x3 (with bias) + BN (skip_connect too, on a cell input); the 3 edges between nodes
    carry 2 (skip_connect is the identity)."""
    inputs = [c_s1] if c_s0 is None else [c_s0, c_s1]
    return sum(3 * 3 * _conv_bn(c_in, c, conv_bias=True) for c_in in inputs) + 3 * 2 * _conv_bn(c, c, conv_bias=True)


def _published_supernet() -> SearchNetwork:
    """The spikedhs-cifar10 recipe's supernet (8 layers, 4 levels, F = 8, 3 nodes), on the meta device."""
    with torch.device("meta"):
        return SearchNetwork(10, layers=8, levels=4, base_channels=8, nodes=3)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# (cell, s0 channels or None, s1 channels, node channels) at F = 8: level k has 8 * 2**k channels per node and
# 3 * 8 * 2**k = 24, 48, 96, 192 per state; the stem gives 24. In the official search code a level's first cells
# (layer 0 at level 0, layers k - 1 and k at level k) have no state two layers back at their level, so no s0.
_CELLS = [
    ("l0_k0_same", None, 24, 8), ("l0_k1_down", None, 24, 16),
    ("l1_k1_same", None, 48, 16), ("l1_k1_down", None, 24, 16), ("l1_k2_down", None, 48, 32),
    ("l2_k2_same", None, 96, 32), ("l2_k2_down", None, 48, 32), ("l2_k3_down", None, 96, 64),
    ("l3_k3_same", None, 192, 64), ("l3_k3_down", None, 96, 64),
    ("l1_k0_same", 24, 24, 8), ("l2_k1_down", 48, 24, 16), ("l7_k3_down", 192, 96, 64),  # s0 two layers back
]


def test_published_supernet_parameters_module_by_module():
    net = _published_supernet()
    assert _count(net.stem) == _conv_bn(3, 24) == 696  # non-spiking conv 3x3 without bias + BN, 3 -> 24
    # one down-sampling chain shared by all levels, 24 -> 48 -> 96 -> 192, then a 1x1 conv without bias or BN
    assert _count(net.down) == _conv_bn(24, 48) + _conv_bn(48, 96) + _conv_bn(96, 192) == 218_400
    assert _count(net.project) == 192 * 192
    assert _count(net.classifier) == 192 * 10 + 10
    for key, c_s0, c_s1, c in _CELLS:
        assert _count(net.cells[key]) == _search_cell(c_s0, c_s1, c), key
    assert [key for key, cell in net.cells.items() if not cell.ops[0]] == [key for key, c_s0, *_ in _CELLS
                                                                           if c_s0 is None]


def test_published_supernet_parameter_count():
    """The official count at F = 8, 26,205,173, includes modules its forward never calls (we do not build them):
    four 1x1 conv + BN layers left over from LEAStereo (24 -> 24, 48 -> 24, 96 -> 48, 192 -> 96) and the BN of
    the final 1x1 conv, built although that layer is created without BN."""
    unused = _conv_bn(24, 24, 1) + _conv_bn(48, 24, 1) + _conv_bn(96, 48, 1) + _conv_bn(192, 96, 1) + 2 * 192
    assert unused == 25_536
    assert _count(_published_supernet()) + unused == 26_205_173


def test_imagenet_stem_divides_the_size_by_four():
    net = models.create("spikedhs", 5, timesteps=1, stem="imagenet", base_channels=2, genotype=Genotype(
        GENOTYPES["spikedhs_cifar"].cell, (0, 1)))
    sizes = []
    net.backbone.cells[0].register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    assert net(torch.rand(2, 3, 32, 32)).shape == (1, 2, 5) and sizes == [8]
    with pytest.raises(ValueError, match="stem must be"):
        models.create("spikedhs", 5, stem="tiny")


@pytest.mark.parametrize("size, out, rows", [(7, 4, [0, 1, 3, 5]), (5, 3, [0, 1, 3]), (8, 4, [0, 2, 4, 6]),
                                             (9, 5, [0, 1, 3, 5, 7]), (4, 7, [0, 0, 1, 1, 2, 2, 3])])
def test_nearest_resizing_reads_the_published_rows(size, out, rows):
    # output index i reads input floor(i * size / out) (F.interpolate's nearest, which the official code calls)
    assert rows == [math.floor(i * size / out) for i in range(out)]
    x = torch.arange(size * size, dtype=torch.float32).view(1, 1, size, size)
    torch.testing.assert_close(resize_nearest(x, (out, out)), x[:, :, rows][:, :, :, rows])
    volume = torch.arange(size**3, dtype=torch.float32).view(1, 1, size, size, size)
    torch.testing.assert_close(resize_nearest(volume, (out,) * 3), volume[:, :, rows][:, :, :, rows][..., rows])
