"""Kills and damaged metrics: after a SIGKILL at any point of a checkpoint, ``--resume`` ends with the
uninterrupted run's weights and every epoch in metrics.jsonl exactly once; torn and corrupt metrics lines,
lost ones, and runs killed before their first checkpoint. (benchmarks/fault_injection.py kills at random.)"""

import json
import signal
import subprocess
import sys

import pytest
import torch

from spikeforge.cli import main
from spikeforge.runtime.checkpoint import load_checkpoint
from spikeforge.runtime.metrics_log import MetricsLog
from spikeforge.train import Trainer, build_config

#: Three digits epochs of two batches, last.pt once per epoch.
RUN = ["epochs=3", "model.kwargs.width=4", "data.subset=128", "progress=false", "device=cpu",
       "checkpoint.every_minutes=0"]

#: Runs the command line with a SIGKILL at a chosen point of the second epoch's last.pt (argv: point, run dir).
KILLED_RUN = """
import os, signal, sys
import torch

point, run = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)  # as the tests run: the same arithmetic, bit for bit
real_replace, real_save = os.replace, torch.save
replaced = []

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def replace(src, dst):
    second = os.path.basename(dst) == "last.pt" and len(replaced) == 1
    if second and point == "before last.pt is replaced":
        die()
    real_replace(src, dst)
    if os.path.basename(dst) == "last.pt":
        replaced.append(dst)
    if second and point == "after last.pt is replaced":
        die()

def save(state, f, *args, **kwargs):
    if "optimizer" in state and len(replaced) == 1 and point == "while last.pt is written":
        f.write(b"PK\\x03\\x04 half a checkpoint")
        f.flush()
        die()
    real_save(state, f, *args, **kwargs)

os.replace, torch.save = replace, save
from spikeforge.cli import main
sys.exit(main(["train", "--run-dir", run, *sys.argv[3:]]))
"""

TIMES = ("epoch_time", "elapsed")


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def untimed(run):
    return [{k: v for k, v in r.items() if k not in TIMES} for r in records(run)]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run: what every interrupted one must end as."""
    run = tmp_path_factory.mktemp("straight") / "run"
    torch.set_num_threads(1)
    assert main(["train", "--run-dir", str(run), *RUN]) == 0
    return run


@pytest.mark.parametrize("point", ["while last.pt is written", "before last.pt is replaced",
                                   "after last.pt is replaced"])
def test_a_kill_at_any_point_of_a_checkpoint_resumes_to_the_uninterrupted_run(tmp_path, straight, point):
    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, point, str(run), *RUN], capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    half_written = [p.name for p in run.iterdir() if p.name.startswith("last.pt.") and p.name.endswith(".tmp")]
    assert bool(half_written) == (point != "after last.pt is replaced")  # removed when the run continues
    saved = load_checkpoint(run / "last.pt")["epoch"]
    assert saved == (2 if point == "after last.pt is replaced" else 1)
    assert [r["epoch"] for r in records(run)][:saved] == list(range(1, saved + 1))  # the checkpoint's epochs
    assert main(["train", "--resume", str(run), *RUN]) == 0
    assert untimed(run) == untimed(straight)
    final, reference = load_checkpoint(run / "last.pt")["model"], load_checkpoint(straight / "last.pt")["model"]
    assert final.keys() == reference.keys() and all(torch.equal(final[k], reference[k]) for k in final)
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def stopped_after(epochs, run):
    """The run of RUN, stopped (as a crash would) after ``epochs`` epochs."""
    trainer = Trainer(build_config("digits", RUN), run, log=lambda *a: None)
    trainer.total_epochs = epochs
    trainer.fit()


def write_lines(run, *lines):
    (run / "metrics.jsonl").write_text("".join(lines))


def test_a_torn_last_metrics_line_is_dropped_with_a_warning_naming_the_file(tmp_path, straight, capsys):
    run = tmp_path / "run"
    stopped_after(2, run)
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    write_lines(run, *lines, lines[0][:40])  # a third line cut off mid-write
    capsys.readouterr()
    assert main(["train", "--resume", str(run), *RUN]) == 0
    assert f"warning: {run / 'metrics.jsonl'}: dropped its torn last line (a write that was cut off)" in (
        capsys.readouterr().out.splitlines())
    assert untimed(run) == untimed(straight)


def test_a_corrupt_metrics_line_before_the_last_names_file_and_line(tmp_path, capsys):
    run = tmp_path / "run"
    stopped_after(2, run)
    first, second = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    write_lines(run, first, "{not json\n", second)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), *RUN]) == 2
    assert capsys.readouterr().err.strip() == (f"spikeforge train: error: {run / 'metrics.jsonl'}:2: not a JSON record "
                                               "(Expecting property name enclosed in double quotes)")


def test_a_metrics_line_missing_for_the_checkpoints_epoch_is_rebuilt_from_it(tmp_path, straight):
    run = tmp_path / "run"
    stopped_after(2, run)
    write_lines(run, (run / "metrics.jsonl").read_text().splitlines(keepends=True)[0])  # as an older version's kill
    assert main(["train", "--resume", str(run), *RUN]) == 0
    assert untimed(run) == untimed(straight)


def test_rewind_keeps_each_epoch_once_up_to_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    write_lines(tmp_path, *(json.dumps({"epoch": e, "v": i}) + "\n" for i, e in enumerate([1, 2, 3, 2, 3, 4])))
    log.rewind(3)
    assert log.read() == [{"epoch": 1, "v": 0}, {"epoch": 2, "v": 3}, {"epoch": 3, "v": 4}]
    log.rewind(4, {"epoch": 4, "v": 9})
    log.rewind(5, {"epoch": 4, "v": 10})  # not the checkpoint's epoch: ignored
    assert [r["epoch"] for r in log.read()] == [1, 2, 3, 4] and log.read()[-1]["v"] == 9
    log.rewind(0)
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_resuming_a_run_killed_before_its_first_checkpoint_starts_it_over(tmp_path, straight, capsys):
    run = tmp_path / "run"
    stopped_after(1, run)
    (run / "last.pt").unlink()  # as if killed between the first metrics line and the first last.pt
    capsys.readouterr()
    assert main(["train", "--resume", str(run), *RUN]) == 0
    assert (f"note: {run} has no last.pt yet (stopped before its first checkpoint): starting the run over"
            in capsys.readouterr().out.splitlines())
    assert untimed(run) == untimed(straight)
