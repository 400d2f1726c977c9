"""The ``dose3d`` command: assembles the command groups' parsers (one module each) and dispatches to them."""

from __future__ import annotations

import argparse
import logging

from dose3d_fl import __version__
from dose3d_fl.cli import (
    audit,
    bench,
    clinical,
    data,
    deploy,
    fl,
    gan,
    geometry,
    models,
    pacs,
    report,
    seg,
    site,
)
from dose3d_fl.cli.bench import bench_config
from dose3d_fl.cli.fl import seg_job_config

__all__ = ["bench_config", "build_parser", "main", "seg_job_config"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dose3d`` command."""
    parser = argparse.ArgumentParser(
        prog="dose3d", description="Federated 3D CT segmentation for radiotherapy sites"
    )
    parser.add_argument("--version", action="version", version=f"dose3d-fl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    # The order of the commands in `dose3d --help`.
    data.register(sub)  # synth, ingest, summary
    seg.register(sub)  # train
    fl.register(sub)  # fl
    bench.register(sub)  # bench
    audit.register(sub)
    clinical.register(sub)  # segment
    models.register(sub)  # models
    pacs.register(sub)  # pull, send
    geometry.register(sub)  # geometry
    report.register(sub)  # report
    gan.register(sub)  # gan
    deploy.register(sub)  # poc, provision
    site.register(sub)  # site check
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dose3d`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return args.func(args)
