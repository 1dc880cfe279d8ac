"""Hyperparameter search with Optuna and Hyperband: resumable, several workers, one storage.

``cnnlab tune`` is the command-line form of :func:`tune`. The pieces:

1. **Space** (:mod:`cnnlab.studies._tune_space`): a YAML file; Optuna's define-by-run API
   suggests only the active parameters (per-layer values exist only for existing layers).
2. **Trials**: the model is built by the model zoo (``space.model``), its parameters and MACs come
   from the analyzer, and it trains through the engine (:class:`cnnlab.engine.Trainer`) with a
   callback that reports the validation accuracy after every epoch to Optuna; the pruner
   (``HyperbandPruner`` by default, or median / none) stops a trial at its bracket's rungs. A
   trial never evaluates on the test set. A trial whose loss becomes NaN/inf (or whose
   configuration cannot be built) is recorded as failed with the reason; the search goes on.
3. **Storage**: an SQLite file ``tune.db`` in ``--out`` unless ``--storage URL`` (e.g.
   ``postgresql://user@host/db``) names a database that several machines share. Running the same
   command again continues the study: trials that were running when it stopped (Ctrl-C, a kill)
   are marked failed and their configuration is queued again; finished trials are kept. Optuna's
   heartbeat fails (and retries) trials of workers that died on other machines.
4. **Workers**: ``--workers K`` starts K processes on this machine against the same storage, each
   with ``threads // K`` torch threads (so K workers on K cores do not fight).
5. **Final**: the best configuration (its active parameters only) is retrained on
   train+validation for ``max_epochs`` and evaluated once on the test set; ``--compare-random``
   also runs random search without pruning on the same epoch budget; the report
   (:mod:`cnnlab.studies._tune_report`) shows it all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.errors import UserError
from cnnlab.studies._tune_space import Space, load_space

SAMPLERS = ("tpe", "random")
PRUNERS = ("hyperband", "median", "none")
DB_NAME = "tune.db"
_INTERRUPTED = "interrupted"  # fail_reason prefix of trials stopped by Ctrl-C (retried)


@dataclass
class TuneConfig:
    """Everything that defines a search (``cnnlab tune``'s options).

    Attributes:
        space: the space file (YAML).
        out: the output folder (storage by default, final run, report).
        dataset: ``fashion-mnist`` or ``cifar10``.
        trials: stop after this many finished trials (completed, pruned or failed; a rerun
            counts the ones already in the storage).
        time_budget_s: stop starting new trials after this many seconds (of this invocation).
        max_epochs: epochs of a trial that is never pruned (Hyperband's max resource).
        min_epochs: Hyperband's min resource (epochs before the first rung).
        reduction_factor: Hyperband's eta.
        sampler, pruner: see SAMPLERS, PRUNERS.
        storage: an Optuna storage URL; None = ``sqlite:///OUT/tune.db``.
        study_name: the study's name in the storage.
        workers: local worker processes.
        threads: torch CPU threads shared by the workers (None: all cores).
        subset: training images per trial (stratified; None = all).
        val_fraction: held out for the per-epoch validation accuracy.
        seed: seeds the samplers (worker ``i`` uses ``seed + i``) and every training run.
        device: training device (auto | cpu | cuda).
        compare_random: also run random search without pruning on the same epoch budget.
        random_seed: seeds that random search (worker ``i`` uses ``random_seed + i``; study
            ``STUDY-random-R``). None: ``seed``, so its first draws are the search's TPE start-up
            draws (study ``STUDY-random``): a paired comparison of pruning on the same
            configurations; another seed gives independent draws.
        retrain: retrain the best configuration on train+validation and test it once.
        enqueue: configurations (flat Optuna params) to try first (Python API only).
    """

    space: str
    out: str
    dataset: str = "fashion-mnist"
    trials: int | None = None
    time_budget_s: float | None = None
    max_epochs: int = 7
    min_epochs: int = 1
    reduction_factor: int = 3
    sampler: str = "tpe"
    pruner: str = "hyperband"
    storage: str | None = None
    study_name: str = "cnnlab-tune"
    workers: int = 1
    threads: int | None = None
    subset: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    cache_dir: str | None = None
    compare_random: bool = False
    random_seed: int | None = None
    retrain: bool = True
    enqueue: list[dict[str, Any]] = field(default_factory=list)

    def validate(self) -> TuneConfig:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise UserError(msg)

        need(isinstance(self.workers, int) and self.workers >= 1,
             f"--workers must be at least 1, got {self.workers}")
        need(self.trials is not None or self.time_budget_s is not None,
             "give --trials N or --time-budget SECONDS (or both)")
        need(self.trials is None or self.trials >= 1, f"--trials must be >= 1, got {self.trials}")
        need(self.time_budget_s is None or self.time_budget_s > 0,
             f"--time-budget must be > 0 seconds, got {self.time_budget_s}")
        need(1 <= self.min_epochs <= self.max_epochs,
             f"need 1 <= min epochs ({self.min_epochs}) <= --max-epochs ({self.max_epochs})")
        need(self.reduction_factor >= 2,
             f"--reduction-factor must be >= 2, got {self.reduction_factor}")
        need(self.sampler in SAMPLERS, f"--sampler must be one of {list(SAMPLERS)}")
        need(self.pruner in PRUNERS, f"--pruner must be one of {list(PRUNERS)}")
        need(self.val_fraction > 0, "trials are judged on a validation split: --val-fraction "
                                    f"must be > 0, got {self.val_fraction}")
        need(self.threads is None or self.threads >= 1, "--threads must be >= 1")
        for flag, seed in (("--seed", self.seed), ("--random-seed", self.random_seed)):
            need(seed is None or 0 <= seed < 2**32 - 64,
                 f"{flag} must be between 0 and {2**32 - 65}, got {seed}")
        return self

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out).resolve() / DB_NAME}"

    @property
    def random_study_name(self) -> str:
        """The comparison's study: one per random seed, so each is continued on its own."""
        if self.random_seed is None:
            return f"{self.study_name}-random"
        return f"{self.study_name}-random-{self.random_seed}"

    def sampler_seed(self, study_name: str) -> int:
        """The seed of worker 0's sampler in ``study_name`` (the search's or the comparison's)."""
        if study_name == self.random_study_name and self.random_seed is not None:
            return self.random_seed
        return self.seed

    def threads_per_worker(self) -> int:
        total = self.threads or os.cpu_count() or 1
        return max(1, total // self.workers)


@dataclass
class TuneResult:
    """What :func:`tune` produced (``results.json`` holds the same)."""

    config: TuneConfig
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    final: dict[str, Any] | None
    random_trials: list[dict[str, Any]] | None
    importances: dict[str, float]
    files: dict[str, Path]
    # every random-search comparison of this search in the storage (one per random seed), each
    # summarised by cnnlab.studies._tune_report.comparison; the one just run among them
    random_searches: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------ storage
def redact(url: str) -> str:
    """The URL without its password (for messages and the report)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even parseable: say so with the raw scheme only
        return url.split("://", 1)[0] + "://..."


def engine_url(url: str) -> str:
    """``postgresql://`` means psycopg2 (the driver cnnlab installs); SQLAlchemy 2.1 would pick
    psycopg 3 for a URL without a driver."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def open_storage(url: str) -> Any:
    """An Optuna RDB storage with a heartbeat (dead workers' trials are failed and retried).

    Raises:
        UserError: the URL is malformed or the database cannot be reached.
    """
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}  # several local workers wait for the lock
    elif url.startswith("postgresql"):
        kwargs = {"connect_args": {"connect_timeout": 10}}
    retries = 0
    while True:
        try:
            with warnings.catch_warnings():  # the heartbeat is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    engine_url(url), engine_kwargs=kwargs, heartbeat_interval=5,
                    grace_period=30, heartbeat_stale_trial_callback=(
                        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)))
        except Exception as exc:  # sqlalchemy's errors (OperationalError, ArgumentError, ...)
            text = str(exc).strip()
            if retries < SCHEMA_RETRIES and any(m in text for m in _SCHEMA_RACE):
                # another process created the tables between Optuna's check and its CREATE
                # (workers or machines starting on a new database at once): they exist now
                retries += 1
                time.sleep(0.2 * retries)
                continue
            first = text.splitlines()[0] if text else type(exc).__name__
            raise UserError(f"cannot use storage {redact(url)}: {first}") from None


SCHEMA_RETRIES = 5  # attempts after a lost race to create the schema of a new database
# what SQLite and PostgreSQL say when two processes create the same tables at once
_SCHEMA_RACE = ("already exists", "UNIQUE constraint failed: alembic_version",
                "duplicate key value violates unique constraint")


def _settings(cfg: TuneConfig, space: Space, pruner: str) -> dict[str, Any]:
    """What must agree between a study and a rerun that continues it."""
    return {"pruner": pruner, "space": {"model": space.model, "fixed": space.fixed,
                      "params": [dataclasses.asdict(p) for p in space.params]},
            "dataset": cfg.dataset, "max_epochs": cfg.max_epochs, "min_epochs": cfg.min_epochs,
            "reduction_factor": cfg.reduction_factor, "subset": cfg.subset,
            "val_fraction": cfg.val_fraction, "seed": cfg.seed}


def _settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def make_pruner(cfg: TuneConfig, name: str | None = None) -> Any:
    import optuna

    name = name or cfg.pruner
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=cfg.min_epochs,
                                              max_resource=cfg.max_epochs,
                                              reduction_factor=cfg.reduction_factor)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=cfg.min_epochs)
    return optuna.pruners.NopPruner()


def _make_sampler(name: str, seed: int) -> Any:
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _open_study(cfg: TuneConfig, space: Space, name: str, sampler: str, pruner: str,
                worker: int = 0) -> Any:
    import optuna

    storage = open_storage(cfg.storage_url)
    settings = _settings(cfg, space, pruner)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                    sampler=_make_sampler(sampler, cfg.sampler_seed(name) + worker),
                                    pruner=make_pruner(cfg, pruner), load_if_exists=True)
    except Exception as exc:
        raise UserError(f"cannot open study {name!r} in {redact(cfg.storage_url)}: "
                        f"{str(exc).splitlines()[0]}") from None
    key = study.user_attrs.get("settings_key")
    if key is None:
        study.set_user_attr("settings_key", _settings_key(settings))
        study.set_user_attr("settings", json.loads(json.dumps(settings, default=str)))
    elif key != _settings_key(settings):
        raise UserError(f"study {name!r} in {redact(cfg.storage_url)} was started with other "
                        "settings (space, data set, epochs, pruner or seed); continue it with "
                        "the same ones, or use another --out / --study-name")
    return study


def _is_local(cfg: TuneConfig) -> bool:
    return cfg.storage is None


def recover(study: Any, *, local: bool) -> list[int]:
    """Mark trials left running by a stopped search failed and queue their configurations again.

    Only ``local`` storage (the SQLite file in ``--out``) may have its running trials failed
    here: a shared database's running trials may belong to live workers elsewhere (Optuna's
    heartbeat fails those whose workers died). Trials interrupted by Ctrl-C (already failed,
    with that reason) are queued again in both cases. Returns the numbers of the trials queued.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    queued = []
    for t in trials:
        if t.state == TrialState.RUNNING and local:
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason",
                                               f"{_INTERRUPTED}: was running when the search "
                                               "stopped; queued again")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        elif not (t.state == TrialState.FAIL
                  and str(t.user_attrs.get("fail_reason", "")).startswith(_INTERRUPTED)):
            continue
        if t.number not in retried and t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number},
                                skip_if_exists=False)
            queued.append(t.number)
    return queued


# ------------------------------------------------------------------------------ the trials
class _TrialDone(Exception):
    """Raised by the reporting callback after the last epoch: the trial's value is known, and the
    trainer must not go on to evaluate the test set."""

    def __init__(self, value: float) -> None:
        super().__init__(value)
        self.value = value


def _report_callback(trial: Any, max_epochs: int) -> Any:
    import optuna

    from cnnlab.engine import Callback

    class ReportToOptuna(Callback):
        """After each epoch: report val accuracy; prune at a rung or finish at max_epochs."""

        def on_epoch_end(self, run: Any) -> None:
            row = run.history[-1]
            value, epoch = row["val_accuracy"], row["epoch"]
            if value is None or not math.isfinite(value):
                raise UserError("a trial needs a validation accuracy every epoch")
            trial.report(value, epoch)
            if epoch >= max_epochs:
                raise _TrialDone(value)
            if trial.should_prune():
                reason = (f"pruned after epoch {epoch}: val acc {value:.4f} below the "
                          "promotion line of its rung")
                trial.set_user_attr("stop_reason", reason)
                raise optuna.TrialPruned(reason)

    return ReportToOptuna()


def trial_config(cfg: TuneConfig, space: Space, values: dict[str, Any], **over: Any) -> Any:
    """The :class:`~cnnlab.engine.TrainConfig` of a configuration (space values)."""
    from cnnlab.engine import TrainConfig

    train_over, model_kw = space.split(values)
    base = dict(model=space.model, dataset=cfg.dataset, epochs=cfg.max_epochs,
                subset=cfg.subset, val_fraction=cfg.val_fraction, split_seed=cfg.seed,
                seed=cfg.seed, device=cfg.device, data_dir=cfg.data_dir,
                cache_dir=cfg.cache_dir, quiet=True, model_kwargs=model_kw)
    return TrainConfig(**{**base, **train_over, **over})


def model_cost(space: Space, model_kwargs: dict[str, Any], dataset: Any) -> dict[str, int]:
    """Parameters and MACs of one configuration, from the analyzer (on meta tensors)."""
    import torch

    from cnnlab import models
    from cnnlab.analysis import analyze

    h, w = dataset.native_size
    chans = dataset.train_images.shape[-1]
    with torch.device("meta"):
        model = models.create(space.model, num_classes=len(dataset.classes), in_chans=chans,
                              **model_kwargs)
    totals = analyze(model, (chans, h, w)).totals
    return {"params": int(totals["total_params"]), "macs": int(totals["total_macs"])}


def _objective(cfg: TuneConfig, space: Space, dataset: Any) -> Any:
    from cnnlab.engine import Trainer

    host = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: Any) -> float:
        trial.set_user_attr("worker", host)
        values = space.suggest(trial)
        tc = trial_config(cfg, space, values)
        try:
            for k, v in model_cost(space, tc.model_kwargs, dataset).items():
                trial.set_user_attr(k, v)
            Trainer(tc, [_report_callback(trial, cfg.max_epochs)], dataset=dataset,
                    log=False).fit()
        except _TrialDone as done:
            return done.value
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", f"{_INTERRUPTED} (Ctrl-C); queued again on resume")
            raise
        except UserError as exc:  # NaN/inf loss (TrainingDiverged), a configuration that
            trial.set_user_attr("fail_reason", str(exc))  # cannot be built, ...
            raise
        raise RuntimeError("the trainer finished without reaching max_epochs")

    return objective


def _finished(study: Any) -> int:
    """Trials that count towards --trials: finished ones (not those interrupted) and running."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            n += 1
        elif t.state == TrialState.FAIL and not str(
                t.user_attrs.get("fail_reason", "")).startswith(_INTERRUPTED) \
                and "fail_reason" in t.user_attrs:
            n += 1
    return n


def epochs_spent(study: Any, running_as: int = 0) -> int:
    """Epochs trained by the study's trials (running trials count ``running_as`` epochs)."""
    from optuna.trial import TrialState

    return sum(running_as if t.state == TrialState.RUNNING else len(t.intermediate_values)
               for t in study.get_trials(deepcopy=False))


@dataclass
class _Goal:
    """When a worker stops starting trials."""

    trials: int | None = None
    epochs: int | None = None
    deadline: float | None = None  # time.time() value


def _reached(study: Any, goal: _Goal, max_epochs: int) -> bool:
    if goal.deadline is not None and time.time() >= goal.deadline:
        return True
    if goal.trials is not None and _finished(study) >= goal.trials:
        return True
    return goal.epochs is not None and epochs_spent(study, max_epochs) >= goal.epochs


def _work(cfg: TuneConfig, worker: int, name: str, sampler: str, pruner: str,
          goal: _Goal) -> None:
    """One worker: its own thread budget and data copy; trials until the goal is reached."""
    import optuna
    import torch

    from cnnlab.data import load_dataset

    torch.set_num_threads(cfg.threads_per_worker())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(cfg.space)
    dataset = load_dataset(cfg.dataset, data_dir=cfg.data_dir, cache_dir=cfg.cache_dir)
    study = _open_study(cfg, space, name, sampler, pruner, worker)
    objective = _objective(cfg, space, dataset)

    def say(study: Any, t: Any) -> None:  # Optuna hands over this worker's finished trial
        print(f"cnnlab tune: [{name} w{worker}] trial {t.number} {t.state.name.lower()} after "
              f"{len(t.intermediate_values)} epoch(s)"
              + (f", val acc {t.value:.4f}" if t.value is not None else "")
              + (f" ({t.user_attrs['fail_reason']})" if "fail_reason" in t.user_attrs else ""),
              flush=True)

    while not _reached(study, goal, cfg.max_epochs):
        study.optimize(objective, n_trials=1, catch=(UserError,), callbacks=[say],
                       gc_after_trial=False)


def _worker_main(cfg: TuneConfig, worker: int, name: str, sampler: str, pruner: str,
                 goal: _Goal) -> None:
    import sys

    try:
        _work(cfg, worker, name, sampler, pruner, goal)
    except KeyboardInterrupt:
        sys.exit(130)
    except UserError as exc:
        print(f"cnnlab: error: worker {worker}: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def run_workers(cfg: TuneConfig, name: str, sampler: str, pruner: str, goal: _Goal) -> None:
    """Run the search: in this process for one worker, else ``cfg.workers`` spawned processes."""
    if cfg.workers == 1:
        _work(cfg, 0, name, sampler, pruner, goal)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # a fresh interpreter each: no forked torch/sqlite state
    procs = [ctx.Process(target=_worker_main, args=(cfg, i, name, sampler, pruner, goal),
                         name=f"cnnlab-tune-worker-{i}") for i in range(cfg.workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:  # they got the same Ctrl-C (one process group): let them record it
            p.join(timeout=60)
        raise
    codes = [p.exitcode for p in procs]
    if any(c == 130 for c in codes):
        raise KeyboardInterrupt
    if any(c != 0 for c in codes):
        raise UserError(f"worker(s) failed (exit codes {codes}); see their messages above")


# ------------------------------------------------------------------------------ the search
def trial_rows(study: Any, pruner: Any = None) -> list[dict[str, Any]]:
    """One dict per trial: number, state, epochs, value, bracket, params, cost, reason."""
    from cnnlab.studies._tune_hyperband import bracket_of

    rows = []
    for t in study.get_trials(deepcopy=False):
        iv = t.intermediate_values
        rows.append({
            "number": t.number, "state": t.state.name.lower(), "epochs": len(iv),
            "value": t.value, "best_epoch_value": max(iv.values()) if iv else None,
            "bracket": bracket_of(pruner, study, t) if pruner is not None else None,
            "params": dict(t.params), "model_params": t.user_attrs.get("params"),
            "macs": t.user_attrs.get("macs"), "worker": t.user_attrs.get("worker"),
            "reason": t.user_attrs.get("fail_reason") or t.user_attrs.get("stop_reason"),
            "retry_of": t.user_attrs.get("retry_of"),
            "duration_s": t.duration.total_seconds() if t.duration else None,
            "curve": [iv[k] for k in sorted(iv)],
            "start": t.datetime_start.isoformat() if t.datetime_start else None,
            "complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
        })
    return rows


def importances(study: Any) -> dict[str, float]:
    """Optuna's importances (its default evaluator) over the completed trials ({} when too few
    to judge)."""
    import optuna
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(done) < 2 or len({t.value for t in done}) < 2:
        return {}
    try:
        with warnings.catch_warnings():  # "few trials in a regime": the report says how many
            warnings.simplefilter("ignore", UserWarning)
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError) as exc:  # e.g. no parameter present in every trial
        print(f"cnnlab tune: no importances: {exc}", flush=True)
        return {}


def tune(cfg: TuneConfig) -> TuneResult:
    """Run (or continue) the search ``cfg`` describes, retrain the best, write the report.

    Raises:
        UserError: bad settings, a malformed space, an unreachable storage, a study in the
            storage with other settings.
        KeyboardInterrupt: Ctrl-C; finished trials are in the storage, rerun to continue.
    """
    import optuna

    from cnnlab.studies import _tune_report

    cfg.validate()
    space = load_space(cfg.space)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(cfg, space, cfg.study_name, cfg.sampler, cfg.pruner)
    queued = recover(study, local=_is_local(cfg))
    if queued:
        print(f"cnnlab tune: continuing {cfg.study_name}: trials {queued} were interrupted and "
              "are queued again", flush=True)
    if cfg.enqueue and not study.user_attrs.get("enqueued"):
        for params in cfg.enqueue:
            study.enqueue_trial(params)
        study.set_user_attr("enqueued", True)
    start = time.time()
    deadline = start + cfg.time_budget_s if cfg.time_budget_s else None
    print(f"cnnlab tune: {cfg.study_name} in {redact(cfg.storage_url)}: "
          f"{_finished(study)} trial(s) so far; {cfg.workers} worker(s) x "
          f"{cfg.threads_per_worker()} thread(s)", flush=True)
    run_workers(cfg, cfg.study_name, cfg.sampler, cfg.pruner,
                _Goal(trials=cfg.trials, deadline=deadline))
    search_s = time.time() - start

    random_rows = None
    if cfg.compare_random:
        budget = epochs_spent(study)
        rname = cfg.random_study_name
        rstudy = _open_study(cfg, space, rname, "random", "none")
        recover(rstudy, local=_is_local(cfg))
        run_workers(cfg, rname, "random", "none", _Goal(epochs=budget))
        random_rows = trial_rows(rstudy)

    pruner = make_pruner(cfg)
    rows = trial_rows(study, pruner)
    best = final = None
    try:
        bt = study.best_trial
    except ValueError:  # no completed trial
        bt = None
    if bt is not None:
        values = space.fixed_from_params(bt.params)
        best = {"number": bt.number, "value": bt.value, "params": dict(bt.params),
                "values": values, "model_params": bt.user_attrs.get("params"),
                "macs": bt.user_attrs.get("macs")}
        if cfg.retrain:
            final = retrain(cfg, space, values, out / "final")
    result = TuneResult(config=cfg, trials=rows, best=best, final=final,
                        random_trials=random_rows, importances=importances(study), files={})
    if cfg.compare_random:
        def rows_of(name: str) -> list[dict[str, Any]]:  # the one just run is read already
            if name == cfg.random_study_name:
                return random_rows
            return trial_rows(optuna.load_study(study_name=name, storage=study._storage))

        result.random_searches = [_tune_report.comparison(rows, rows_of(n), study=n, seed=seed)
                                  for n, seed in comparison_studies(cfg, study._storage)]
    result.files = _tune_report.write(result, space, study, {"search_s": search_s})
    return result


def comparison_studies(cfg: TuneConfig, storage: Any) -> list[tuple[str, int]]:
    """(name, sampler seed) of every random-search comparison of this search in ``storage``:
    ``STUDY-random`` (paired, seeded like the search) and ``STUDY-random-R``."""
    import optuna

    pattern = re.compile(re.escape(cfg.study_name) + r"-random(?:-(\d+))?")
    found = []
    for name in sorted(optuna.get_all_study_names(storage=storage)):
        m = pattern.fullmatch(name)
        if m:
            found.append((name, cfg.seed if m.group(1) is None else int(m.group(1))))
    return found


def retrain(cfg: TuneConfig, space: Space, values: dict[str, Any], out: Path) -> dict[str, Any]:
    """Train ``values`` on train+validation for ``max_epochs``; one test evaluation."""
    import torch

    from cnnlab.engine import train

    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    tc = trial_config(cfg, space, values, val_fraction=0.0, out=str(out), resume=True)
    print(f"cnnlab tune: retraining the best configuration on train+validation "
          f"({cfg.max_epochs} epochs) -> {out}", flush=True)
    r = train(tc, log=False)
    return {"test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
            "epochs": len(r.history), "train_time_s": r.train_time_s,
            "num_train": r.extra["num_train"], "num_test": r.extra["num_test"],
            "config": tc.to_dict(), "out": str(out)}
