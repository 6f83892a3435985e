"""The bi-level search loop end to end on a tiny synthetic set: records, genotype, exact resume, CLI errors."""

from __future__ import annotations

import json

import pytest
import torch

from spikeforge.cli import main
from spikeforge.data import MemoryImageSet
from spikeforge.runtime.config import ConfigError
from spikeforge.search import load_genotype
from spikeforge.search.config import build_search_config
from spikeforge.search.searcher import Searcher, split_for_search
from spikeforge.train.config import build_config


def _tiny_sets():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(96) % 10
    images = (torch.rand(96, 3, 8, 8, generator=g) * 60 + labels.view(-1, 1, 1, 1) * 18).to(torch.uint8)
    data = MemoryImageSet(images, labels, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_padding=1,
                          classes=[str(i) for i in range(10)])
    return data, data.subset(range(96), augment=False)


def _config(**extra):
    overrides = ["supernet.layers=2", "supernet.levels=2", "supernet.base_channels=2", "timesteps=1",
                 "data.batch_size=16", "epochs=2", "arch.warmup_epochs=1", "eval_samples=32", "progress=false",
                 "device=cpu"] + [f"{k}={v}" for k, v in extra.items()]
    return build_search_config("spikedhs-cpu", overrides)


def test_split_is_by_index_and_halves():
    data, _ = _tiny_sets()
    assert split_for_search(data, None, 0.5) == (range(48), range(48, 96))
    assert split_for_search(data, 40, 0.5) == (range(20), range(20, 40))
    with pytest.raises(ValueError, match="leaves one part empty"):
        split_for_search(data, 10, 0.05)


def test_search_runs_decodes_and_resumes_exactly(tmp_path, plots_expected):
    full = Searcher(_config(), tmp_path / "full", datasets=_tiny_sets(), log=lambda *a: None)
    before = full.supernet.alpha.detach().clone()
    result = full.fit()
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0]["arch_loss"] is None and records[1]["arch_loss"] is not None  # one warm-up epoch
    assert torch.equal(torch.softmax(before, -1), torch.tensor(records[0]["alpha"]))  # alpha frozen in warm-up
    assert not torch.equal(before, full.supernet.alpha.detach())
    genotype = load_genotype(tmp_path / "full" / "genotype.json")
    assert genotype.to_dict() == result["genotype"] == records[-1]["genotype"]
    assert len(genotype.path) == 2
    assert (tmp_path / "full" / "architecture.png").exists() == plots_expected

    def interrupt(*_):
        raise KeyboardInterrupt  # Ctrl-C right after the first epoch's checkpoint

    with pytest.raises(KeyboardInterrupt):
        Searcher(_config(), tmp_path / "split", datasets=_tiny_sets(), log=interrupt).fit()
    resumed = Searcher(_config(), tmp_path / "split", resume=True, datasets=_tiny_sets(), log=lambda *a: None)
    resumed.fit()
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_recipes_are_told_apart(tmp_path, capsys):
    with pytest.raises(ConfigError, match="is an architecture search"):
        build_config("spikedhs-cpu")
    with pytest.raises(ConfigError, match="is a conversion: run it with 'spikeforge convert"):
        build_config("convert-qcfs-srp")
    with pytest.raises(ConfigError, match="is a training recipe"):
        build_search_config("cpu")
    assert main(["search", "--recipe", "cpu", "--run-dir", str(tmp_path / "x")]) == 2
    assert "is a training recipe" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown key supernet.depth"):
        build_search_config("spikedhs-cpu", ["supernet.depth=3"])


def test_mixed_precision_search_runs_in_bfloat16_where_the_cpu_has_it(tmp_path):
    losses = {}
    for amp in ("false", "true"):
        torch.manual_seed(0)
        searcher = Searcher(_config(amp=amp, epochs=1, **{"arch.warmup_epochs": 0}), tmp_path / amp,
                            datasets=_tiny_sets(), log=lambda *a: None)
        record = searcher.fit()["record"]
        assert all(torch.isfinite(torch.tensor(record[k])) for k in ("train_loss", "arch_loss", "val_loss"))
        losses[amp] = record["train_loss"]
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert losses["true"] != losses["false"]  # bfloat16 rounding shows: autocast was on
    else:
        assert losses["true"] == losses["false"]  # no native bfloat16: autocast stays off


def test_search_resumed_inside_an_epoch_matches_a_straight_search(tmp_path):
    """Epoch 2 takes 3 weight steps, each followed by an architecture step; a stop requested in the second
    weight step leaves a mid-epoch last.pt, and the resumed search (which must skip the architecture batches
    already used) ends with the same weights, bit for bit."""
    straight = Searcher(_config(), tmp_path / "a", datasets=_tiny_sets(), log=lambda *a: None)
    straight.fit()
    first = Searcher(_config(**{"checkpoint.every_minutes": 0}), tmp_path / "b", datasets=_tiny_sets(),
                     log=lambda *a: None)
    forwards = []

    def stop_in_second_weight_step_of_epoch_2(module, inputs):
        if module.training:
            forwards.append(1)
            if len(forwards) == 3 + 2 + 1:  # epoch 1: 3 weight steps; epoch 2: weight, arch, weight
                first.request_stop()

    first.model.register_forward_pre_hook(stop_in_second_weight_step_of_epoch_2)
    with pytest.raises(KeyboardInterrupt, match=r"stopped at search epoch 2, step 2/3"):
        first.fit()
    resumed = Searcher(_config(), tmp_path / "b", resume=True, datasets=_tiny_sets(), log=lambda *a: None)
    assert (resumed.epoch, resumed.position.step) == (1, 2)
    resumed.fit()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["arch_loss"] for r in records] == [r["arch_loss"] for r in expected]
