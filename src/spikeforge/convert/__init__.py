"""ANN->SNN conversion: the QCFS activation, conversion to IF neurons, SRP.

- :class:`QCFS`: quantization-clip-floor-shift activation for the source ANN
  (Bu et al., ICLR 2022, "Optimal ANN-SNN Conversion for High-accuracy and Ultra-low-latency
  Spiking Neural Networks"); importing this module registers it as the model-zoo activation ``"qcfs"``
  (``spikeforge.models.create(name, neuron="qcfs", neuron_kwargs={"levels": 4})``).
- :func:`to_snn`: QCFS ANN -> :class:`~spikeforge.SpikingNetwork` of :class:`ScaledIF` neurons
  (``theta = lam``, ``v_init = theta / 2``, soft reset, spikes carry ``theta``).
- :func:`simulate` / :func:`evaluate_over_time`: chunked simulation over time and
  accuracy after every step, with the residual-membrane-potential correction SRP
  (Hao et al., AAAI 2023, "Reducing ANN-SNN Conversion Error through Residual Membrane
  Potential"; :mod:`~spikeforge.convert.srp`) when ``srp_tau > 0``.
"""

from ..models.activations import register_activation
from .conversion import ConversionError, ScaledIF, scaled_neurons, to_snn
from .evaluate import OverTime, evaluate_over_time, simulate
from .qcfs import QCFS, floor_ste
from .srp import SRP_EPS, apply_masks, srp_masks

__all__ = [
    "QCFS",
    "floor_ste",
    "ScaledIF",
    "ConversionError",
    "to_snn",
    "scaled_neurons",
    "simulate",
    "srp_masks",
    "apply_masks",
    "evaluate_over_time",
    "OverTime",
    "SRP_EPS",
]

#: Defaults of ``neuron="qcfs"``: L = 4 (CIFAR, per the QCFS author), lam initialised at 8.0.
QCFS_DEFAULTS = {"levels": 4, "threshold": 8.0}

register_activation("qcfs", QCFS, spiking=False, allows_maxpool=False, defaults=QCFS_DEFAULTS)
