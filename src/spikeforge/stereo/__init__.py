"""Event-based stereo with SpikeDHS cells (MVSEC).

- the spiking stereo network (feature net, cost volume, matching net, soft-min disparity regression),
  registered as model ``spikedhs_stereo``, and its feature + matching genotypes (:data:`STEREO_GENOTYPES`)
  are SpikeDHS vocabulary: :mod:`spikeforge.models.spikedhs.stereo` and
  :mod:`spikeforge.models.spikedhs.genotype` (re-exported here);
- :mod:`.task`: the stereo task (registered as ``task: stereo``);
- :mod:`.search`: the stereo search supernet (feature and matching trellises, 3-way);
- :mod:`.loss`: sub-pixel cross-entropy and smooth-L1 disparity losses;
- :mod:`.metrics`: mean disparity / depth error, n-pixel error.
"""

from ..models.spikedhs.genotype import STEREO_GENOTYPES, StereoGenotype, load_stereo_genotype
from ..models.spikedhs.stereo import SpikingStereoNet, StereoOutput, cost_volume
from .task import StereoTask

__all__ = ["STEREO_GENOTYPES", "StereoGenotype", "load_stereo_genotype", "SpikingStereoNet", "StereoOutput",
           "cost_volume", "StereoTask"]
