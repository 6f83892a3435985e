"""Distributed training with gloo processes: every test sample counted once, a stopped rank times out."""

import os
import re
import time
from pathlib import Path

import pytest
import torch
from ranks import run_ranks, start_rank

from spikeforge.data import MemoryImageSet
from spikeforge.runtime import fit as fit_module
from spikeforge.runtime.distributed import DistInfo
from spikeforge.runtime.loaders import epoch_batches
from spikeforge.train import Trainer, build_config, evaluate_checkpoint


def quiet(*args, **kwargs):
    pass


def digits(*overrides):
    """The digits job made small: one epoch of 512 training samples (16 steps of 16 per rank on two
    ranks), all 355 test samples."""
    return build_config("digits", ["epochs=1", "data.subset=512", "data.batch_size=16", "schedule.name=constant",
                                   "progress=false", "device=cpu", "checkpoint.every_minutes=0", *overrides])


class Numbered(torch.utils.data.Dataset):
    """Sample ``i`` is ``(tensor [i], i)``: a batch names the samples it holds."""

    def __len__(self):
        return 355

    def __getitem__(self, i):
        return torch.tensor([float(i)]), i


@pytest.mark.parametrize("kind", ["loader", "memory"])
def test_evaluation_shards_hold_every_test_sample_exactly_once(kind):
    data = Numbered() if kind == "loader" else MemoryImageSet(torch.zeros(355, 1, 2, 2, dtype=torch.uint8),
                                                              torch.arange(355), [0.0], [1.0], augment=False)
    seen = []
    for rank in range(2):
        batches = epoch_batches(data, 64, train=False, seed=0, epoch=0, device=torch.device("cpu"),
                                dist=DistInfo(rank=rank, world_size=2))
        seen += [i for _, labels in batches for i in labels.tolist()]
    assert sorted(seen) == list(range(355))


def _fit_then_evaluate(rank, world, port, out_dir):
    start_rank(rank, world, port)
    fit_module.cleanup_distributed = quiet  # keep the group for one more evaluation after fit
    trainer = Trainer(digits(), out_dir, log=quiet)
    trainer.fit()
    sums = []
    metrics = trainer.task.metrics
    trainer.task.metrics = lambda s: sums.append(s) or metrics(s)
    result = trainer.evaluate(trainer.test_set)
    torch.save({"result": result, "samples": sums[0][2].item()}, os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_two_gloo_ranks_count_each_test_sample_once_and_match_one_process(tmp_path):
    run_ranks(_fit_then_evaluate, tmp_path, 120)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0] == ranks[1]
    assert ranks[0]["samples"] == 355
    # one process, the same weights (rank 0's last.pt): the same accuracy, and the loss up to summation order
    alone = evaluate_checkpoint(tmp_path / "last.pt", device="cpu")
    assert alone["samples"] == 355 and 0.2 < alone["test_acc"] < 1
    assert ranks[0]["result"]["acc"] == alone["test_acc"]
    assert ranks[0]["result"]["loss"] == pytest.approx(alone["test_loss"], rel=1e-5)


def _one_rank_stops(rank, world, port, out_dir):
    start_rank(rank, world, port)
    done = Path(out_dir, "done")
    trainer = Trainer(digits("distributed.timeout_minutes=0.05"), out_dir, log=quiet)  # 3 s
    if rank == 1:  # stops answering (a hung data loader, a stopped node) until rank 0 is through
        while not done.exists():
            time.sleep(0.1)
        return
    start = time.monotonic()
    try:
        trainer.fit()
    except RuntimeError as err:
        Path(out_dir, "error.txt").write_text(f"{time.monotonic() - start:.1f}\n{err}")
    finally:
        done.touch()


def test_a_stopped_rank_makes_the_others_fail_after_the_timeout(tmp_path):
    run_ranks(_one_rank_stops, tmp_path, 60)
    seconds, message = (tmp_path / "error.txt").read_text().split("\n", 1)
    assert 3 <= float(seconds) < 20  # the 3 s timeout, not the default half hour
    # gloo's words: "Timed out waiting 3000ms for send operation ..." or "Application timeout caused ..."
    assert re.search(r"(?i)timed? ?out", message.splitlines()[0])
