"""DICOM RT Structure Set: write contours referencing a CT series, read them back, rasterise them.

Written with plain pydicom rather than rt-utils: rt-utils is unmaintained, merges every series it finds
under a folder, accepts missing slices and raises bare ``Exception``; highdicom writes DICOM SEG but not
RTSTRUCT, which is what treatment planning systems import.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from dose3d_fl.data.contours import mask_from_polygons
from dose3d_fl.data.geometry import VolumeGeometry

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
CONTOUR_DATA = Tag(0x3006, 0x0050)
_DEFAULT_CHARSET = "iso8859"

# Patient and study modules are copied from the CT so the structure set files with its images.
_COPIED_FROM_CT = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "InstitutionName",
)


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
) -> FileDataset:
    """Build an RT Structure Set that references a CT series.

    Args:
        ct: any slice of the referenced CT series (patient, study and frame of reference are copied).
        slice_sop_instance_uids: SOPInstanceUID of the CT slice at each slice index of ``geometry``.
        geometry: the CT grid; polygons are mapped to patient coordinates with it.
        rois: the structures to write.
        sop_instance_uid: UID of the new structure set.
        series_instance_uid: UID of its series.
        label: StructureSetLabel.
        created: StructureSetDate/Time; a fixed default keeps synthetic output reproducible.

    Returns:
        The dataset, ready for ``save_as(path, enforce_file_format=True)``.
    """
    created = created or dt.datetime(2024, 1, 1, 12, 0, 0)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)

    for keyword in _COPIED_FROM_CT:
        if keyword in ct:
            setattr(ds, keyword, ct.data_element(keyword).value)
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = 1001
    ds.InstanceNumber = 1
    ds.Manufacturer = "dose3d-fl"
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
    for number, roi in enumerate(rois, start=1):
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
    # Declaring the encoding we write in lets pydicom copy the pre-encoded ContourData as it is.
    ds.set_original_encoding(False, True, _DEFAULT_CHARSET)
    return ds


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
    positions = geometry.slice_positions()
    normal = geometry.normal
    tolerance = max(abs(geometry.spacing[2]) / 3.0, 0.01)
    per_slice: dict[int, list[np.ndarray]] = {}
    off_slice = 0
    for points in contours:
        heights = points @ normal
        k = int(np.argmin(np.abs(positions - heights.mean())))
        if abs(positions[k] - heights.mean()) > tolerance or np.ptp(heights) > tolerance:
            off_slice += 1
            continue
        per_slice.setdefault(k, []).append(geometry.patient_to_pixel(points, k))
    cols, rows, slices = geometry.shape
    mask = np.zeros((cols, rows, slices), dtype=bool)
    for k, polygons in per_slice.items():
        mask[:, :, k] = mask_from_polygons(polygons, (rows, cols)).T
    return mask, off_slice
