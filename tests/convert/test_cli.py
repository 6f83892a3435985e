"""``spikeforge convert`` command on a tiny QCFS digits checkpoint; conversion recipes."""

import argparse
import json

import pytest
import torch
import yaml

from spikeforge import cli
from spikeforge.cli.convert import add_parser, conversion_config, parse_timesteps
from spikeforge.convert.config import ConversionConfig, build_conversion_config
from spikeforge.runtime.config import from_dict, to_dict
from spikeforge.train.config import TrainConfig
from spikeforge.train.trained import build_model


def main(argv):
    return cli.main(argv)


def _checkpoint(tmp_path, neuron="qcfs", neuron_kwargs=None):
    config = from_dict(TrainConfig, {
        "model": {"name": "digits_cnn", "neuron": neuron,
                  "neuron_kwargs": neuron_kwargs or {"levels": 4, "threshold": 2.0}, "kwargs": {"width": 4}},
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
    config = conversion_config(args)
    assert config.timesteps == [1, 2, 4, 8, 16, 32, 64] and config.bn == "keep" and config.srp_tau == 0
    assert callable(args.func)
    assert parse_timesteps("8, 2,2") == [2, 8]
    with pytest.raises(ValueError):
        parse_timesteps("0,2")
    lif = _checkpoint(tmp_path, neuron="lif", neuron_kwargs={"v_th": 1.0})
    assert main(["convert", "--checkpoint", str(lif), "--limit", "4"]) == 2
    assert "qcfs" in capsys.readouterr().err
    assert main(["convert", "--checkpoint", str(tmp_path / "missing.pt")]) == 2


def _result(out):
    result = json.loads((out / "convert.json").read_text())
    del result["seconds"]
    return result


def test_a_recipe_with_overrides_gives_what_the_same_flags_give(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path)
    recipe = tmp_path / "conversion.yaml"
    recipe.write_text("description: a test\ntimesteps: [4, 1, 2]\nsrp_tau: 5\nbn: fold\nlimit: 40\n")
    flags = ["--timesteps", "4,1,2", "--srp-tau", "2", "--bn", "fold", "--limit", "40", "--chunk", "3"]
    assert main(["convert", "--checkpoint", str(ckpt), "--out", str(tmp_path / "flags"), *flags]) == 0
    assert main(["convert", "--checkpoint", str(ckpt), "--out", str(tmp_path / "recipe"), "--recipe", str(recipe),
                 "srp_tau=2", "chunk=3"]) == 0
    assert _result(tmp_path / "recipe") == _result(tmp_path / "flags")
    assert _result(tmp_path / "flags")["srp_tau"] == 2 and _result(tmp_path / "flags")["bn"] == "fold"

    parser = cli.build_parser(["convert"])
    from_flags = conversion_config(cli.parse_arguments(parser, ["convert", "--checkpoint", "x.pt", *flags]))
    from_recipe = conversion_config(cli.parse_arguments(parser, [
        "convert", "--checkpoint", "x.pt", "--recipe", str(recipe), "srp_tau=2", "chunk=3"]))
    assert from_recipe == ConversionConfig(timesteps=[1, 2, 4], srp_tau=2, bn="fold", limit=40, chunk=3,
                                           description="a test")
    assert from_flags == ConversionConfig(timesteps=[1, 2, 4], srp_tau=2, bn="fold", limit=40, chunk=3)
    # a flag is the override of its key, applied last: --srp-tau 0 turns off the recipe's SRP
    off = conversion_config(cli.parse_arguments(parser, [
        "convert", "--checkpoint", "x.pt", "--recipe", str(recipe), "--srp-tau", "0", "srp_tau=3"]))
    assert off.srp_tau == 0 and off.bn == "fold"


@pytest.mark.parametrize("argv, message", [
    (["srp_tua=2"], "unknown key srp_tua (known: batch_size, bn, chunk, description, limit, srp_tau, timesteps)"),
    (["srp_tau=-1"], "srp_tau must be >= 0, got -1"),
    (["--srp-tau", "-1"], "srp_tau must be >= 0, got -1"),
    (["bn=merge"], "bn must be keep or fold, got 'merge'"),
    (["timesteps=[]"], "timesteps must be a non-empty list of time steps, got []"),
    (["--timesteps", "0,2"], "timesteps[0] must be >= 1, got 0"),
    (["chunk=0"], "chunk must be >= 1, got 0"),
    (["--recipe", "qcfs-cpu"], "unknown key data (known: batch_size, bn, chunk, description, limit, srp_tau, "),
])
def test_bad_conversion_keys_give_one_line_naming_the_key(tmp_path, capsys, argv, message):
    ckpt = _checkpoint(tmp_path)
    assert main(["convert", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"spikeforge convert: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_an_unknown_flag_names_the_conversion_key(capsys):
    assert main(["convert", "--checkpoint", "x.pt", "--srptau", "4"]) == 2
    assert "did you mean srp_tau=4?" in capsys.readouterr().err


def test_the_shipped_conversion_recipe_is_listed_and_resolved(capsys):
    config = build_conversion_config("convert-qcfs-srp", ["srp_tau=8"])
    assert config.timesteps == [1, 2, 4, 8, 16, 32, 64] and config.srp_tau == 8 and config.bn == "keep"
    assert main(["recipes"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("convert-qcfs-srp ")]
    assert len(listed) == 1 and "SRP" in listed[0]
    assert main(["recipes", "convert-qcfs-srp", "srp_tau=8"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == {"timesteps": [1, 2, 4, 8, 16, 32, 64], "srp_tau": 8, "bn": "keep", "limit": None,
                       "batch_size": None, "chunk": 16, "description": config.description}
