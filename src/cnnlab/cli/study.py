"""``cnnlab study NAME``: end-to-end studies that train, measure and write a report.

Each study module in ``cnnlab.studies`` exposes ``add_arguments(parser)`` and
``run_from_args(args) -> int`` and imports its heavy dependencies only when it runs.
"""

from __future__ import annotations

import argparse
import importlib

# study name -> (module, one-line help)
STUDIES: dict[str, tuple[str, str]] = {
    "mobilenet": ("cnnlab.studies.mobilenet",
                  "MobileNet V1 vs V2 vs a conventional CNN, width and resolution multipliers, "
                  "theory (MACs) against measured speed and accuracy"),
    "dynamics": ("cnnlab.studies.dynamics",
                 "vanishing gradients, degradation, zero/Xavier/He initialisation and residual "
                 "connections, measured"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("study", help="end-to-end studies that write a report",
                              description=__doc__.splitlines()[0].split(": ", 1)[1])
    studies = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    for name, (module, help_) in STUDIES.items():
        sp = studies.add_parser(name, help=help_, description=help_)
        mod = importlib.import_module(module)
        mod.add_arguments(sp)
        sp.set_defaults(func=mod.run_from_args)
