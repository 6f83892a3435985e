"""Plots a reader can use: points visible, labels legible and apart, whole-number ticks."""

import itertools

import pytest
import torch

pytest.importorskip("matplotlib")

from spikeforge.analysis import EnergyModel  # noqa: E402
from spikeforge.analysis.energy import EnergyReport  # noqa: E402
from spikeforge.analysis.ops import LayerOps, OperationCounts  # noqa: E402
from spikeforge.analysis.rates import NeuronRate  # noqa: E402
from spikeforge.analysis.report import energy_figure  # noqa: E402
from spikeforge.models.spikedhs.genotype import GENOTYPES, Genotype  # noqa: E402
from spikeforge.runtime.plots import history_figure, layer_values_figure, pyplot  # noqa: E402
from spikeforge.search.plots import architecture_figure  # noqa: E402
from spikeforge.stereo import STEREO_GENOTYPES  # noqa: E402
from spikeforge.stereo.search import StereoSearchNet  # noqa: E402


@pytest.fixture
def plt():
    plt = pyplot()
    yield plt
    plt.close("all")


def assert_apart_and_inside(fig, ax, extent=lambda text: text.get_window_extent()):
    """No two texts of ``ax`` (its labels, its tick labels) overlap on the drawn canvas, and none is cut off;
    ``extent``: the canvas box of a text."""
    fig.canvas.draw()
    texts = [t for t in ax.texts + (drawn_ticklabels(ax) if ax.axison else []) if t.get_text()]
    for a, b in itertools.combinations(texts, 2):
        assert not extent(a).overlaps(extent(b)), f"{a.get_text()!r} overlaps {b.get_text()!r}"
    width, height = fig.canvas.get_width_height()
    for box in [extent(t) for t in texts] + [ax.title.get_window_extent()]:
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, "a text is cut off"


def visible_ticks(ax, axis: str) -> list[float]:
    """The tick positions of ``axis`` (``"x"`` or ``"y"``) inside the view limits."""
    low, high = sorted(getattr(ax, f"get_{axis}lim")())
    return [t for t in getattr(ax, f"get_{axis}ticks")() if low <= t <= high]


def drawn_ticklabels(ax) -> list:
    """The tick labels of ``ax`` inside its view limits (the others are not drawn)."""
    x, y = visible_ticks(ax, "x"), visible_ticks(ax, "y")
    return ([t for t in ax.get_xticklabels() if t.get_position()[0] in x]
            + [t for t in ax.get_yticklabels() if t.get_position()[1] in y])


def history(epochs: int) -> list[dict]:
    return [{"epoch": e, "train_acc": 0.5, "test_acc": 0.4, "train_loss": 1.0, "test_loss": 1.2,
             "window_fraction": {"lif1": 0.6, "lif2": 0.5}} for e in range(1, epochs + 1)]


def test_one_epoch_history_marks_its_point_on_whole_epoch_ticks(plt):
    for _fig, axes in (history_figure(plt, history(1)),
                       layer_values_figure(plt, history(1), "window_fraction", "fraction", "title")):
        lines = [line for ax in axes for line in ax.get_lines()]
        assert lines and all(line.get_marker() == "o" for line in lines)
        for ax in axes:
            assert visible_ticks(ax, "x") == [1]


def test_long_history_draws_plain_lines(plt):
    fig, axes = history_figure(plt, history(200))
    assert all(line.get_marker() in ("None", None, "") for ax in axes for line in ax.get_lines())
    assert all(float(t).is_integer() for t in visible_ticks(axes[0], "x"))


def resnet_like_report(blocks: int) -> EnergyReport:
    """A report with ResNet-style layer names: ``blocks`` blocks of two convs and an add, then a classifier."""
    kinds = [(f"backbone.stages.{b // 3}.{b % 3}.{part}", kind) for b in range(blocks)
             for part, kind in (("branch.0.conv", "conv"), ("branch.1.conv", "conv"), ("add", "add"))]
    layers = [LayerOps(name, kind, False, 0.1, 1e6 * (i + 1), 0.0, 0.0, 1e5 * (i + 1))
              for i, (name, kind) in enumerate(kinds + [("backbone.fc.0", "linear")])]
    rates = [NeuronRate(f"backbone.stages.{b // 3}.{b % 3}.branch.0.act", [0.1, 0.2], 0.15, 100) for b in range(blocks)]
    return EnergyReport(OperationCounts(layers, samples=2, timesteps=2, static_input=True), rates, EnergyModel())


@pytest.mark.parametrize("blocks", [1, 8, 24])
def test_energy_plot_labels_are_legible_and_apart_for_any_depth(plt, blocks):
    fig, axes = energy_figure(plt, resnet_like_report(blocks), "resnet19")
    fig.tight_layout()
    for ax in axes:
        assert_apart_and_inside(fig, ax)
        labels = ax.get_yticklabels()
        assert all(t.get_rotation() == 0 and t.get_fontsize() >= 8 for t in labels)
        assert not any(t.get_text().startswith("backbone.") for t in labels)
        assert ax.get_ylabel() == "layer in backbone"
    energy_labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert energy_labels[:3] == ["stages.0.0.branch.0.conv", "stages.0.0.branch.1.conv", "stages.0.0.add"]
    assert energy_labels[-1] == "fc.0 (linear)"


def crossing_genotype() -> Genotype:
    """Four nodes, with the edges n1 -> n2 and n0 -> n3 crossing at their midpoints."""
    return Genotype(((0, "snn_b3"), (1, "snn_b3"), (2, "snn_b5"), (4, "snn_b3"), (5, "skip_connect"),
                     (8, "snn_b5"), (9, "snn_b3"), (11, "skip_connect")), (0, 1, 1), nodes=4)


def searched_stereo():
    torch.manual_seed(0)
    supernet = StereoSearchNet(feature_layers=3, matching_layers=8, base_channels=1)
    return supernet.genotype(), supernet


ARCHITECTURES = {
    "published": lambda: (GENOTYPES["spikedhs_cifar"], None),
    "crossing": lambda: (crossing_genotype(), None),
    "stereo": lambda: (STEREO_GENOTYPES["spikedhs_mvsec"], None),
    "stereo searched": searched_stereo,
}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_architecture_labels_stay_apart_on_whole_level_ticks(plt, name):
    genotype, supernet = ARCHITECTURES[name]()
    fig = architecture_figure(plt, genotype, supernet)
    cell_axes, path_axes = fig.axes[0::2], fig.axes[1::2]
    for ax in cell_axes:  # node circles and op labels, with their background boxes
        assert_apart_and_inside(fig, ax, lambda text: text.get_bbox_patch().get_window_extent())
    for ax in path_axes:
        assert_apart_and_inside(fig, ax)
        levels = round(max(ax.get_ylim()) + 0.5)
        assert visible_ticks(ax, "y") == list(range(levels))
        assert all(float(t).is_integer() for t in visible_ticks(ax, "x"))
    if supernet is not None:
        assert all(len(ax.texts) > 0 for ax in path_axes)  # the transition weights are shown
