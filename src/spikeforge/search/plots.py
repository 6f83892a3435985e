"""A picture of a searched architecture: the decoded cell (left) and the network path (right),
one row per searched network (two for stereo: feature and matching)."""

from __future__ import annotations

from pathlib import Path

from ..models.spikedhs.genotype import TRELLIS_MOVES, Genotype
from ..models.spikedhs.operations import edge_inputs
from ..runtime.plots import pyplot
from .trellis import MOVE_NAMES

__all__ = ["architecture_figure", "plot_architecture"]

_OP_COLOURS = {"snn_b3": "tab:blue", "snn_b5": "tab:red", "skip_connect": "tab:gray"}
#: Where along its edge an op label may sit (fraction from the source), most wanted first.
_LABEL_SPOTS = (0.5, 0.35, 0.65, 0.25, 0.75)
#: Arrows stop this many points short of a node's centre, so their heads show outside its circle.
_NODE_RADIUS = 11


def architecture_figure(plt, genotype, supernet=None):
    """The figure of :func:`plot_architecture`: a row (cell, path) per searched network."""
    if isinstance(genotype, Genotype):
        rows = [("", genotype, supernet)]
    else:  # a stereo genotype: the feature and the matching network
        trellises = supernet.trellises if supernet is not None else {}
        rows = [(f"{name}: ", getattr(genotype, name), trellises.get(name)) for name in ("feature", "matching")]
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 4.2 * len(rows)), squeeze=False)
    for (title, part, trellis), (ax_cell, ax_path) in zip(rows, axes):
        _frame_cell(ax_cell, part.nodes, title)
        _draw_path(ax_path, part, trellis, title)
    fig.tight_layout()  # first: the cells' labels are placed where they will be drawn
    renderer = fig.canvas.get_renderer()
    for (_, part, _), (ax_cell, _) in zip(rows, axes):
        _draw_cell(ax_cell, part, renderer)
    return fig


def plot_architecture(genotype, supernet=None, path: str | Path = "architecture.png") -> Path | None:
    """Draw a :class:`Genotype`'s cell as a graph and its path on the trellis (a ``StereoGenotype``:
    both networks); with ``supernet`` the trellis shows the transition weights too. Returns the PNG
    path, or None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    fig = architecture_figure(plt, genotype, supernet)
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _cell_positions(nodes: int) -> dict[str, tuple[float, float]]:
    """Where each node of a ``nodes``-node cell is drawn: inputs left, nodes zigzag, output right."""
    pos = {"s0": (0.0, 1.0), "s1": (0.0, -1.0)}
    pos.update({f"n{i}": (1.0 + i, 0.6 * (-1) ** i) for i in range(nodes)})
    pos["out"] = (nodes + 1.0, 0.0)
    return pos


def _frame_cell(ax, nodes: int, title: str) -> None:
    ax.set(xlim=(-0.5, nodes + 1.5), ylim=(-1.6, 1.6), title=f"{title}cell (edges: op; all nodes concatenated)")
    ax.axis("off")


def _draw_cell(ax, genotype: Genotype, renderer) -> None:
    """Nodes, the genotype's edges with their op labels (none overlapping where avoidable), the output's inputs."""
    pos = _cell_positions(genotype.nodes)
    names = ["s0", "s1"] + [f"n{i}" for i in range(genotype.nodes)]
    inputs = edge_inputs(genotype.nodes)
    taken = [_draw_node(ax, name, xy, renderer) for name, xy in pos.items()]
    for i in range(genotype.nodes):
        _arrow(ax, pos[f"n{i}"], pos["out"], color="0.7", ls="--")
    for edge, op in genotype.cell:
        node, source = inputs[edge]
        start, end = pos[names[source]], pos[f"n{node}"]
        colour = _OP_COLOURS.get(op, "k")
        _arrow(ax, start, end, color=colour, lw=1.5)
        label = ax.text(*start, op, fontsize=7, color=colour, ha="center", va="center", zorder=4,
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
        taken.append(_place_label(label, start, end, taken, renderer))


def _arrow(ax, start, end, **style) -> None:
    ax.annotate("", end, start, arrowprops=dict(arrowstyle="->", shrinkA=_NODE_RADIUS, shrinkB=_NODE_RADIUS, **style))


def _draw_node(ax, name: str, xy, renderer):
    """A node's circle at ``xy``; returns its extent on the canvas."""
    node = ax.text(*xy, name, ha="center", va="center", fontsize=9, zorder=5,
                   bbox=dict(boxstyle="circle", fc="lightyellow" if name.startswith("n") else "lightgrey"))
    return _box_extent(node, renderer)


def _box_extent(text, renderer):
    """The canvas extent of ``text`` with its background box."""
    text.update_bbox_position_size(renderer)
    return text.get_bbox_patch().get_window_extent(renderer)


def _place_label(label, start, end, taken: list, renderer):
    """Put ``label`` at the spot along the edge ``start -> end`` that overlaps the fewest extents of
    ``taken`` (the most wanted spot among equals); returns its extent there."""

    def move(t: float):
        label.set_position((start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])))
        return _box_extent(label, renderer)

    best = min(_LABEL_SPOTS, key=lambda t: sum(move(t).overlaps(other) for other in taken))
    return move(best)


def _draw_path(ax, genotype: Genotype, trellis, title: str = "") -> None:
    """The path on the trellis grid, with each grid point's move weights below it when ``trellis`` is given."""
    from matplotlib.ticker import MaxNLocator

    layers = len(genotype.path)
    levels = max(max(genotype.path) + 1, trellis.levels if trellis is not None else 0)
    moves = ", ".join(MOVE_NAMES[m] for m in TRELLIS_MOVES[genotype.trellis])
    if trellis is not None:
        weights = trellis.transition_weights().detach().cpu()
        for layer in range(min(layers, weights.shape[0])):
            for k in range(levels):
                ax.text(layer, k + 0.1, "\n".join(f"{w:.2f}" for w in weights[layer, k].tolist()),
                        fontsize=6, ha="center", va="top", color="0.4")
    grid = [(layer, k) for layer in range(layers) for k in range(levels)]
    ax.scatter([g[0] for g in grid], [g[1] for g in grid], s=20, c="0.8")
    ax.plot([-1] + list(range(layers)), [0] + list(genotype.path), "o-", color="tab:green", lw=2)
    weights_note = f"\nbelow each point: weights of {moves}" if trellis is not None else ""
    ax.set(xlabel="layer (-1: stem)", ylabel="level (size / 2^level)", xlim=(-1.5, layers - 0.5),
           ylim=(levels - 0.5, -0.5), yticks=range(levels), title=f"{title}network path{weights_note}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
