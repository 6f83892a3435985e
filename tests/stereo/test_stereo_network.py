"""The spiking stereo network: cost volume, cells on the 3-way trellis, regression, training and energy."""

from __future__ import annotations

import json

import pytest
import torch

from spikeforge import models
from spikeforge.analysis import energy_report
from spikeforge.models.spikedhs import CellChain, SpikeDHSCell
from spikeforge.models.spikedhs.genotype import GENOTYPES, Genotype, save_genotype
from spikeforge.stereo import STEREO_GENOTYPES, SpikingStereoNet, cost_volume, load_stereo_genotype

CELL = GENOTYPES["spikedhs_cifar"]


def tiny_net(**kw) -> SpikingStereoNet:
    options = dict(base_channels=2, max_disparity=12, timesteps=2) | kw
    return models.create("spikedhs_stereo", neuron="lif", timesteps=options.pop("timesteps"), **options)


def test_cost_volume_matches_a_pixel_by_pixel_reference():
    gen = torch.Generator().manual_seed(0)
    left, right = torch.rand(2, 3, 4, 7, generator=gen), torch.rand(2, 3, 4, 7, generator=gen)
    volume = cost_volume(left, right, 5)
    assert volume.shape == (2, 6, 5, 4, 7)
    reference = torch.zeros_like(volume)
    for d in range(5):
        for x in range(7):
            if x - d >= 0:
                reference[:, :3, d, :, x] = left[..., x]
                reference[:, 3:, d, :, x] = right[..., x - d]
    torch.testing.assert_close(volume, reference, rtol=0, atol=0)
    with pytest.raises(ValueError, match="differ in shape"):
        cost_volume(left, right[..., :6], 5)


@pytest.mark.parametrize("dims", [2, 3])
def test_cells_move_up_down_and_stay_binary(dims):
    size = (5, 9, 11)[:dims] if dims == 3 else (9, 11)
    x = (torch.rand(2, 6, *size) > 0.5).float()
    chain = CellChain(Genotype(CELL.cell, (1, 2, 1, 0), trellis="updown"), 6, 2, dims=dims)
    outs = chain(x)
    halved = [tuple(-(-n // 2) for n in size)]
    halved.append(tuple(-(-n // 2) for n in halved[0]))
    assert [o.shape[-dims:] for o in outs] == [halved[0], halved[1], halved[0], size]
    assert [o.shape[1] for o in outs] == [12, 24, 12, 6] and chain.out_channels == 6 and chain.out_level == 0
    assert all(set(o.unique().tolist()) <= {0.0, 1.0} for o in outs)
    with pytest.raises(ValueError, match="move must be -1, 0 or 1"):
        SpikeDHSCell(CELL, 4, 4, 2, move=2)


def test_published_stereo_structure_and_json_round_trip(tmp_path):
    g = STEREO_GENOTYPES["spikedhs_mvsec"]
    assert g.feature.path == (1, 0) and g.matching.path == (1, 2, 2, 1)
    assert g.feature.cell == CELL.cell  # the CIFAR cell (specs/spikedhs.md section 4.4)
    assert g.matching.node_edges(1) == [(1, "snn_b5"), (2, "snn_b5")]
    path = save_genotype(g, tmp_path / "stereo.json")
    assert load_stereo_genotype(path) == g == load_stereo_genotype(json.loads(path.read_text()))
    with pytest.raises(ValueError, match="exactly the keys feature and matching"):
        load_stereo_genotype({"feature": g.feature.to_dict()})


def test_output_is_a_distribution_and_its_expectation():
    net = tiny_net().eval()
    views = torch.randn(3, 2, 5, 20, 26)
    with torch.no_grad():
        out = net(views)
    assert out.disparity.shape == (3, 20, 26) and out.log_prob.shape == (3, 12, 20, 26)
    prob = out.log_prob.exp()
    torch.testing.assert_close(prob.sum(1), torch.ones(3, 20, 26))
    expected = (prob * torch.arange(12.0).view(1, -1, 1, 1)).sum(1)
    torch.testing.assert_close(out.disparity, expected)
    assert net.spiking.backbone.volume_disparities == 4  # ceil(12 / 3)
    net.timesteps = 3
    assert net.spiking.timesteps == 3


def test_timesteps_see_both_views_of_one_sample_together():
    """Folding keeps (step, sample, view) order: a sample's result does not depend on the batch."""
    net = tiny_net().eval()
    views = torch.randn(2, 2, 5, 14, 17)
    with torch.no_grad():
        both = net(views).disparity
        single = net(views[1:]).disparity
    torch.testing.assert_close(both[1:], single, rtol=1e-4, atol=1e-4)


def test_forward_backward_on_a_synthetic_mvsec_sample(mvsec_pair, dot_shift):
    from spikeforge.stereo.loss import build_stereo_loss

    item = mvsec_pair[0][0]
    torch.testing.assert_close(item["disparity"], torch.full((30, 36), float(dot_shift)))
    views = torch.stack([item["left"], item["right"]])[None]  # [1, 2, 5, 30, 36]
    net = tiny_net(max_disparity=24).train()
    out = net(views)
    loss = build_stereo_loss("subpixel_ce", max_disparity=24)(out.log_prob, out.disparity, item["disparity"][None])
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(int(g.abs().sum() > 0) for g in grads) == len(grads)


def test_energy_report_counts_the_stereo_networks_synaptic_operations():
    net = tiny_net().eval()
    views = torch.randn(2, 2, 5, 20, 26)
    report = energy_report(net.spiking, [views])
    layers = {layer.name: layer for layer in report.ops.layers}
    first = layers["backbone.feature.stem.0.conv"]
    assert first.analog_input and first.snn_macs == 2 * first.ann_macs and first.snn_sops == 0  # T = 2 analog steps
    matching = [layer for name, layer in layers.items() if ".matching." in name and layer.kind == "conv"]
    assert matching and all(not layer.analog_input for layer in matching)
    assert sum(layer.snn_sops for layer in matching) > 0
    totals = report.totals()
    assert totals["snn_sops"] > 0 and totals["ann_macs"] > 0


def test_trainer_runs_the_stereo_task_and_keeps_the_best_by_disparity_error(mvsec_pair, tmp_path):
    from spikeforge.runtime.config import DataConfig, LossConfig, OptimConfig
    from spikeforge.train import Trainer
    from spikeforge.train.config import ModelConfig, TrainConfig

    config = TrainConfig(
        model=ModelConfig(name="spikedhs_stereo", kwargs={"base_channels": 2, "max_disparity": 24}),
        data=DataConfig(name="mvsec", batch_size=2), optim=OptimConfig(name="adam", lr=1e-3),
        loss=LossConfig(name="subpixel_ce"), task="stereo", epochs=2, timesteps=2, progress=False)
    lines = []
    summary = Trainer(config, tmp_path / "run", datasets=mvsec_pair, log=lines.append).fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["metric"] == "mean_disparity_error"
    assert summary["best_mean_disparity_error"] == min(r["test_mean_disparity_error"] for r in records)
    assert all(0 <= r["test_one_pixel_error"] <= 1 and r["test_mean_depth_error"] > 0 for r in records)
    assert "EPE" in lines[-1] and (tmp_path / "run" / "best.pt").is_file()


def test_evaluate_checkpoint_reproduces_the_trainers_stereo_test_metrics(mvsec_root, tmp_path):
    from spikeforge.runtime.config import DataConfig, OptimConfig
    from spikeforge.train import Trainer, evaluate_checkpoint
    from spikeforge.train.config import ModelConfig, TrainConfig

    ranges = {1: [5, 8], 2: [5, 10], 3: [5, 10]}  # split 1: train on recordings 2 and 3, test on 1
    config = TrainConfig(
        model=ModelConfig(name="spikedhs_stereo", kwargs={"base_channels": 2, "max_disparity": 24}),
        data=DataConfig(name="mvsec", root=str(mvsec_root), batch_size=2,
                        options={"frames": 5, "crop": [30, 36], "frame_ranges": ranges}),
        optim=OptimConfig(name="adam", lr=1e-3), task="stereo", epochs=1, timesteps=2, progress=False)
    Trainer(config, tmp_path / "run", log=lambda *a: None).fit()
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    result = evaluate_checkpoint(tmp_path / "run" / "last.pt")
    assert result["metric"] == "mean_disparity_error" and result["samples"] == 3  # frames 5, 6, 7 of recording 1
    for key in ("mean_disparity_error", "one_pixel_error", "mean_depth_error"):
        assert result[f"test_{key}"] == pytest.approx(record[f"test_{key}"], rel=1e-6)


def test_mvsec_frame_ranges_option_is_checked():
    from spikeforge.data.events.mvsec import TEST_FRAMES, parse_frame_ranges

    ranges = parse_frame_ranges({1: [5, 8]}, train=False)
    assert ranges[1] == range(5, 8) and ranges[3] == TEST_FRAMES[3]
    for bad in ({4: [0, 5]}, {1: [5]}, {1: [5, 8.5]}, {1: [-1, 3]}, [5, 8]):
        with pytest.raises(ValueError, match="frame_ranges"):
            parse_frame_ranges(bad, train=True)


def test_a_stereo_run_without_a_loss_section_uses_the_subpixel_loss():
    from spikeforge.runtime.tasks import build_task
    from spikeforge.train.config import TrainConfig

    class Pairs:
        focal_baseline = 19.94

    task = build_task(TrainConfig(task="stereo"), tiny_net(), Pairs())
    assert task.loss_fn.func.__name__ == "_subpixel_ce_loss" and task.loss_fn.keywords["diversity"] == 2.0
    assert type(build_task(TrainConfig(), tiny_net(), Pairs()).loss_fn).__name__ == "SDTLoss"
