"""``spikeforge convert`` command on a tiny QCFS digits checkpoint."""

import argparse
import json

import pytest
import torch

from spikeforge import cli
from spikeforge.cli.convert import add_parser, parse_timesteps
from spikeforge.runtime.config import from_dict, to_dict
from spikeforge.train.config import TrainConfig
from spikeforge.train.trained import build_model


def main(argv):
    return cli.main(argv)


def _checkpoint(tmp_path, neuron="qcfs", neuron_kwargs=None):
    config = from_dict(TrainConfig, {
        "model": {"name": "digits_cnn", "neuron": neuron, "neuron_kwargs": neuron_kwargs or {"levels": 4, "threshold": 2.0},
                  "kwargs": {"width": 4}},
        "data": {"name": "digits", "batch_size": 32},
    })
    torch.manual_seed(0)
    model = build_model(config, 10, 2)
    path = tmp_path / "best.pt"
    torch.save({"model": model.state_dict(), "config": to_dict(config), "num_classes": 10}, path)
    return path


def test_convert_command_writes_table_and_json(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "out"
    code = main(["convert", "--checkpoint", str(ckpt), "--timesteps", "4,1,2", "--srp-tau", "2", "--limit", "40",
                 "--out", str(out), "--bn", "fold", "--chunk", "3"])
    assert code == 0
    text = capsys.readouterr().out
    assert "ANN (QCFS)" in text and "SRP tau=2" in text
    result = json.loads((out / "convert.json").read_text())
    assert result["timesteps"] == [1, 2, 4] and result["samples"] == 40 and result["levels"] == [4]
    assert len(result["snn_acc"]) == 3 and len(result["srp_acc"]) == 3 and len(result["snn_acc_all_t"]) == 4
    assert result["srp_total_steps"] == [3, 4, 6]
    assert 0 <= result["ann_acc"] <= 1


def test_convert_parser_hook_and_errors(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(["convert", "--checkpoint", "x.pt"])
    assert args.timesteps == "1,2,4,8,16,32,64" and args.bn == "keep" and args.srp_tau == 0 and callable(args.func)
    assert parse_timesteps("8, 2,2") == [2, 8]
    with pytest.raises(ValueError):
        parse_timesteps("0,2")
    lif = _checkpoint(tmp_path, neuron="lif", neuron_kwargs={"v_th": 1.0})
    assert main(["convert", "--checkpoint", str(lif), "--limit", "4"]) == 2
    assert "qcfs" in capsys.readouterr().err
    assert main(["convert", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
