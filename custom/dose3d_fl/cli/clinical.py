"""The clinical command of ``dose3d``: ``segment`` (a new patient's CT series to an RTSTRUCT)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dose3d_fl.cli.common import fail


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
        roi_name=args.roi_name,
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
    print(f"series {result.series_instance_uid}: {result.slices} slices")
    if result.other_files:
        print(
            f"note: {result.other_files} other file(s) under {args.dicom} are not slices of this series "
            "(other series, structure sets, non-DICOM or damaged files); check that none is a missing slice"
        )
    if result.voxels == 0:
        print(
            f"warning: no {args.roi_name} found; the RTSTRUCT holds the ROI without contours", file=sys.stderr
        )
    seconds = ", ".join(f"{stage} {value:.1f} s" for stage, value in result.seconds.items())
    print(f"{args.roi_name}: {result.volume_ml:.1f} mL on {result.contour_slices} slice(s) ({seconds})")
    for path in (result.rtstruct, result.mask, result.preview, result.segmentation):
        if path is not None:
            print(path)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``segment`` to the ``dose3d`` sub-commands."""
    segment = sub.add_parser(
        "segment", help="segment a new patient's CT series into an RTSTRUCT (+ mask NIfTI and preview PNG)"
    )
    segment.add_argument(
        "--model", type=Path, required=True, help="dose3d train's model.pt or NVFlare's FL_global_model.pt"
    )
    segment.add_argument("--dicom", type=Path, required=True, help="folder holding the CT series")
    segment.add_argument("--out", type=Path, required=True, help="output folder (created)")
    segment.add_argument("--roi-name", default="SPLEEN", help="ROI name in the RTSTRUCT (default SPLEEN)")
    segment.add_argument(
        "--profile", default=None, help="profile of a model file that stores none (default cpu-small)"
    )
    segment.add_argument("--series", default=None, help="SeriesInstanceUID when the folder holds several")
    segment.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    segment.add_argument(
        "--dicom-seg", action="store_true", help="also write the mask as a DICOM Segmentation (seg.dcm)"
    )
    segment.set_defaults(func=_cmd_segment)
