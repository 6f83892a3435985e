"""A picture of a searched architecture: the decoded cell (left) and the network path (right),
one row per searched network (two for stereo: feature and matching)."""

from __future__ import annotations

from pathlib import Path

from ..train.logging import pyplot
from .cells import edge_inputs
from .genotype import TRELLIS_MOVES, Genotype
from .trellis import MOVE_NAMES

__all__ = ["plot_architecture"]


def plot_architecture(genotype, supernet=None, path: str | Path = "architecture.png") -> Path | None:
    """Draw a :class:`Genotype`'s cell as a graph and its path on the trellis (a ``StereoGenotype``:
    both networks); with ``supernet`` the trellis shows the transition weights too. Returns the PNG
    path, or None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    if isinstance(genotype, Genotype):
        rows = [("", genotype, supernet)]
    else:  # a stereo genotype: the feature and the matching network
        trellises = supernet.trellises if supernet is not None else {}
        rows = [(f"{name}: ", getattr(genotype, name), trellises.get(name)) for name in ("feature", "matching")]
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 4.2 * len(rows)), squeeze=False)
    for (title, part, trellis), (ax_cell, ax_path) in zip(rows, axes):
        _draw_cell(ax_cell, part, title)
        _draw_path(ax_path, part, trellis, title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _draw_cell(ax, genotype: Genotype, title: str = "") -> None:
    steps = genotype.steps
    pos = {"s0": (0.0, 1.0), "s1": (0.0, -1.0)}
    for i in range(steps):
        pos[f"n{i}"] = (1.0 + i, 0.6 * (-1) ** i)
    pos["out"] = (steps + 1.0, 0.0)
    names = ["s0", "s1"] + [f"n{i}" for i in range(steps)]
    inputs = edge_inputs(steps)
    colours = {"snn_b3": "tab:blue", "snn_b5": "tab:red", "skip_connect": "tab:gray"}
    for edge, op in genotype.cell:
        node, source = inputs[edge]
        (x0, y0), (x1, y1) = pos[names[source]], pos[f"n{node}"]
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color=colours.get(op, "k"), lw=1.5))
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, op, fontsize=7, color=colours.get(op, "k"), ha="center")
    for i in range(steps):
        (x0, y0), (x1, y1) = pos[f"n{i}"], pos["out"]
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color="0.7", ls="--"))
    for name, (x, y) in pos.items():
        ax.text(x, y, name, ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="circle", fc="lightyellow" if name.startswith("n") else "lightgrey"))
    ax.set(xlim=(-0.5, steps + 1.5), ylim=(-1.6, 1.6), title=f"{title}cell (edges: op; all nodes concatenated)")
    ax.axis("off")


def _draw_path(ax, genotype: Genotype, trellis, title: str = "") -> None:
    layers = len(genotype.path)
    levels = max(max(genotype.path) + 1, trellis.levels if trellis is not None else 0)
    moves = "|".join(MOVE_NAMES[m] for m in TRELLIS_MOVES[genotype.trellis])
    if trellis is not None:
        weights = trellis.transition_weights().detach().cpu()
        for layer in range(min(layers, weights.shape[0])):
            for k in range(levels):
                ax.text(layer, k + 0.25, "|".join(f"{w:.2f}" for w in weights[layer, k].tolist()),
                        fontsize=6, ha="center", color="0.4")
    grid = [(layer, k) for layer in range(layers) for k in range(levels)]
    ax.scatter([g[0] for g in grid], [g[1] for g in grid], s=20, c="0.8")
    ax.plot([-1] + list(range(layers)), [0] + list(genotype.path), "o-", color="tab:green", lw=2)
    ax.set(xlabel="layer (-1: stem)", ylabel="level (size / 2^level)", xlim=(-1.5, layers - 0.5),
           ylim=(levels - 0.5, -0.5), title=f"{title}network path ({moves} weights)")
    ax.grid(alpha=0.3)
