"""Suite-wide settings: CPU only, offline, deterministic, one torch thread per xdist worker."""

import os

import pytest
from hypothesis import HealthCheck, settings

# The CI machine has 2 cores and the suite runs with 2 xdist workers: one thread each avoids
# oversubscription (which makes torch on 2 cores several times slower). CNNLAB_TEST_THREADS=N
# sets torch's thread count for the whole suite instead (other kernels, other rounding: the suite
# must pass with 1 and 2).
_THREADS = os.environ.get("CNNLAB_TEST_THREADS")
if _THREADS or os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", _THREADS or "1")
    try:
        import torch

        torch.set_num_threads(int(_THREADS or 1))
    except ImportError:
        pass


def pytest_report_header(config):
    import torch

    return f"cnnlab: torch threads {torch.get_num_threads()} (CNNLAB_TEST_THREADS={_THREADS})"

# Timing varies on shared CI machines: no per-example deadline; examples are bounded per test.
settings.register_profile(
    "cnnlab", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "cnnlab"))


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


def pytest_terminal_summary(terminalreporter, config):
    """The shuffled order's seed, printed even under -q, so a failure can be replayed."""
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None and config.pluginmanager.hasplugin("randomly"):
        terminalreporter.write_line(
            f"cnnlab: test order shuffled by pytest-randomly, seed {seed} "
            f"(replay: -p randomly -p no:cacheprovider --randomly-seed={seed}); "
            f"torch threads {_THREADS or 1}")


@pytest.fixture(scope="session")
def write_cifar():
    """A function writing a fake CIFAR-10 in the standard pickled-batch layout to ``folder``:
    five training batches and a test batch of ``per_batch`` random images each, labels cycling
    0..9, the standard class names in ``batches.meta``."""
    import pickle

    import numpy as np

    from cnnlab.data import CIFAR10_CLASSES

    def write(folder, rng, per_batch=20):
        folder.mkdir(parents=True)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            rows = rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8)
            batch = {b"labels": [int(v) for v in np.arange(per_batch) % 10], b"data": rows}
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES]}
        (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))

    return write


@pytest.fixture(scope="session")
def write_sst():
    """A function writing a small learnable SST-5 look-alike (PTB-style trees in ``train.txt``,
    ``dev.txt``, ``test.txt``) to ``folder``: each sentence mixes filler words with positive and
    negative words, and every node's label is ``clip(2 + #positive - #negative, 0, 4)`` over the
    words it spans, so sentences and phrases are labelled consistently."""
    import numpy as np

    pos, neg = ("good", "great", "fine", "nice"), ("bad", "awful", "poor", "dull")
    filler = ("the", "movie", "is", "a", "film", "plot", "it", "of")

    def label(words):
        return int(np.clip(2 + sum(w in pos for w in words) - sum(w in neg for w in words), 0, 4))

    def tree(words):
        if len(words) == 1:
            return f"({label(words)} {words[0]})"
        return f"({label(words)} {tree(words[:1])} {tree(words[1:])})"

    def write(folder, rng, sizes=(300, 60, 100)):
        folder.mkdir(parents=True)
        vocab = np.array(pos + neg + filler * 2)
        for split, n in zip(("train", "dev", "test"), sizes, strict=True):
            lines = [tree(list(rng.choice(vocab, int(rng.integers(3, 11))))) for _ in range(n)]
            (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
        return folder

    return write


@pytest.fixture(scope="session")
def resumes_bit_identically():
    """A function that trains ``config`` straight through into ``straight_out``, trains it again
    in ``config.out`` with a Ctrl-C after step ``step`` of epoch ``epoch`` (1-based), resumes that
    run, asserts that both end with bit-identical weights, and returns the two finished
    Trainers (straight, resumed) for further checks."""
    import dataclasses

    import torch

    from cnnlab.engine import Callback, Trainer, TrainingInterrupted

    class InterruptAt(Callback):
        def __init__(self, epoch, step):
            self.epoch, self.step = epoch, step

        def on_batch_end(self, run):
            if run.epoch + 1 == self.epoch and run.step_in_epoch == self.step:
                raise KeyboardInterrupt

    def check(config, straight_out, epoch, step):
        straight = Trainer(dataclasses.replace(config, out=str(straight_out)), log=False)
        straight.fit()
        first = Trainer(config, [InterruptAt(epoch, step)], log=False)
        with pytest.raises(TrainingInterrupted,
                           match=f"saved a checkpoint at epoch {epoch} step {step}/"):
            first.fit()
        resumed = Trainer(dataclasses.replace(config, resume=True), log=False)
        resumed.fit()
        for (name, x), (_, y) in zip(straight.model.state_dict().items(),
                                     resumed.model.state_dict().items(), strict=True):
            assert torch.equal(x, y), name
        return straight, resumed

    return check
