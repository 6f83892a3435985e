"""Checkpoints: a checksum refuses damaged files, old ones still load, failed writes (disk full) are one
line with the previous checkpoint intact and no temporary file left."""

import errno
import json
import os
import subprocess
import sys

import pytest
import torch

from spikeforge.cli import main
from spikeforge.runtime.checkpoint import content_sha256, load_checkpoint, save_checkpoint
from spikeforge.runtime.runfolder import RunFolder, WriteError, atomic_write

FAST = ["model.kwargs.width=4", "data.subset=128", "progress=false", "device=cpu"]


def flip_bytes(path, offset, count):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + count] = bytes(b ^ 0xFF for b in raw[offset:offset + count])
    path.write_bytes(bytes(raw))


def test_flipped_bytes_inside_tensor_data_are_refused_with_the_file_named(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "epochs=1", *FAST]) == 0
    last = run / "last.pt"
    weights = load_checkpoint(last)["model"]
    name, largest = max(weights.items(), key=lambda item: item[1].numel())
    data = largest.numpy().tobytes()
    assert len(data) >= 1000
    offset = last.read_bytes().find(data)  # torch stores tensor bytes uncompressed in the zip
    assert offset > 0
    flip_bytes(last, offset + 100, 400)
    damaged = torch.load(last, weights_only=True)["model"][name]  # torch itself does not notice
    assert not torch.equal(damaged, largest)
    with pytest.raises(ValueError, match=f"^checkpoint {last}: checksum mismatch: the file is damaged$"):
        load_checkpoint(last)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "epochs=2", *FAST]) == 2
    assert capsys.readouterr().err.strip() == (f"spikeforge train: error: checkpoint {last}: "
                                               "checksum mismatch: the file is damaged")
    RunFolder(run, resume=True).release()  # the run that could not begin gave its folder up


def test_the_checksum_covers_values_types_shapes_and_order_but_not_memory_layout():
    w = torch.arange(12.0).reshape(3, 4)
    base = {"model": {"w": w, "b": torch.ones(3)}, "epoch": 2, "rng": [1, (2, 3.5)], "best": None}
    same = {"model": {"w": w.t().contiguous().t(), "b": torch.ones(3)}, "epoch": 2, "rng": [1, (2, 3.5)], "best": None}
    assert content_sha256(same) == content_sha256(base)
    changed = [
        {**base, "model": {"w": w.clone().index_fill_(1, torch.tensor([2]), 0.5), "b": torch.ones(3)}},
        {**base, "model": {"w": w.double(), "b": torch.ones(3)}},
        {**base, "model": {"w": w.reshape(4, 3), "b": torch.ones(3)}},
        {**base, "model": {"b": torch.ones(3), "w": w}},
        {**base, "epoch": 3},
        {**base, "rng": [1, [2, 3.5]]},
        {**base, "best": 0.0},
    ]
    assert len({content_sha256(state) for state in changed} - {content_sha256(base)}) == len(changed)


def test_checkpoints_without_a_checksum_still_load(tmp_path):
    state = {"model": {"w": torch.randn(4)}, "epoch": 3}
    torch.save(state, tmp_path / "old.pt")  # as written before checksums
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded.keys() == state.keys() and torch.equal(loaded["model"]["w"], state["model"]["w"])
    save_checkpoint(state, tmp_path / "new.pt")
    assert load_checkpoint(tmp_path / "new.pt").keys() == state.keys()  # the checksum entry is not handed back


def test_a_failed_checkpoint_write_is_one_line_and_leaves_the_previous_file_alone(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)
    before = path.read_bytes()

    def torch_writer_failure(f):  # what torch raises when the file underneath stops taking bytes
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    with pytest.raises(WriteError, match=f"^cannot write {path}: the write failed \\(is the disk full\\?\\); "
                                         "the previous last.pt is intact$"):
        atomic_write(path, torch_writer_failure)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    with pytest.raises(ZeroDivisionError):  # not a write failure: as it is
        atomic_write(path, lambda f: 1 / 0)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


#: The command line with files limited to LIMIT bytes (argv: LIMIT, then the command's arguments); SIGXFSZ
#: ignored (as Python does anyway), so an oversized write fails with EFBIG instead of killing the process.
LIMITED = """
import resource, runpy, signal, sys
limit = int(sys.argv.pop(1))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
runpy.run_module("spikeforge", run_name="__main__")
"""


def test_disk_full_during_training_is_one_line_and_the_previous_checkpoint_survives(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "epochs=1", *FAST]) == 0
    last = run / "last.pt"
    before = last.read_bytes()
    limit = 16 * 1024  # the metrics line and best.pt fit, last.pt (optimiser state too) does not
    assert len(before) > limit
    result = subprocess.run([sys.executable, "-c", LIMITED, str(limit), "train", "--resume", str(run),
                             "epochs=2", *FAST],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"spikeforge train: error: cannot write {last}: {os.strerror(errno.EFBIG)}; the previous last.pt is intact"]
    assert last.read_bytes() == before and load_checkpoint(last)["epoch"] == 1
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    # with space again, the run continues from epoch 1 and records epoch 2 once
    assert main(["train", "--resume", str(run), "epochs=2", *FAST]) == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
