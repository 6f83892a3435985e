"""Event-based stereo with SpikeDHS cells (MVSEC).

- :mod:`.network`: the spiking stereo network (feature net, cost volume, matching net,
  soft-min disparity regression), registered as model ``spikedhs_stereo``;
- :mod:`.search`: the stereo search supernet (feature and matching trellises, 3-way);
- :mod:`.genotype`: feature + matching genotypes (:data:`STEREO_GENOTYPES`);
- :mod:`.loss`: sub-pixel cross-entropy and smooth-L1 disparity losses;
- :mod:`.metrics`: mean disparity / depth error, n-pixel error.
"""

from ..models.spikedhs.genotype import STEREO_GENOTYPES, StereoGenotype, load_stereo_genotype
from ..models.spikedhs.stereo import SpikingStereoNet, StereoOutput, cost_volume
from .task import StereoTask

__all__ = ["STEREO_GENOTYPES", "StereoGenotype", "load_stereo_genotype", "SpikingStereoNet", "StereoOutput",
           "cost_volume", "StereoTask"]
