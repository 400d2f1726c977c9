"""Build classic CT Image Storage slices (one file per slice) from a HU volume."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from dose3d_fl.data.geometry import VolumeGeometry

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass(frozen=True)
class StudyIdentity:
    """Patient, study and equipment attributes shared by every object of one synthetic study.

    Every identifying value is synthetic; callers put a marker string in them so tests can prove that no
    identifier leaves a site.
    """

    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    study_instance_uid: str
    study_id: str
    accession_number: str
    study_date: dt.date
    institution_name: str
    referring_physician_name: str
    station_name: str
    manufacturer: str
    model_name: str


@dataclass(frozen=True)
class CTSeriesSpec:
    """How a CT series is stored: UIDs, rescale and acquisition attributes.

    Args:
        series_instance_uid: UID of the series.
        frame_of_reference_uid: UID of the patient coordinate frame.
        sop_instance_uids: one UID per slice, in slice order.
        instance_numbers: InstanceNumber per slice (need not follow position).
        rescale_intercept: HU = stored * slope + intercept.
        rescale_slope: see ``rescale_intercept``.
        slice_thickness: nominal reconstructed slice thickness (mm).
        patient_position: e.g. ``"HFS"`` (head first supine) or ``"FFS"``.
        kvp: tube voltage.
        kernel: reconstruction kernel name.
        series_number: SeriesNumber.
    """

    series_instance_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: tuple[str, ...]
    instance_numbers: tuple[int, ...]
    rescale_intercept: float = -1024.0
    rescale_slope: float = 1.0
    slice_thickness: float = 2.5
    patient_position: str = "HFS"
    kvp: float = 120.0
    kernel: str = "B30f"
    series_number: int = 2


def build_ct_slices(
    hu: np.ndarray, geometry: VolumeGeometry, identity: StudyIdentity, spec: CTSeriesSpec
) -> list[FileDataset]:
    """Encode a HU volume as CT Image Storage datasets, one per slice, in slice order.

    Args:
        hu: ``(columns, rows, slices)`` Hounsfield units on ``geometry``.
        geometry: the grid (orientation, positions, spacing).
        identity: patient/study attributes.
        spec: series attributes.

    Returns:
        One dataset per slice; stored pixels are signed 16-bit after the inverse rescale.
    """
    if hu.shape != geometry.shape:
        raise ValueError(f"volume shape {hu.shape} does not match geometry shape {geometry.shape}")
    stored = np.rint((hu - spec.rescale_intercept) / spec.rescale_slope)
    stored = np.clip(stored, np.iinfo(np.int16).min, np.iinfo(np.int16).max).astype(np.int16)
    study_date = identity.study_date.strftime("%Y%m%d")
    slices = []
    for k in range(geometry.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = spec.sop_instance_uids[k]
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = spec.sop_instance_uids[k]
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Modality = "CT"
        ds.PatientName = identity.patient_name
        ds.PatientID = identity.patient_id
        ds.PatientBirthDate = identity.patient_birth_date
        ds.PatientSex = identity.patient_sex
        ds.StudyInstanceUID = identity.study_instance_uid
        ds.StudyID = identity.study_id
        ds.AccessionNumber = identity.accession_number
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
        ds.StudyDescription = "CT ABDOMEN"
        ds.SeriesDescription = "Abdomen 120kV"
        ds.ReferringPhysicianName = identity.referring_physician_name
        ds.InstitutionName = identity.institution_name
        ds.StationName = identity.station_name
        ds.Manufacturer = identity.manufacturer
        ds.ManufacturerModelName = identity.model_name
        ds.SeriesInstanceUID = spec.series_instance_uid
        ds.SeriesNumber = spec.series_number
        ds.InstanceNumber = spec.instance_numbers[k]
        ds.FrameOfReferenceUID = spec.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = spec.patient_position
        ds.BodyPartExamined = "ABDOMEN"
        ds.KVP = spec.kvp
        ds.ConvolutionKernel = spec.kernel
        ds.GantryDetectorTilt = 0.0
        ds.SliceThickness = spec.slice_thickness
        ds.ImagePositionPatient = [round(float(v), 4) for v in geometry.slice_origin(k)]
        ds.ImageOrientationPatient = [round(v, 6) for v in geometry.image_orientation]
        ds.SliceLocation = round(float(geometry.slice_origin(k)[2]), 4)
        ds.PixelSpacing = [round(geometry.spacing[1], 4), round(geometry.spacing[0], 4)]
        ds.Rows = geometry.shape[1]
        ds.Columns = geometry.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = spec.rescale_intercept
        ds.RescaleSlope = spec.rescale_slope
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        slices.append(ds)
    return slices
