"""Divergence stops a run: a NaN or infinity in the loss, a gradient, a weight or a batch-norm statistic
ends training (exit code 3) with a line naming it and the last good checkpoint; none is ever saved."""

import re

import pytest
import torch
from torch import nn

from spikeforge.cli import main
from spikeforge.runtime.checkpoint import load_checkpoint
from spikeforge.runtime.divergence import check_step
from spikeforge.search.config import build_search_config
from spikeforge.search.searcher import Searcher
from spikeforge.train import Trainer, TrainingDiverged, build_config

WHAT = r"(loss|gradient of [\w.]+|parameter [\w.]+|buffer [\w.]+) is (?:nan|inf|-inf)"


def quiet(*args, **kwargs):
    pass


def digits(*overrides):
    """The digits job on 128 training samples (2 steps per epoch)."""
    return build_config("digits", ["data.subset=128", "progress=false", "device=cpu", "checkpoint.every_minutes=0",
                                   *overrides])


def test_sgd_at_1e30_exits_3_with_one_line_and_no_checkpoint(tmp_path, capsys):
    """The report's run, which used to end with exit code 0 at 10% and ``running_var = inf`` in best.pt."""
    run = tmp_path / "run"
    argv = ["train", "optim.name=sgd", "optim.lr=1.0e+30", "epochs=3", "progress=false", "--run-dir", str(run)]
    assert main(argv) == 3
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("spikeforge train: error: ") and line.endswith("no checkpoint was written yet")
    assert not (run / "best.pt").exists() and not (run / "last.pt").exists()


def test_an_infinite_statistic_with_a_finite_loss_stops_and_names_the_last_good_checkpoint(tmp_path):
    """As with a rate of 1e30: batch norm trains on batch statistics, so the loss stays finite while
    a running statistic is infinite."""
    Trainer(digits("epochs=1"), tmp_path, log=quiet).fit()
    before = load_checkpoint(tmp_path / "last.pt")["model"]
    trainer = Trainer(digits("epochs=2"), tmp_path, resume=True, log=quiet)
    name, bn = next((n, m) for n, m in trainer.model.named_modules() if isinstance(m, nn.BatchNorm2d))
    trainer.optimizer.register_step_post_hook(lambda *args: bn.running_var[0].fill_(float("inf")))
    last = re.escape(str(tmp_path / "last.pt"))
    with pytest.raises(TrainingDiverged, match=rf"^buffer {name}.running_var is inf at epoch 2, step 1: stopped; "
                                               rf"the last good checkpoint is {last}$"):
        trainer.fit()
    after = load_checkpoint(tmp_path / "last.pt")["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_nonfinite_gradient_stops_the_step_that_made_it(tmp_path):
    trainer = Trainer(digits("epochs=1"), tmp_path, log=quiet)
    first = next(trainer.model.parameters())
    first.register_hook(lambda grad: grad * float("nan"))
    name = next(n for n, p in trainer.model.named_parameters() if p is first)
    with pytest.raises(TrainingDiverged, match=rf"^gradient of {name} is nan at epoch 1, step 1: stopped; no check"):
        trainer.fit()


class _Scaler:
    def __init__(self, enabled):
        self.enabled = enabled

    def is_enabled(self):
        return self.enabled


def test_infinite_gradients_under_loss_scaling_are_a_skipped_step_not_divergence(tmp_path):
    model = nn.Linear(2, 1)
    model.weight.grad = torch.tensor([[float("inf"), 0.0]])
    loss = torch.tensor(0.5)
    check_step(model, loss, _Scaler(True), "at step 1", tmp_path)
    with pytest.raises(TrainingDiverged, match=r"^gradient of weight is inf at step 1: stopped; no checkpoint"):
        check_step(model, loss, _Scaler(False), "at step 1", tmp_path)
    model.bias.data[0] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"^parameter bias is nan at step 1"):
        check_step(model, loss, _Scaler(True), "at step 1", tmp_path)


def test_a_model_gone_nonfinite_outside_a_step_is_never_saved(tmp_path):
    """Between the last step and the save (here: in the evaluation) a statistic turns infinite."""
    trainer = Trainer(digits("epochs=1"), tmp_path, log=quiet)
    bn = next(m for m in trainer.model.modules() if isinstance(m, nn.BatchNorm2d))
    name = next(n for n, m in trainer.model.named_modules() if m is bn)

    def spoil(module, inputs):
        if not module.training:
            bn.running_var.fill_(float("inf"))

    trainer.model.register_forward_pre_hook(spoil)
    with pytest.raises(TrainingDiverged, match=rf"^buffer {name}.running_var is inf when saving a checkpoint: "):
        trainer.fit()
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()


def test_a_diverging_search_stops_with_the_same_kind_of_line(tmp_path):
    from spikeforge.data import MemoryImageSet

    labels = torch.arange(64) % 10
    images = (torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    data = MemoryImageSet(images, labels, (0.5,) * 3, (0.25,) * 3, classes=[str(i) for i in range(10)])
    config = build_search_config("spikedhs-cpu", [
        "supernet.layers=2", "supernet.levels=2", "supernet.base_channels=2", "timesteps=1", "data.batch_size=16",
        "epochs=1", "eval_samples=16", "progress=false", "device=cpu", "optim.lr=1.0e+30"])
    with pytest.raises(TrainingDiverged, match=rf"^{WHAT} at search epoch 1, step \d+: stopped; no check"):
        Searcher(config, tmp_path, datasets=(data, data), log=quiet).fit()
