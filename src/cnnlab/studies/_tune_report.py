"""The report of ``cnnlab tune``: trials, brackets, best-so-far, importances, slice plot, final.

Kept in one module on :class:`cnnlab.report.Report` so it can move onto the study framework
as a unit. Everything written comes from the study in the storage and the final run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnnlab.report import Report, fmt_num, save_results


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def value_text(v: Any) -> str:
    """A parameter value with floats at 10 significant digits (also inside per-layer lists): a
    stepped float such as Optuna's ``0.1 * 3`` reads 0.3, not 0.30000000000000004 (the stored
    value is unchanged)."""
    if isinstance(v, list):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    return f"{v:.10g}" if isinstance(v, float) else str(v)


def configuration_text(params: dict[str, Any]) -> str:
    """``name=value, ...`` of a trial's parameters, each through :func:`value_text`."""
    return ", ".join(f"{k}={value_text(v)}" for k, v in params.items())


def best_so_far(rows: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """Cumulative epochs spent (in trial-completion order) against the best completed value."""
    done = sorted((r for r in rows if r["complete"] is not None), key=lambda r: r["complete"])
    xs, ys, spent, best = [], [], 0, None
    for r in done:
        spent += r["epochs"]
        if r["state"] == "complete" and r["value"] is not None:
            best = r["value"] if best is None else max(best, r["value"])
        if best is not None:
            xs.append(spent)
            ys.append(best)
    return xs, ys


def epochs_to_reach(rows: list[dict[str, Any]], target: float) -> int | None:
    """Epochs spent when the best completed value first reached ``target`` (None: never)."""
    for x, y in zip(*best_so_far(rows)):
        if y >= target:
            return x
    return None


def shared_configurations(rows: list[dict[str, Any]], other: list[dict[str, Any]]) -> int:
    """How many trials of ``other`` tried a configuration that a trial of ``rows`` also tried.

    With one seed, TPE's start-up trials come from a RandomSampler of that seed, so the first
    trials of a TPE search and of a random search with the same seed are the same draws.
    """
    seen = {json.dumps(r["params"], sort_keys=True, default=str) for r in rows}
    return sum(json.dumps(r["params"], sort_keys=True, default=str) in seen for r in other)


def comparison(rows: list[dict[str, Any]], random_rows: list[dict[str, Any]], *, study: str,
               seed: int) -> dict[str, Any]:
    """Goal 2 for one random search: its best, and the epochs the search needed to reach it."""
    done = [r["value"] for r in random_rows if r["state"] == "complete" and r["value"] is not None]
    rbest = max(done, default=None)
    r_epochs = sum(r["epochs"] for r in random_rows)
    reach = epochs_to_reach(rows, rbest) if rbest is not None else None
    return {"study": study, "random_seed": seed, "random_trials": len(random_rows),
            "random_epochs": r_epochs, "random_best_val": rbest,
            "random_epochs_to_own_best": (None if rbest is None
                                          else epochs_to_reach(random_rows, rbest)),
            "hyperband_epochs_to_reach": reach,
            "ratio": None if reach is None else reach / max(r_epochs, 1),
            "shared_configurations": shared_configurations(rows, random_rows)}


def _trained_s(rows: list[dict[str, Any]]) -> float:
    """Seconds the trials ran, summed (a continued search's earlier invocations included)."""
    return sum(r["duration_s"] or 0.0 for r in rows)


def _reached_text(rows: list[dict[str, Any]], rbest: float | None, reach: int | None,
                  r_epochs: int) -> str:
    if rbest is None:
        return "Random search completed no trial."
    if reach is None:
        mine = max((r["value"] for r in rows if r["state"] == "complete"
                    and r["value"] is not None), default=None)
        return (f"The search never reached that accuracy: its best is {_pct(mine)}, "
                f"{'-' if mine is None else f'{100 * (rbest - mine):.2f}'} points below.")
    return (f"The search reached that accuracy after {fmt_num(reach)} epochs "
            f"({reach / max(r_epochs, 1):.2f} x the random search's epochs).")


def _draws(cfg: Any) -> str:
    """Where the random search's configurations came from, for the report."""
    rseed = cfg.random_seed
    if rseed is None or rseed == cfg.seed:
        return (f"both seeded {cfg.seed}: TPE's random start-up trials are the random search's "
                "draws, a paired comparison")
    return (f"random search seeded {rseed}, this search {cfg.seed}: independent draws, so a "
            "shared one is a coincidence of the space's size")


def _plot_best(rows, random_rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for data, label in ((rows, "search"), (random_rows, "random search, no pruning")):
        if data:
            xs, ys = best_so_far(data)
            ax.step(xs, ys, where="post", label=label, marker=".")
    ax.set_xlabel("total epochs trained (all trials)")
    ax.set_ylabel("best validation accuracy so far")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _slice_figure(study):
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # a parameter with one value: flat axis
        axes = optuna.visualization.matplotlib.plot_slice(study)
    first = np.ravel(axes)[0] if isinstance(axes, np.ndarray) else axes
    fig = first.figure
    fig.set_size_inches(max(6, 2.2 * len(fig.axes)), 3.2)
    return fig


def write(result: Any, space: Any, study: Any, timing: dict[str, float]) -> dict[str, Path]:
    import optuna
    from optuna.trial import TrialState

    from cnnlab.provenance import environment
    from cnnlab.studies._tune_hyperband import brackets
    from cnnlab.studies.tune import redact

    cfg = result.config
    out = Path(cfg.out)
    rows = result.trials
    rep = Report(out, f"Hyperparameter search on {cfg.dataset}: {Path(cfg.space).name}")
    by_state: dict[str, int] = {}
    for r in rows:
        by_state[r["state"]] = by_state.get(r["state"], 0) + 1
    total_epochs = sum(r["epochs"] for r in rows)

    rep.section("Summary")
    items = [
        f"Study `{cfg.study_name}` in {redact(cfg.storage_url)}: {len(rows)} trials ("
        + ", ".join(f"{n} {s}" for s, n in sorted(by_state.items()))
        + f"), {total_epochs} epochs trained in all; sampler {cfg.sampler}, pruner {cfg.pruner}"
        f" (max {cfg.max_epochs} epochs, min {cfg.min_epochs}, reduction factor "
        f"{cfg.reduction_factor}); {cfg.workers} worker(s) x {cfg.threads_per_worker()} "
        f"thread(s); its trials trained for {_trained_s(rows):.0f} s in all (summed over "
        f"trials), this invocation searched for {timing['search_s']:.0f} s.",
        f"Data: {cfg.dataset}, {'all' if cfg.subset is None else fmt_num(cfg.subset)} training "
        f"images, {cfg.val_fraction:g} of them held out for the per-epoch validation accuracy "
        "that trials are judged (and pruned) on; trials never see the test set.",
    ]
    if result.best:
        b = result.best
        items.append(f"Best trial #{b['number']}: validation accuracy {_pct(b['value'])} after "
                     f"{cfg.max_epochs} epochs, {fmt_num(b['model_params'])} parameters, "
                     f"{fmt_num(b['macs'])} MACs per image.")
    else:
        items.append("No trial completed, so there is no best configuration.")
    if result.final:
        f = result.final
        items.append(f"Best configuration retrained on train+validation "
                     f"({fmt_num(f['num_train'])} images, {f['epochs']} epochs) and evaluated "
                     f"once on the test set ({fmt_num(f['num_test'])} images): **test accuracy "
                     f"{_pct(f['test_accuracy'])}**.")
    rep.bullets(items)

    if result.best:
        rep.section("Best configuration (active parameters only)")
        rep.code("\n".join(f"{k}: {value_text(v)}" for k, v in result.best["values"].items()))
        train_over, model_kw = space.split(result.best["values"])
        rep.text(f"Model `{space.model}` with options `{model_kw}`; training settings "
                 f"`{train_over}`.")

    if cfg.pruner == "hyperband":
        rep.section("Hyperband brackets")
        rep.text("Optuna's HyperbandPruner: n_brackets = floor(log_eta(max / min)) + 1; bracket s "
                 "may stop a trial at epochs min * eta^(s + k) below the maximum.")
        table = []
        for b in brackets(cfg.max_epochs, cfg.reduction_factor, cfg.min_epochs):
            mine = [r for r in rows if r["bracket"] == b.index]
            stops: dict[int, int] = {}
            for r in mine:
                if r["state"] == "pruned":
                    stops[r["epochs"]] = stops.get(r["epochs"], 0) + 1
            table.append({
                "bracket": b.index, "rungs": ", ".join(map(str, b.rungs)) or "none",
                "share": b.share, "trials": len(mine),
                "completed": sum(r["state"] == "complete" for r in mine),
                "pruned": ", ".join(f"{n} at epoch {e}" for e, n in sorted(stops.items())) or "-",
                "epochs": sum(r["epochs"] for r in mine)})
        if rows and all(r["bracket"] is None for r in rows):
            rep.text("This Optuna version does not expose which bracket a trial was in, so the "
                     "trial counts per bracket are unknown (shown as 0).")
        rep.table(table, [("bracket", "bracket", str), ("rungs", "may stop at epoch", str),
                          ("share", "trial share", str), ("trials", "trials", str),
                          ("completed", "completed", str), ("pruned", "pruned", str),
                          ("epochs", "epochs trained", str)])

    rep.section("Trials")
    rep.table(rows, [
        ("number", "#", str), ("state", "state", str), ("bracket", "bracket",
                                                        lambda v: "-" if v is None else str(v)),
        ("epochs", "epochs", str), ("value", "val acc", _pct),
        ("model_params", "params", None), ("macs", "MACs", None),
        ("params", "configuration", configuration_text),
        ("duration_s", "s", lambda v: "-" if v is None else f"{v:.1f}"),
        ("reason", "why stopped / failed", lambda v: v or "-"),
    ], caption="Every trial; pruned trials stopped after the epochs shown; 'val acc' is the "
               "validation accuracy of the last epoch each trial trained.")

    rep.section("Best so far against epochs spent")
    rep.figure(_plot_best(rows, result.random_trials), "best_so_far",
               "Best completed validation accuracy against the total epochs trained.")
    if result.random_trials is not None:
        # the comparison just run, as tune() summarised it with the storage's others
        c = next(c for c in result.random_searches if c["study"] == cfg.random_study_name)
        rbest, r_epochs, n = c["random_best_val"], c["random_epochs"], c["random_trials"]
        rep.bullets([
            f"Random search without pruning, same epoch budget: {n} trials, {r_epochs} "
            f"epochs, best validation accuracy {_pct(rbest)}.",
            _reached_text(rows, rbest, c["hyperband_epochs_to_reach"], r_epochs),
            f"{c['shared_configurations']} of the random search's {n} trials tried a "
            f"configuration this search also tried ({_draws(result.config)}): on those the two "
            "compare pruning against no pruning, not the samplers.",
        ])
    if len(result.random_searches) > 1:
        rep.table(result.random_searches, [
            ("study", "random search", str), ("random_seed", "seed", str),
            ("random_trials", "trials", None), ("random_epochs", "epochs", None),
            ("random_best_val", "best val acc", _pct),
            ("random_epochs_to_own_best", "its best after (epochs)", fmt_num),
            ("hyperband_epochs_to_reach", "this search reached it after (epochs)", fmt_num),
            ("ratio", "ratio", lambda v: "never" if v is None else f"{v:.2f}"),
            ("shared_configurations", "shared configurations", None),
        ], caption="Every random-search comparison of this search in its storage, one per "
                   "random seed, each on this search's epoch budget (ratio: the epochs this "
                   "search needed to reach that search's best over that search's epochs).")

    rep.section("What mattered")
    if result.importances:
        rep.table([{"param": k, "importance": v} for k, v in result.importances.items()],
                  [("param", "parameter", str), ("importance", "importance", None)],
                  caption="optuna.importance.get_param_importances (Optuna "
                          f"{optuna.__version__}'s default evaluator) over the completed "
                          "trials; conditional parameters are judged on the trials they "
                          "exist in.")
    else:
        rep.text("Too few completed trials (or too little variation) for importances.")
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if complete:
        rep.figure(_slice_figure(study), "slice",
                   "Optuna's slice plot: each completed trial's value against each parameter.")

    env = environment()
    rep.section("Environment")
    rep.code("\n".join(f"{k}: {v}" for k, v in env.items()))
    payload = {"config": {**vars(cfg), "storage": cfg.storage and redact(cfg.storage)},
               "environment": env, "best": result.best, "final": result.final,
               "importances": result.importances, "trials": rows,
               "random_trials": result.random_trials,
               "random_searches": result.random_searches, "timing": timing}
    flat = [{k: v for k, v in r.items() if k not in ("params", "curve")}
            | {f"param_{k}": v for k, v in r["params"].items()} for r in rows]
    jpath, cpath = save_results(out, payload, flat)
    md, html = rep.write()
    return {"html": html, "markdown": md, "json": jpath, "csv": cpath}
