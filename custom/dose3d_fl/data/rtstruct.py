"""DICOM RT Structure Set: write contours referencing a CT series, read them back, rasterise them.

Written with plain pydicom rather than rt-utils: rt-utils is unmaintained, merges every series it finds
under a folder, accepts missing slices and raises bare ``Exception``; highdicom writes DICOM SEG but not
RTSTRUCT, which is what treatment planning systems import.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from dose3d_fl import __version__
from dose3d_fl.data.contours import mask_from_polygons
from dose3d_fl.data.geometry import VolumeGeometry

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
CONTOUR_DATA = Tag(0x3006, 0x0050)
_DEFAULT_CHARSET = "iso8859"

# Patient, General Study and Frame of Reference attributes are copied from the CT so the structure set files
# with its images. These are Type 2: present, and empty when the CT lacks them.
_TYPE2_FROM_CT = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PositionReferenceIndicator",
)
# Type 3: copied when the CT has them.
_OPTIONAL_FROM_CT = ("IssuerOfPatientID", "StudyDescription", "InstitutionName")
# Text is written as UTF-8 when any value is not ASCII; otherwise as Latin-1 (ASCII is the same bytes in
# both, and every planning system reads ISO_IR 100).
UTF8_CHARACTER_SET = "ISO_IR 192"
ASCII_CHARACTER_SET = "ISO_IR 100"
# The value representations whose text SpecificCharacterSet governs.
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})

log = logging.getLogger(__name__)


@dataclass
class RoiContours:
    """One region of interest to write: its CLOSED_PLANAR polygons per CT slice.

    Args:
        name: ROI name as the planning system shows it (e.g. ``"SPLEEN"``).
        color: display colour, RGB 0..255.
        interpreted_type: RTROIInterpretedType, e.g. ``"ORGAN"`` or ``"EXTERNAL"`` for the body outline.
        slices: slice index -> polygons of ``(row, column)`` vertices on that slice.
    """

    name: str
    color: tuple[int, int, int]
    interpreted_type: str
    slices: dict[int, list[np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class Equipment:
    """The General Equipment module of a written structure set: what made it.

    Args:
        manufacturer: Manufacturer.
        model_name: ManufacturerModelName (left out when empty).
        device_serial_number: DeviceSerialNumber (left out when empty).
        software_versions: SoftwareVersions.
    """

    manufacturer: str = "dose3d-fl"
    model_name: str = ""
    device_serial_number: str = ""
    software_versions: str = __version__


@dataclass
class RoiData:
    """One ROI read from a structure set: its contours in patient coordinates."""

    number: int
    name: str
    contours: list[np.ndarray] = field(default_factory=list)
    skipped_non_planar: int = 0


@dataclass
class StructureSet:
    """What ingestion needs from an RT Structure Set."""

    sop_instance_uid: str
    frame_of_reference_uids: set[str]
    referenced_series_uids: set[str]
    referenced_sop_instance_uids: set[str]
    rois: dict[str, RoiData]

    def find_roi(self, name: str) -> RoiData | None:
        """The ROI whose name matches ``name`` ignoring case and surrounding spaces, if any."""
        wanted = name.strip().casefold()
        for roi_name, roi in self.rois.items():
            if roi_name.strip().casefold() == wanted:
                return roi
        return None


def build_rtstruct(
    ct: Dataset,
    slice_sop_instance_uids: Sequence[str],
    geometry: VolumeGeometry,
    rois: Sequence[RoiContours],
    *,
    sop_instance_uid: str,
    series_instance_uid: str,
    label: str = "dose3d",
    created: dt.datetime | None = None,
    equipment: Equipment | None = None,
) -> FileDataset:
    """Build an RT Structure Set that references a CT series.

    Patient, study and frame of reference attributes are copied from the CT as text (pydicom decodes them
    with the CT's own SpecificCharacterSet), Type 2 attributes the CT lacks are written empty, and the file
    declares the character set of what it holds (:func:`declare_character_set`). An ROI without any contour
    is left out with a warning: a ContourSequence must not be empty.

    Args:
        ct: any slice of the referenced CT series (patient, study and frame of reference are copied).
        slice_sop_instance_uids: SOPInstanceUID of the CT slice at each slice index of ``geometry``.
        geometry: the CT grid; polygons are mapped to patient coordinates with it.
        rois: the structures to write.
        sop_instance_uid: UID of the new structure set.
        series_instance_uid: UID of its series.
        label: StructureSetLabel.
        created: StructureSetDate/Time; a fixed default keeps synthetic output reproducible.
        equipment: the General Equipment module (default: Manufacturer ``dose3d-fl`` and the package version).

    Returns:
        The dataset, ready for ``save_as(path, enforce_file_format=True)``. A caller that sets more text
        attributes afterwards calls :func:`declare_character_set` again.

    Raises:
        ValueError: no ROI has a contour (an RT Structure Set needs at least one ROI).
    """
    written = []
    for roi in rois:
        if any(len(polygons) for polygons in roi.slices.values()):
            written.append(roi)
        else:
            log.warning("ROI %r has no contour: left out of the structure set", roi.name)
    if not written:
        raise ValueError("no ROI has a contour; an RT Structure Set needs at least one ROI with contours")
    created = created or dt.datetime(2024, 1, 1, 12, 0, 0)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    # Declaring the encoding we write in lets pydicom copy the pre-encoded ContourData as it is.
    ds.set_original_encoding(False, True, _DEFAULT_CHARSET)

    for keyword in _TYPE2_FROM_CT:
        setattr(ds, keyword, _text_of(ct, keyword))
    for keyword in _OPTIONAL_FROM_CT:
        if ct.get(keyword):
            setattr(ds, keyword, _text_of(ct, keyword))
    ds.StudyInstanceUID = ct.StudyInstanceUID
    ds.FrameOfReferenceUID = ct.FrameOfReferenceUID
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = 1001
    ds.InstanceNumber = 1
    ds.OperatorsName = ""
    equipment = equipment or Equipment()
    ds.Manufacturer = equipment.manufacturer
    for keyword, value in (
        ("ManufacturerModelName", equipment.model_name),
        ("DeviceSerialNumber", equipment.device_serial_number),
        ("SoftwareVersions", equipment.software_versions),
    ):
        if value:
            setattr(ds, keyword, value)
    ds.StructureSetLabel = label[:16]
    ds.StructureSetDate = created.strftime("%Y%m%d")
    ds.StructureSetTime = created.strftime("%H%M%S")
    ds.SeriesDate = ds.StructureSetDate
    ds.SeriesTime = ds.StructureSetTime

    frame_uid = ct.FrameOfReferenceUID
    contour_images = DicomSequence([_image_reference(ct.SOPClassUID, uid) for uid in slice_sop_instance_uids])
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = ct.SeriesInstanceUID
    series_ref.ContourImageSequence = contour_images
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired)
    study_ref.ReferencedSOPInstanceUID = ct.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = DicomSequence([series_ref])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = frame_uid
    frame_ref.RTReferencedStudySequence = DicomSequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame_ref])

    ds.StructureSetROISequence = DicomSequence()
    ds.ROIContourSequence = DicomSequence()
    ds.RTROIObservationsSequence = DicomSequence()
    for number, roi in enumerate(written, start=1):
        roi_item = Dataset()
        roi_item.ROINumber = number
        roi_item.ReferencedFrameOfReferenceUID = frame_uid
        roi_item.ROIName = roi.name
        roi_item.ROIGenerationAlgorithm = "AUTOMATIC"
        ds.StructureSetROISequence.append(roi_item)

        contour_item = Dataset()
        contour_item.ReferencedROINumber = number
        contour_item.ROIDisplayColor = list(roi.color)
        contour_item.ContourSequence = DicomSequence()
        for k in sorted(roi.slices):
            for polygon in roi.slices[k]:
                points = geometry.pixel_to_patient(polygon, k)
                contour = Dataset()
                contour.ContourImageSequence = DicomSequence(
                    [_image_reference(ct.SOPClassUID, slice_sop_instance_uids[k])]
                )
                contour.ContourGeometricType = "CLOSED_PLANAR"
                contour.NumberOfContourPoints = len(points)
                contour[CONTOUR_DATA] = _encode_contour_data(points)
                contour.set_original_encoding(False, True, _DEFAULT_CHARSET)
                contour_item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(contour_item)

        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = roi.interpreted_type
        observation.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(observation)
    declare_character_set(ds)
    return ds


def declare_character_set(ds: Dataset) -> str:
    """Set SpecificCharacterSet for the text ``ds`` holds; call it after the last text value is set.

    ``ISO_IR 192`` (UTF-8) when any text value is not ASCII, ``ISO_IR 100`` otherwise. The values are held as
    decoded text, so pydicom encodes them in the declared set when it writes the file.

    Returns:
        The declared character set.
    """
    charset = UTF8_CHARACTER_SET if _holds_non_ascii(ds) else ASCII_CHARACTER_SET
    ds.SpecificCharacterSet = charset
    implicit_vr, little_endian = ds.original_encoding
    if implicit_vr is not None:
        # The encoding the dataset declares it was written in must name this character set too, or pydicom
        # decodes and re-encodes every pre-encoded element (the ContourData) when it writes the file.
        ds.set_original_encoding(implicit_vr, little_endian, convert_encodings(charset))
    return charset


def _text_of(ct: Dataset, keyword: str) -> str:
    """A CT attribute as decoded text ("" when absent), to be encoded in the structure set's character set."""
    value = ct.get(keyword)
    return "" if value is None else str(value)


def _holds_non_ascii(ds: Dataset) -> bool:
    """Whether a text value anywhere in ``ds`` is not ASCII (pre-encoded raw elements are ASCII already)."""
    for element in ds.elements():
        if isinstance(element, RawDataElement):
            continue
        if element.VR == "SQ":
            if any(_holds_non_ascii(item) for item in element.value):
                return True
        elif element.VR in _CHARSET_VRS and not all(
            str(value).isascii() for value in (element.value if element.VM > 1 else [element.value])
        ):
            return True
    return False


def _encode_contour_data(points: np.ndarray) -> RawDataElement:
    """ContourData encoded once as DS text.

    A structure set holds ~10^5 coordinates; letting pydicom build and validate one DS object per value
    takes seconds per patient, so the element is written pre-encoded (explicit VR little endian).
    """
    value = "\\".join(f"{v:.3f}" for v in points.ravel()).encode("ascii")
    if len(value) % 2:
        value += b" "
    return RawDataElement(CONTOUR_DATA, "DS", len(value), value, 0, False, True)


def _contour_points(contour: Dataset) -> np.ndarray:
    """ContourData as an ``(N, 3)`` array (empty if malformed), parsing raw DS text without pydicom objects."""
    element = contour.get_item(CONTOUR_DATA)
    if element is None:
        return np.empty((0, 3))
    if isinstance(element, RawDataElement):
        text = (element.value or b"").decode("ascii", errors="replace").replace("\\", " ")
        values = np.array(text.split(), dtype=float)
    else:
        values = np.asarray(element.value, dtype=float).ravel()
    if values.size < 9 or values.size % 3:
        return np.empty((0, 3))
    return values.reshape(-1, 3)


def _image_reference(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class_uid
    ref.ReferencedSOPInstanceUID = sop_instance_uid
    return ref


def read_structure_set(ds: Dataset) -> StructureSet:
    """Extract references and ROI contours from an RT Structure Set dataset.

    Missing optional sequences give empty results rather than errors, so the caller can say which
    reference is absent.
    """
    frames, series, images = set(), set(), set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        if "FrameOfReferenceUID" in frame:
            frames.add(str(frame.FrameOfReferenceUID))
        for study in frame.get("RTReferencedStudySequence", []):
            for ref_series in study.get("RTReferencedSeriesSequence", []):
                if "SeriesInstanceUID" in ref_series:
                    series.add(str(ref_series.SeriesInstanceUID))
                for image in ref_series.get("ContourImageSequence", []):
                    images.add(str(image.ReferencedSOPInstanceUID))

    names = {}
    for roi in ds.get("StructureSetROISequence", []):
        names[int(roi.ROINumber)] = str(roi.get("ROIName", f"ROI {roi.ROINumber}"))
        if "ReferencedFrameOfReferenceUID" in roi:
            frames.add(str(roi.ReferencedFrameOfReferenceUID))
    rois = {name: RoiData(number=number, name=name) for number, name in names.items()}
    for roi_contour in ds.get("ROIContourSequence", []):
        name = names.get(int(roi_contour.ReferencedROINumber))
        if name is None:
            continue
        roi = rois[name]
        for contour in roi_contour.get("ContourSequence", []):
            for image in contour.get("ContourImageSequence", []):
                images.add(str(image.ReferencedSOPInstanceUID))
            if contour.get("ContourGeometricType", "CLOSED_PLANAR") != "CLOSED_PLANAR":
                roi.skipped_non_planar += 1
                continue
            points = _contour_points(contour)
            if len(points):
                roi.contours.append(points)
    return StructureSet(
        sop_instance_uid=str(ds.SOPInstanceUID),
        frame_of_reference_uids=frames,
        referenced_series_uids=series,
        referenced_sop_instance_uids=images,
        rois=rois,
    )


def rasterise_contours(contours: Sequence[np.ndarray], geometry: VolumeGeometry) -> tuple[np.ndarray, int]:
    """Rasterise planar contours (patient coordinates) onto a CT grid.

    Each contour is assigned to the slice whose position along the normal it lies on (within a third of
    the slice spacing); polygons on one slice combine with the even-odd rule. Rasterising in patient
    coordinates makes the result independent of file order, InstanceNumber and orientation.

    Args:
        contours: ``(N, 3)`` LPS vertex arrays.
        geometry: the CT grid.

    Returns:
        Boolean mask ``(columns, rows, slices)`` and the number of contours that lie on no slice.
    """
    per_slice: dict[int, list[np.ndarray]] = {}
    indices = contour_slice_indices(contours, geometry)
    for points, k in zip(contours, indices, strict=True):
        if k >= 0:
            per_slice.setdefault(int(k), []).append(geometry.patient_to_pixel(points, int(k)))
    off_slice = int((indices < 0).sum())
    cols, rows, slices = geometry.shape
    mask = np.zeros((cols, rows, slices), dtype=bool)
    for k, polygons in per_slice.items():
        mask[:, :, k] = mask_from_polygons(polygons, (rows, cols)).T
    return mask, off_slice


def contour_slice_indices(contours: Sequence[np.ndarray], geometry: VolumeGeometry) -> np.ndarray:
    """The CT slice each planar contour lies on: within a third of the slice spacing, -1 for none.

    A contour lies on no slice when it sits between slices (drawn on another reconstruction) or is not
    parallel to them.

    Args:
        contours: ``(N, 3)`` LPS vertex arrays.
        geometry: the CT grid.

    Returns:
        One slice index per contour (int array), -1 where the contour lies on no slice.
    """
    positions = geometry.slice_positions()
    normal = geometry.normal
    tolerance = max(abs(geometry.spacing[2]) / 3.0, 0.01)
    indices = np.full(len(contours), -1, dtype=int)
    for i, points in enumerate(contours):
        heights = points @ normal
        k = int(np.argmin(np.abs(positions - heights.mean())))
        if abs(positions[k] - heights.mean()) <= tolerance and np.ptp(heights) <= tolerance:
            indices[i] = k
    return indices
