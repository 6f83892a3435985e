"""Stereo genotypes: one SpikeDHS genotype for the feature network and one for the matching network.

Both use the 3-way ``"updown"`` trellis (LEAStereo's): a layer may go down, stay
or go up a level. Level 0 is a third of the input resolution (and, in the
matching network, a third of the disparity range).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..search.genotype import Genotype, load_named

__all__ = ["StereoGenotype", "STEREO_GENOTYPES", "load_stereo_genotype"]


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


#: The MVSEC architecture found by the official search (specs/spikedhs.md, section 4.4 and 6.1):
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
