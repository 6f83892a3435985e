"""Recipes, overrides and the command line."""

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge import models
from spikeforge.cli import main
from spikeforge.cli.recipes import build_recipe
from spikeforge.convert.config import ConversionConfig
from spikeforge.data import available_datasets
from spikeforge.runtime.config import ConfigError, from_dict, list_recipes, load_recipe, load_yaml, to_dict
from spikeforge.search.config import build_search_config
from spikeforge.train.config import TrainConfig, build_config


def test_every_shipped_recipe_is_valid_and_names_known_parts():
    recipes = list_recipes()
    assert {"digits", "tet-resnet19-cifar10", "tet-resnet19-cifar100", "tet-vggsnn-cifar10dvs",
            "tet-sew-resnet34-imagenet", "tet-tit-resnet19-cifar100", "cpu", "lsg-resnet19-cifar10",
            "lsg-resnet19-cifar100", "lsg-vggsnn-cifar10dvs"} <= set(recipes)
    for name, description in recipes.items():
        assert description, name
        if "supernet" in load_recipe(name):  # an architecture search
            assert build_search_config(name).data.name in available_datasets(), name
            continue
        if isinstance(build_recipe(name), ConversionConfig):  # how a checkpoint is converted: no model, no data
            continue
        config = build_config(name)
        assert config.model.name in models.list_models(), name
        assert config.data.name in available_datasets(), name


def test_round_trip_and_typed_rejections():
    config = build_config("tet-tit-resnet19-cifar100")
    assert [(s.epochs, s.timesteps) for s in config.stage_list()] == [(300, 2), (50, 6)]
    assert from_dict(TrainConfig, yaml.safe_load(yaml.safe_dump(to_dict(config)))) == config
    with pytest.raises(ConfigError, match="unknown key optim.learning_rate"):
        build_config("digits", ["optim.learning_rate=0.1"])
    with pytest.raises(ConfigError, match="unknown key epoch "):
        build_config("digits", ["epoch=3"])
    with pytest.raises(ConfigError, match="epochs: expected int, got 'many'"):
        build_config("digits", ["epochs=many"])
    with pytest.raises(ConfigError, match=r"optim.betas: expected a list of 2 values"):
        build_config("digits", ["optim.betas=[0.9]"])
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        load_recipe("nope")


def test_overrides_apply_with_yaml_values():
    config = build_config("digits", ["optim.lr=0.02", "epochs=3", "model.neuron_kwargs.decay=0.25", "grad_clip=1"])
    assert config.optim.lr == 0.02 and config.epochs == 3 and config.grad_clip == 1.0
    assert config.model.neuron_kwargs["decay"] == 0.25


def test_batch_job_keys_parse_and_bad_values_name_their_key():
    config = build_config("digits", ["checkpoint.every_minutes=0.5", "progress_seconds=5", "log_every=10",
                                     "data.subset=100"])
    assert (config.checkpoint.every_minutes, config.progress_seconds, config.log_every, config.data.subset) == (
        0.5, 5.0, 10, 100)
    defaults = build_config("digits")
    assert (defaults.checkpoint.every_minutes, defaults.progress_seconds, defaults.log_every, defaults.data.subset) == (
        10.0, 60.0, 50, None)
    for override, key in (("data.subset=0", "data.subset"), ("checkpoint.every_minutes=-1", "checkpoint.every_minutes"),
                          ("progress_seconds=-2", "progress_seconds"), ("log_every=0", "log_every")):
        with pytest.raises(ConfigError, match=f"^{key} must be >= "):
            build_config("digits", [override])


def test_cli_trains_evaluates_and_reports_bad_input(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "epochs=1", "progress=false", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "done: best test accuracy" in out
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt"):
        assert (run / name).exists(), name
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["test_acc"] == pytest.approx(record["test_acc"])
    assert main(["train", "optim.lr=fast", "--run-dir", str(tmp_path / "x")]) == 2
    assert "optim.lr: expected float" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err


def test_recipes_command_lists_names(capsys):
    assert main(["recipes"]) == 0
    assert "tet-resnet19-cifar10" in capsys.readouterr().out


def test_overrides_may_follow_options_and_stray_arguments_are_rejected(capsys):
    from spikeforge.cli import build_parser, parse_arguments

    parser = build_parser()
    args = parse_arguments(parser, ["train", "--recipe", "cpu", "epochs=3", "--data-root", "/d", "progress=false"])
    assert args.overrides == ["epochs=3", "progress=false"] and args.data_root == "/d"
    for argv in (["train", "--recipe", "cpu", "--frobnicate"], ["train", "--recipe", "cpu", "-x", "a=1"],
                 ["evaluate", "--checkpoint", "x.pt", "epochs=3"]):
        with pytest.raises(SystemExit):
            parse_arguments(parser, argv)
        assert "unrecognized arguments" in capsys.readouterr().err


def test_genotype_option_sets_the_model_genotype(tmp_path):
    from spikeforge.cli import build_parser, parse_arguments
    from spikeforge.cli.common import resolve_run

    parser = build_parser()
    path = str(tmp_path / "run: 2024" / "genotype.json")  # not YAML: taken as the path it is
    args = parse_arguments(parser, ["train", "--recipe", "spikedhs-retrain-cpu", "--genotype", path, "epochs=1",
                                    "--data-root", "2024"])
    config, _ = resolve_run(args, build_config, None)
    assert config.model.kwargs["genotype"] == path and config.model.kwargs["base_channels"] == 8 and config.epochs == 1
    assert config.data.root == "2024"
    args = parse_arguments(parser, ["train", "--recipe", "spikedhs-retrain-cpu"])
    assert resolve_run(args, build_config, None)[0].model.kwargs["genotype"] == "spikedhs_cifar"


def test_extends_lays_a_recipe_over_its_base(tmp_path):
    base, t4 = build_config("lsg-resnet19-cifar10"), build_config("lsg-resnet19-cifar10-t4")
    assert (base.timesteps, t4.timesteps) == (2, 4)
    assert t4.model == base.model and t4.optim == base.optim and t4.data == base.data
    tet = build_config("lsg-vggsnn-cifar10dvs-tet")
    assert (tet.loss.name, tet.loss.lam) == ("tet", 0.001) and tet.model.neuron == "lsg"
    # sections merge key by key; a file's base path is relative to the file
    (tmp_path / "base.yaml").write_text("model: {name: cifar_fast, neuron: lif}\nepochs: 7\ntimesteps: 3\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nmodel: {neuron: plif}\nepochs: 2\n")
    child = build_config(str(tmp_path / "child.yaml"))
    assert (child.model.name, child.model.neuron, child.epochs, child.timesteps) == ("cifar_fast", "plif", 2, 3)
    (tmp_path / "loop.yaml").write_text(f"extends: {tmp_path / 'loop.yaml'}\n")
    with pytest.raises(ConfigError, match="'extends' loops"):
        build_config(str(tmp_path / "loop.yaml"))
    (tmp_path / "bad.yaml").write_text("extends: [cpu]\n")
    with pytest.raises(ConfigError, match="extends must be a recipe name or path"):
        build_config(str(tmp_path / "bad.yaml"))


@pytest.mark.parametrize("override, message", [
    ("epochs=0", "epochs must be >= 1, got 0"),
    ("epochs=-1", "epochs must be >= 1, got -1"),
    ("timesteps=0", "timesteps must be >= 1, got 0"),
    ("stages=[{epochs: 2, timesteps: 2}, {epochs: 0, timesteps: 4}]", "stages[1].epochs must be >= 1, got 0"),
    ("stages=[{epochs: 2, timesteps: 0}]", "stages[0].timesteps must be >= 1, got 0"),
    ("stages=[{epochs: 2, timesteps: 2, lr: -0.1}]", "stages[0].lr must be finite and > 0 (or null), got -0.1"),
    ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
    ("data.eval_batch_size=0", "data.eval_batch_size must be >= 1 (or null), got 0"),
    ("data.workers=-1", "data.workers must be >= 0, got -1"),
    ("optim.lr=0", "optim.lr must be finite and > 0, got 0.0"),
    ("optim.lr=.inf", "optim.lr must be finite and > 0, got inf"),
    ("optim.lr=.nan", "optim.lr must be finite and > 0, got nan"),
    ("optim.momentum=1.5", "optim.momentum must be in [0, 1], got 1.5"),
    ("optim.weight_decay=-1e-4", "optim.weight_decay must be >= 0, got -0.0001"),
    ("optim.betas=[0.9, 1]", "optim.betas[1] must be in [0, 1), got 1.0"),
    ("schedule.warmup_epochs=-1", "schedule.warmup_epochs must be >= 0, got -1.0"),
    ("schedule.min_lr=-1", "schedule.min_lr must be >= 0, got -1.0"),
    ("schedule.milestones=[3, -1]", "schedule.milestones[1] must be >= 0, got -1.0"),
    ("schedule.gamma=0", "schedule.gamma must be finite and > 0, got 0.0"),
    ("loss.lam=1.5", "loss.lam must be in [0, 1], got 1.5"),
    ("loss.label_smoothing=-0.1", "loss.label_smoothing must be in [0, 1], got -0.1"),
    ("loss.aux_weight=-1", "loss.aux_weight must be >= 0, got -1.0"),
    ("loss.diversity=0", "loss.diversity must be finite and > 0, got 0.0"),
    ("grad_clip=-1", "grad_clip must be >= 0 (or null), got -1.0"),
    ("distributed.timeout_minutes=0", "distributed.timeout_minutes must be finite and > 0, got 0.0"),
])
def test_counts_sizes_and_rates_out_of_range_name_their_key(override, message):
    with pytest.raises(ConfigError) as err:
        build_config("digits", [override])
    assert str(err.value) == message


@pytest.mark.parametrize("override, message", [
    ("epochs=0", "epochs must be >= 1, got 0"),
    ("timesteps=0", "timesteps must be >= 1, got 0"),
    ("subset=0", "subset must be >= 1 (or null), got 0"),
    ("eval_samples=0", "eval_samples must be >= 1, got 0"),
    ("progress_seconds=-1", "progress_seconds must be >= 0, got -1.0"),
    ("grad_clip=-5", "grad_clip must be >= 0 (or null), got -5.0"),
    ("supernet.layers=0", "supernet.layers must be >= 1, got 0"),
    ("supernet.base_channels=0", "supernet.base_channels must be >= 1, got 0"),
    ("supernet.max_disparity=0", "supernet.max_disparity must be >= 1, got 0"),
    ("supernet.feature_channels=0", "supernet.feature_channels must be >= 1 (or null), got 0"),
    ("arch.lr=0", "arch.lr must be finite and > 0, got 0.0"),
    ("arch.betas=[1.0, 0.9]", "arch.betas[0] must be in [0, 1), got 1.0"),
    ("arch.weight_decay=-1", "arch.weight_decay must be >= 0, got -1.0"),
    ("arch.warmup_epochs=-1", "arch.warmup_epochs must be >= 0, got -1"),
    ("arch.train_portion=1", "arch.train_portion must be in (0, 1), got 1.0"),
    ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
    ("optim.lr=-0.1", "optim.lr must be finite and > 0, got -0.1"),
])
def test_search_counts_sizes_and_rates_out_of_range_name_their_key(override, message):
    with pytest.raises(ConfigError) as err:
        build_search_config("spikedhs-cpu", [override])
    assert str(err.value) == message


def test_zero_epochs_is_refused_by_the_command_line(tmp_path, capsys):
    assert main(["train", "epochs=0", "--run-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == "spikeforge train: error: epochs must be >= 1, got 0\n"
    assert not (tmp_path / "run").exists()


def test_floats_may_be_written_with_an_exponent_in_overrides_and_recipes(tmp_path):
    config = build_config("digits", ["optim.lr=1e-3", "schedule.min_lr=5E-6", "model.neuron_kwargs.decay=2.5e-1",
                                     "optim.betas=[0.9, 9.99e-1]", "epochs=3"])
    assert (config.optim.lr, config.schedule.min_lr, config.optim.betas) == (1e-3, 5e-6, (0.9, 0.999))
    assert config.model.neuron_kwargs["decay"] == 0.25 and config.epochs == 3 and type(config.epochs) is int
    (tmp_path / "r.yaml").write_text("extends: digits\noptim: {lr: 2e-3, weight_decay: 1e-5}\nrun_name: '1e3'\n")
    config = build_config(str(tmp_path / "r.yaml"))
    assert (config.optim.lr, config.optim.weight_decay, config.run_name) == (2e-3, 1e-5, "1e3")
    for text in ("fast", "1e", "e3", "1e-3x"):
        with pytest.raises(ConfigError, match=f"^optim.lr: expected float, got '{text}'$"):
            build_config("digits", [f"optim.lr={text}"])


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["e", "E"]), st.integers(-10**6, 10**6))
def test_yaml_reads_every_exponent_spelling_as_python_does_and_integers_stay_integers(x, e, n):
    for text in (f"{x:e}".replace("e", e), f"{x:.0e}", f"{x:.3E}".replace("E+", "E")):
        assert load_yaml(text) == float(text)
    assert type(load_yaml(str(n))) is int and load_yaml(str(n)) == n


def _untrained_checkpoint(tmp_path, *overrides):
    """``tmp_path/c.pt``: a checkpoint of the digits recipe with ``overrides``, at its initial weights."""
    from spikeforge.runtime.checkpoint import save_checkpoint
    from spikeforge.train.trained import build_model

    config = build_config("digits", list(overrides))
    path = tmp_path / "c.pt"
    save_checkpoint({"model": build_model(config, 10, 4).state_dict(), "config": to_dict(config), "num_classes": 10},
                    path)
    return path


def test_evaluate_checkpoint_refuses_bad_timesteps(tmp_path):
    from spikeforge.train import evaluate_checkpoint

    path = _untrained_checkpoint(tmp_path)
    for steps in (0, -2, 2.5):
        with pytest.raises(ValueError, match=rf"^timesteps must be an integer >= 1, got {steps}$"):
            evaluate_checkpoint(path, timesteps=steps, device="cpu")


def test_evaluate_never_downloads_what_the_checkpoints_recipe_asked_for(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    import torchvision

    from spikeforge.data.errors import DatasetNotFoundError
    from spikeforge.train import evaluate_checkpoint

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", lambda self: pytest.fail("a download was tried"))
    # the recipe reads CIFAR-10 from a folder that does not exist, with download on
    path = _untrained_checkpoint(tmp_path, "data.name=cifar10", "data.download=true", f"data.root={tmp_path / 'data'}")
    with pytest.raises(DatasetNotFoundError) as err:
        evaluate_checkpoint(path, device="cpu")
    assert str(err.value).startswith(f"CIFAR-10 not found in {tmp_path / 'data'}") and "\n" not in str(err.value)
    assert not (tmp_path / "data").exists()
