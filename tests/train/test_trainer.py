"""Trainer: exact resume, TIT stages, divergence stop, checkpoints, distributed (gloo)."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from spikeforge.train import Trainer, TrainingDiverged
from spikeforge.train.checkpoint import load_checkpoint, save_checkpoint
from spikeforge.train.config import DataConfig, ModelConfig, OptimConfig, StageConfig, TrainConfig


class Blobs(Dataset):
    """Three classes of 1x8x8 images: a bright row at a class-dependent height, plus noise."""

    num_classes = 3

    def __init__(self, n=96, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 3, (n,), generator=gen)
        self.images = torch.rand(n, 1, 8, 8, generator=gen) * 0.3
        for i, y in enumerate(self.labels.tolist()):
            self.images[i, 0, 1 + 3 * y] += 1.0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def config(**kw):
    base = dict(
        model=ModelConfig(name="digits_cnn", kwargs={"width": 4}),
        data=DataConfig(name="unused", batch_size=16),
        optim=OptimConfig(name="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, decay_norm_and_bias=False),
        epochs=2,
        timesteps=2,
        progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def quiet(*args, **kwargs):
    pass


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_after_interruption_reproduces_uninterrupted_run(tmp_path):
    data = (Blobs(), Blobs(48, seed=1))
    straight = Trainer(config(), tmp_path / "a", datasets=data, log=quiet)
    straight.fit()
    # Same run, stopped after its first epoch (as a crash would), then resumed.
    first = Trainer(config(), tmp_path / "b", datasets=data, log=quiet)
    first.total_epochs = 1
    first.fit()
    resumed = Trainer(config(), tmp_path / "b", resume=True, datasets=data, log=quiet)
    assert resumed.epoch == 1
    resumed.fit()
    a, b = params(straight.model), params(resumed.model)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


def test_tit_stages_change_timesteps_and_carry_weights(tmp_path):
    cfg = config(stages=[StageConfig(epochs=1, timesteps=2), StageConfig(epochs=1, timesteps=3, lr=0.01)])
    trainer = Trainer(cfg, tmp_path, datasets=(Blobs(), Blobs(48, seed=1)), log=quiet)
    summary = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["timesteps"]) for r in records] == [(0, 2), (1, 3)]
    assert trainer.model.timesteps == 3
    assert records[1]["lr"] <= 0.01 + 1e-12
    assert summary["epochs"] == 2


def test_training_learns_the_toy_task(tmp_path):
    trainer = Trainer(config(epochs=4), tmp_path, datasets=(Blobs(192), Blobs(96, seed=1)), log=quiet)
    assert trainer.fit()["best_acc"] > 0.9


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no native bfloat16")
def test_cpu_mixed_precision_trains_in_bfloat16_and_learns(tmp_path):
    trainer = Trainer(config(epochs=4, amp=True), tmp_path, datasets=(Blobs(192), Blobs(96, seed=1)), log=quiet)
    seen = []
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    assert trainer.fit()["best_acc"] > 0.9
    assert set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    good = (Blobs(), Blobs(48, seed=1))
    first = Trainer(config(), tmp_path, datasets=good, log=quiet)
    first.total_epochs = 1
    first.fit()
    before = load_checkpoint(tmp_path / "last.pt")
    bad = Trainer(config(), tmp_path, resume=True, datasets=good, log=quiet)
    bad.task.loss_fn = lambda outputs, labels: outputs.sum() * float("nan")  # a diverged loss
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, step 1.*last\.pt"):
        bad.fit()
    after = load_checkpoint(tmp_path / "last.pt")
    assert after["epoch"] == before["epoch"] == 1
    for key in before["model"]:
        assert torch.equal(before["model"][key], after["model"][key])


def test_checkpoint_writes_are_atomic_and_loads_are_safe(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"w": torch.ones(3), "epoch": 2}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert load_checkpoint(path)["epoch"] == 2
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="c.pt is not a readable spikeforge checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_weight_decay_excludes_norm_and_bias_when_asked(tmp_path):
    trainer = Trainer(config(), tmp_path, datasets=(Blobs(), Blobs(48, seed=1)), log=quiet)
    decay, no_decay = trainer.optimizer.param_groups
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 1e-4
    assert all(p.dim() > 1 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = config(epochs=1, device="cpu")
    trainer = Trainer(cfg, out_dir, datasets=(Blobs(64), Blobs(32, seed=1)), log=quiet)
    assert trainer.dist.world_size == world
    trainer.fit()
    torch.save({k: v.detach() for k, v in trainer.model.named_parameters()}, os.path.join(out_dir, f"rank{rank}.pt"))


def test_two_gloo_processes_keep_identical_weights(tmp_path):
    port = _free_port()
    mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    initial = Trainer(config(), tmp_path / "fresh", datasets=(Blobs(64), Blobs(32, seed=1)), log=quiet).model
    moved = False
    for name, p in initial.named_parameters():
        assert torch.equal(w0[name], w1[name]), name
        moved |= not torch.equal(p.detach(), w0[name])
    assert moved, "training did not change the weights"
    assert (tmp_path / "last.pt").exists() and not (tmp_path / "rank1").exists()


def test_window_fraction_is_logged_per_layer_each_epoch(tmp_path):
    cfg = config(epochs=1, log_window_fraction=True)
    cfg.model.neuron = "lsg"
    Trainer(cfg, tmp_path, datasets=(Blobs(), Blobs(48, seed=1)), log=quiet).fit()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    fractions = record["window_fraction"]
    assert len(fractions) == 2 and all(0.0 <= v <= 1.0 for v in fractions.values())


def test_run_folder_reads_back_with_the_trainers_best(tmp_path):
    from spikeforge.train.runs import load_run

    summary = Trainer(config(epochs=2), tmp_path, datasets=(Blobs(), Blobs(48, seed=1)), log=quiet).fit()
    run = load_run(tmp_path).summary()
    assert run["best"] == summary["best_acc"] and run["final"] == summary["final_acc"] and run["epochs"] == 2
    assert run["model"] == "digits_cnn" and run["minutes"] > 0
