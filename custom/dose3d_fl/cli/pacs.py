"""The PACS commands of ``dose3d``: ``pull`` (C-FIND + C-GET into a site's input folder) and ``send`` (C-STORE)."""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dose3d_fl.cli.common import fail

if TYPE_CHECKING:
    from dose3d_fl.clinical.pacs.node import DicomNode, ScuSettings


def _node(text: str) -> DicomNode:
    from dose3d_fl.clinical.pacs.node import DicomNode, NodeAddressError

    try:
        return DicomNode.parse(text)
    except NodeAddressError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _settings(args: argparse.Namespace) -> ScuSettings:
    from dose3d_fl.clinical.pacs.node import ScuSettings

    return ScuSettings(calling_ae=args.calling_ae, timeout=args.timeout)


def _pynetdicom_quiet_unless_verbose(
    command: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """pynetdicom logs every failure itself; the command prints its own one-line reason instead (``-v``: both)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        pynetdicom_log = logging.getLogger("pynetdicom")
        propagate = pynetdicom_log.propagate
        pynetdicom_log.propagate = bool(args.verbose)
        try:
            return command(args)
        finally:
            pynetdicom_log.propagate = propagate

    return run


def _cmd_pull(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dose3d_fl.clinical.pacs.association import PacsError
    from dose3d_fl.clinical.pacs.node import NodeAddressError
    from dose3d_fl.clinical.pacs.pull import FAILED, PRESENT, PULLED, pull_studies

    patients = [p for group in args.patient or () for p in group]
    studies = [s for group in args.study or () for s in group]
    with tqdm(desc="instances received", unit="instance", disable=None, leave=False) as bar:
        try:
            report = pull_studies(
                args.node,
                _settings(args),
                args.into,
                patients,
                studies,
                refresh=args.refresh,
                progress=lambda _study, _count: bar.update(),
            )
        except (PacsError, NodeAddressError, ValueError) as err:
            return fail(str(err))
    for line in report.not_found:
        print(line)
    for outcome in report.outcomes:
        print(outcome.line())
    count = {s: sum(o.status == s for o in report.outcomes) for s in (PULLED, PRESENT, FAILED)}
    print(
        f"{args.node}: {count[PULLED]} study(ies) pulled, {count[PRESENT]} already present, {count[FAILED]} "
        f"failed, {len(report.not_found)} request(s) without a study -> {args.into}"
    )
    status = 0 if report.complete else 2
    if args.ingest_to is not None:
        if count[PULLED] + count[PRESENT] == 0:
            return fail(f"nothing to ingest: no study of this request is in {args.into}")
        from dose3d_fl.cli import build_parser  # `dose3d ingest` itself: its code, defaults and output

        ingest = build_parser().parse_args(
            ["ingest", "--input", str(args.into), "--out", str(args.ingest_to), "--roi", args.roi]
        )
        status = max(status, ingest.func(ingest))
    return status


def _cmd_send(args: argparse.Namespace) -> int:
    from dose3d_fl.clinical.pacs.association import PacsError
    from dose3d_fl.clinical.pacs.node import NodeAddressError
    from dose3d_fl.clinical.pacs.store import SKIPPED, send_files

    try:
        results = send_files(args.node, _settings(args), args.files, verify=args.verify)
    except (PacsError, NodeAddressError) as err:
        return fail(str(err))
    for result in results:
        print(result.line())
    sent = [r for r in results if r.status != SKIPPED]
    if not sent:
        return fail(f"no DICOM file among {', '.join(map(str, args.files))}")
    stored = sum(r.ok for r in sent)
    skipped = len(results) - len(sent)
    print(
        f"{args.node}: {stored} of {len(sent)} file(s) stored"
        + (f", {skipped} non-DICOM file(s) skipped" if skipped else "")
    )
    return 0 if stored == len(sent) else 2


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--node", type=_node, required=True, help="the PACS as AE@host:port, e.g. ORTHANC@pacs.local:4242"
    )
    parser.add_argument(
        "--calling-ae", default="DOSE3D", help="our AE title, as configured at the PACS (default DOSE3D)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the connection and each answer (30)"
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``pull`` and ``send`` to the ``dose3d`` sub-commands."""
    pull = sub.add_parser(
        "pull",
        help="retrieve studies (CT + RTSTRUCT) from the PACS into a site's input folder (C-FIND, C-GET)",
    )
    _add_connection_options(pull)
    pull.add_argument("--patient", nargs="+", action="append", metavar="ID", help="exact patient ID(s)")
    pull.add_argument("--study", nargs="+", action="append", metavar="UID", help="StudyInstanceUID(s)")
    pull.add_argument(
        "--into", type=Path, required=True, help="the site's input folder; one sub-folder per study"
    )
    pull.add_argument("--refresh", action="store_true", help="pull studies already in --into again")
    pull.add_argument(
        "--ingest-to", type=Path, default=None, help="then run `dose3d ingest --input INTO --out CACHE`"
    )
    pull.add_argument("--roi", default="SPLEEN", help="ROI used as label by --ingest-to (default SPLEEN)")
    pull.set_defaults(func=_pynetdicom_quiet_unless_verbose(_cmd_pull))

    send = sub.add_parser("send", help="C-STORE DICOM files (e.g. dose3d segment's rtstruct.dcm) to a node")
    _add_connection_options(send)
    send.add_argument(
        "--verify", action="store_true", help="then ask the node (C-FIND) whether it holds each stored file"
    )
    send.add_argument("files", type=Path, nargs="+", help="DICOM files, or folders of them")
    send.set_defaults(func=_pynetdicom_quiet_unless_verbose(_cmd_send))
