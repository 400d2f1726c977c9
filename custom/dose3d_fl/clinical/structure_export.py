"""Predicted organs as a DICOM RT Structure Set that references the segmented CT and names the model.

One structure set holds every organ the model found, each an ``ORGAN`` ROI generated ``AUTOMATIC``ally
with its own colour; the set is ``UNAPPROVED`` until a clinician reviews it in the planning system. An organ
the model did not find is left out (a ContourSequence must not be empty); when it found none there is no
valid structure set to write (its ROI sequences must hold at least one item), and
:class:`NoOrganFoundError` says so.

The model that made it is named in the General Equipment module (Manufacturer ``dose3d-fl``,
ManufacturerModelName with the profile, DeviceSerialNumber the SHA-256 of its weights, SoftwareVersions),
in SeriesDescription (short hash, job, round) and in StructureSetDescription (the whole provenance).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import FileDataset
from pydicom.uid import generate_uid

from dose3d_fl import __version__
from dose3d_fl.clinical.models import ModelRecord
from dose3d_fl.data.contours import polygons_from_mask
from dose3d_fl.data.ct_input import InputSeries
from dose3d_fl.data.rtstruct import Equipment, RoiContours, build_rtstruct, declare_character_set

log = logging.getLogger(__name__)

STRUCTURE_SET_LABEL = "DOSE3D AUTO"
MANUFACTURER = "dose3d-fl"


class NoOrganFoundError(ValueError):
    """The model found none of its organs: there is no valid structure set to write."""


@dataclass(frozen=True)
class PredictedOrgan:
    """One organ the model segmented.

    Attributes:
        name: ROIName shown by the planning system.
        color: ROIDisplayColor, RGB 0..255.
        mask: the organ on the CT grid ``(columns, rows, slices)``.
    """

    name: str
    color: tuple[int, int, int]
    mask: np.ndarray


def mask_contours(mask: np.ndarray) -> dict[int, list[np.ndarray]]:
    """CLOSED_PLANAR polygons (``(row, column)`` vertices) of a ``(columns, rows, slices)`` mask, per slice."""
    contours = {}
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        polygons = polygons_from_mask(mask[:, :, k].T)
        if polygons:
            contours[int(k)] = polygons
    return contours


def model_equipment(model: ModelRecord) -> Equipment:
    """The General Equipment module naming a model: its profile, and its weights' SHA-256 as serial number."""
    return Equipment(
        manufacturer=MANUFACTURER,
        model_name=f"dose3d-fl segmentation {model.profile or 'unknown profile'}"[:64],
        device_serial_number=model.sha256,
        software_versions=__version__,
    )


def build_predicted_structure_set(
    series: InputSeries,
    organs: Sequence[PredictedOrgan],
    model: ModelRecord,
    created: dt.datetime | None = None,
) -> FileDataset:
    """An RTSTRUCT with one automatically generated ROI per organ found, on the input series, unapproved.

    Args:
        series: the segmented CT series (its slices are the referenced images).
        organs: the model's organs; those without contours are left out with a warning.
        model: the model that made them (:func:`dose3d_fl.clinical.models.model_record`).
        created: structure set date and time (default now).

    Returns:
        The dataset, ready for ``save_as(path, enforce_file_format=True)``.

    Raises:
        NoOrganFoundError: no organ has a contour.
    """
    rois = []
    for organ in organs:
        contours = mask_contours(organ.mask)
        if contours:
            rois.append(RoiContours(organ.name, organ.color, "ORGAN", contours))
        else:
            log.warning("%s: not found by the model, left out of the structure set", organ.name)
    if not rois:
        names = ", ".join(organ.name for organ in organs)
        raise NoOrganFoundError(
            f"the model found none of its organs ({names}); an RT Structure Set needs at least one ROI "
            "with contours"
        )
    volume = series.volume
    structure_set = build_rtstruct(
        series.reference,
        volume.sop_instance_uids,
        volume.geometry,
        rois,
        sop_instance_uid=generate_uid(),
        series_instance_uid=generate_uid(),
        label=STRUCTURE_SET_LABEL,
        created=created or dt.datetime.now(),
        equipment=model_equipment(model),
    )
    structure_set.SeriesDescription = model.series_description()
    structure_set.StructureSetName = f"dose3d-fl {model.short_hash}"
    structure_set.StructureSetDescription = model.description()
    for roi in structure_set.StructureSetROISequence:
        roi.ROIGenerationDescription = f"dose3d-fl model {model.short_hash}"
    # An automatic contour is a proposal: a clinician reviews and approves it in the planning system.
    structure_set.ApprovalStatus = "UNAPPROVED"
    declare_character_set(structure_set)
    return structure_set
