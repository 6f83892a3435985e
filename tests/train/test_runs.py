"""Run folders read back: summaries, the comparison table, the CLI, plots."""

import json

import pytest
import yaml

from spikeforge.cli import main
from spikeforge.train.runs import comparison_table, load_run, plot_comparison, redraw_plots


def write_run(folder, accs, task="classification", neuron="lif", fractions=None, metric="acc"):
    """A run folder as the trainer writes it, with test ``metric`` values ``accs`` per epoch, 30 s each."""
    folder.mkdir(parents=True)
    recipe = {"task": task, "model": {"name": "cifar_fast", "neuron": neuron}, "loss": {"name": None}}
    (folder / "config.yaml").write_text(yaml.safe_dump(recipe))
    lines = []
    for epoch, value in enumerate(accs, 1):
        record = {"epoch": epoch, "timesteps": 2, "train_loss": 1.0, "test_loss": 1.0, f"train_{metric}": value,
                  f"test_{metric}": value, "elapsed": 30.0 * epoch}
        if fractions is not None:
            record["window_fraction"] = {f"layer{i}": f + 0.01 * epoch for i, f in enumerate(fractions)}
        lines.append(json.dumps(record))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_summary_picks_best_epoch_by_the_tasks_direction(tmp_path):
    import spikeforge.stereo  # noqa: F401  (registers the stereo task the second run names)

    acc = load_run(write_run(tmp_path / "a", [0.5, 0.8, float("nan"), 0.7])).summary()
    assert (acc["best"], acc["best_epoch"], acc["final"], acc["epochs"]) == (0.8, 2, 0.7, 4)
    assert acc["minutes"] == pytest.approx(2.0) and acc["loss"] == "default"
    # stereo errors: lower is better
    err = load_run(write_run(tmp_path / "s", [3.0, 1.5, 2.0], task="stereo", metric="mean_disparity_error")).summary()
    assert (err["best"], err["best_epoch"], err["metric"]) == (1.5, 2, "mean_disparity_error")


def test_table_lists_each_run_and_its_final_window_fractions(tmp_path):
    runs = [load_run(write_run(tmp_path / "lsg", [0.6, 0.84], neuron="lsg", fractions=[0.6, 0.3])),
            load_run(write_run(tmp_path / "none", [0.7, 0.83], fractions=[0.5]))]
    rows = comparison_table(runs, window_fraction=True).splitlines()
    assert rows[0].split(" | ")[-2:] == ["window L1", "window L2 |"]
    assert rows[2] == "| lsg | cifar_fast | lsg | default | 2 | 2 | 84.00 (2) | 84.00 | 1.0 | 0.620 | 0.320 |"
    assert rows[3] == "| none | cifar_fast | lif | default | 2 | 2 | 83.00 (2) | 83.00 | 1.0 | 0.520 | - |"
    assert "window" not in comparison_table(runs)
    stereo = load_run(write_run(tmp_path / "st", [2.0], task="stereo", metric="mean_disparity_error"))
    with pytest.raises(ValueError, match="different metrics"):
        comparison_table(runs + [stereo])


def test_bad_folders_give_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        load_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON record"):
        load_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "val_acc": 0.5}\n')
    with pytest.raises(ValueError, match="no test_acc"):
        load_run(tmp_path)


def test_runs_command_prints_table_and_writes_plots(tmp_path, capsys, plots_expected):
    a = write_run(tmp_path / "a", [0.5, 0.9], fractions=[0.4, 0.2])
    b = write_run(tmp_path / "b", [0.6, 0.7], fractions=[0.5, 0.1])
    png = tmp_path / "compare.png"
    code = main(["runs", str(a), str(b), "--window-fraction", "--plot", str(png), "--redraw"])
    if not plots_expected:  # asked for plots without matplotlib: one line naming the extra, nothing drawn
        assert code == 2 and 'pip install "spikeforge[plot]"' in capsys.readouterr().err and not png.exists()
        code = main(["runs", str(a), str(b), "--window-fraction"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| a | cifar_fast | lif | default | 2 | 2 | 90.00 (2) |" in out
    assert png.exists() == plots_expected
    assert (a / "window_fraction.png").exists() == plots_expected == (b / "history.png").exists()
    assert (plot_comparison([load_run(a)], tmp_path / "one.png") is not None) == plots_expected
    assert len(redraw_plots(load_run(a).records, tmp_path, "acc")) == (2 if plots_expected else 0)
    assert main(["runs", str(tmp_path / "missing")]) == 2
    assert "missing: no metrics.jsonl" in capsys.readouterr().err
