"""What produced a result: versions, device, git commit, command line.

Every saved result (training run, study, benchmark) stores ``environment()`` beside its config so
that a number can be traced back to the code and machine that produced it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[2]


def git_commit(repo: str | Path = _REPO) -> str | None:
    """The checked-out commit (with ``-dirty`` when the tree has changes), or None outside git."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def device_description(device: Any = None) -> str:
    """A human-readable name of the device: the GPU model, or the CPU model and core count.

    torch is consulted only when the caller has already imported it, so the NumPy-only parts of
    cnnlab (the walkthroughs) do not pay seconds for importing it.
    """
    torch = sys.modules.get("torch")
    if torch is not None and device is not None and str(device).startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = f", {torch.get_num_threads()} torch threads" if torch is not None else ""
    return f"CPU: {cpu}, {os.cpu_count()} cores{threads}"


def environment(device: Any = None) -> dict[str, Any]:
    """Versions, device, git commit, command line and time, as a JSON-serialisable dict."""
    from cnnlab import __version__, _malloc

    env: dict[str, Any] = {
        "cnnlab": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_description(device),
        "allocator": _malloc.state(),
        "command": " ".join(sys.argv),
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for name in ("numpy", "torch", "torchvision", "matplotlib"):
        module = sys.modules.get(name)
        if module is not None:  # loaded: its own version string (torch's names its CUDA build)
            env[name] = module.__version__
            continue
        try:  # not loaded: the installed distribution's version, without importing it
            env[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            env[name] = None
    return env
