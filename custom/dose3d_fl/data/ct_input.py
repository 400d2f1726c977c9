"""Find, validate and load the one CT series under a folder, with the ingestion rules.

``dose3d segment`` (the CT to segment) and ``dose3d geometry`` (the CT a phantom is built from) both read
their input here. A folder may hold several series (a topogram, another reconstruction): the one named, or
the one 3D volume, or the one a structure set references is used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from dose3d_fl.data.ct_series import CaseRejectedError, CTVolume, check_ct_geometry, load_ct_series
from dose3d_fl.data.discovery import SeriesFiles, discover_dicom

log = logging.getLogger(__name__)


class InputSeriesError(Exception):
    """The input folder does not hold exactly one usable CT series; the message is the one-line reason."""


@dataclass
class InputSeries:
    """A validated CT series to segment.

    Attributes:
        volume: HU volume, grid and per-slice SOP instance UIDs (slice order).
        reference: header of one slice (patient, study, series, frame of reference), no pixel data.
        folder: the folder it was read from.
        other_files: files under the folder that are not slices of this series (other series, structure
            sets, non-DICOM files, DICOM objects that hold no image), for the user to check.
    """

    volume: CTVolume
    reference: Dataset
    folder: Path
    other_files: int = 0


def load_input_series(
    folder: str | Path,
    series_uid: str | None = None,
    min_slices: int = 3,
    referenced: set[str] | frozenset[str] = frozenset(),
) -> InputSeries:
    """Load the CT series under ``folder``, checked like ``dose3d ingest`` checks a training case.

    Other objects in the folder (an RTSTRUCT, a topogram, non-DICOM files) are ignored; an unreadable
    DICOM file is not, since it may be a missing slice.

    Args:
        folder: a folder holding the series (any layout, any file names).
        series_uid: which series when the folder holds several usable CT series.
        min_slices: fewest slices accepted as a 3D volume.
        referenced: series a structure set references; among several 3D volumes, the one of these is used.

    Returns:
        The validated series.

    Raises:
        InputSeriesError: missing folder, unreadable files, no CT series, several without ``series_uid``.
        CaseRejectedError: the series breaks an ingestion rule (gap, tilt, mixed geometry, bad pixels...).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputSeriesError(f"CT folder {folder} does not exist or is not a folder")
    inventory = discover_dicom(folder)
    if inventory.unreadable:
        path, reason = inventory.unreadable[0]
        raise InputSeriesError(
            f"{path}: {reason}; remove it or re-export the series ({len(inventory.unreadable)} such file(s))"
        )
    ct_series = [s for s in inventory.image_series.values() if s.modality == "CT"]
    if series_uid is not None:
        chosen = [s for s in ct_series if s.series_instance_uid == series_uid]
        if not chosen:
            raise InputSeriesError(f"no CT series {series_uid} in {folder}")
        series = chosen[0]
    else:
        series = _the_volume_series(folder, ct_series, min_slices, referenced)
    volume = load_ct_series(series, min_slices=min_slices)
    log.info("%s: series %s, %s voxels", folder, series.series_instance_uid, volume.geometry.shape)
    files = sum(1 for path in folder.rglob("*") if path.is_file())
    return InputSeries(
        volume=volume, reference=series.headers[0], folder=folder, other_files=files - len(volume.files)
    )


def _the_volume_series(
    folder: Path, ct_series: list[SeriesFiles], min_slices: int, referenced: set[str] | frozenset[str]
) -> SeriesFiles:
    if not ct_series:
        raise InputSeriesError(f"no CT image series in {folder} (is it the CT export folder?)")
    if len(ct_series) == 1:
        return ct_series[0]
    # A PACS export puts the topogram beside the axial series: keep the series that are 3D volumes.
    volumes = []
    for series in ct_series:
        try:
            check_ct_geometry(series, min_slices)
        except CaseRejectedError:
            continue
        volumes.append(series)
    wanted = [s for s in volumes if s.series_instance_uid in referenced]
    if len(wanted) == 1 or len(volumes) == 1:
        return (wanted or volumes)[0]
    if not volumes:
        return ct_series[0]  # loading it raises the reason it cannot be used
    listed = ", ".join(f"{s.series_instance_uid} ({len(s.files)} files)" for s in volumes)
    raise InputSeriesError(f"{folder} holds {len(volumes)} CT series: {listed}; choose one with --series")
