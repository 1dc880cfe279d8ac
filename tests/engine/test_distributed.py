"""Data-parallel training on the CPU: 2 processes (gloo) launched through torchrun.

References: one process training the same global batches in the same order (the weights agree
within 1e-6: gradient averaging and sharding are exact up to float32 rounding), and an
uninterrupted 2-process run (a resumed one is bit-identical). Each torchrun launch costs several
seconds (3 Python processes importing torch), hence the `slow` marks.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab import models
from cnnlab.cli import main
from cnnlab.engine import distributed
from cnnlab.engine.checkpoint import derive_seed, load_checkpoint

SRC = Path(cnnlab.__file__).parents[1]
HERE = Path(__file__).parent


def _write_idx_dir():
    """test_train's tiny Fashion-MNIST IDX writer (the tests folder is not a package)."""
    spec = importlib.util.spec_from_file_location("_cnnlab_test_train", HERE / "test_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_idx_dir

# one epoch of 1,024 images at global batch 64 (16 steps; 32 images per rank), no BatchNorm
# (each rank would normalise with its own 32 images), no augmentation or dropout (per-rank streams)
RUN = ["train", "--model", "simple_cnn", "--model-kw", "norm_layer=none", "--width", "0.25",
       "--dataset", "fashion-mnist", "--epochs", "1", "--batch-size", "64", "--lr", "0.05",
       "--augment", "none", "--val-fraction", "0", "--quiet", "--threads", "1"]


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [e.get("PYTHONPATH")])])
    return e


def cnnlab_cmd(*args):
    return [sys.executable, "-m", "cnnlab", *args]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    _write_idx_dir()(root / "fm", n_train=1024, n_test=100)
    return root


def data_args(root):
    return ["--data-dir", str(root / "fm"), "--cache-dir", str(root / "cache")]


@pytest.fixture(scope="module")
def two_ranks(data):
    """The 2-process run (through `cnnlab train --nproc-per-node 2`) and its output."""
    out = data / "two"
    done = subprocess.run(cnnlab_cmd(*RUN, *data_args(data), "--out", str(out),
                                     "--nproc-per-node", "2"),
                          env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out, done


@pytest.mark.slow
def test_two_ranks_train_the_weights_of_one_process_with_the_global_batch(data, two_ranks,
                                                                            monkeypatch):
    out2, done = two_ranks
    # rank 0 alone prints: one epoch line, one summary line
    assert done.stdout.count("epoch 1/1") == 1 and done.stdout.count("test accuracy") == 1
    assert "Traceback" not in done.stderr
    out1 = data / "one"
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the suite's 1 thread
    assert main([*RUN, *data_args(data), "--out", str(out1)]) == 0
    one = torch.load(out1 / "model.pt", weights_only=True)
    two = torch.load(out2 / "model.pt", weights_only=True)
    torch.manual_seed(derive_seed(0, "init"))  # the initial weights both runs started from
    init = models.create("simple_cnn", num_classes=10, in_chans=1, width=0.25,
                         norm_layer="none").state_dict()
    assert one.keys() == two.keys()
    for name in one:
        # float32 rounding of the two reduction orders: 3e-8 here; training moved every
        # tensor by far more than the tolerance
        torch.testing.assert_close(two[name], one[name], atol=1e-6, rtol=0)
        assert (one[name] - init[name]).abs().max() > 1e-3, name
    h1 = json.loads((out1 / "metrics.json").read_text())["history"]
    h2 = json.loads((out2 / "metrics.json").read_text())["history"]
    # the epoch's loss and accuracy are over all 1,024 images (summed over both ranks)
    # (a near-tie's argmax may flip with the last bits of the weights: one image of slack)
    assert h2[0]["train_accuracy"] == pytest.approx(h1[0]["train_accuracy"], abs=1.01 / 1024)
    assert h2[0]["train_loss"] == pytest.approx(h1[0]["train_loss"], abs=1e-6)
    assert load_checkpoint(out2 / "checkpoint.pt")["world_size"] == 2
    assert load_checkpoint(out1 / "checkpoint.pt")["world_size"] == 1


@pytest.mark.slow
def test_resume_with_another_number_of_processes_is_one_line(data, two_ranks, capsys):
    out2, _ = two_ranks
    assert main(["train", "--out", str(out2), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained by 2 processes and this run has 1 process" in err
    assert "--nproc-per-node 2" in err
    # and the other way, through torchrun: rank 0 reports, the launcher adds nothing
    out1 = data / "solo"
    assert main([*RUN, *data_args(data), "--out", str(out1)]) == 0
    done = subprocess.run(cnnlab_cmd("train", "--out", str(out1), "--resume", "--threads", "1",
                                     "--nproc-per-node", "2"),
                          env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"cnnlab: error: cannot resume {out1}: it was trained by 1 process and this run has 2 "
        "processes (the batch shards and each rank's random streams depend on it); resume with "
        "one process, or use another --out"], done.stderr


@pytest.mark.slow
def test_interrupted_two_rank_run_resumes_bit_identically(tmp_path):
    """Mid-epoch interruption with BatchNorm, dropout, every augmentation and EMA: the
    checkpoint must hold each rank's random streams (they differ between ranks)."""
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", str(HERE / "_ddp_resume_worker.py"),
                           str(tmp_path)], env=env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = torch.load(tmp_path / "states.pt", weights_only=False)
    assert saved["message"].startswith("interrupted; saved a checkpoint at epoch 2 step 3/6")
    # rank 1's Ctrl-C before its trainer existed stopped both ranks before their first step
    assert saved["early"].startswith("interrupted; saved a checkpoint at the end of epoch 0"), \
        saved["early"]
    mid = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert mid["epoch"] == 2  # the resumed run finished; its last save is the end of epoch 2
    a, b = saved["straight"], saved["resumed"]
    for part in ("model", "ema"):
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), f"{part} {name} differs"
    for k in a["optimizer"]:
        for key in a["optimizer"][k]:
            assert torch.equal(a["optimizer"][k][key], b["optimizer"][k][key])
    strip = [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k}
             for r in a["history"]]
    assert strip == [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k}
                     for r in b["history"]]
    assert a["test_accuracy"] == b["test_accuracy"]


def _workers(launcher_pid):
    """{rank: pid} of the processes torchrun started from the launcher process."""
    pids = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
    ranks = {}
    for pid in pids:
        env_vars = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = next((v[5:] for v in env_vars if v.startswith(b"RANK=")), None)
        if rank is not None:
            ranks[int(rank)] = int(pid)
    return ranks


def _start_and_wait_for_training(args, out):
    child = subprocess.Popen(cnnlab_cmd(*args), env=env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "config.json").exists():  # rank 0 writes it when training starts
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.02)
    return child


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_killed_rank_ends_the_run_with_one_line_naming_it(data):
    out = data / "killed"
    child = _start_and_wait_for_training(
        [*RUN, *data_args(data), "--out", str(out), "--epochs", "500", "--nproc-per-node", "2"],
        out)
    pid = _workers(child.pid)[1]
    os.kill(pid, signal.SIGKILL)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 1
    # rank 0 (gloo: "Connection reset by peer") was stopped by torchrun before it reported
    assert err.splitlines() == [f"cnnlab: error: rank 1 (pid {pid}) was killed by signal 9 "
                                "(SIGKILL); torchrun stopped the other ranks"], err


@pytest.mark.slow
def test_ctrl_c_under_the_launcher_saves_once_and_resumes_bit_identically(data, two_ranks):
    """SIGINT to `cnnlab train --nproc-per-node 2`: torchrun forwards it to each rank, the
    ranks agree on the step to stop at, rank 0 saves and reports; the resumed run ends with the
    weights of the uninterrupted one (the `two_ranks` run)."""
    out = data / "ctrl-c"
    args = [*RUN, *data_args(data), "--out", str(out), "--nproc-per-node", "2"]
    child = _start_and_wait_for_training(args, out)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnlab: interrupted; saved a checkpoint at")
    done = subprocess.run(cnnlab_cmd(*args, "--resume"), env=env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ref = torch.load(two_ranks[0] / "model.pt", weights_only=True)
    resumed = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(ref[k], resumed[k]) for k in ref)


def test_shards_cover_the_global_batch_in_order(monkeypatch):
    batch = torch.arange(12) * 7
    parts = []
    for r in range(3):
        monkeypatch.setattr(distributed, "world_size", lambda: 3)
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        parts.append(distributed.shard(batch))
    assert torch.equal(torch.cat(parts), batch)
    with pytest.raises(Exception, match="global batch over all processes; with 3 processes it "
                                        "must be a multiple of 3"):
        distributed.global_batch(64, 1000)
    assert distributed.global_batch(63, 32) == 30  # small data: the largest multiple that fits


def test_a_rank_that_left_its_session_exits_without_the_interpreter_teardown(tmp_path):
    """exit_process: os._exit with the code after flushing, so no atexit handler (nor gloo's
    C++ teardown) runs; in a process that was no rank it returns."""
    code = ("import atexit, sys\n"
            "from cnnlab.engine import distributed as d\n"
            "atexit.register(print, 'teardown ran')\n"
            "d.exit_process(5)\n"
            "print('returned', end='')\n"
            "d._SKIP_TEARDOWN = True\n"
            "d.exit_process(int(sys.argv[1]))\n"
            "print('not reached')\n")
    done = subprocess.run([sys.executable, "-c", code, "7"], env=env(), capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (7, "returned", "")


def test_split_nproc_takes_the_option_out():
    assert distributed.split_nproc(["train", "--nproc-per-node", "2", "--out", "r"]) == (
        2, ["train", "--out", "r"])
    assert distributed.split_nproc(["train", "--nproc-per-node=3"]) == (3, ["train"])
    assert distributed.split_nproc(["train", "--out", "r"]) == (None, ["train", "--out", "r"])


def test_sync_bn_on_the_cpu_is_one_line(monkeypatch):
    monkeypatch.setattr(distributed, "is_active", lambda: True)
    with pytest.raises(Exception, match="--sync-bn needs CUDA"):
        distributed.prepare_model(torch.nn.BatchNorm2d(3), True, torch.device("cpu"))
