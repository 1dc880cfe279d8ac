"""Data-parallel training over several processes (torch.distributed, launched by torchrun).

How a run splits (the trainer calls the helpers below at a few marked points):

- Every rank holds the whole (subset of the) data set on its device and draws the same shuffled
  order each epoch; the step's global batch ``perm[k*B:(k+1)*B]`` is cut into ``world`` equal
  parts and rank ``r`` trains on part ``r`` (:func:`shard`). ``--batch-size`` is this global
  batch ``B``; it must be divisible by the number of processes.
- ``DistributedDataParallel`` averages the gradients over the ranks, so one step follows the
  gradient of the mean loss over the global batch, as one process would. BatchNorm is the
  exception: each rank normalises with its own part's statistics (and rank 0's running
  statistics are broadcast at every forward pass) unless ``--sync-bn`` makes them global
  (CUDA only: torch's SyncBatchNorm has no CPU kernel).
- Augmentation and dropout draw from per-rank streams (:func:`rank_seed`), so results depend on
  the number of processes; resuming needs the same number (:func:`check_resume`).
- Epoch losses and accuracies are summed over the ranks (:func:`all_sum`); validation, test,
  metrics, plots, checkpoints and the progress bar belong to rank 0 (:func:`is_main`). The
  progress bar's running loss and accuracy are rank 0's part only; the epoch line covers all.
- Ctrl-C and ``should_stop`` are agreed by all ranks at step and epoch boundaries
  (:func:`any_rank`, a tiny all-reduce on a gloo group, so CUDA runs do not sync the GPU for it);
  a mid-epoch checkpoint holds every rank's random-stream states (:func:`gather`). torchrun
  forwards a Ctrl-C to every rank at once, and the ranks are not at the same point then: from
  the start of :func:`session` a first Ctrl-C is only recorded (:func:`take_interrupt`), so a
  rank still setting up its trainer does not leave while the others train.
- Exit: a rank and the launcher leave through :func:`exit_process` (``os._exit`` after
  flushing), without the interpreter's teardown. There, gloo's threads were seen to abort an
  exiting rank ("terminate called without an active exception", about 1 Ctrl-C'd launch in
  60), and the launcher to print a traceback from the rendezvous keep-alive timer that torchrun
  leaves running after a signal ("Exception ignored in: <finalize object ...>", 1 in 120).
- Failures: torchrun stops every rank when one exits or dies. A rank that fails waits
  :data:`GRACE_S` before reporting, so that a failure caused by a dead peer (gloo: "Connection
  reset by peer") is ended by torchrun quietly and only the cause is reported (:func:`session`,
  :func:`launch`). A rank that hangs without dying is ended by the process-group timeout
  (``$CNNLAB_DIST_TIMEOUT_S``, default :data:`TIMEOUT_S`).

``cnnlab train --nproc-per-node N`` runs :func:`launch` (torchrun on this machine);
``torchrun --nproc-per-node N -m cnnlab train ...`` works too, with torchrun's multi-node flags.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cnnlab.errors import UserError

TIMEOUT_S = 600.0  # a collective waiting longer than this ends the run (a hung, not dead, rank)
GRACE_S = 5.0  # a failing rank waits this long so torchrun (polling every 0.1 s) can stop it


# --------------------------------------------------------------------------- who am I
def is_active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def is_main() -> bool:
    """True on the rank that evaluates and writes (rank 0), and in a single process."""
    return rank() == 0


def _launched() -> bool:
    """True in a process started by torchrun (it sets these variables)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


# ----------------------------------------------------------------- process group lifetime
@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[None]:
    """Join the process group torchrun set up (gloo on the CPU, NCCL on CUDA), leave it after.

    Outside torchrun (or with one process) it does nothing. Errors are reported once: a
    :class:`UserError` by rank 0 at once (every rank meets the same one), anything else after
    :data:`GRACE_S` seconds (see the module docstring), so a rank stopped because a peer died
    prints nothing.
    """
    if not _launched() or int(os.environ["WORLD_SIZE"]) < 2 or dist.is_initialized():
        yield
        return
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} requested but CUDA is not available here; use "
                            "--device cpu or auto")
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    text = os.environ.get("CNNLAB_DIST_TIMEOUT_S", str(TIMEOUT_S))
    try:
        timeout = datetime.timedelta(seconds=float(text))
    except ValueError:
        raise UserError(f"CNNLAB_DIST_TIMEOUT_S must be a number of seconds, not {text!r}"
                        ) from None
    global _SKIP_TEARDOWN
    restore_sigint = _defer_sigint()
    try:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    except BaseException:
        restore_sigint()
        raise
    try:
        yield
        # leave together: a rank that tears gloo down while a peer still uses the group was
        # seen to abort (about 1 launch in 8 on 2 CPU cores: "terminate called without an
        # active exception", SIGABRT in rank 1)
        dist.barrier()
    except UserError:
        if not is_main():
            time.sleep(GRACE_S)  # rank 0 reports it (every rank checks the same settings)
        raise
    except KeyboardInterrupt:
        if not is_main():  # before training began (later ones are TrainingInterrupted)
            raise SystemExit(130) from None
        raise
    except BaseException as exc:
        if not (isinstance(exc, SystemExit) and exc.code in (0, None)):
            time.sleep(GRACE_S)
        raise
    finally:
        global _CONTROL
        _CONTROL = None
        _release_wrappers()
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
        restore_sigint()
        _SKIP_TEARDOWN = True  # nothing of ours is left to tear down


_INTERRUPT = False  # a first Ctrl-C inside session(), not yet taken by a trainer
_SKIP_TEARDOWN = False  # a rank that left session(), or a launcher whose workers are gone


def _defer_sigint() -> Callable[[], None]:
    """From now on a first Ctrl-C sets a flag and a second one interrupts. Returns what puts
    the handler it replaced back (nothing to put back off the main thread, where no handler
    can be installed)."""
    global _INTERRUPT
    _INTERRUPT = False
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        global _INTERRUPT
        if _INTERRUPT:
            raise KeyboardInterrupt
        _INTERRUPT = True

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, handler)
    # a handler installed outside Python reads as None: the default one is put back then
    return lambda: signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def take_interrupt() -> bool:
    """True once for a Ctrl-C that arrived inside :func:`session` before a trainer took over
    the signal (the trainer stops at its first step boundary then)."""
    global _INTERRUPT
    taken, _INTERRUPT = _INTERRUPT, False
    return taken


def exit_process(code: int) -> None:
    """End a process that was a torchrun rank, or ran :func:`launch`, with ``code`` now,
    skipping the interpreter's teardown (see the module docstring); return in any other."""
    if not _SKIP_TEARDOWN:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


# every DistributedDataParallel made by wrap() while it lives (a Trainer a caller keeps)
_WRAPPERS: weakref.WeakSet = weakref.WeakSet()


def _release_wrappers() -> None:
    """Free the gradient reducer of every DDP wrapper still alive, while the group exists.

    A wrapper outliving :func:`session` (a caller keeping its ``Trainer``) would otherwise hold
    the gloo process group, and its pending work, through its reducer until interpreter exit,
    where gloo's teardown can abort the process (SIGABRT, "terminate called without an active
    exception"; pytorch/pytorch#179291 describes that path). A test worker that keeps three
    Trainers aborted that way in 2 full-suite runs on an AMD EPYC; it was not reproduced on an
    Intel Xeon with or without this release, so the cause is likely, not proven. A released
    wrapper cannot train again, which it could not anyway without the group.
    """
    for ddp in list(_WRAPPERS):
        for name in ("logger", "reducer", "process_group"):  # the logger refers to the reducer
            ddp.__dict__.pop(name, None)
    _WRAPPERS.clear()
    gc.collect()  # reducers caught in reference cycles go now too


_CONTROL: Any = None  # the gloo group for host-side flags (the default group when it is gloo)


def _control_group():
    global _CONTROL
    if dist.get_backend() == "gloo":
        return None
    if _CONTROL is None:  # a collective: every rank reaches its first flag at the same point
        _CONTROL = dist.new_group(backend="gloo")
    return _CONTROL


# ---------------------------------------------------------------- the trainer's hooks
def local_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA runs, else ``device``."""
    if not is_active() or device.type != "cuda":
        return device
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device.index is not None and device.index != local:
        raise UserError(f"--device {device} picks one GPU, but with several processes each "
                        "rank uses the GPU of its local rank; use --device cuda")
    return torch.device("cuda", local)


def global_batch(batch_size: int, n_train: int) -> int:
    """The global batch of a step: ``batch_size`` (at most ``n_train``), a multiple of the
    number of processes."""
    w = world_size()
    if batch_size % w:
        raise UserError(f"--batch-size {batch_size} is the global batch over all processes; "
                        f"with {w} processes it must be a multiple of {w}")
    batch = min(batch_size, n_train)
    batch -= batch % w
    if batch == 0:
        raise UserError(f"{n_train} training images cannot be shared by {w} processes")
    return batch


def shard(batch_indices: torch.Tensor) -> torch.Tensor:
    """This rank's equal part of a global batch's indices ``(B,)`` -> ``(B / world,)``."""
    w = world_size()
    if w == 1:
        return batch_indices
    part = len(batch_indices) // w
    r = rank()
    return batch_indices[r * part:(r + 1) * part]


def rank_seed(seed: int) -> int:
    """A per-rank seed derived from ``seed`` (unchanged in a single process)."""
    if not is_active():
        return seed
    from cnnlab.engine.checkpoint import derive_seed

    return derive_seed(seed, "rank", rank())


def prepare_model(model: nn.Module, sync_bn: bool, device: torch.device) -> nn.Module:
    """``model`` with SyncBatchNorm when asked (before the optimiser sees its parameters)."""
    if not sync_bn or not is_active():
        return model
    if device.type != "cuda":
        raise UserError("--sync-bn needs CUDA: torch's SyncBatchNorm has no CPU kernel (on the "
                        "CPU each rank normalises with the statistics of its own part of the "
                        "batch)")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` (gradients averaged over the ranks); as is in a
    single process. Call it on the module itself, then compile the result."""
    if not is_active():
        return model
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    # a 1-channel conv's weight gradient comes back with a stride of 1 on its size-1 dimension,
    # which DDP's strict stride comparison reports; the memory layout is the same
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # gradients as views of DDP's buckets: no copy, and no layout warning for 1-channel convs
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                  else None, gradient_as_bucket_view=True)
    _WRAPPERS.add(ddp)  # released when the session ends (_release_wrappers)
    return ddp


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks (a new tensor; ``t`` itself in a single process)."""
    if not is_active():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on any rank (every rank must call it at the same point)."""
    if not is_active():
        return bool(flag)
    t = torch.tensor([int(bool(flag))], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_control_group())
    return bool(t.item())


def gather(obj: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]] | None:
    """Every rank's ``obj`` as a list on rank 0 (None elsewhere); ``obj`` in a single process.

    Tensors travel on the CPU (a checkpoint is loaded with ``map_location``).
    """
    if not is_active():
        return obj
    obj = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in obj.items()}
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0, group=_control_group())
    return out


def own(saved: dict[str, Any] | list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """This rank's entry of what :func:`gather` saved."""
    return saved[rank()] if isinstance(saved, list) else saved


def check_resume(saved_world: int, out: Any) -> None:
    """Refuse to resume a run trained by another number of processes."""
    w = world_size()
    if saved_world != w:
        def procs(n):
            return f"{n} process{'es' if n > 1 else ''}"

        hint = f"--nproc-per-node {saved_world}" if saved_world > 1 else "one process"
        raise UserError(f"cannot resume {out}: it was trained by {procs(saved_world)} and this "
                        f"run has {procs(w)} (the batch shards and each rank's random streams "
                        f"depend on it); resume with {hint}, or use another --out")


# ------------------------------------------------------------------------------ launcher
def split_nproc(argv: Sequence[str]) -> tuple[int | None, list[str]]:
    """``(N, argv without --nproc-per-node N)`` (N is None when the option is absent)."""
    import argparse

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--nproc-per-node", "--nproc_per_node", dest="n", type=int)
    ns, rest = p.parse_known_args(list(argv))
    return ns.n, rest


def launch(nproc: int, argv: Sequence[str], threads: int | None = None) -> int:
    """Run ``python -m cnnlab <argv>`` on ``nproc`` processes of this machine through torchrun.

    Returns the exit status: 0, 2 (a settings error, printed by rank 0), 130 (interrupted; rank
    0 printed what it saved), or 1 after one line naming the rank that failed or died (torchrun
    then stopped the others).
    """
    if nproc < 1:
        raise UserError(f"--nproc-per-node must be at least 1, not {nproc}")
    if _launched():
        raise UserError("--nproc-per-node starts torchrun; this process already runs under "
                        "torchrun: leave the option out")
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # torchrun's banner and its per-process warnings: the outcome is reported below instead
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher",
                            "torch.distributed.run")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    omp = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = omp or str(threads or 1)  # torchrun warns when it is unset
    args = torchrun.parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module",
                                "cnnlab", *argv])
    global _SKIP_TEARDOWN
    _SKIP_TEARDOWN = True  # its workers are gone when torchrun.run returns or raises
    try:
        torchrun.run(args)
    except SignalException as exc:
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        r, failure = exc.get_first_failure()
        code = failure.exitcode
        if code in (2, 130):
            return code  # rank 0 printed the settings error / what the interruption saved
        how = (f"was killed by signal {-code} ({failure.signal_name()})" if code < 0
               else f"exited with status {code}")
        print(f"cnnlab: error: rank {r} (pid {failure.pid}) {how}; torchrun stopped the other "
              f"ranks", file=sys.stderr, flush=True)
        return 1
    finally:
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
    return 0
