"""NIR export and import: take spikeforge networks to neuromorphic hardware and other simulators.

::

    from spikeforge.export import to_nir, from_nir
    graph = to_nir(net, torch.rand(1, 3, 32, 32))   # nir.NIRGraph of one time step
    nir.write("net.nir", graph)
    again = from_nir("net.nir")                      # SpikingNetwork, same spikes

The functions need the ``nir`` package (``pip install "spikeforge[nir]"``); without it they
raise :class:`~spikeforge.optional.MissingDependency`, and importing still works. The
parameter mapping between spikeforge's discrete-time neurons and NIR's continuous-time
nodes is stated in :mod:`spikeforge.export.neurons`; the command line is ``spikeforge export``.
"""

from .neurons import DEFAULT_DT, neuron_to_node, node_to_neuron
from .nir import from_nir, to_nir

__all__ = ["to_nir", "from_nir", "DEFAULT_DT", "neuron_to_node", "node_to_neuron"]
