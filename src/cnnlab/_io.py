"""The one place cnnlab touches the file system for its users' files.

- :func:`atomic_write`: every file cnnlab writes goes to a temporary file beside its target,
  is flushed to disk and renamed into place, so a reader (or a run killed mid-write) never sees
  half a file.
- :func:`output_dir`: every command that writes a folder (``--out``, ``--cache-dir``) opens it
  here: a path that is a file, or a place that cannot be written, is one :class:`UserError`
  naming the option; with ``lock=True`` the folder is also claimed by an advisory lock (below).
- :func:`read_bytes` / :func:`read_json`: reading a user's file, with a missing file, a folder,
  a permission problem or text that is not UTF-8/JSON as one :class:`DataError` line.

The run lock is ``fcntl.flock`` on ``DIR/.cnnlab.lock``. The kernel drops it when the holding
process exits in any way (SIGKILL included), so a killed run never leaves a lock that blocks;
the file itself only says who held it last (process id, command, start time). A second run on a
locked folder is refused with one line naming that process. Within one process the lock is
re-entrant (a study holding its folder may train in it).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cnnlab.errors import DataError, DataNotFoundError, UserError

LOCK_FILE = ".cnnlab.lock"

# folder (resolved) -> [open lock file, how many holders in this process]
_HELD: dict[Path, list[Any]] = {}


def one_line(text: object, limit: int = 300) -> str:
    """``text`` as one line (whitespace runs collapsed), cut at ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _why(exc: OSError) -> str:
    return exc.strerror or one_line(exc) or type(exc).__name__


# ---------------------------------------------------------------------------------- writing

def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO[bytes]], None]
                 ) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, flushed,
    fsynced and renamed over ``path``. A crash or Ctrl-C during the write leaves the previous
    file (or none) in place, never half a file; two concurrent writers never share a
    temporary file.

    Args:
        path: the target file; its folder must exist.
        data: the bytes, the text (written as UTF-8), or a function that writes to a binary
            file object (``torch.save``, ``np.savez``, a CSV writer over a text wrapper).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------- output folders

def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Raise UserError if ``path`` could not become a writable folder; creates nothing.

    Lets a command fail before it loads data or trains when its ``--out`` is a file or lies
    under a file; what cannot be foreseen (permissions, read-only file systems) is caught by
    :func:`output_dir` when the folder is made.
    """
    path = Path(path).expanduser()
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                where = "" if parent == path else f" ({parent} is a file)"
                raise UserError(f"{option} {path} is not a folder{where}; choose a folder path")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"{option} {path}: cannot write in {parent} (permission denied)")
            break
    return path


def output_dir(path: str | os.PathLike, option: str = "--out", *, lock: bool = False) -> Path:
    """Create (if needed) and check the folder ``path`` a command writes to; optionally lock it.

    Args:
        path: the folder.
        option: how the user gave it, for the error message (``"--out"``, ``"--cache-dir"``).
        lock: also take the run lock (see the module docstring) until :func:`release_dir` or
            the end of the process.

    Raises:
        UserError: ``path`` is a file, lies under a file, cannot be created or written, or is
            locked by another running process.
    """
    path = check_output_dir(path, option)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=path)  # mkdir can succeed where files cannot be made
        probe.close()
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot create or write the folder ({_why(exc)})"
                        ) from exc
    if lock:
        _lock(path, option)
    return path


def _lock(path: Path, option: str) -> None:
    import fcntl

    key = path.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        return
    lock_path = path / LOCK_FILE
    try:
        f = open(lock_path, "a+")  # noqa: SIM115 - held open while the lock is held
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot create the lock file {lock_path} "
                        f"({_why(exc)})") from exc
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = one_line(f.read(), 200) or "unknown process"
        f.close()
        raise UserError(f"{option} {path} is in use by another run ({holder}); wait for it to "
                        f"finish or choose another {option}") from None
    f.seek(0)
    f.truncate()
    command = " ".join(["cnnlab", *sys.argv[1:3]]) if sys.argv else "cnnlab"
    f.write(f"process {os.getpid()}, {command}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    _HELD[key] = [f, 1]


def release_dir(path: str | os.PathLike) -> None:
    """Drop this process's hold of the lock on ``path`` (the lock goes with the last hold)."""
    key = Path(path).expanduser().resolve()
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        del _HELD[key]
        held[0].close()  # closing the file releases the flock


@contextmanager
def locked_output_dir(path: str | os.PathLike, option: str = "--out") -> Iterator[Path]:
    """:func:`output_dir` with ``lock=True`` for the body of a ``with`` block."""
    folder = output_dir(path, option, lock=True)
    try:
        yield folder
    finally:
        release_dir(folder)


# ---------------------------------------------------------------------------------- reading

def read_bytes(path: str | os.PathLike, what: str = "file") -> bytes:
    """The bytes of a user's file; a missing file, a folder or no permission is one DataError."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataNotFoundError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a folder, expected a file") from None
    except OSError as exc:
        raise DataError(f"{what} {path}: cannot read it ({_why(exc)})") from exc


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A user's UTF-8 text file (see :func:`read_bytes`); other bytes are one DataError."""
    raw = read_bytes(path, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {path} is not UTF-8 text (byte {exc.start} is "
                        f"0x{raw[exc.start]:02x}); is it the right file?") from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """A JSON file's content; unreadable or invalid JSON is one DataError naming the file."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno} "
                        f"column {exc.colno}); the file is damaged") from None
    except RecursionError:
        raise DataError(f"{what} {path} is nested too deeply to be valid JSON") from None
