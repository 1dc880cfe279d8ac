"""Keep freed tensor memory in the process (glibc malloc tuning for PyTorch on the CPU).

PyTorch's CPU tensors come from the C library's ``malloc``. With glibc's defaults, a large
freed block is handed back to the operating system (``munmap`` above the mmap threshold, heap
trimming above the trim threshold), so the next forward pass page-faults the same activation
memory back in and the kernel zeroes it again. Networks with many large intermediate tensors and
little arithmetic per byte, MobileNets above all, lose about half their CPU speed to this.
Measured on the 2-core development machine (Fashion-MNIST 28x28, batch 64, fp32): inference
throughput of MobileNetV2 (CIFAR variant) 265-371 -> 575-697 images/s, MobileNetV1 345-357 ->
643-661, ResNet-18 unchanged (270-381); training MobileNetV2 105 -> 136 images/s, compact_cnn
1,782 -> 2,691 (2 threads, quiet machine, glibc 2.36). PyTorch's CPU performance guides recommend the same (or jemalloc/tcmalloc).

:func:`tune` raises both thresholds: memory is reused inside the process instead of returned,
at the cost of a resident size that does not shrink after the peak. The ``cnnlab`` command line
applies it at start; set ``CNNLAB_MALLOC=default`` to keep glibc's behaviour. It is a no-op where
the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3
# Tensors below the mmap threshold come from the heap and are reused. 1 GiB keeps even large
# activation maps in the heap; glibc releases before 2.36 refuse more than 32 MiB on 64-bit
# (DEFAULT_MMAP_THRESHOLD_MAX), so that is the fallback.
MMAP_THRESHOLDS = (2**30, 32 * 2**20)
TRIM_THRESHOLD = 2**31 - 1  # effectively never trim the heap

_state: str | None = None


def tune() -> str:
    """Apply the tuning once per process; returns a description recorded with results."""
    global _state
    if _state is not None:
        return _state
    if os.environ.get("CNNLAB_MALLOC", "").lower() == "default":
        _state = "glibc defaults (CNNLAB_MALLOC=default)"
    elif platform.libc_ver()[0] != "glibc":
        _state = "system allocator (not glibc: not tuned)"
    else:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mmap = next((t for t in MMAP_THRESHOLDS if libc.mallopt(_M_MMAP_THRESHOLD, t) == 1), None)
        trim = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        _state = (f"glibc tuned: M_MMAP_THRESHOLD={mmap}, M_TRIM_THRESHOLD={TRIM_THRESHOLD}"
                  if mmap is not None and trim else "glibc defaults (mallopt refused)")
    return _state


def state() -> str:
    """How the allocator is set in this process (without changing it)."""
    return _state or "not tuned by cnnlab (the C library's defaults)"
