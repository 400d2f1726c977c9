"""A predicted organ mask as a DICOM RT Structure Set that references the segmented CT series."""

from __future__ import annotations

import datetime as dt

import numpy as np
from pydicom.dataset import FileDataset
from pydicom.uid import generate_uid

from dose3d_fl.data.contours import polygons_from_mask
from dose3d_fl.data.ct_input import InputSeries
from dose3d_fl.data.rtstruct import RoiContours, build_rtstruct

STRUCTURE_SET_LABEL = "DOSE3D AUTO"


def mask_contours(mask: np.ndarray) -> dict[int, list[np.ndarray]]:
    """CLOSED_PLANAR polygons (``(row, column)`` vertices) of a ``(columns, rows, slices)`` mask, per slice."""
    contours = {}
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        polygons = polygons_from_mask(mask[:, :, k].T)
        if polygons:
            contours[int(k)] = polygons
    return contours


def build_predicted_structure_set(
    series: InputSeries,
    mask: np.ndarray,
    roi_name: str,
    color: tuple[int, int, int],
    description: str,
    created: dt.datetime | None = None,
) -> FileDataset:
    """An RTSTRUCT with one automatically generated ROI on the input series, marked unapproved.

    Args:
        series: the segmented CT series (its slices are the referenced images).
        mask: the organ on the series' grid.
        roi_name: ROIName shown by the planning system.
        color: ROIDisplayColor, RGB 0..255.
        description: SeriesDescription (e.g. which model made it).
        created: structure set date and time (default now).

    Returns:
        The dataset, ready for ``save_as(path, enforce_file_format=True)``.
    """
    volume = series.volume
    structure_set = build_rtstruct(
        series.reference,
        volume.sop_instance_uids,
        volume.geometry,
        [RoiContours(roi_name, color, "ORGAN", mask_contours(mask))],
        sop_instance_uid=generate_uid(),
        series_instance_uid=generate_uid(),
        label=STRUCTURE_SET_LABEL,
        created=created or dt.datetime.now(),
    )
    structure_set.SeriesDescription = description[:64]
    # An automatic contour is a proposal: a clinician reviews and approves it in the planning system.
    structure_set.ApprovalStatus = "UNAPPROVED"
    return structure_set
