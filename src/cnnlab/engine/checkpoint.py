"""Atomic checkpoint files and the seeds that make a run a pure function of its config."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import DataError

CHECKPOINT = "checkpoint.pt"  # full training state, rewritten at the end of every epoch
BEST = "best.pt"  # weights of the epoch with the best validation accuracy
FINAL = "model.pt"  # weights at the end of training (what test_accuracy was measured with)
FORMAT = 1


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for one random stream, e.g. ``derive_seed(seed, epoch, "augment")``.

    Streams derived from (seed, epoch) do not depend on how many random numbers earlier epochs
    drew, so a resumed run draws exactly what an uninterrupted one would. ``SeedSequence``
    hashes the words so that nearby seeds give unrelated streams.
    """
    words = [int(seed)]
    for k in keys:
        if isinstance(k, str):  # names become 32-bit words
            k = int.from_bytes(hashlib.blake2b(k.encode(), digest_size=4).digest(), "little")
        words.append(k)
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` it into place.

    A crash or Ctrl-C during the write leaves the previous file intact.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by the trainer (tensors only: no code is unpickled)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises RuntimeError / UnpicklingError / EOFError variously
        raise DataError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc})"
                        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DataError(f"{path}: not a cnnlab checkpoint of format {FORMAT}")
    return ckpt


def callback_key(callback_type: type, index: int = 0) -> str:
    """Where a checkpoint keeps a callback's state: ``"<class name>#<index>"``, the index
    counting earlier callbacks of the same class in the run's list."""
    return f"{callback_type.__qualname__}#{index}"


def callback_state(path: str | Path, callback_type: type, index: int = 0) -> dict[str, Any]:
    """The saved ``state_dict()`` of a callback in the checkpoint at ``path``.

    Raises:
        DataError: the checkpoint holds no state for that callback.
    """
    saved = load_checkpoint(path)["callbacks"]
    key = callback_key(callback_type, index)
    if key not in saved:
        raise DataError(f"{path} holds no state of callback {key} (it has: "
                        f"{', '.join(sorted(saved)) or 'none'})")
    return saved[key]

