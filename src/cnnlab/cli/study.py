"""``cnnlab study NAME``: end-to-end studies that train, measure, judge and write a report.

The studies are registered in :data:`cnnlab.studies.STUDIES`; each declares its budgets, data
sets and own options as data (:class:`cnnlab.studies.base.Study`). This module turns that into
command-line options (argument parsing lives here only) and hands off to
:func:`cnnlab.studies.runner.run`. ``cnnlab study list`` prints every study with its budgets and
what each costs on 2 CPU cores.
"""

from __future__ import annotations

import argparse

from cnnlab.cli import add_threads_option, apply_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    from cnnlab.studies import STUDIES, get_study

    p = subparsers.add_parser("study", help="end-to-end studies that write a report",
                              description=__doc__.splitlines()[0].split(": ", 1)[1])
    studies = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    lp = studies.add_parser("list", help="every study with its budgets and their cost",
                            description="every study with its budgets and their cost")
    lp.set_defaults(func=_list)
    for name in STUDIES:
        study = get_study(name)
        sp = studies.add_parser(name, help=study.summary, description=study.summary,
                                epilog=_epilog(study),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_arguments(sp, study)
        sp.set_defaults(func=_run, study_def=study)


def _epilog(study) -> str:
    lines = ["budgets:"]
    for b in study.budgets.values():
        lines.append(f"  {b.name:<9} {b.description}")
        lines.append(f"  {'':<9} cost on 2 CPU cores: {b.cost}")
    lines.append("\nRe-running the same command on the same --out reuses finished runs and "
                 "resumes an interrupted one; a folder holding runs with other settings is "
                 "refused.")
    if study.epilog:
        lines.append(study.epilog)
    return "\n".join(lines)


def _add_arguments(parser: argparse.ArgumentParser, study) -> None:
    """The common options (the same for every study) and the study's own."""
    default = study.options().dataset
    parser.add_argument("--dataset", default=default, choices=study.datasets,
                        help=f"default {default}")
    parser.add_argument("--data-dir", default=None, help="folder or archive with the data "
                        "(default: the data set's search order, see cnnlab.data)")
    parser.add_argument("--budget", default=study.default_budget, choices=list(study.budgets),
                        help=f"how much work (default {study.default_budget}; see below)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N "
                        "(default auto: CUDA when available)")
    for opt in study.extra_options:
        if opt.type is None:
            action = "store_true" if opt.switch_to else "store_false"
            parser.add_argument(opt.flag, dest=opt.dest, action=action, help=opt.help)
        else:
            parser.add_argument(opt.flag, dest=opt.dest, type=opt.type, default=None,
                                help=opt.help)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_threads_option(parser)
    parser.add_argument("--out", default=study.default_out(),
                        help="study folder: report, results, runs/ "
                             f"(default {study.default_out()})")


def _run(args: argparse.Namespace) -> int:
    from cnnlab.studies.runner import run

    study = args.study_def
    apply_threads(args)
    values = {k: getattr(args, k) for k in ("dataset", "data_dir", "budget", "device", "out",
                                            "quiet")}
    for opt in study.extra_options:
        value = getattr(args, opt.dest)
        if value is not None:
            values[opt.dest] = value
    outcome, files = run(study, study.make_options(**values))
    print(f"report: {files['html']}")
    for f in outcome.findings:
        if f.headline:
            print(f"- {f.claim}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from cnnlab.studies import STUDIES, get_study

    for name in STUDIES:
        study = get_study(name)
        print(f"{name}: {study.summary}")
        print(f"  data sets: {', '.join(study.datasets)}")
        for b in study.budgets.values():
            default = " (default)" if b.name == study.default_budget else ""
            print(f"  --budget {b.name}{default}: {b.description}")
            print(f"      cost on 2 CPU cores: {b.cost}")
    return 0
