"""``spikeforge runs DIR...``: finished runs side by side (Markdown table, test curves on one plot)."""

from __future__ import annotations

import argparse

from ..optional import require
from ..train.runs import comparison_table, load_run, plot_comparison, redraw_plots
from . import COMMANDS


def add_parser(sub) -> None:
    p = sub.add_parser("runs", help=COMMANDS["runs"])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--window-fraction", action="store_true",
                   help="add the final fraction of membranes inside the surrogate window per spiking layer")
    p.add_argument("--plot", metavar="PNG", help="write the runs' test curves (and window fractions) to PNG")
    p.add_argument("--redraw", action="store_true", help="redraw each run's own plots into its folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    runs = [load_run(path) for path in args.run_dirs]
    if args.plot or args.redraw:
        require("matplotlib", "spikeforge runs --plot/--redraw")
    print(comparison_table(runs, window_fraction=args.window_fraction))
    if args.redraw:
        for run_ in runs:
            for path in redraw_plots(run_.records, run_.path, run_.metric):
                print(f"wrote {path}")
    if args.plot:
        print(f"wrote {plot_comparison(runs, args.plot)}")
    return 0
