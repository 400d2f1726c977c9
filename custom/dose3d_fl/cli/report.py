"""The report command of ``dose3d``: ``report`` (report.html + PNGs of a finished federated run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dose3d_fl.cli.common import fail


def _cmd_report(args: argparse.Namespace) -> int:
    from dose3d_fl.report.build import ReportConfig, build_report
    from dose3d_fl.report.locate import RunNotFoundError

    try:
        report = build_report(
            ReportConfig(
                run=args.run,
                out=args.out,
                compare=dict(args.compare),
                cases=args.cases,
                overlays=args.overlays,
            )
        )
    except (RunNotFoundError, FileNotFoundError, ValueError) as err:
        return fail(str(err))
    print(report)
    return 0


def _named_dir(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"--compare expects NAME=DIR, got {text!r}")
    return name, Path(folder)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``report`` to the ``dose3d`` sub-commands."""
    report = sub.add_parser("report", help="write report.html + PNGs for a finished federated run")
    report.add_argument("run", type=Path, help="simulator workspace or downloaded job result folder")
    report.add_argument("--out", type=Path, default=None, help="output folder (default RUN/report)")
    report.add_argument(
        "--compare",
        type=_named_dir,
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a `dose3d train --out DIR` run to compare with (repeatable)",
    )
    report.add_argument(
        "--no-cases",
        dest="cases",
        action="store_false",
        help="do not segment the workspace's validation cases (no per-case table, no pictures)",
    )
    report.add_argument(
        "--no-overlays",
        dest="overlays",
        action="store_false",
        help="per-case table without the pictures of each site's worst and median case",
    )
    report.set_defaults(func=_cmd_report)
