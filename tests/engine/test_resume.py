"""Checkpoints: resuming reaches bit-identical weights; Ctrl-C and NaN are handled cleanly.

The reference for every resume test is an uninterrupted run of the same config in the same
process: ``torch.equal`` on every tensor of the model, EMA and optimiser state (no tolerance).
"""

import dataclasses
import hashlib
import os
import signal
from pathlib import Path

import pytest
import torch

from cnnlab.engine import Callback, Trainer, TrainingInterrupted
from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.errors import TrainingDiverged, UserError


def run(config, toy, make_model, callbacks=(), **changes):
    cfg = dataclasses.replace(config, **changes)
    return Trainer(cfg, callbacks, model=make_model(), dataset=toy, log=False)


def assert_same_state(a: Trainer, b: Trainer):
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), f"model tensor {name} differs"
    for (name, x), (_, y) in zip(a.ema.module.state_dict().items(),
                                 b.ema.module.state_dict().items()):
        assert torch.equal(x, y), f"EMA tensor {name} differs"
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for k in sa:
        for key in sa[k]:
            assert torch.equal(sa[k][key], sb[k][key]), f"optimizer state {k}/{key} differs"


def strip_times(history):
    return [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in history]


class InterruptAt(Callback):
    """Raises KeyboardInterrupt at a chosen event, epoch (1-based) and step (1-based)."""

    def __init__(self, event, epoch, step=None):
        self.event, self.epoch, self.step = event, epoch, step

    def _maybe(self, run, event):
        if (event == self.event and run.epoch + 1 == self.epoch
                and (self.step is None or run.step_in_epoch + (event != "batch_end") == self.step)):
            raise KeyboardInterrupt

    def on_after_backward(self, run):
        self._maybe(run, "after_backward")

    def on_batch_end(self, run):
        self._maybe(run, "batch_end")

    def on_epoch_end(self, run):
        if self.event == "epoch_end" and run.epoch == self.epoch:
            raise KeyboardInterrupt


class CountBatches(Callback):
    """A stateful callback: its count must survive a resume."""

    def __init__(self):
        self.count = 0

    def on_batch_end(self, run):
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


@pytest.fixture
def straight(config, toy, make_model, tmp_path):
    counter = CountBatches()
    t = run(config, toy, make_model, [counter], out=str(tmp_path / "straight"))
    t.fit()
    return t, counter


@pytest.mark.parametrize("event, epoch, step, where", [
    ("epoch_end", 1, None, "the end of epoch 1"),     # interrupt at an epoch boundary
    ("batch_end", 2, 3, "epoch 2 step 3/6"),          # mid-epoch: saved with the step index
    ("after_backward", 2, 3, None),                   # inside a step: falls back to epoch 1
])
@pytest.mark.parametrize("interrupter_first", [False, True])
def test_interrupt_then_resume_is_bit_identical(config, toy, make_model, straight, event, epoch,
                                                step, where, interrupter_first):
    ref, ref_counter = straight
    counter = CountBatches()
    # the callbacks after the one that interrupts still see the event, so their saved state
    # matches the step the checkpoint was taken at, whatever the order
    callbacks = [counter, InterruptAt(event, epoch, step)]
    first = run(config, toy, make_model, callbacks[::-1] if interrupter_first else callbacks)
    with pytest.raises(TrainingInterrupted) as err:
        first.fit()
    message = err.value.message
    assert "--resume" in message and "\n" not in message
    if where is not None:
        assert f"saved a checkpoint at {where}" in message
    else:
        assert "interrupted inside a step; kept the last checkpoint" in message
    counter2 = CountBatches()
    second = run(config, toy, make_model, [counter2], resume=True)
    second.fit()
    assert_same_state(ref, second)
    assert strip_times(second.history) == strip_times(ref.history)
    assert counter2.count == ref_counter.count == 12  # 2 epochs x 6 steps, each counted once
    assert second.result.test_accuracy == ref.result.test_accuracy


def test_real_ctrl_c_is_deferred_to_the_step_boundary(config, toy, make_model, straight):
    ref, _ = straight

    class SendSigint(Callback):
        def on_after_backward(self, run):  # mid-step: the handler only sets a flag
            if run.epoch == 1 and run.step_in_epoch == 1:
                os.kill(os.getpid(), signal.SIGINT)

    first = run(config, toy, make_model, [SendSigint()])
    before = signal.getsignal(signal.SIGINT)  # the default, or what the test process set
    with pytest.raises(TrainingInterrupted, match=r"saved a checkpoint at epoch 2 step 2/6"):
        first.fit()
    assert signal.getsignal(signal.SIGINT) is before  # restored
    second = run(config, toy, make_model, resume=True)
    second.fit()
    assert_same_state(ref, second)


def test_two_runs_with_one_seed_agree_and_seeds_matter(config, toy, make_model, tmp_path, straight):
    ref, _ = straight
    again = run(config, toy, make_model, out=None)
    again.fit()
    assert_same_state(ref, again)
    other = run(config, toy, make_model, out=None, seed=1)
    other.fit()
    assert not torch.equal(other.model.features[0].weight, ref.model.features[0].weight)


def test_nan_loss_stops_and_keeps_the_last_checkpoint(config, toy, make_model):
    class PoisonBatch(Callback):
        def on_batch_begin(self, run):
            if run.epoch == 1 and run.step_in_epoch == 3:  # epoch 2, step 4
                x, y = run.batch
                x.mul_(float("nan"))

    t = run(config, toy, make_model, [PoisonBatch()])
    with pytest.raises(TrainingDiverged) as err:
        t.fit()
    message = str(err.value)
    assert "became nan at epoch 2 step 4/6 (global step 10)" in message
    assert "end of epoch 1) is unchanged" in message and "--lr" in message
    path = t.out / "checkpoint.pt"
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and state["step_in_epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    # resuming from it (without the poison) works and does not touch it until epoch 2 ends
    t2 = run(config, toy, make_model, resume=True, epochs=2)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    t2.fit()
    assert t2.epoch == 2


def test_huge_lr_diverges_with_epoch_and_step(config, toy, make_model):
    with pytest.raises(TrainingDiverged,
                       match=r"at epoch 1 step \d+/6 .*no checkpoint was written"):
        run(config, toy, make_model, lr=1e12, ema=0.0, label_smoothing=0.0,
            augment="none").fit()


def test_resume_with_other_settings_lists_the_differences(config, toy, make_model):
    run(config, toy, make_model, epochs=1).fit()
    with pytest.raises(UserError) as err:
        run(config, toy, make_model, resume=True, epochs=3, lr=0.2, quiet=False).fit()
    message = str(err.value)
    assert "epochs: saved 1, now 3" in message and "lr: saved 0.05, now 0.2" in message
    assert "quiet" not in message  # display settings may change


def test_existing_run_needs_resume(config, toy, make_model):
    run(config, toy, make_model, epochs=1).fit()
    with pytest.raises(UserError, match="already holds a run.*--resume"):
        run(config, toy, make_model, epochs=1)


def test_resume_of_a_finished_run_only_reevaluates(config, toy, make_model, straight):
    ref, _ = straight
    again = run(config, toy, make_model, out=str(ref.out), resume=True)
    again.fit()
    assert strip_times(again.history) == strip_times(ref.history)
    assert again.result.test_accuracy == ref.result.test_accuracy


def test_should_stop_ends_training_and_stays_stopped(config, toy, make_model):
    class StopAfterFirst(Callback):
        def on_epoch_end(self, run):
            run.should_stop = True

    t = run(config, toy, make_model, [StopAfterFirst()], epochs=3)
    result = t.fit()
    assert len(result.history) == 1
    t2 = run(config, toy, make_model, resume=True, epochs=3)
    t2.fit()
    assert len(t2.history) == 1


def test_interrupt_without_out_dir(config, toy, make_model):
    with pytest.raises(TrainingInterrupted, match="nothing saved"):
        run(config, toy, make_model, [InterruptAt("batch_end", 1, 2)], out=None).fit()


def test_callback_state_reads_a_callbacks_saved_state(straight, tmp_path):
    from cnnlab.engine.checkpoint import CHECKPOINT, callback_state
    from cnnlab.errors import DataError

    ref, counter = straight
    path = ref.out / CHECKPOINT
    assert callback_state(path, CountBatches) == {"count": counter.count} == {"count": 12}
    with pytest.raises(DataError, match="holds no state of callback InterruptAt#0"):
        callback_state(path, InterruptAt)


# ------------------------------------------------------------------ issue 12: nothing lost


def _files(folder):
    """{name: sha256} of every file in a folder: what "nothing changed on disk" compares."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".cnnlab.lock"}


def _finite(state):
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("where", ["buffer", "ema"])
def test_non_finite_state_stops_like_a_nan_loss(config, toy, make_model, where):
    """The `--lr 1e6` case: a finite loss with inf BatchNorm variances. The run stops at the end
    of that epoch; the checkpoint and best.pt of the last good epoch stay as they were."""
    class Overflow(Callback):
        def on_batch_end(self, run):
            if run.epoch == 1 and run.step_in_epoch == run.steps_per_epoch:
                module = run.model if where == "buffer" else run.ema.module
                module.features[1].running_var[0] = float("inf")

    t = run(config, toy, make_model, [Overflow()], epochs=3)
    before = {}

    class Snapshot(Callback):
        def on_epoch_begin(self, run):  # epoch 2 begins: epoch 1's files are all written
            if run.epoch == 1:
                before.update(_files(run.out))

    t.callbacks.insert(0, Snapshot())
    with pytest.raises(TrainingDiverged) as err:
        t.fit()
    message = str(err.value)
    assert "NaN/inf" in message and "running_var" in message and "epoch 2" in message
    assert "end of epoch 1) is unchanged" in message and "\n" not in message
    after = _files(t.out)
    for name in ("checkpoint.pt", "best.pt", "history.csv"):
        assert after[name] == before[name], f"{name} changed"
    assert "model.pt" not in after
    state = load_checkpoint(t.out / "checkpoint.pt")
    assert state["epoch"] == 1 and _finite(state["model"])
    assert _finite(torch.load(t.out / "best.pt", weights_only=True))


def test_resume_refuses_another_thread_count_unless_given(config, toy, make_model, request):
    # the run starts on 1 thread whatever CNNLAB_TEST_THREADS says; the count is restored after
    request.addfinalizer(lambda n=torch.get_num_threads(): torch.set_num_threads(n))
    torch.set_num_threads(1)

    class StopAfterEpoch1(Callback):
        def on_epoch_end(self, run):
            if run.epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        run(config, toy, make_model, [StopAfterEpoch1()]).fit()  # 1 thread (conftest)
    assert load_checkpoint(config.out + "/checkpoint.pt")["threads"] == 1
    saved = _files(Path(config.out))
    torch.set_num_threads(2)
    with pytest.raises(UserError, match=r"ran with 1 torch threads, this process has 2; add "
                                        r"--threads 1") as err:
        run(config, toy, make_model, resume=True)
    assert "\n" not in str(err.value)
    assert _files(Path(config.out)) == saved  # nothing written
    with pytest.warns(UserWarning, match="2 torch threads, not the run's 1: .*not be "
                                         "bit-identical"):
        t = run(config, toy, make_model, resume=True, threads=2)
    t.fit()
    assert t.epoch == 2
    # the count the checkpoint was written with (now 2) resumes silently, --threads or not
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(config, toy, make_model, resume=True)
