"""``memory.reuse_freed`` (:mod:`spikeforge.runtime.allocator`): after :func:`reuse_freed_memory` a freed
large tensor's memory is handed out again without page faults (counted by the kernel, in a fresh process:
the setting is process-wide), and the fit loop applies it on CPU runs only when the config asks."""

import json
import platform
import subprocess
import sys

import pytest
from test_trainer import Blobs, config, quiet

from spikeforge.runtime import fit
from spikeforge.runtime.config import MemoryConfig
from spikeforge.train import Trainer

# Allocates, fills and frees a 64 MiB tensor (after an optional reuse_freed_memory()) eight times and prints the
# minor page faults of the last three rounds, what the call returned and whether a large kernel output still goes
# on the kernels' reused blocks. (The first rounds take new memory
# while freed blocks coalesce into one that fits the aligned request.)
_PROBE = r"""
import json, resource, sys, torch
from spikeforge.runtime.allocator import reuse_freed_memory
from spikeforge.core.kernels import host
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.empty(16 << 20).fill_(1.0)  # 64 MiB: above glibc's largest mmap threshold (32 MiB)
before = faults()
for _ in range(3):
    torch.empty(16 << 20).fill_(1.0)
pooled = not host.empty_strided((1 << 20,), (1,), torch.float32).untyped_storage().resizable()  # on a block
print(json.dumps({"faults": faults() - before, "applied": applied, "kernel_blocks": pooled}))
"""


def probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_memory_is_reused_without_page_faults():
    pages = 3 * (64 << 20) // 4096  # three rounds of 64 MiB in 4 KiB pages
    default = probe("default")
    assert default["faults"] > pages // 2, "glibc's default maps large blocks afresh (faults on every round)"
    assert default["kernel_blocks"], "the compiled kernels' large outputs go on their reused blocks"
    reused = probe("reuse")
    assert reused["applied"] is True
    assert reused["faults"] < pages // 50, reused
    assert not reused["kernel_blocks"], "malloc reuses freed memory: the kernels take theirs from torch"


@pytest.mark.parametrize("reuse", [True, False])
def test_the_fit_loop_applies_it_on_cpu_runs_when_asked(tmp_path, monkeypatch, reuse):
    calls = []
    monkeypatch.setattr(fit, "reuse_freed_memory", lambda: calls.append(1) or True)
    Trainer(config(memory=MemoryConfig(reuse_freed=reuse)), tmp_path, datasets=(Blobs(), Blobs(seed=1)), log=quiet)
    assert len(calls) == int(reuse)
