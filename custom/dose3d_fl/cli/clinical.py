"""The clinical command of ``dose3d``: ``segment`` (a new patient's CT series to an RTSTRUCT)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dose3d_fl.cli.common import fail

# Exit status when the model found none of its organs: nothing to import, no RTSTRUCT written.
NOTHING_FOUND = 1


def _cmd_segment(args: argparse.Namespace) -> int:
    from dose3d_fl.clinical.inference import DeviceUnavailableError
    from dose3d_fl.clinical.model_file import ModelFileError
    from dose3d_fl.clinical.segment import SegmentConfig, segment_ct
    from dose3d_fl.data.ct_input import InputSeriesError
    from dose3d_fl.data.ct_series import CaseRejectedError

    config = SegmentConfig(
        model=args.model,
        dicom=args.dicom,
        out=args.out,
        roi_names=tuple(args.roi_name or ()),
        profile=args.profile,
        series_uid=args.series,
        device=args.device,
        dicom_seg=args.dicom_seg,
    )
    try:
        result = segment_ct(config)
    except (ModelFileError, InputSeriesError, CaseRejectedError, DeviceUnavailableError) as err:
        return fail(str(err))
    print(f"model {args.model}: {result.profile_source}")
    print(f"model {result.model.short_hash}: {result.model.training()} (sha256 {result.model.sha256})")
    print(f"series {result.series_instance_uid}: {result.slices} slices")
    if result.other_files:
        print(
            f"note: {result.other_files} other file(s) under {args.dicom} are not slices of this series "
            "(other series, structure sets, non-DICOM or damaged files); check that none is a missing slice"
        )
    seconds = ", ".join(f"{stage} {value:.1f} s" for stage, value in result.seconds.items())
    for value, organ in enumerate(result.organs, start=1):
        if organ.found:
            found = f"{organ.volume_ml:.1f} mL on {organ.contour_slices} slice(s)"
            print(f"{organ.name} (mask value {value}): {found}")
        elif result.rtstruct is not None:
            print(f"dose3d: warning: no {organ.name} found; left out of the RTSTRUCT", file=sys.stderr)
    print(f"({seconds})")
    if result.rtstruct is None:
        print(f"dose3d: no RTSTRUCT written: {result.no_rtstruct_reason}", file=sys.stderr)
    for path in (result.rtstruct, result.mask, result.preview, result.segmentation):
        if path is not None:
            print(path)
    return NOTHING_FOUND if result.rtstruct is None else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``segment`` to the ``dose3d`` sub-commands."""
    segment = sub.add_parser(
        "segment",
        help="segment a new patient's CT series into an RTSTRUCT (+ mask NIfTI and preview PNG)",
        description=(
            "Exit status: 0 written; 1 the model found none of its organs (no RTSTRUCT written); "
            "2 bad input (one line on stderr)."
        ),
    )
    segment.add_argument(
        "--model", type=Path, required=True, help="dose3d train's model.pt or the server's FL_global_model.pt"
    )
    segment.add_argument("--dicom", type=Path, required=True, help="folder holding the CT series")
    segment.add_argument("--out", type=Path, required=True, help="output folder (created)")
    segment.add_argument(
        "--roi-name",
        action="append",
        default=None,
        help="ROI name of the model's organ (repeat once per organ, in class order; "
        "default: the organs the model file records, e.g. Spleen)",
    )
    segment.add_argument(
        "--profile",
        default=None,
        help="profile of a model file that stores none (required then; a stored profile must agree)",
    )
    segment.add_argument("--series", default=None, help="SeriesInstanceUID when the folder holds several")
    segment.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    segment.add_argument(
        "--dicom-seg", action="store_true", help="also write the mask as a DICOM Segmentation (seg.dcm)"
    )
    segment.set_defaults(func=_cmd_segment)
