"""measure_speed: what it measures, and that it leaves the model as it found it."""

import time

import pytest
import torch
from torch import nn

from cnnlab.studies.timing import measure_speed


class _Sleepy(nn.Module):
    """Takes a known wall time per call, so the measurement has an independent reference."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.lin = nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        time.sleep(self.seconds)
        return self.lin(x)


def test_latency_matches_a_known_sleep_and_counts_calls():
    model = _Sleepy(0.02)
    r = measure_speed(model, (4,), batch_size=8, repeats=5, warmup=2)
    assert model.calls == 7 and r.calls == 5
    # sleep() never returns early; generous upper bound for a loaded CI machine
    assert 20.0 <= r.median_ms < 80.0
    assert r.images_per_s == pytest.approx(8 / (r.median_ms / 1e3))
    assert r.device == "cpu" and r.threads == torch.get_num_threads() and r.dtype == "float32"


def test_max_seconds_bounds_the_measurement_but_keeps_three_calls():
    r = measure_speed(_Sleepy(0.05), (4,), repeats=1000, warmup=0, max_seconds=0.01)
    assert r.calls == 3


def test_restores_mode_and_device():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure_speed(model, (3, 8, 8), batch_size=2, repeats=3, warmup=1, channels_last=True)
    assert model.training
    for k, v in model.state_dict().items():  # eval mode during timing: BN stats untouched
        assert torch.equal(v, before[k]), k


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        measure_speed(nn.Linear(2, 2), (2,), batch_size=0)
