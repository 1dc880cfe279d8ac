"""Measured inference speed: batch-1 latency and large-batch throughput on a given device.

Measurements follow the usual benchmarking rules so that numbers are comparable across models:
the model is in eval mode under ``torch.inference_mode``; a few warm-up calls are discarded
(allocator, cuDNN autotuning, lazy initialisation); on CUDA every timed call is bracketed by
``torch.cuda.synchronize`` so we time the kernels, not their launch; the reported latency is the
median of the timed calls (robust to the occasional scheduler hiccup) with the interquartile
range as its spread. Each measurement stops after ``max_seconds`` even if fewer than ``repeats``
calls were made, so a slow model cannot stall a study; the number of calls used is recorded.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class SpeedResult:
    """One speed measurement.

    Attributes:
        device: ``"cpu"`` or ``"cuda"`` (the device type the model ran on).
        batch_size: images per call.
        median_ms: median wall time of one call, milliseconds.
        iqr_ms: interquartile range of the call times, milliseconds.
        images_per_s: ``batch_size / median`` (images per second).
        calls: how many timed calls the median is over.
        threads: torch CPU threads in use (CPU measurements), else None.
        dtype: the compute dtype (``float32`` or ``bfloat16`` under autocast).
    """

    device: str
    batch_size: int
    median_ms: float
    iqr_ms: float
    images_per_s: float
    calls: int
    threads: int | None
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_speed(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    repeats: int = 30,
    warmup: int = 5,
    max_seconds: float = 10.0,
    amp_bf16: bool = False,
    channels_last: bool = False,
) -> SpeedResult:
    """Time forward passes of ``model`` on random inputs of shape ``(batch_size, *input_shape)``.

    Args:
        model: the network; it is moved to ``device`` and put in eval mode for the measurement,
            and its original device and train/eval mode are restored afterwards.
        input_shape: one input's shape, e.g. ``(3, 32, 32)``.
        batch_size: images per call (1 for latency, large for throughput).
        device: where to run.
        repeats: timed calls wanted.
        warmup: untimed calls first.
        max_seconds: stop timing after this long (at least 3 timed calls are always made).
        amp_bf16: run under bf16 autocast (CUDA only; ignored on CPU).
        channels_last: use the channels-last memory format (4-D inputs).

    Returns:
        A :class:`SpeedResult`.
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1, repeats >= 1, warmup >= 0; got "
                         f"{batch_size}, {repeats}, {warmup}")
    device = torch.device(device)
    was_training = model.training
    try:
        first_param = next(model.parameters())
        orig_device = first_param.device
    except StopIteration:
        orig_device = None
    fmt = torch.channels_last if channels_last and len(input_shape) == 3 else torch.contiguous_format
    model.to(device=device, memory_format=fmt).eval()
    x = torch.randn(batch_size, *input_shape, device=device).contiguous(memory_format=fmt)
    use_amp = amp_bf16 and device.type == "cuda"
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: list[float] = []
    try:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
            for _ in range(warmup):
                model(x)
            sync()
            start = time.perf_counter()
            while len(times) < repeats:
                t0 = time.perf_counter()
                model(x)
                sync()
                times.append(time.perf_counter() - t0)
                if len(times) >= 3 and time.perf_counter() - start > max_seconds:
                    break
    finally:
        model.train(was_training)
        if orig_device is not None:
            model.to(device=orig_device, memory_format=torch.contiguous_format)
    med = statistics.median(times)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [med, med, med]
    return SpeedResult(
        device=device.type,
        batch_size=batch_size,
        median_ms=med * 1e3,
        iqr_ms=(q[2] - q[0]) * 1e3,
        images_per_s=batch_size / med,
        calls=len(times),
        threads=torch.get_num_threads() if device.type == "cpu" else None,
        dtype="bfloat16" if use_amp else "float32",
    )
