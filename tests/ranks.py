"""Two spawned gloo ranks for the distributed tests (training and search)."""

import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp


def start_rank(rank, world, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)


def run_ranks(worker, tmp_path, deadline_seconds):
    """``worker(rank, 2, port, tmp_path)`` in two spawned processes; fails (no hang) after the deadline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.start_processes(worker, args=(2, port, str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + deadline_seconds
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the two ranks were still running after {deadline_seconds} s")
