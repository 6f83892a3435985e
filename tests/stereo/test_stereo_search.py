"""The stereo architecture search: 3-way trellis, stereo supernet, the search loop with task=stereo, recipes."""

from __future__ import annotations

import json

import pytest
import torch

from spikeforge import models
from spikeforge.core.time import SpikingNetwork
from spikeforge.models.spikedhs import level_sizes
from spikeforge.search.config import RETRAIN_RECIPES, build_search_config
from spikeforge.search.searcher import Searcher
from spikeforge.search.trellis import Trellis
from spikeforge.stereo import StereoGenotype, load_stereo_genotype
from spikeforge.stereo.search import FeatureSearchNet, StereoSearchNet
from spikeforge.train.config import build_config


def test_updown_trellis_has_up_same_and_down_cells_where_the_levels_exist():
    net = Trellis(6, layers=3, levels=3, base_channels=2, trellis="updown", downsample="nearest")
    assert sorted(net.cells) == sorted([
        "l0_k0_same", "l0_k1_down",
        "l1_k0_same", "l1_k0_up", "l1_k1_same", "l1_k1_down", "l1_k2_down",
        "l2_k0_same", "l2_k0_up", "l2_k1_up", "l2_k1_same", "l2_k1_down", "l2_k2_same", "l2_k2_down"])
    assert net.beta.shape == (3, 3, 3) and net.out_levels == [0, 1, 2]
    with pytest.raises(ValueError, match="needs downsample='nearest'"):
        Trellis(6, layers=3, levels=3, base_channels=2, trellis="updown")


def test_feature_trellis_cells_run_at_their_levels_size_and_spike():
    net = FeatureSearchNet(in_channels=5, out_channels=4, layers=3, levels=3, base_channels=2)
    sizes = level_sizes((9, 14), 3)  # the stem divides 27 x 40 by 3 (rounding up)
    seen = {}
    for key, cell in net.cells.items():
        cell.register_forward_hook(lambda m, i, o, key=key: seen.setdefault(key, o))
    out = SpikingNetwork(net, timesteps=2)(torch.randn(3, 5, 27, 40))
    assert out.shape == (2, 3, 4, 9, 14) and set(out.unique().tolist()) <= {0.0, 1.0}
    assert set(seen) == set(net.cells)
    for key, o in seen.items():
        level = int(key.split("_")[1][1:])
        assert o.shape[-2:] == sizes[level], key
        assert set(o.unique().tolist()) <= {0.0, 1.0}


class _LastStates(torch.nn.Module):
    """The trellis' last-layer states of every level, flattened into one tensor per sample."""

    def __init__(self, net: FeatureSearchNet):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.cat([s.flatten(1) for s in self.net.run_cells(self.net.stem(x))], 1)


def test_a_transition_of_weight_zero_cuts_its_cell_out():
    """Cell outputs are weighted by the transition probabilities: a cell whose move has probability 0
    cannot change the trellis' states, the others do."""
    torch.manual_seed(0)
    net = FeatureSearchNet(in_channels=2, out_channels=3, layers=2, levels=2, base_channels=2).train()
    with torch.no_grad():
        net.beta.zero_()
        net.beta[1, 1, 0] = -1e4  # layer 1: the move up from level 1 to level 0 gets probability 0
    assert net.transition_weights()[1, 1, 0] == 0
    model = SpikingNetwork(_LastStates(net), timesteps=2)
    x = 3 * torch.randn(2, 2, 24, 30)
    with torch.no_grad():
        reference = model(x)
        assert reference.abs().sum() > 0
        for p in net.cells["l1_k0_up"].parameters():
            p.add_(torch.randn_like(p))
        assert torch.equal(model(x), reference)
        for p in net.cells["l1_k0_same"].parameters():
            p.add_(torch.randn_like(p))
        assert not torch.equal(model(x), reference)


def test_stereo_supernet_trains_both_trellises_and_decodes_a_retrainable_genotype(mvsec_pair, tmp_path):
    from spikeforge.models.spikedhs.genotype import save_genotype
    from spikeforge.stereo.loss import build_stereo_loss

    torch.manual_seed(0)
    item = mvsec_pair[0][0]
    views = torch.stack([item["left"], item["right"]])[None]  # [1, 2, 5, 30, 36]
    net = StereoSearchNet(in_channels=5, feature_layers=2, matching_layers=3, levels=3, base_channels=2,
                          max_disparity=24, timesteps=2).train()
    out = net(views)
    assert out.disparity.shape == (1, 30, 36) and out.log_prob.shape == (1, 24, 30, 36)
    build_stereo_loss("subpixel_ce", max_disparity=24)(out.log_prob, out.disparity, item["disparity"][None]).backward()
    arch = net.arch_parameters()
    assert len(arch) == 4 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in arch)
    trellises = net.trellises
    assert [id(p) for p in arch] == [id(p) for t in trellises.values() for p in (t.alpha, t.beta)]
    weights = {id(p) for p in net.weight_parameters()}
    assert (id(trellises["feature"].stem[0].conv.weight) in weights
            and id(trellises["matching"].cost[0].weight) in weights)
    assert weights.isdisjoint({id(p) for p in arch})
    genotype = net.genotype()
    assert isinstance(genotype, StereoGenotype)
    assert len(genotype.feature.path) == 2 and len(genotype.matching.path) == 3
    assert genotype.feature.trellis == genotype.matching.trellis == "updown"
    path = save_genotype(genotype, tmp_path / "genotype.json")
    assert load_stereo_genotype(path) == genotype
    retrained = models.create("spikedhs_stereo", neuron="lif", timesteps=2, genotype=str(path), base_channels=2,
                              max_disparity=24).eval()
    with torch.no_grad():
        assert retrained(views).disparity.shape == (1, 30, 36)


def _stereo_search_config(**extra):
    overrides = ["supernet.levels=2", "supernet.matching_layers=2", "data.batch_size=2", "epochs=2",
                 "arch.warmup_epochs=1", "eval_samples=2", "progress=false", "device=cpu", "arch.lr=0.05",
                 "subset=null"] + [f"{k}={v}" for k, v in extra.items()]
    return build_search_config("spikedhs-stereo-search-cpu", overrides)


def test_stereo_search_runs_records_disparity_errors_and_resumes_exactly(mvsec_pair, tmp_path, plots_expected):
    train = mvsec_pair[0]
    full = Searcher(_stereo_search_config(), tmp_path / "full", datasets=(train, train), log=lambda *a: None)
    before = [p.detach().clone() for p in full.supernet.arch_parameters()]
    result = full.fit()
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0]["arch_loss"] is None and records[1]["arch_loss"] is not None
    for r in records:
        assert r["val_mean_disparity_error"] > 0 and 0 <= r["val_one_pixel_error"] <= 1
        assert set(r["feature"]) == set(r["matching"]) == {"alpha", "transitions"}
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, full.supernet.arch_parameters()))
    genotype = load_stereo_genotype(tmp_path / "full" / "genotype.json")
    assert genotype.to_dict() == result["genotype"] == records[-1]["genotype"]
    assert (tmp_path / "full" / "architecture.png").exists() == plots_expected

    def interrupt(*_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Searcher(_stereo_search_config(), tmp_path / "split", datasets=(train, train), log=interrupt).fit()
    resumed = Searcher(_stereo_search_config(), tmp_path / "split", resume=True, datasets=(train, train),
                       log=lambda *a: None)
    resumed.fit()
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_stereo_search_recipe_has_the_logged_settings():
    """specs/spikedhs.md section 6.1, the MVSEC search's hyper.log."""
    c = build_search_config("spikedhs-stereo-search-mvsec")
    assert c.task == "stereo" and c.epochs == 10 and c.arch.warmup_epochs == 3
    assert (c.data.batch_size, c.optim.lr, c.schedule.name, c.schedule.min_lr) == (1, 0.002, "cosine", 0.001)
    assert (c.arch.lr, c.optim.momentum, c.optim.weight_decay, c.arch.weight_decay) == (0.002, 0.9, 3e-4, 1e-3)
    s = c.supernet
    assert (s.base_channels, s.nodes, s.max_disparity, s.layers, s.matching_layers, s.levels) == (4, 3, 63, 2, 4, 4)
    assert c.data.options["crop"] == [200, 280]
    assert build_search_config("spikedhs-stereo-search-cpu").task == "stereo"
    assert build_config(RETRAIN_RECIPES["stereo"]).task == "stereo"


def test_channels_last_places_only_the_2d_convolutions():
    from spikeforge.runtime.devices import place_model

    net = place_model(StereoSearchNet(in_channels=5, feature_layers=1, matching_layers=1, levels=2, base_channels=2,
                                      max_disparity=12, timesteps=1), torch.device("cpu"), channels_last=True)
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    for conv in convs:
        if isinstance(conv, torch.nn.Conv2d):
            assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        else:
            assert conv.weight.is_contiguous()
    assert net(torch.rand(1, 2, 5, 12, 15)).disparity.shape == (1, 12, 15)
