"""``spikeforge export`` on tiny checkpoints: a LIF network and a QCFS ANN (converted on export)."""

import pytest
import torch

from spikeforge.cli import main
from spikeforge.runtime.config import from_dict, to_dict
from spikeforge.train.config import TrainConfig
from spikeforge.train.trained import build_model

nir = pytest.importorskip("nir")
from nir_helpers import randomise_bn  # noqa: E402

from spikeforge.convert import to_snn  # noqa: E402
from spikeforge.export import from_nir  # noqa: E402


def checkpoint(tmp_path, name="digits_cnn", neuron="lif", neuron_kwargs=None, kwargs=None):
    config = from_dict(TrainConfig, {
        "model": {"name": name, "neuron": neuron, "neuron_kwargs": neuron_kwargs or {},
                  "kwargs": kwargs or {"width": 4}},
        "data": {"name": "digits"}, "timesteps": 3,
    })
    torch.manual_seed(0)
    model = randomise_bn(build_model(config, 10, 3))
    path = tmp_path / f"{neuron}.pt"
    torch.save({"model": model.state_dict(), "config": to_dict(config), "num_classes": 10}, path)
    return path, model


@pytest.mark.parametrize("neuron, kinds", [("lif", "2 LIF"), ("qcfs", "2 IF")])
def test_export_writes_a_graph_that_reproduces_the_checkpoint(tmp_path, capsys, neuron, kinds):
    qcfs = {"levels": 4, "threshold": 1.0} if neuron == "qcfs" else None
    path, model = checkpoint(tmp_path, neuron=neuron, neuron_kwargs=qcfs)
    out = tmp_path / "export" / "net.nir"
    assert main(["export", "--checkpoint", str(path), "--format", "nir", str(out)]) == 0
    line = capsys.readouterr().out
    assert str(out) in line and kinds in line and "input [1, 16, 16] -> output [10]" in line
    net = to_snn(model, timesteps=3, bn="fold") if neuron == "qcfs" else model
    again = from_nir(out)
    assert again.timesteps == 3
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert (again(x) - net(x)).abs().max() < 1e-5


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--format", "nir", "x.nir"]) == 2
    assert "does not exist" in capsys.readouterr().err
    path, _ = checkpoint(tmp_path, name="cifar_fast", kwargs={"widths": [4, 4, 4], "stem_width": 4})
    assert main(["export", "--checkpoint", str(path), "--format", "nir", str(tmp_path / "x.nir"),
                 "--input-shape", "3,32,32"]) == 2
    assert "layer 1.pool (MaxPool2d)" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(path), "--format", "nir", "x.nir", "--input-shape", "3,a"]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(path), "--format", "onnx", "x.nir"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'onnx'" in err and err.count("\n") == 1
