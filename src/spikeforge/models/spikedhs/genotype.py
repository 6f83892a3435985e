"""SpikeDHS genotypes: the decoded cell and network path, their decoding and JSON form.

A genotype holds

- ``cell``: two ``(edge, op)`` pairs per node, edges numbered as in
  :func:`~spikeforge.models.spikedhs.operations.edge_inputs`, ops named from
  :data:`~spikeforge.models.spikedhs.operations.PRIMITIVES`;
- ``path``: the resolution level of every network layer (0 = input size, each
  level halves it), starting at level 0 or 1 and rising by 0 or 1 per layer;
- ``trellis``: ``"down"`` (the classification trellis above) or ``"updown"``
  (LEAStereo's 3-way trellis of the stereo networks: a layer may also go up a
  level, i.e. change by -1, 0 or +1, staying at level >= 0).

Decoding searched architecture weights into a genotype is the search's
(:mod:`spikeforge.search.decode`). Stereo networks take a :class:`StereoGenotype`:
one genotype for the feature network and one for the matching network, both on the
``"updown"`` trellis (level 0 is a third of the input resolution and, in the matching
network, a third of the disparity range).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .operations import PRIMITIVES, edge_inputs

__all__ = ["TRELLIS_MOVES", "Genotype", "GENOTYPES", "load_genotype", "save_genotype", "StereoGenotype",
           "STEREO_GENOTYPES", "load_stereo_genotype"]


#: Level changes per layer allowed by each network-level trellis.
TRELLIS_MOVES = {"down": (0, 1), "updown": (-1, 0, 1)}


@dataclass(frozen=True)
class Genotype:
    cell: tuple[tuple[int, str], ...]
    path: tuple[int, ...]
    nodes: int = 3
    primitives: tuple[str, ...] = field(default=PRIMITIVES)
    trellis: str = "down"

    def __post_init__(self):
        cell = tuple((int(e), self._op_name(op)) for e, op in self.cell)
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "path", tuple(int(p) for p in self.path))
        object.__setattr__(self, "primitives", tuple(self.primitives))
        inputs = edge_inputs(self.nodes)
        if len(cell) != 2 * self.nodes:
            raise ValueError(f"genotype cell needs 2 edges per node ({2 * self.nodes}), got {len(cell)}")
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
        inputs = edge_inputs(self.nodes)
        return sorted((inputs[e][1], op) for e, op in self.cell[2 * node : 2 * node + 2])

    def to_dict(self) -> dict:
        return {"cell": [[e, op] for e, op in self.cell], "path": list(self.path), "nodes": self.nodes,
                "primitives": list(self.primitives), "trellis": self.trellis}

    @classmethod
    def from_dict(cls, data: dict) -> "Genotype":
        # "steps" is the old name of "nodes" (genotype files written before the rename): still read
        unknown = set(data) - {"cell", "path", "nodes", "steps", "primitives", "trellis"}
        if unknown or "cell" not in data or "path" not in data:
            raise ValueError(f"a genotype needs keys cell and path (optional nodes, primitives, trellis); "
                             f"got {sorted(data)}")
        if "nodes" in data and "steps" in data and data["nodes"] != data["steps"]:
            raise ValueError(f"genotype keys nodes ({data['nodes']}) and steps (its old name, {data['steps']}) "
                             f"disagree")
        nodes = data.get("nodes", data.get("steps", 3))
        return cls(tuple(tuple(pair) for pair in data["cell"]), tuple(data["path"]), int(nodes),
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


@dataclass(frozen=True)
class StereoGenotype:
    feature: Genotype
    matching: Genotype

    def to_dict(self) -> dict:
        return {"feature": self.feature.to_dict(), "matching": self.matching.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "StereoGenotype":
        if set(data) != {"feature", "matching"}:
            raise ValueError(f"a stereo genotype needs exactly the keys feature and matching; got {sorted(data)}")
        return cls(Genotype.from_dict(data["feature"]), Genotype.from_dict(data["matching"]))


#: The MVSEC architecture found by the official search (Che et al., NeurIPS 2022; the search log of its code):
#: feature cell = the published CIFAR cell on path [1, 0]; matching cell on path [1, 2, 2, 1].
STEREO_GENOTYPES: dict[str, StereoGenotype] = {
    "spikedhs_mvsec": StereoGenotype(
        feature=Genotype(((1, 1), (0, 1), (3, 2), (2, 1), (7, 1), (8, 1)), (1, 0), trellis="updown"),
        matching=Genotype(((0, 1), (1, 2), (4, 2), (3, 2), (8, 1), (6, 1)), (1, 2, 2, 1), trellis="updown"),
    ),
}


def load_stereo_genotype(spec: "str | os.PathLike | dict | StereoGenotype") -> StereoGenotype:
    """A stereo genotype from itself, a mapping, a name in :data:`STEREO_GENOTYPES` or a JSON file."""
    return load_named(spec, StereoGenotype, STEREO_GENOTYPES, "stereo genotype")
