"""DICOM in, validated NIfTI cache out: the site's data plane.

Discovery of CT series and RT Structure Sets under any folder, CT series validation, RTSTRUCT read/write
and rasterisation, the cache manifest and split, and the case type that ``seg/`` and ``gan/`` train on.
Plain pydicom/numpy/nibabel: nothing here imports NVFlare.
"""

from dose3d_fl.data.cases import IMAGE, LABEL, Case, SiteCases, case_id, load_site_cases
from dose3d_fl.data.contours import mask_from_polygons, polygons_from_field, polygons_from_mask
from dose3d_fl.data.ct_input import InputSeries, InputSeriesError, load_input_series
from dose3d_fl.data.ct_series import CaseRejectedError, CTVolume, check_ct_geometry, load_ct_series
from dose3d_fl.data.discovery import DicomInventory, SeriesFiles, discover_dicom, one_line
from dose3d_fl.data.geometry import VolumeGeometry
from dose3d_fl.data.ingest import IngestConfig, IngestError, IngestReport, ingest_site
from dose3d_fl.data.manifest import CaseEntry, Manifest, Rejection
from dose3d_fl.data.nifti import save_nifti
from dose3d_fl.data.rtstruct import (
    RoiContours,
    RoiData,
    StructureSet,
    build_rtstruct,
    rasterise_contours,
    read_structure_set,
)
from dose3d_fl.data.split import SiteSplit, draw_split, load_or_create_split, split_cases
from dose3d_fl.data.summary import SiteDataSummary, format_summary_table, summarise_caches

__all__ = [
    "IMAGE",
    "LABEL",
    "CTVolume",
    "Case",
    "CaseEntry",
    "CaseRejectedError",
    "DicomInventory",
    "IngestConfig",
    "IngestError",
    "IngestReport",
    "InputSeries",
    "InputSeriesError",
    "Manifest",
    "Rejection",
    "RoiContours",
    "RoiData",
    "SeriesFiles",
    "SiteCases",
    "SiteDataSummary",
    "SiteSplit",
    "StructureSet",
    "VolumeGeometry",
    "build_rtstruct",
    "case_id",
    "check_ct_geometry",
    "discover_dicom",
    "draw_split",
    "format_summary_table",
    "ingest_site",
    "load_ct_series",
    "load_input_series",
    "load_or_create_split",
    "load_site_cases",
    "mask_from_polygons",
    "one_line",
    "polygons_from_field",
    "polygons_from_mask",
    "rasterise_contours",
    "read_structure_set",
    "save_nifti",
    "split_cases",
    "summarise_caches",
]
