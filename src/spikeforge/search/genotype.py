"""SpikeDHS genotypes: the decoded cell and network path, their decoding and JSON form.

A genotype holds

- ``cell``: two ``(edge, op)`` pairs per node, edges numbered as in
  :func:`~spikeforge.search.cells.edge_inputs`, ops named from
  :data:`~spikeforge.search.cells.PRIMITIVES`;
- ``path``: the resolution level of every network layer (0 = input size, each
  level halves it), starting at level 0 or 1 and rising by 0 or 1 per layer;
- ``trellis``: ``"down"`` (the classification trellis above) or ``"updown"``
  (LEAStereo's 3-way trellis of the stereo networks: a layer may also go up a
  level, i.e. change by -1, 0 or +1, staying at level >= 0).

Decoding (:func:`decode_cell`, :func:`viterbi_path`) turns the searched
architecture weights into a genotype.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .cells import PRIMITIVES, edge_inputs, num_edges

__all__ = ["TRELLIS_MOVES", "Genotype", "decode_cell", "transition_log_weights", "viterbi_path", "GENOTYPES", "load_genotype", "save_genotype"]


#: Level changes per layer allowed by each network-level trellis.
TRELLIS_MOVES = {"down": (0, 1), "updown": (-1, 0, 1)}


@dataclass(frozen=True)
class Genotype:
    cell: tuple[tuple[int, str], ...]
    path: tuple[int, ...]
    steps: int = 3
    primitives: tuple[str, ...] = field(default=PRIMITIVES)
    trellis: str = "down"

    def __post_init__(self):
        cell = tuple((int(e), self._op_name(op)) for e, op in self.cell)
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "path", tuple(int(p) for p in self.path))
        object.__setattr__(self, "primitives", tuple(self.primitives))
        inputs = edge_inputs(self.steps)
        if len(cell) != 2 * self.steps:
            raise ValueError(f"genotype cell needs 2 edges per node ({2 * self.steps}), got {len(cell)}")
        for i, (edge, _) in enumerate(cell):
            if not 0 <= edge < len(inputs) or inputs[edge][0] != i // 2:
                raise ValueError(f"genotype cell entry {i}: edge {edge} does not enter node {i // 2}")
        if self.trellis not in TRELLIS_MOVES:
            raise ValueError(f"genotype trellis must be one of {', '.join(TRELLIS_MOVES)}, got {self.trellis!r}")
        moves = TRELLIS_MOVES[self.trellis]
        if (not self.path or self.path[0] not in (0, 1) or min(self.path) < 0
                or any(b - a not in moves for a, b in zip(self.path, self.path[1:]))):
            raise ValueError(f"genotype path {list(self.path)} must start at level 0 or 1 and change by "
                             f"{' or '.join(map(str, moves))} per layer (trellis {self.trellis!r})")

    def _op_name(self, op) -> str:
        if isinstance(op, str):
            if op not in self.primitives:
                raise ValueError(f"unknown operation {op!r}: expected one of {', '.join(self.primitives)}")
            return op
        if not 0 <= int(op) < len(self.primitives):
            raise ValueError(f"operation index {op} out of range for {len(self.primitives)} primitives")
        return self.primitives[int(op)]

    def node_edges(self, node: int) -> list[tuple[int, str]]:
        """The two ``(source, op)`` inputs of ``node``; source 0 = s0, 1 = s1, 2 + j = node j."""
        inputs = edge_inputs(self.steps)
        return sorted((inputs[e][1], op) for e, op in self.cell[2 * node : 2 * node + 2])

    def to_dict(self) -> dict:
        return {"cell": [[e, op] for e, op in self.cell], "path": list(self.path), "steps": self.steps,
                "primitives": list(self.primitives), "trellis": self.trellis}

    @classmethod
    def from_dict(cls, data: dict) -> "Genotype":
        unknown = set(data) - {"cell", "path", "steps", "primitives", "trellis"}
        if unknown or "cell" not in data or "path" not in data:
            raise ValueError(f"a genotype needs keys cell and path (optional steps, primitives, trellis); got {sorted(data)}")
        return cls(tuple(tuple(pair) for pair in data["cell"]), tuple(data["path"]), int(data.get("steps", 3)),
                   tuple(data.get("primitives", PRIMITIVES)), str(data.get("trellis", "down")))


# The published CIFAR genotype (README of the official code; equal to its MVSEC feature cell) and the
# network path of its retrain code, "6 normal and 2 reduction cells".
GENOTYPES: dict[str, Genotype] = {
    "spikedhs_cifar": Genotype(((1, 1), (0, 1), (3, 2), (2, 1), (7, 1), (8, 1)), (0, 0, 1, 1, 1, 2, 2, 2)),
}


def load_genotype(spec: "str | os.PathLike | dict | Genotype") -> Genotype:
    """A genotype from a :class:`Genotype`, a mapping, a name in :data:`GENOTYPES` or a JSON file path."""
    return load_named(spec, Genotype, GENOTYPES, "genotype")


def load_named(spec, cls, known: dict, what: str):
    """``spec`` as a ``cls`` (anything with ``from_dict``): itself, a mapping, a key of ``known``
    or a JSON file; ``what`` names the kind in error messages."""
    if isinstance(spec, cls):
        return spec
    if isinstance(spec, dict):
        return cls.from_dict(spec)
    if isinstance(spec, str) and spec in known:
        return known[spec]
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"{what} {str(spec)!r} is neither a file nor a known name ({', '.join(known)})")
    try:
        return cls.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{what} file {path} is not valid {what} JSON: {err}") from err


def save_genotype(genotype, path: str | os.PathLike) -> Path:
    """Write ``genotype`` (anything with ``to_dict``: a :class:`Genotype` or a stereo genotype) as JSON
    atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(genotype.to_dict(), f, indent=1)
    os.replace(tmp, path)
    return path


def decode_cell(alpha: Tensor, steps: int = 3, primitives: tuple[str, ...] = PRIMITIVES) -> tuple[tuple[int, str], ...]:
    """Cell of a genotype from the edge weights ``alpha [edges, ops]`` (logits), as the published decoder.

    After a softmax over operations, each node keeps the two incoming edges whose best
    non-skip operation weighs most (``skip_connect`` does not rank edges), each with its
    strongest operation over all of them (so a kept edge may be ``skip_connect``).
    """
    if alpha.shape != (num_edges(steps), len(primitives)):
        raise ValueError(f"alpha must be [{num_edges(steps)}, {len(primitives)}], got {list(alpha.shape)}")
    weights = torch.softmax(alpha.detach().float(), dim=-1)
    candidates = [i for i, op in enumerate(primitives) if op != "skip_connect"]
    rank_weight = weights[:, candidates].max(dim=-1).values
    best_op = weights.argmax(dim=-1)
    cell, start = [], 0
    for node in range(steps):
        edges = range(start, start + 2 + node)
        kept = sorted(edges, key=lambda e: (-float(rank_weight[e]), e))[:2]
        cell += [(e, primitives[int(best_op[e])]) for e in sorted(kept)]
        start += 2 + node
    return tuple(cell)


def transition_log_weights(beta: Tensor, trellis: str = "down") -> Tensor:
    """Log-weights ``[layers, levels, moves]`` of the trellis weights ``beta`` (logits, same shape).

    ``beta[l, k, m]`` weighs leaving level ``k`` at layer ``l`` by the move
    ``TRELLIS_MOVES[trellis][m]`` (to level ``k + move``). The softmax runs over the
    ``a`` moves that stay inside the levels (the others get ``-inf``) and is scaled by
    ``a / moves``, as the published supernet and decoder do: the lowest level of the
    ``"down"`` trellis keeps its one move with weight 1/2, the boundary levels of the
    ``"updown"`` trellis share 2/3. So uniform ``beta`` gives every move of every level
    the same weight, and no level is favoured by having fewer ways out.
    """
    moves = TRELLIS_MOVES.get(trellis)
    if moves is None:
        raise ValueError(f"trellis must be one of {', '.join(TRELLIS_MOVES)}, got {trellis!r}")
    if beta.dim() != 3 or beta.shape[-1] != len(moves):
        raise ValueError(f"beta of the {trellis!r} trellis must be [layers, levels, {len(moves)}], got {list(beta.shape)}")
    levels = beta.shape[1]
    target = torch.arange(levels, device=beta.device).unsqueeze(1) + torch.tensor(moves, device=beta.device)
    allowed = (target >= 0) & (target < levels)  # [levels, moves]
    share = torch.log(allowed.sum(-1, keepdim=True).to(beta.dtype) / len(moves))  # [levels, 1]
    return torch.log_softmax(beta.masked_fill(~allowed, -math.inf), dim=-1) + share


def viterbi_path(beta: Tensor, trellis: str = "down") -> tuple[int, ...]:
    """The most probable network path through the trellis weights ``beta [layers, levels, moves]`` (logits).

    The path starts from the stem at level 0, moves by ``TRELLIS_MOVES[trellis]``
    at every layer with the probabilities of :func:`transition_log_weights`, and
    maximises the product of the chosen ones; it may end at any level. Ties go to
    the smaller move, then to the higher-resolution level.
    """
    log_w = transition_log_weights(beta.detach().cpu().double(), trellis).tolist()
    moves = TRELLIS_MOVES[trellis]
    layers, levels = len(log_w), len(log_w[0])
    score = [0.0] + [-math.inf] * (levels - 1)  # before layer 0: at the stem's level 0
    back: list[list[int]] = []
    for layer in range(layers):
        new, arg = [-math.inf] * levels, [0] * levels
        for k in range(levels):
            options = [(score[k - move] + log_w[layer][k - move][m], -abs(move), k - move)
                       for m, move in enumerate(moves) if 0 <= k - move < levels]
            best = max(options, key=lambda o: o[:2])
            new[k], arg[k] = best[0], best[2]
        score = new
        back.append(arg)
    level = max(range(levels), key=lambda k: (score[k], -k))
    path = [level]
    for arg in reversed(back[1:]):
        level = arg[level]
        path.append(level)
    return tuple(reversed(path))
