"""Run folders are owned: never reused by accident, one process at a time, unwritable ones refused at once,
config.yaml only after a whole set-up, default names that never collide, stale temporary files removed."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from spikeforge.cli import build_parser, main, parse_arguments
from spikeforge.cli.common import resolve_run
from spikeforge.runtime.runfolder import RunFolder, RunFolderError
from spikeforge.train import build_config

#: A digits run of two 64-sample batches per epoch (a fraction of a second).
FAST = ["model.kwargs.width=4", "data.subset=128", "progress=false", "device=cpu"]


def train(*argv):
    return main(["train", *argv, *FAST])


def snapshot(run):
    """The bytes of every file of a run folder (tensorboard/ and the lock aside)."""
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}


def epochs(run):
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_folder_holding_a_run_is_refused_without_resume_and_replaced_only_by_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    assert train("--run-dir", str(run), "epochs=2") == 0
    before = snapshot(run)
    capsys.readouterr()
    assert train("--run-dir", str(run), "epochs=1") == 2
    refusal = re.fullmatch(f"spikeforge train: error: {re.escape(str(run))} already holds a run \\((.+)\\): continue "
                           f"it with --resume {re.escape(str(run))}, or replace it with --overwrite",
                           error_line(capsys))
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt"} <= set(refusal.group(1).split(", "))
    # a failing recipe replaces nothing, not even with --overwrite
    assert train("--run-dir", str(run), "--overwrite", "schedule.name=nosuch") == 2
    assert "schedule.name must be one of cosine, multistep, constant, got 'nosuch'" in error_line(capsys)
    assert snapshot(run) == before and epochs(run) == [1, 2]
    assert train("--run-dir", str(run), "--overwrite", "epochs=1") == 0
    assert epochs(run) == [1] and "epochs: 1\n" in (run / "config.yaml").read_text()
    assert snapshot(run)["last.pt"] != before["last.pt"]
    assert main(["train", "--resume", str(run), "--overwrite"]) == 2
    assert error_line(capsys).endswith("--resume continues a run and --overwrite replaces it: give one of them")


def test_a_failing_set_up_writes_no_config(tmp_path, capsys):
    run = tmp_path / "new"
    assert train("--run-dir", str(run), "schedule.name=nosuch") == 2  # the recipe fails to validate
    assert train("--run-dir", str(run), "data.name=cifar10", f"data.root={tmp_path / 'none'}") == 2  # data set-up fails
    assert "CIFAR-10 not found" in capsys.readouterr().err
    assert not (run / "config.yaml").exists()


def test_a_live_run_folder_is_refused_to_a_second_run_and_to_resume_until_its_process_ends(tmp_path, capsys):
    run = tmp_path / "run"
    owner = subprocess.Popen([sys.executable, "-m", "spikeforge", "train", "--run-dir", str(run), "epochs=1000", *FAST],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "config.yaml").exists():  # written once the run owns the folder
            assert owner.poll() is None, owner.stderr.read()
            assert time.monotonic() < deadline, "the training process did not start"
            time.sleep(0.1)
        busy = f"{run} is in use by another spikeforge process (pid {owner.pid})"
        for argv in (["--run-dir", str(run)], ["--resume", str(run)], ["--run-dir", str(run), "--overwrite"]):
            assert train(*argv) == 2
            assert error_line(capsys) == f"spikeforge train: error: {busy}"
        with pytest.raises(RunFolderError, match=f"^{re.escape(busy)}$"):  # the claim itself, not only the early check
            RunFolder(run, resume=True)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.communicate()
    assert train("--resume", str(run), "epochs=1") == 0  # the kernel dropped the lock with the process


def test_default_run_names_differ_within_one_second(monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20261123-101500")
    args = parse_arguments(build_parser(), ["train", "--print-config"])
    names = {resolve_run(args, build_config, "digits")[1] for _ in range(2)}
    assert len(names) == 2  # 4 random hex digits: equal once in 65536
    assert all(name.parent.name == "runs" and name.name.startswith("digits-20261123-101500-") for name in names)


def test_a_distributed_run_must_name_its_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun: each process would draw its own default name
    with pytest.raises(ValueError, match="a distributed run needs --run-dir"):
        resolve_run(parse_arguments(build_parser(), ["train", "--print-config"]), build_config, "digits")
    named = parse_arguments(build_parser(), ["train", "--print-config", "--run-dir", str(tmp_path / "r")])
    assert resolve_run(named, build_config, "digits")[1] == tmp_path / "r"


def test_stale_temporary_files_of_killed_writes_are_removed_when_the_run_continues(tmp_path):
    run = tmp_path / "run"
    assert train("--run-dir", str(run), "epochs=1") == 0
    stale = ["last.pt.k3j_x9q2.tmp", "best.pt.abcdefgh.tmp", "metrics.jsonl.0a1b2c3d.tmp", ".probe.12345678.tmp"]
    kept = ["notes.tmp", "last.pt.tmp", "mine.abcdefgh.tmp"]  # not our pattern: the user's
    for name in stale + kept:
        (run / name).write_bytes(b"partial")
    assert train("--resume", str(run), "epochs=2") == 0
    left = {p.name for p in run.iterdir()}
    assert not left & set(stale) and set(kept) <= left


def test_a_run_folder_under_a_file_fails_in_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert train("--run-dir", str(tmp_path / "file" / "run")) == 2
    assert error_line(capsys) == (f"spikeforge train: error: cannot use {tmp_path / 'file' / 'run'} as a run folder: "
                                  "Not a directory")


def _refuse_new_files_in(folder, monkeypatch):
    """As a read-only folder does for every user, root included: creating a file in it fails with EACCES
    (opening an existing one still works)."""
    real_open = os.open

    def guarded(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and os.path.dirname(os.path.abspath(path)) == str(folder) and not os.path.exists(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)


@pytest.mark.parametrize("how", ["chmod", "creation refused"])
def test_a_read_only_run_folder_fails_at_once_in_one_line(tmp_path, capsys, monkeypatch, how):
    if how == "chmod" and os.geteuid() == 0:
        pytest.skip("root ignores permission bits (the other case refuses file creation as a read-only folder does)")
    run = tmp_path / "run"
    assert train("--run-dir", str(run), "epochs=1") == 0
    before = snapshot(run)
    capsys.readouterr()
    if how == "chmod":
        run.chmod(0o555)
    else:
        _refuse_new_files_in(run, monkeypatch)
    try:
        assert train("--resume", str(run), "epochs=2") == 2
    finally:
        run.chmod(0o755)
    assert error_line(capsys) == f"spikeforge train: error: cannot write to run folder {run}: Permission denied"
    assert snapshot(run) == before  # refused before training: no epoch 2 anywhere
