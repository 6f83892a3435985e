"""The SpikeDHS vocabulary (Che et al., NeurIPS 2022) that the search and the retrained networks share.

- :mod:`.operations`: the SpikeDHS neuron, the edge operations (``PRIMITIVES``) and spiking nodes;
- :mod:`.genotype`: genotypes (cell + network path), the published ones, their JSON form; stereo genotypes;
- :mod:`.cells`: a cell built from a genotype, and the chain of cells along its path;
- :mod:`.network`: the retrained classifier, model ``spikedhs``;
- :mod:`.stereo`: the spiking stereo network, model ``spikedhs_stereo``.

The search itself (supernet, decoding, DGS) is :mod:`spikeforge.search`.
"""

from .cells import CellChain, SpikeDHSCell, level_sizes
from .genotype import (
    GENOTYPES,
    STEREO_GENOTYPES,
    Genotype,
    StereoGenotype,
    load_genotype,
    load_stereo_genotype,
    save_genotype,
)
from .network import SpikeDHSNet
from .operations import PRIMITIVES, SpikingNode, spikedhs_neuron
from .stereo import SpikingStereoNet, StereoOutput, cost_volume

__all__ = [
    "PRIMITIVES", "SpikingNode", "spikedhs_neuron",
    "GENOTYPES", "Genotype", "load_genotype", "save_genotype",
    "STEREO_GENOTYPES", "StereoGenotype", "load_stereo_genotype",
    "SpikeDHSCell", "CellChain", "level_sizes", "SpikeDHSNet",
    "SpikingStereoNet", "StereoOutput", "cost_volume",
]
