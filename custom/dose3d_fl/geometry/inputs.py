"""The CT series and the treatment plan that a phantom is built from, read and checked with ``data/``.

The CT folder is read with the ingestion rules (``data.discovery`` and ``data.ct_series``): slices ordered
by position, gaps, tilt and mixed geometry refused. A folder may hold several series (a topogram, another
reconstruction): the one the structure set references is used, or the one named with ``--series``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from dose3d_fl.data.ct_series import CaseRejectedError, CTVolume, check_ct_geometry, load_ct_series
from dose3d_fl.data.discovery import SeriesFiles, discover_dicom, one_line
from dose3d_fl.geometry.errors import GeometryInputError

log = logging.getLogger(__name__)

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
    """Load the CT series under ``folder``.

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
    folder = Path(folder)
    if not folder.is_dir():
        raise GeometryInputError(f"CT folder {folder} does not exist or is not a folder")
    inventory = discover_dicom(folder)
    if inventory.unreadable:
        path, reason = inventory.unreadable[0]
        raise GeometryInputError(f"{path}: {reason}; remove it or re-export the series")
    ct_series = [s for s in inventory.image_series.values() if s.modality == "CT"]
    series = _choose_series(folder, ct_series, series_uid, referenced or set())
    try:
        volume = load_ct_series(series)
    except CaseRejectedError as err:
        raise GeometryInputError(str(err)) from err
    log.info("%s: CT series %s, %s voxels", folder, series.series_instance_uid, volume.geometry.shape)
    return CTInput(volume=volume, series_instance_uid=series.series_instance_uid, folder=folder)


def _choose_series(
    folder: Path, ct_series: list[SeriesFiles], series_uid: str | None, referenced: set[str]
) -> SeriesFiles:
    if series_uid is not None:
        for series in ct_series:
            if series.series_instance_uid == series_uid:
                return series
        raise GeometryInputError(f"no CT series {series_uid} in {folder}")
    if not ct_series:
        raise GeometryInputError(f"no CT image series in {folder} (is it the CT export folder?)")
    volumes = []
    for series in ct_series:
        try:
            check_ct_geometry(series)
        except CaseRejectedError:
            continue
        volumes.append(series)
    wanted = [s for s in volumes if s.series_instance_uid in referenced]
    if len(wanted) == 1 or len(volumes) == 1:
        return (wanted or volumes)[0]
    if not volumes:
        return ct_series[0]  # loading it raises the reason it cannot be used
    listed = ", ".join(f"{s.series_instance_uid} ({len(s.files)} files)" for s in volumes)
    raise GeometryInputError(f"{folder} holds {len(volumes)} CT series: {listed}; choose one with --series")


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
