"""``spikeforge import-weights --from SRC --model NAME IN OUT.pt``: a published checkpoint of SpikeDHS,
TET, QCFS or SRP as a spikeforge checkpoint, ready for ``evaluate``, ``convert``, ``energy``, ``export``.

The mapping (what is dropped, what is filled, the options per source) is documented in
:mod:`spikeforge.export.official`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..export.official import import_official
from ..runtime.checkpoint import save_checkpoint
from . import COMMANDS
from .common import positive_int

#: Options passed on to ``import_official`` when given.
OPTIONS = ("data_root", "dataset", "timesteps", "levels", "threshold", "stem_b", "genotype")


def add_parser(sub) -> None:
    p = sub.add_parser("import-weights", help=COMMANDS["import-weights"],
                       description="Map an official state dict onto the spikeforge model of the same network and "
                                   "write a spikeforge checkpoint (refuses unmatched keys and shapes).")
    p.add_argument("--from", dest="source", required=True, choices=("spikedhs", "tet", "qcfs", "srp"),
                   help="the code base that saved IN")
    p.add_argument("--model", required=True,
                   help="spikedhs: spikedhs; tet: resnet19 | vggsnn; qcfs, srp: vgg16 | resnet18 | resnet20 | resnet34")
    p.add_argument("input", metavar="IN", help="the official checkpoint (read with torch.load(weights_only=True))")
    p.add_argument("output", metavar="OUT.pt", help="the spikeforge checkpoint to write")
    p.add_argument("--data-root", help="data folder recorded in the checkpoint's recipe")
    p.add_argument("--dataset", help="data set name (default: from the number of classes)")
    p.add_argument("--timesteps", type=positive_int, help="time steps T of the recipe (default: the paper's)")
    p.add_argument("--levels", type=positive_int,
                   help="QCFS/SRP: quantisation levels L (not saved; default 4, ImageNet 8)")
    p.add_argument("--threshold", type=float,
                   help="QCFS/SRP: lambda of every activation when IN has no 'up' entries (a ReLU ANN)")
    p.add_argument("--stem-b", type=float,
                   help="SpikeDHS: the stem's Dspike temperature b learnt by DGS (not saved; default 3)")
    p.add_argument("--genotype", help="SpikeDHS: genotype name or JSON file (default: the published spikedhs_cifar)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} exists: pass --overwrite to replace it")
    options = {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
    checkpoint = import_official(args.input, args.source, args.model, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(checkpoint, out)
    source = checkpoint["source"]
    print(f"wrote {out}: {args.model} for {checkpoint['config']['data']['name']} ({checkpoint['num_classes']} classes) "
          f"from {args.source} {args.input}; {len(source['mapping'])} entries mapped, "
          f"{len(source['dropped'])} dropped, {len(source['filled'])} kept from the model")
    return 0
