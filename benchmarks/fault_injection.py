"""Fault injection: SIGKILL a digits training at random moments, resume it each time, and check that it
ends exactly as an uninterrupted run.

The run saves ``last.pt`` after every training step (``checkpoint.every_minutes`` tiny), so many kills
land while a checkpoint is being written. After each kill the run continues with ``spikeforge train
--resume`` (a run killed before it wrote ``config.yaml`` is started again; one killed before its first
``last.pt`` starts over by itself). At the end:

- ``last.pt`` and ``best.pt`` hold the uninterrupted run's weights bit for bit (``torch.equal`` on every
  entry of the model's state dict);
- ``metrics.jsonl`` holds every epoch exactly once, with the uninterrupted run's numbers (times aside);
- no temporary file is left in the run folder.

A kill counts as landed when the process was still running; as mid-write when it left a new temporary
file of a checkpoint, config or metrics write behind. One kill in five comes at a random moment of the
set-up (which ends when config.yaml or metrics.jsonl changes), three in ten as soon as a checkpoint
write has opened its temporary file, the others at a random moment of the first ``1.5 training time /
kills`` seconds after the set-up (times measured on the uninterrupted run), so the run still has epochs
left when the kills are done.

    python benchmarks/fault_injection.py [--kills 20] [--seed 0] [--epochs 4] [--width 16] [--keep DIR]

Prints one line per kill, a summary and PASS or FAIL; exits 1 on FAIL. Every process runs with one
thread, so the arithmetic of all of them is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from spikeforge.runtime.checkpoint import load_checkpoint

TIMES = ("epoch_time", "elapsed")
TEMPORARY = re.compile(r".+\.[a-z0-9_]{8}\.tmp")
ENV = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def recipe(args) -> list[str]:
    return [f"epochs={args.epochs}", f"model.kwargs.width={args.width}", "checkpoint.every_minutes=0.00001",
            "progress=false", "device=cpu"]


def start(run: Path, args) -> subprocess.Popen:
    """``spikeforge train`` in ``run``: resumed when the run has its config.yaml, else a new run."""
    where = ["--resume", str(run)] if (run / "config.yaml").exists() else ["--run-dir", str(run)]
    return subprocess.Popen([sys.executable, "-m", "spikeforge", "train", *where, *recipe(args)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def reference(run: Path, args) -> tuple[float, float]:
    """Run without interruption; ``(seconds until config.yaml exists, seconds in all)``."""
    tic = time.perf_counter()
    process = start(run, args)
    ready = None
    while process.poll() is None:
        if ready is None and (run / "config.yaml").exists():
            ready = time.perf_counter() - tic
        time.sleep(0.01)
    if process.returncode != 0:
        sys.exit(f"the uninterrupted run failed: {process.stderr.read()}")
    return ready or 0.0, time.perf_counter() - tic


def temporaries(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if TEMPORARY.fullmatch(p.name)) if run.exists() else []


def position(run: Path) -> str:
    """Where ``last.pt`` stands, for the kill's line."""
    if not (run / "last.pt").exists():
        return "no last.pt yet"
    state = load_checkpoint(run / "last.pt")
    step = state.get("position", {}).get("step", 0)
    return f"last.pt after epoch {state['epoch']}" + (f", step {step} of the next" if step else "")


def checkpoint_write(names) -> bool:
    """Whether ``names`` hold the temporary file of a checkpoint being written."""
    return any(name.startswith(("last.pt.", "best.pt.")) for name in names)


def marker(run: Path) -> tuple:
    """Changes when a process ends its set-up: a new run writes config.yaml, a resumed one rewrites
    metrics.jsonl (or config.yaml, starting over)."""
    return tuple(os.stat(p)[1:] if p.exists() else None for p in (run / "config.yaml", run / "metrics.jsonl"))


#: When kills come, with their shares: at a random moment of the set-up, as soon as a checkpoint write has
#: opened its temporary file, at a random moment of training. The set-up ends when config.yaml or
#: metrics.jsonl changes (:func:`marker`), so the moments do not depend on the machine's speed.
MOMENTS = {"set-up": 0.2, "write": 0.3, "training": 0.5}


def plan(kills: int, rng: random.Random) -> list[str]:
    """The moment of each kill: :data:`MOMENTS` in their shares, in random order."""
    moments = [moment for moment, share in MOMENTS.items() for _ in range(round(share * kills))]
    moments = (moments + ["training"] * kills)[:kills]
    rng.shuffle(moments)
    return moments


def kill_once(run: Path, moment: str, rng: random.Random, ready: float, training: float,
              args) -> tuple[bool, float, list[str], str]:
    """Start (or resume) the run and SIGKILL it at ``moment`` (see :data:`MOMENTS`): in the set-up, up to
    ``ready`` seconds after the start and at the latest when the set-up ends; at a write, as soon as one
    is seen; in training (and at a write not seen in time), up to ``1.5 training / kills`` seconds after
    the set-up. ``(whether the kill landed; seconds after the start; the temporary files it left;
    stderr when the run failed by itself)``."""
    budget = rng.uniform(0, ready) if moment == "set-up" else rng.uniform(0, 1.5 * training / args.kills)
    before, old = marker(run), set(temporaries(run))
    tic = time.perf_counter()
    process = start(run, args)
    set_up_end = None
    while process.poll() is None:
        now = time.perf_counter()
        if set_up_end is None and marker(run) != before:
            set_up_end = now
        if moment == "set-up":
            due = set_up_end is not None or now - tic >= budget
        else:
            due = set_up_end is not None and now - set_up_end >= budget
            due = due or moment == "write" and checkpoint_write(set(temporaries(run)) - old)
        if due:
            process.kill()
            break
        time.sleep(0.0002 if moment == "write" else 0.001)
    _, err = process.communicate()
    if process.returncode != -signal.SIGKILL:
        return False, 0.0, [], err if process.returncode != 0 else ""
    return True, time.perf_counter() - tic, sorted(set(temporaries(run)) - old), ""


def records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMES}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def compare(run: Path, straight: Path, epochs: int) -> list[str]:
    """What differs from the uninterrupted run (nothing: an empty list)."""
    problems = []
    done = [r["epoch"] for r in records(run)]
    if done != list(range(1, epochs + 1)):
        problems.append(f"metrics.jsonl has epochs {done}, expected 1..{epochs} once each")
    elif records(run) != records(straight):
        problems.append("metrics.jsonl numbers differ from the uninterrupted run's")
    for name in ("last.pt", "best.pt"):
        if not same_weights(run / name, straight / name):
            problems.append(f"{name} weights differ from the uninterrupted run's")
    if temporaries(run):
        problems.append(f"temporary files left: {', '.join(temporaries(run))}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--width", type=int, default=16, help="model.kwargs.width of the digits CNN")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR (kept) instead of a temporary folder")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="fault-injection-"))
    if args.keep:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    try:
        return inject(work, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def inject(work: Path, args) -> int:
    straight, run = work / "straight", work / "killed"
    ready, total = reference(straight, args)
    training = total - ready
    print(f"uninterrupted: {args.epochs} epochs in {total:.1f} s (set-up {ready:.1f} s, training {training:.1f} s)")
    rng = random.Random(args.seed)
    landed = mid_write = 0
    for moment in plan(args.kills, rng):
        hit, after, left, failure = kill_once(run, moment, rng, ready, training, args)
        if failure:
            print(f"FAIL: the run stopped with an error before its kill: {failure.strip()}")
            return 1
        if not hit:
            print(f"the run finished before kill {landed + 1}")
            break
        landed += 1
        mid_write += bool(left)
        print(f"kill {landed:2d} after {after:5.2f} s ({moment}): {position(run)}"
              + (f"; mid-write, left {', '.join(left)}" if left else ""))
    final = start(run, args)
    _, err = final.communicate()
    if final.returncode != 0:
        print(f"FAIL: the last resume exited {final.returncode}: {err.strip()}")
        return 1
    problems = compare(run, straight, args.epochs)
    print(f"kills landed: {landed}, mid-write: {mid_write}")
    for problem in problems:
        print(f"  {problem}")
    print("PASS: same weights (last.pt, best.pt) and metrics as the uninterrupted run, each epoch once"
          if not problems else "FAIL")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
