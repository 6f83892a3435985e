"""SpikeDHS: differentiable hierarchical search of spiking cells and network paths, and DGS.

- the SpikeDHS neuron, edge operations, spiking nodes and genotypes are shared with the retrained networks:
  :mod:`spikeforge.models.spikedhs.operations` and :mod:`spikeforge.models.spikedhs.genotype` (re-exported here);
- :mod:`.decode`: cell decoding and the Viterbi network path (architecture weights -> genotype);
- :mod:`.trellis`: mixed cells on a same/down or up/same/down trellis (the searchable part of a supernet);
- :mod:`.supernet`: the classification supernet; :mod:`.searcher`: the bi-level search loop
  (classification, and stereo with :mod:`spikeforge.stereo.search`);
- :mod:`.dgs`: DGS, the surrogate-temperature search run as a training callback (``dgs`` recipe section);
"""

from ..models.spikedhs import (
    GENOTYPES,
    PRIMITIVES,
    Genotype,
    SpikingNode,
    load_genotype,
    save_genotype,
    spikedhs_neuron,
)
from .decode import decode_cell, transition_log_weights, viterbi_path
from .dgs import DGS, DGSCallback, find_searchable_layers

__all__ = [
    "PRIMITIVES", "SpikingNode", "spikedhs_neuron",
    "GENOTYPES", "Genotype", "decode_cell", "load_genotype", "save_genotype", "transition_log_weights", "viterbi_path",
    "DGS", "DGSCallback", "find_searchable_layers",
]
