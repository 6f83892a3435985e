"""The bi-level search under two gloo processes: every rank searches its own shard of both parts, and the
architecture (and all other) weights stay identical on every rank."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from ranks import run_ranks, start_rank

from spikeforge.search.config import build_search_config
from spikeforge.search.searcher import Searcher


class Recording(torch.utils.data.Dataset):
    """96 small images of 10 classes that note the index of every sample read (in this process)."""

    num_classes = 10

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.labels = torch.arange(96) % 10
        self.images = torch.rand(96, 3, 8, 8, generator=g) + self.labels.view(-1, 1, 1, 1) * 0.2
        self.seen: list[int] = []

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.seen.append(int(i))
        return self.images[i], int(self.labels[i])


def _config():
    return build_search_config("spikedhs-cpu", [
        "supernet.layers=2", "supernet.levels=2", "supernet.base_channels=2", "timesteps=1", "data.batch_size=8",
        "epochs=1", "arch.warmup_epochs=0", "eval_samples=16", "progress=false", "device=cpu",
        "checkpoint.every_minutes=0"])


def _search(rank, world, port, out_dir):
    start_rank(rank, world, port)
    train_set = Recording()
    searcher = Searcher(_config(), Path(out_dir) / "run", datasets=(train_set, Recording()), log=lambda *a: None)
    initial = searcher.supernet.alpha.detach().clone()
    searcher.fit()
    torch.save({"state": searcher.model.state_dict(), "initial_alpha": initial, "seen": train_set.seen,
                "steps": searcher.steps_per_epoch}, Path(out_dir) / f"rank{rank}.pt")


def test_two_ranks_search_their_own_shards_and_keep_identical_architecture_weights(tmp_path):
    run_ranks(_search, tmp_path, deadline_seconds=240)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    weight_part, arch_part = set(range(48)), set(range(48, 96))
    seen = [set(r["seen"]) for r in ranks]
    assert not seen[0] & seen[1]  # disjoint shards
    assert (seen[0] | seen[1]) == weight_part | arch_part  # together: both parts, each image once
    assert all(s & weight_part and s & arch_part for s in seen)  # each rank: its shard of both parts
    assert [r["steps"] for r in ranks] == [3, 3]  # 24 weight images per rank in batches of 8
    first, second = ranks[0]["state"], ranks[1]["state"]
    for key, value in first.items():
        if value.is_floating_point() and "running" not in key:
            assert torch.equal(value, second[key]), key
    alpha = next(v for k, v in first.items() if k.endswith("alpha"))
    assert not torch.equal(alpha, ranks[0]["initial_alpha"])  # the architecture did take steps
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["arch_loss"] is not None
    assert (tmp_path / "run" / "genotype.json").exists()
