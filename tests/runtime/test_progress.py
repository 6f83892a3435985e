"""Progress: plain lines in logs (each tenth, every N seconds), a live bar on terminals."""

import io

import torch

from spikeforge.analysis import energy_report
from spikeforge.runtime.progress import Progress, format_duration


class Clock:
    """A fake monotonic clock that moves ``tick`` seconds per reading after the first."""

    def __init__(self, tick):
        self.tick, self.now, self.started = tick, 0.0, False

    def __call__(self):
        if self.started:
            self.now += self.tick
        self.started = True
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run(iterable, stream, **kwargs):
    bar = Progress(iterable, "epoch 3/10", stream=stream, **kwargs)
    for _ in bar:
        bar.set(loss=1.23456, lr=0.05)
    return stream.getvalue()


def test_log_gets_a_plain_line_at_each_tenth():
    out = run(range(20), io.StringIO(), per_step=4, clock=Clock(0.5))
    lines = out.splitlines()
    assert len(lines) == 10 and "\r" not in out and "\033" not in out
    # after step 4: 2 s elapsed, 2 steps/s = 8 samples/s, 16 steps left = 8 s
    assert lines[1] == "epoch 3/10 step 4/20 (20%) 8.0 samples/s eta 8s loss 1.235 lr 0.05"
    assert lines[-1].startswith("epoch 3/10 step 20/20 (100%) 8.0 samples/s eta 0s")


def test_a_fast_loop_writes_a_tenth_line_at_most_once_a_second():
    out = run(range(100), io.StringIO(), clock=Clock(0.04))  # 4 s in all, a tenth every 0.4 s
    assert [line.split()[3] for line in out.splitlines()] == ["25/100", "50/100", "75/100", "100/100"]


def test_log_gets_a_line_every_period_when_the_length_is_unknown():
    out = run(iter(range(10)), io.StringIO(), every=60, clock=Clock(25.0))
    assert out.splitlines() == [f"epoch 3/10 step {n} 0.04 steps/s loss 1.235 lr 0.05" for n in (3, 6, 9)]


def test_resumed_loop_counts_from_its_start_and_rates_only_its_own_steps():
    out = run(range(5), io.StringIO(), start=5, total=10, every=0, clock=Clock(2.0))
    lines = out.splitlines()
    assert [line.split()[3] for line in lines] == ["6/10", "7/10", "8/10", "9/10", "10/10"]
    assert lines[0] == "epoch 3/10 step 6/10 (60%) 0.50 steps/s eta 8s loss 1.235 lr 0.05"


def test_terminal_gets_a_live_bar_and_disabled_gets_nothing():
    live = run(range(3), Terminal(), clock=Clock(1.0))
    assert live.startswith("\r\033[Kepoch 3/10 [") and live.endswith("\r\033[K")
    assert "] step 3/3 (100%)" in live
    assert run(range(3), io.StringIO(), enabled=False, clock=Clock(100.0)) == ""


def test_durations_read_as_seconds_minutes_hours():
    assert [format_duration(s) for s in (0, 42.4, 192, 3900)] == ["0s", "42s", "3m12s", "1h05m"]


def test_energy_report_shows_progress(capsys, monkeypatch):
    from spikeforge import models

    monkeypatch.setattr(Progress, "MIN_LINE_SECONDS", 0.0)
    model = models.create("digits_cnn", timesteps=2, width=4, num_classes=3)
    batches = [torch.rand(4, 1, 16, 16) for _ in range(2)]
    energy_report(model, batches)
    assert ([line.split(" (")[0] for line in capsys.readouterr().err.splitlines()]
            == ["energy step 1/2", "energy step 2/2"])
