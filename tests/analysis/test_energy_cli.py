"""``spikeforge energy`` on checkpoints of tiny trainings (digits_cnn on the embedded digits)."""

import csv
import json

import pytest

import spikeforge.convert  # noqa: F401  (registers neuron="qcfs", which one checkpoint is trained with)
from spikeforge import cli
from spikeforge.runtime.config import DataConfig, OptimConfig
from spikeforge.train import Trainer
from spikeforge.train.config import ModelConfig, TrainConfig


def train(run_dir, neuron: str, timesteps: int):
    config = TrainConfig(
        model=ModelConfig(name="digits_cnn", neuron=neuron, kwargs={"width": 2}),
        data=DataConfig(name="digits", batch_size=128, eval_batch_size=512, options={"size": 8}),
        optim=OptimConfig(name="adam", lr=0.01, weight_decay=0.0),
        epochs=1, timesteps=timesteps, progress=False,
    )
    Trainer(config, run_dir, log=lambda *args, **kwargs: None).fit()
    return run_dir / "best.pt"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"lif": train(root / "lif", "lif", 2), "qcfs": train(root / "qcfs", "qcfs", 1)}


def test_energy_command_writes_table_json_csv_and_plot(checkpoints, tmp_path, capsys, plots_expected):
    out = tmp_path / "energy"
    assert cli.main(["energy", "--checkpoint", str(checkpoints["lif"]), "--samples", "40", "--batch-size", "16",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ANN / SNN energy" in printed and "backbone.2.conv" in printed
    result = json.loads((out / "energy.json").read_text())
    assert (result["samples"], result["timesteps"], result["model"]) == (40, 2, "digits_cnn")
    assert [layer["kind"] for layer in result["layers"]] == ["conv", "pool", "conv", "pool", "linear"]
    first = result["layers"][0]
    assert first["analog_input"] and first["snn_macs"] == 2 * first["ann_macs"]
    rows = list(csv.DictReader((out / "energy.csv").open()))
    assert [row["name"] for row in rows][-1] == "total"
    assert float(rows[-1]["snn_energy_pj"]) == pytest.approx(result["totals"]["snn_energy_pj"])
    assert (out / "energy.png").exists() == plots_expected


def test_energy_command_converts_a_qcfs_checkpoint(checkpoints, tmp_path, capsys):
    out = tmp_path / "energy"
    args = ["energy", "--checkpoint", str(checkpoints["qcfs"]), "--samples", "20", "--out", str(out)]
    assert cli.main(args) == 2
    assert "--timesteps" in capsys.readouterr().err
    assert cli.main([*args, "--timesteps", "4", "--e-ac", "0.5"]) == 0
    result = json.loads((out / "energy.json").read_text())
    assert result["timesteps"] == 4 and result["energy_model_pj"] == {"e_mac": 4.6, "e_ac": 0.5}
    assert [rate["name"] for rate in result["neurons"]] == ["backbone.0.act", "backbone.2.act"]


@pytest.mark.parametrize("bad, message", [(["--samples", "0"], "--samples"), (["--e-mac", "-1"], "e_mac")])
def test_bad_arguments_exit_with_one_line(checkpoints, tmp_path, capsys, bad, message):
    assert cli.main(["energy", "--checkpoint", str(checkpoints["lif"]), "--out", str(tmp_path), *bad]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
