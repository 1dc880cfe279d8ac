"""Atomic checkpoint files and the seeds that make a run a pure function of its config."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab._io import atomic_write, one_line
from cnnlab.errors import DataError, DataNotFoundError

CHECKPOINT = "checkpoint.pt"  # full training state, rewritten at the end of every epoch
BEST = "best.pt"  # weights of the epoch with the best validation accuracy
FINAL = "model.pt"  # weights at the end of training (what test_accuracy was measured with)
FORMAT = 1
_CHECKPOINT_KEYS = ("config", "epoch", "step_in_epoch", "step", "model", "optimizer", "callbacks",
                    "history")


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
    """``torch.save`` through :func:`cnnlab._io.atomic_write`: a crash or Ctrl-C during the
    write leaves the previous file intact."""
    atomic_write(path, lambda f: torch.save(obj, f))


def non_finite(state: dict[str, Any], prefix: str = "") -> str | None:
    """The name of the first floating-point tensor in a (nested) state dict holding NaN or
    infinity, or None when every value is finite (weights and buffers alike: BatchNorm's
    running variance overflows to inf before the loss turns NaN)."""
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found = non_finite(value, f"{name}.")
            if found is not None:
                return found
        elif (isinstance(value, torch.Tensor) and value.is_floating_point()
              and not bool(torch.isfinite(value).all())):
            return name
    return None


def _load(path: Path, device: str | torch.device, what: str) -> Any:
    """``torch.load(weights_only=True)`` with every failure as one DataError line."""
    if path.is_dir():
        raise DataError(f"{what} {path} is a folder, expected a file")
    try:
        with warnings.catch_warnings():  # foreign pickle protocols warn before they fail
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise DataNotFoundError(f"{what} {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/EOFError/OSError/...
        lines = str(exc).splitlines()
        glob = next((ln.strip() for ln in lines if "GLOBAL" in ln), None)
        if glob is not None:  # weights_only refused to import code: name it, never run it
            raise DataError(f"{what} {path} holds objects other than tensors and was refused "
                            f"unread ({one_line(glob, 120)}); cnnlab only loads files it wrote"
                            ) from None
        if path.stat().st_size == 0:
            raise DataError(f"{what} {path} is empty (0 bytes)") from None
        first = one_line(lines[0] if lines else "", 120) or "no detail"
        raise DataError(f"{what} {path} is truncated or corrupt ({type(exc).__name__}: "
                        f"{first}); it cannot be read") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by the trainer (tensors only: no code is unpickled).

    Raises:
        DataNotFoundError: no such file.
        DataError: not a readable cnnlab checkpoint (one line naming the file).
    """
    path = Path(path)
    ckpt = _load(path, device, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DataError(f"{path}: not a cnnlab checkpoint of format {FORMAT}")
    missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise DataError(f"{path}: the checkpoint lacks {missing}; it is damaged or foreign")
    return ckpt


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a weights file (``model.pt``, ``best.pt``): a state dict of tensors.

    Raises:
        DataNotFoundError: no such file.
        DataError: unreadable, not a state dict, or holding NaN/inf (a diverged run).
    """
    path = Path(path)
    state = _load(path, device, "weights file")
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise DataError(f"weights file {path} does not hold a state dict (name -> tensor)")
    bad = non_finite(state)
    if bad is not None:
        raise DataError(f"weights file {path} holds NaN/inf in {bad}: the run diverged; "
                        "these weights cannot be explained or evaluated")
    return state


def _shape(t: Any) -> str:
    return "x".join(map(str, t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def load_module_weights(module: torch.nn.Module, path: str | Path, *, prefix: str = "",
                        ignore: tuple[str, ...] = (), arch: str = "the model") -> None:
    """Load a weights file into ``module``: the tensors named ``prefix + name`` (``name`` as in
    ``module.state_dict()``), skipping those whose names start with one of ``ignore`` (e.g. the
    classifier of a network whose backbone is loaded under a new head).

    Every tensor must match exactly (names and shapes, buffers included); otherwise nothing is
    loaded and the error names the first mismatching tensor in the module's order, e.g. a
    MobileNetV2 file given for a ResNet-50: ``... lacks conv1.weight, which resnet50 needs``.

    Args:
        module: receives the weights (in place).
        path: a ``.pt``/``.pth`` state dict (what ``torch.save(model.state_dict(), path)``
            writes; read by :func:`load_weights`, tensors only).
        prefix: where the module's tensors sit in the file's names.
        ignore: name prefixes in the file that are skipped.
        arch: the architecture's name, for the error message.

    Raises:
        DataNotFoundError: no such file.
        DataError: unreadable, not a state dict, NaN/inf, or not a state dict of ``arch``.
    """
    path = Path(path)
    state = load_weights(path)
    kept = {k: v for k, v in state.items() if not k.startswith(tuple(ignore))}
    want = module.state_dict()
    bad = f"weights file {path} does not fit {arch}"
    for name, tensor in want.items():
        key = prefix + name
        if key not in kept:
            raise DataError(f"{bad}: it lacks {key}, which {arch} needs (is it a state dict of "
                            "another architecture?)")
        if tuple(kept[key].shape) != tuple(tensor.shape):
            raise DataError(f"{bad}: {key} has shape {_shape(kept[key])} in the file, "
                            f"{_shape(tensor)} in {arch}")
    extra = [k for k in kept if not (k.startswith(prefix) and k[len(prefix):] in want)]
    if extra:
        raise DataError(f"{bad}: it holds {extra[0]}, which {arch} does not have (and "
                        f"{len(extra) - 1} more such tensors)" if len(extra) > 1 else
                        f"{bad}: it holds {extra[0]}, which {arch} does not have")
    module.load_state_dict({name: kept[prefix + name] for name in want}, strict=True)


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

