"""The organs of a phantom: masks on the CT grid from an RTSTRUCT, or from a label image (``dose3d segment``).

An RTSTRUCT must reference the CT (its frame of reference, and its series or slices). Every ROI used must
have contours that lie on the CT's slices; ROIs holding only points (markers, isocentre points) are left out.
Contours are rasterised with ``data.rtstruct.rasterise_contours`` (in patient coordinates, even-odd rule), and
kept in patient coordinates so tests and summaries can measure the mesh against them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset

from dose3d_fl.data.discovery import one_line
from dose3d_fl.data.rtstruct import (
    RT_STRUCTURE_SET_STORAGE,
    StructureSet,
    rasterise_contours,
    read_structure_set,
)
from dose3d_fl.geometry.errors import GeometryInputError
from dose3d_fl.geometry.inputs import CTInput, read_dicom_file
from dose3d_fl.geometry.nomenclature import StructureName, tg263_name

log = logging.getLogger(__name__)

DEFAULT_COLOR = (255, 128, 0)


@dataclass
class Organ:
    """One structure on the CT grid.

    Attributes:
        name: its TG-263 name (or its own) and the source name.
        mask: boolean ``(columns, rows, slices)``.
        interpreted_type: RTROIInterpretedType (``ORGAN``, ``EXTERNAL``, ...); ``ORGAN`` for label images.
        color: display colour, RGB 0..255.
        contours: its CLOSED_PLANAR contours (``(N, 3)`` LPS mm) when read from an RTSTRUCT.
        off_slice: contours that lie on no CT slice (left out).
    """

    name: StructureName
    mask: np.ndarray
    interpreted_type: str = "ORGAN"
    color: tuple[int, int, int] = DEFAULT_COLOR
    contours: list[np.ndarray] = field(default_factory=list)
    off_slice: int = 0


def read_rtstruct(path: str | Path) -> tuple[Dataset, StructureSet]:
    """Read an RT Structure Set file.

    Raises:
        GeometryInputError: unreadable, not an RTSTRUCT, or malformed.
    """
    path = Path(path)
    ds = read_dicom_file(path, "RTSTRUCT")
    if str(ds.get("SOPClassUID", "")) != RT_STRUCTURE_SET_STORAGE and ds.get("Modality") != "RTSTRUCT":
        raise GeometryInputError(
            f"{path} is not an RT Structure Set (modality {ds.get('Modality', 'missing')})"
        )
    try:
        return ds, read_structure_set(ds)
    except Exception as err:  # malformed sequences raise a variety of pydicom errors
        raise GeometryInputError(f"RTSTRUCT {path} cannot be parsed ({one_line(err)})") from err


def check_references_ct(path: Path, ds: Dataset, structure_set: StructureSet, ct: CTInput) -> None:
    """Refuse a structure set drawn on another CT: other frame of reference, other series or other slices.

    The frames of reference are those of ReferencedFrameOfReferenceSequence, or, when it names none, those of
    the ROIs.

    Raises:
        GeometryInputError: naming what the structure set references and what the CT is.
    """
    frame = ct.volume.frame_of_reference_uid
    series = ct.series_instance_uid
    slices = set(ct.volume.sop_instance_uids)
    listed = {
        str(item.FrameOfReferenceUID)
        for item in ds.get("ReferencedFrameOfReferenceSequence", [])
        if "FrameOfReferenceUID" in item
    }
    frames = listed or structure_set.frame_of_reference_uids
    referenced = structure_set.referenced_series_uids
    images = structure_set.referenced_sop_instance_uids
    if frame not in frames or (referenced and series not in referenced) or (images and not images & slices):
        named = ", ".join(sorted(referenced)) or f"{len(images)} image(s) of no listed series"
        raise GeometryInputError(
            f"RTSTRUCT {path.name} does not reference the CT: it references series {named} in frame of "
            f"reference {', '.join(sorted(frames)) or 'none'}, the CT is series {series} in frame {frame}"
        )


def organs_from_rtstruct(
    path: str | Path, ct: CTInput, roi_names: Sequence[str] | None = None
) -> list[Organ]:
    """Rasterise the ROIs of an RTSTRUCT file that references ``ct`` (see :func:`organs_from_structure_set`)."""
    ds, structure_set = read_rtstruct(path)
    return organs_from_structure_set(Path(path), ds, structure_set, ct, roi_names)


def organs_from_structure_set(
    path: Path, ds: Dataset, structure_set: StructureSet, ct: CTInput, roi_names: Sequence[str] | None = None
) -> list[Organ]:
    """Rasterise the ROIs of a structure set that references ``ct``.

    Args:
        path: the RTSTRUCT file, for messages.
        ds: its dataset (ROI types and colours).
        structure_set: its contours and references.
        ct: the CT it must reference.
        roi_names: ROIs to use (matched ignoring case); default every ROI with contours.

    Returns:
        One organ per ROI, in the structure set's order (or the order of ``roi_names``).

    Raises:
        GeometryInputError: the structure set does not reference the CT, a named ROI is absent, an ROI has no
            contours, or none of an ROI's contours lies on a CT slice.
    """
    check_references_ct(path, ds, structure_set, ct)
    if roi_names:
        rois = []
        for wanted in roi_names:
            roi = structure_set.find_roi(wanted)
            if roi is None:
                present = ", ".join(structure_set.rois) or "none"
                raise GeometryInputError(f"ROI {wanted!r} absent from RTSTRUCT {path.name} (ROIs: {present})")
            rois.append(roi)
    else:
        rois = []
        for roi in structure_set.rois.values():
            if not roi.contours and roi.skipped_non_planar:
                log.info("%s: ROI %r holds only points or open contours; left out", path.name, roi.name)
                continue
            rois.append(roi)
    if not rois:
        raise GeometryInputError(f"RTSTRUCT {path.name} holds no ROI")
    kinds, colors = _roi_types_and_colors(ds)
    geometry = ct.volume.geometry
    organs = []
    for roi in rois:
        if not roi.contours:
            raise GeometryInputError(
                f"ROI {roi.name!r} in RTSTRUCT {path.name} has no contours; delineate it, or leave it out by "
                "naming the organs to use with --roi"
            )
        mask, off_slice = rasterise_contours(roi.contours, geometry)
        if not mask.any():
            raise GeometryInputError(
                f"ROI {roi.name!r} in RTSTRUCT {path.name}: none of its {len(roi.contours)} contours lies on a "
                f"slice of CT series {ct.series_instance_uid}"
            )
        if off_slice:
            log.warning("ROI %r: %d contour(s) lie between CT slices and were left out", roi.name, off_slice)
        organs.append(
            Organ(
                name=tg263_name(roi.name),
                mask=mask,
                interpreted_type=kinds.get(roi.number, "ORGAN"),
                color=colors.get(roi.number, DEFAULT_COLOR),
                contours=roi.contours,
                off_slice=off_slice,
            )
        )
    return _unique_names(organs)


def organs_from_labels(path: str | Path, ct: CTInput, names: dict[int, str]) -> list[Organ]:
    """Read a label image on the CT grid (``dose3d segment``'s ``mask.nii.gz``, or a multi-label map).

    Args:
        path: the NIfTI file.
        ct: the CT whose grid it must share.
        names: label value -> structure name; every non-zero value in the image must be named.

    Returns:
        One organ per named value, in increasing value.

    Raises:
        GeometryInputError: unreadable file, another grid, unnamed or non-integer values, a named value absent.
    """
    path = Path(path)
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except Exception as err:  # nibabel raises several types for non-NIfTI or truncated files
        raise GeometryInputError(f"labels {path} cannot be read as NIfTI ({one_line(err)})") from err
    geometry = ct.volume.geometry
    tolerance = 1e-3 * max(geometry.spacing) + 1e-4
    if data.shape != tuple(geometry.shape) or not np.allclose(
        image.affine, geometry.affine_ras, atol=tolerance
    ):
        raise GeometryInputError(
            f"labels {path.name}: grid {data.shape} with its affine is not the CT's {tuple(geometry.shape)}; "
            "the label image must lie on the CT grid (as dose3d segment writes it)"
        )
    if not np.array_equal(data, np.rint(data)):
        raise GeometryInputError(f"labels {path.name} holds non-integer values; expected label numbers")
    data = np.rint(data).astype(np.int64)
    present = {int(v) for v in np.unique(data) if v != 0}
    unnamed = sorted(present - set(names))
    if unnamed:
        raise GeometryInputError(
            f"labels {path.name} holds value(s) {', '.join(map(str, unnamed))} without a name; pass "
            "--label-names VALUE=NAME,..."
        )
    organs = []
    for value in sorted(names):
        mask = data == value
        if not mask.any():
            raise GeometryInputError(f"label {value} ({names[value]}) has no voxels in {path.name}")
        organs.append(Organ(name=tg263_name(names[value]), mask=mask))
    return _unique_names(organs)


def parse_label_names(text: str) -> dict[int, str]:
    """``"1=SPLEEN,2=LIVER"`` -> ``{1: "SPLEEN", 2: "LIVER"}``.

    Raises:
        GeometryInputError: an item that is not ``VALUE=NAME`` with a positive integer value.
    """
    names = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        value, _, name = item.partition("=")
        if not value.strip().isdigit() or int(value) < 1 or not name.strip():
            raise GeometryInputError(
                f"--label-names item {item!r} is not VALUE=NAME with a value of at least 1"
            )
        names[int(value)] = name.strip()
    if not names:
        raise GeometryInputError(f"--label-names {text!r} names no label")
    return names


def _roi_types_and_colors(ds: Dataset) -> tuple[dict[int, str], dict[int, tuple[int, int, int]]]:
    kinds = {
        int(item.ReferencedROINumber): str(item.get("RTROIInterpretedType", "") or "ORGAN")
        for item in ds.get("RTROIObservationsSequence", [])
        if "ReferencedROINumber" in item
    }
    colors = {}
    for item in ds.get("ROIContourSequence", []):
        color = item.get("ROIDisplayColor")
        if color is not None and len(color) == 3:
            colors[int(item.ReferencedROINumber)] = tuple(int(c) for c in color)
    return kinds, colors


def _unique_names(organs: list[Organ]) -> list[Organ]:
    """Give a second structure mapped to the same name a suffix, so its files do not overwrite the first's."""
    seen: dict[str, int] = {}
    for organ in organs:
        count = seen.get(organ.name.name, 0)
        seen[organ.name.name] = count + 1
        if count:
            organ.name = StructureName(
                f"{organ.name.name}_{count + 1}", organ.name.source, organ.name.standard
            )
    return organs
