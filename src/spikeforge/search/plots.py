"""A picture of a searched architecture: the decoded cell (left) and the network path (right)."""

from __future__ import annotations

from pathlib import Path

from ..train.logging import pyplot
from .cells import edge_inputs
from .genotype import Genotype

__all__ = ["plot_architecture"]


def plot_architecture(genotype: Genotype, supernet=None, path: str | Path = "architecture.png") -> Path | None:
    """Draw ``genotype``'s cell as a graph and its path on the trellis; with ``supernet`` the trellis
    shows the transition weights too. Returns the PNG path, or None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    fig, (ax_cell, ax_path) = plt.subplots(1, 2, figsize=(11, 4.2))
    _draw_cell(ax_cell, genotype)
    _draw_path(ax_path, genotype, supernet)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _draw_cell(ax, genotype: Genotype) -> None:
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
    ax.set(xlim=(-0.5, steps + 1.5), ylim=(-1.6, 1.6), title="cell (edges: op; all nodes concatenated)")
    ax.axis("off")


def _draw_path(ax, genotype: Genotype, supernet) -> None:
    layers = len(genotype.path)
    levels = max(max(genotype.path) + 1, supernet.levels if supernet is not None else 0)
    if supernet is not None:
        weights = supernet.transition_weights().detach().cpu()
        for layer in range(min(layers, weights.shape[0])):
            for k in range(levels):
                ax.text(layer, k + 0.25, f"{weights[layer, k, 0]:.2f}|{weights[layer, k, 1]:.2f}",
                        fontsize=6, ha="center", color="0.4")
    grid = [(layer, k) for layer in range(layers) for k in range(levels)]
    ax.scatter([g[0] for g in grid], [g[1] for g in grid], s=20, c="0.8")
    ax.plot([-1] + list(range(layers)), [0] + list(genotype.path), "o-", color="tab:green", lw=2)
    ax.set(xlabel="layer (-1: stem)", ylabel="level (size / 2^level)", xlim=(-1.5, layers - 0.5),
           ylim=(levels - 0.5, -0.5), title="network path (stay|down weights)")
    ax.grid(alpha=0.3)
