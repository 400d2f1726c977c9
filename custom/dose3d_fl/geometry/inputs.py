"""The CT series and the treatment plan that a phantom is built from, read and checked with ``data/``.

The CT folder is read as ``dose3d segment`` reads it (``data.ct_input``, the ingestion rules): slices ordered
by position, gaps, tilt and mixed geometry refused. A folder may hold several series (a topogram, another
reconstruction): the one the structure set references is used, or the one named with ``--series``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from dose3d_fl.data.ct_input import InputSeriesError, load_input_series
from dose3d_fl.data.ct_series import CaseRejectedError, CTVolume
from dose3d_fl.data.discovery import one_line
from dose3d_fl.geometry.errors import GeometryInputError

RT_PLAN_STORAGE = ("1.2.840.10008.5.1.4.1.1.481.5", "1.2.840.10008.5.1.4.1.1.481.8")


@dataclass
class CTInput:
    """A validated CT series.

    Attributes:
        volume: HU volume, grid (LPS) and slice UIDs.
        series_instance_uid: the series used.
        folder: the folder it was read from.
    """

    volume: CTVolume
    series_instance_uid: str
    folder: Path


@dataclass(frozen=True)
class Isocentre:
    """One isocentre of a plan: the beams that use it and its position (LPS mm)."""

    beams: tuple[str, ...]
    position: tuple[float, float, float]


def load_ct(folder: str | Path, series_uid: str | None = None, referenced: set[str] | None = None) -> CTInput:
    """Load the CT series under ``folder`` (``data.ct_input``: the series ``dose3d segment`` would read).

    Args:
        folder: a folder holding the series (any layout and file names; other objects are ignored).
        series_uid: the series to use when the folder holds several.
        referenced: series a structure set references; one of them is preferred among several.

    Returns:
        The validated series.

    Raises:
        GeometryInputError: missing folder, unreadable DICOM file, no CT series, several and none chosen, or a
            series that breaks an ingestion rule.
    """
    try:
        series = load_input_series(folder, series_uid, referenced=frozenset(referenced or ()))
    except (InputSeriesError, CaseRejectedError) as err:
        raise GeometryInputError(str(err)) from err
    uid = str(series.reference.SeriesInstanceUID)
    return CTInput(volume=series.volume, series_instance_uid=uid, folder=series.folder)


def read_isocentres(path: str | Path, ct: CTInput) -> list[Isocentre]:
    """The isocentres of an RT Plan (first control point of each beam) in the CT's frame of reference.

    Raises:
        GeometryInputError: unreadable file, not an RT Plan, another frame of reference, or no isocentre.
    """
    path = Path(path)
    plan = read_dicom_file(path, "RTPLAN")
    if str(plan.get("SOPClassUID", "")) not in RT_PLAN_STORAGE and plan.get("Modality") != "RTPLAN":
        raise GeometryInputError(f"{path} is not an RT Plan (modality {plan.get('Modality', 'missing')})")
    frame = str(plan.get("FrameOfReferenceUID", ""))
    if frame != ct.volume.frame_of_reference_uid:
        raise GeometryInputError(
            f"RTPLAN {path.name} is in frame of reference {frame or 'missing'}, not the CT's "
            f"{ct.volume.frame_of_reference_uid}; its isocentre cannot be placed on this CT"
        )
    found: dict[tuple[float, float, float], list[str]] = {}
    for beam in [*plan.get("BeamSequence", []), *plan.get("IonBeamSequence", [])]:
        points = beam.get("ControlPointSequence", [])
        if not points or "IsocenterPosition" not in points[0]:
            continue
        position = tuple(round(float(v), 3) for v in points[0].IsocenterPosition)
        name = str(beam.get("BeamName", "") or f"beam {beam.get('BeamNumber', '?')}")
        found.setdefault(position, []).append(name)
    if not found:
        raise GeometryInputError(f"RTPLAN {path.name} holds no beam with an IsocenterPosition")
    return [Isocentre(beams=tuple(beams), position=position) for position, beams in found.items()]


def read_dicom_file(path: Path, what: str) -> Dataset:
    """Read a whole DICOM file, refusing a missing or unreadable one in one line naming ``what`` it should be."""
    if not path.is_file():
        raise GeometryInputError(f"{what} {path} does not exist or is not a file")
    try:
        return dcmread(path)
    except Exception as err:  # pydicom raises many types on damaged or non-DICOM files
        raise GeometryInputError(f"{what} {path} cannot be read as DICOM ({one_line(err)})") from err


def hu_range(ct: CTInput) -> tuple[float, float]:
    """Lowest and highest HU of the CT."""
    return float(np.min(ct.volume.hu)), float(np.max(ct.volume.hu))
