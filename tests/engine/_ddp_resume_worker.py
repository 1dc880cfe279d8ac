"""Run by test_distributed.py under torchrun (2 processes, gloo): three runs of one config.

1. uninterrupted; 2. interrupted by a KeyboardInterrupt from a callback on every rank at epoch 2
step 3 (a mid-epoch checkpoint: every rank's augmentation and dropout streams); 3. resumed from
it; 4. a Ctrl-C that reaches rank 1 alone before its trainer exists (torchrun forwards one to
every rank while they are at different points): both ranks stop at the first step boundary.
Rank 0 saves the final states of 1 and 3 and the interruptions' messages to ``OUT/states.pt``.
The config uses every kind of per-rank state: BatchNorm, dropout, all augmentation ops, EMA,
validation.
"""

import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyNet, toy_dataset  # noqa: E402

from cnnlab.engine import Callback, Trainer, TrainConfig, TrainingInterrupted  # noqa: E402
from cnnlab.engine import distributed  # noqa: E402


class InterruptAt(Callback):
    def on_batch_end(self, run):
        if run.epoch == 1 and run.step_in_epoch == 3:
            raise KeyboardInterrupt


def config(out, **changes):
    return TrainConfig(model="tinynet", dataset="fashion-mnist", epochs=2, batch_size=32,
                       lr=0.05, augment="default,rotate=10,cutout=4", ema=0.9, val_fraction=0.2,
                       device="cpu", out=str(out), quiet=True, **changes)


def state(t: Trainer) -> dict:
    return {"model": t.model.state_dict(), "ema": t.ema.module.state_dict(),
            "optimizer": t.optimizer.state_dict()["state"], "history": t.history,
            "test_accuracy": t.result.test_accuracy}


def model():
    torch.manual_seed(0)
    return TinyNet()


def main(out: Path) -> None:
    torch.set_num_threads(1)
    toy = toy_dataset()
    with distributed.session("cpu"):
        assert distributed.world_size() == 2
        straight = Trainer(config(out / "straight"), model=model(), dataset=toy, log=False)
        straight.fit()
        first = Trainer(config(out / "cut"), [InterruptAt()], model=model(), dataset=toy,
                        log=False)
        try:
            first.fit()
            raise AssertionError("not interrupted")
        except TrainingInterrupted as exc:
            message = exc.message
        resumed = Trainer(config(out / "cut", resume=True), model=model(), dataset=toy,
                          log=False)
        resumed.fit()
        if distributed.rank() == 1:
            os.kill(os.getpid(), signal.SIGINT)  # recorded by the session, not raised
        early = Trainer(config(out / "early"), model=model(), dataset=toy, log=False)
        try:
            early.fit()
            raise AssertionError("the early Ctrl-C was lost")
        except TrainingInterrupted as exc:
            early_message = exc.message
        if distributed.is_main():
            torch.save({"straight": state(straight), "resumed": state(resumed),
                        "message": message, "early": early_message}, out / "states.pt")
    # the Trainers outlive the session: their DDP wrappers no longer hold the process group
    for t in (straight, first, resumed, early):
        assert not hasattr(t._forward, "reducer") and not hasattr(t._forward, "process_group")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    distributed.exit_process(0)  # as the README tells a script run by torchrun
