"""Trainer: exact resume (after and inside an epoch, Ctrl-C), TIT stages, divergence stop, checkpoints,
progress lines, TensorBoard, data.subset, evaluate_checkpoint, distributed (gloo)."""

import json
import os
import re
import signal
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from spikeforge.data import MemoryImageSet
from spikeforge.runtime.checkpoint import load_checkpoint, save_checkpoint
from spikeforge.runtime.config import CheckpointConfig, DataConfig, OptimConfig, StageConfig
from spikeforge.runtime.divergence import last_checkpoint
from spikeforge.runtime.progress import Progress
from spikeforge.train import Trainer, TrainingDiverged
from spikeforge.train.config import ModelConfig, TrainConfig


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


def memory_blobs(n, seed):
    """Blobs as an in-memory uint8 set with random crops and flips (the batch-wise augmentation path)."""
    blobs = Blobs(n, seed)
    images = (blobs.images.clamp(0, 1) * 255).to(torch.uint8)
    return MemoryImageSet(images, blobs.labels, mean=[0.3], std=[0.3], crop_padding=1, flip=True)


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a, b):
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def stop_at_training_step(trainer, n, action):
    """Call ``action()`` inside the ``n``-th training forward of ``trainer`` (1-based, over epochs)."""
    seen = []

    def hook(module, inputs):
        if module.training:
            seen.append(1)
            if len(seen) == n:
                action()

    trainer.model.register_forward_pre_hook(hook)


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
    assert_same_weights(straight.model, resumed.model)
    assert [r["epoch"] for r in records(tmp_path / "b")] == [1, 2]


def _crash():
    raise RuntimeError("power cut")


@pytest.mark.parametrize("data_kind, how", [("loader", "ctrl-c"), ("memory", "crash")])
def test_resume_inside_an_epoch_gives_bit_identical_weights(tmp_path, data_kind, how):
    """6 steps per epoch; the run stops in epoch 2 after step 3 (Ctrl-C: a stop requested during step 3;
    crash: an error in step 4 with a save after every step), resumes there and matches a straight run."""
    data = (Blobs(), Blobs(48, seed=1)) if data_kind == "loader" else (memory_blobs(96, 0), memory_blobs(48, 1))
    straight = Trainer(config(), tmp_path / "a", datasets=data, log=quiet)
    straight.fit()
    every = CheckpointConfig(every_minutes=0 if how == "ctrl-c" else 1e-9)
    run = tmp_path / "b"
    first = Trainer(config(checkpoint=every), run, datasets=data, log=quiet)
    if how == "ctrl-c":
        stop_at_training_step(first, 6 + 3, first.request_stop)
        with pytest.raises(KeyboardInterrupt, match=r"stopped at epoch 2, step 3/6"):
            first.fit()
    else:
        stop_at_training_step(first, 6 + 4, _crash)
        with pytest.raises(RuntimeError, match="power cut"):
            first.fit()
    saved = load_checkpoint(run / "last.pt")
    assert (saved["epoch"], saved["position"]["step"]) == (1, 3)
    assert [r["epoch"] for r in records(run)] == [1]
    resumed = Trainer(config(), run, resume=True, datasets=data, log=quiet)
    assert (resumed.epoch, resumed.position.step) == (1, 3)
    resumed.fit()
    assert_same_weights(straight.model, resumed.model)
    times = ("epoch_time", "elapsed")
    strip = lambda r: {k: v for k, v in r.items() if k not in times}  # noqa: E731
    assert [strip(r) for r in records(run)] == [strip(r) for r in records(tmp_path / "a")]


def test_memory_set_batches_from_start_are_the_tail_of_the_epoch():
    data = memory_blobs(50, 0)
    whole = list(data.batches(8, shuffle=True, seed=4, drop_last=True))
    tail = list(data.batches(8, shuffle=True, seed=4, drop_last=True, start=2))
    assert len(tail) == len(whole) - 2 == 4
    for (x, y), (x2, y2) in zip(whole[2:], tail):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_ctrl_c_saves_after_the_step_and_a_second_one_stops_at_once(tmp_path):
    data = (Blobs(), Blobs(48, seed=1))
    before = signal.getsignal(signal.SIGINT)
    trainer = Trainer(config(), tmp_path / "once", datasets=data, log=quiet)
    stop_at_training_step(trainer, 2, lambda: signal.raise_signal(signal.SIGINT))
    with pytest.raises(KeyboardInterrupt, match="step 2/6"):
        trainer.fit()
    assert signal.getsignal(signal.SIGINT) is before
    assert load_checkpoint(tmp_path / "once" / "last.pt")["position"]["step"] == 2 and trainer.resumable

    twice = Trainer(config(), tmp_path / "twice", datasets=data, log=quiet)
    stop_at_training_step(twice, 2, lambda: [signal.raise_signal(signal.SIGINT) for _ in range(2)])
    with pytest.raises(KeyboardInterrupt):
        twice.fit()
    assert signal.getsignal(signal.SIGINT) is before
    assert not twice.resumable and last_checkpoint(tmp_path / "twice") is None


def test_trainer_prints_the_batch_job_line_each_tenth(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Progress, "MIN_LINE_SECONDS", 0.0)  # the steps here take milliseconds
    Trainer(config(epochs=1, progress=True), tmp_path, datasets=(Blobs(), Blobs(48, seed=1)), log=quiet).fit()
    lines = capsys.readouterr().err.splitlines()
    pattern = r"epoch 1/1 step (\d)/6 \(\d+%\) [\d.]+ samples/s eta \d+s loss [\d.]+ lr [\d.]+"
    assert [re.fullmatch(pattern, line).group(1) for line in lines] == ["1", "2", "3", "4", "5", "6"]


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

    fresh = Trainer(config(), tmp_path / "fresh", datasets=good, log=quiet)
    fresh.task.loss_fn = bad.task.loss_fn
    with pytest.raises(TrainingDiverged,
                       match=r"loss is nan at epoch 1, step 1: stopped; no checkpoint was written yet"):
        fresh.fit()
    assert not fresh.resumable


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
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
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


def test_tensorboard_gets_grouped_scalars_every_log_every_steps_and_the_recipe(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    Trainer(config(epochs=1, log_every=2), tmp_path, datasets=(Blobs(), Blobs(48, seed=1)), log=quiet).fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "test/loss", "test/acc", "lr"} <= tags
    assert len([t for t in tags if t.startswith("spikes/rate/")]) == 2  # digits_cnn: two spiking layers
    windows = events.Scalars("train/loss")
    assert [e.step for e in windows] == [2, 4, 6]
    record = records(tmp_path)[0]
    # three windows of two 16-sample batches: their mean is the epoch's mean loss
    assert sum(e.value for e in windows) / 3 == pytest.approx(record["train_loss"], rel=1e-5)
    [test_acc] = events.Scalars("test/acc")
    assert test_acc.step == 6 and test_acc.value == pytest.approx(record["test_acc"])
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["optim.lr"].number_value == pytest.approx(0.05)
    assert hparams["model.kwargs.width"].number_value == 4 and hparams["optim.name"].string_value == "sgd"


def test_without_tensorboard_the_metrics_log_still_writes_json(tmp_path, monkeypatch):
    import sys

    from spikeforge.runtime.metrics_log import MetricsLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    log = MetricsLog(tmp_path)
    assert not log.tensorboard
    log.write({"epoch": 1, "test_acc": 0.5})
    log.scalars({"lr": 0.1}, 3)
    log.hparams({"optim": {"lr": 0.1}}, ["test/acc"])
    assert log.read() == [{"epoch": 1, "test_acc": 0.5}]
    assert not (tmp_path / "tensorboard").exists()


def test_data_subset_is_a_class_balanced_prefix_of_the_training_set(tmp_path):
    from spikeforge.runtime.loaders import class_balanced_indices
    from spikeforge.train import build_config

    # class sizes 4, 1, 2: one sample of each class in turn, lower labels first
    assert class_balanced_indices([0, 0, 2, 0, 1, 0, 2], 6) == [0, 1, 2, 3, 4, 6]
    assert class_balanced_indices([1, 0], 5) == [0, 1]
    trainer = Trainer(build_config("digits", ["data.subset=25", "progress=false"]), tmp_path, log=quiet)
    full = trainer.train_set.dataset
    targets = full.targets.tolist()
    queues = {c: [i for i, y in enumerate(targets) if y == c] for c in range(10)}
    reference = []
    while len(reference) < 25:  # round robin over the classes, each in file order
        reference += [queues[c].pop(0) for c in range(10) if queues[c]][: 25 - len(reference)]
    assert trainer.train_set.indices == sorted(reference)
    counts = torch.bincount(torch.tensor([targets[i] for i in trainer.train_set.indices]), minlength=10)
    assert counts.tolist() == [3] * 5 + [2] * 5
    assert len(trainer.test_set) == 355 and trainer.num_classes == 10


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no native bfloat16")
def test_evaluate_checkpoint_reproduces_the_trainers_test_numbers_with_its_precision(tmp_path, monkeypatch):
    from spikeforge.runtime import evaluation as evaluation_module
    from spikeforge.train import build_config, evaluate_checkpoint

    Trainer(build_config("digits", ["epochs=1", "amp=true", "progress=false", "device=cpu"]), tmp_path, log=quiet).fit()
    record = records(tmp_path)[-1]
    real, enabled = evaluation_module.autocast, []
    monkeypatch.setattr(evaluation_module, "autocast", lambda device, on: enabled.append(on) or real(device, on))
    trained = evaluate_checkpoint(tmp_path / "last.pt", device="cpu")
    assert (trained["test_acc"], trained["test_loss"]) == (record["test_acc"], record["test_loss"])
    assert set(enabled) == {True} and trained["precision"] == "mixed"
    enabled.clear()
    plain = evaluate_checkpoint(tmp_path / "last.pt", device="cpu", precision="float32")
    assert set(enabled) == {False} and plain["precision"] == "float32"
    with pytest.raises(ValueError, match="precision must be one of trained, float32, mixed; got 'half'"):
        evaluate_checkpoint(tmp_path / "last.pt", precision="half")
