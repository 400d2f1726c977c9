"""``dose3d segment``: a new patient's CT series in, RTSTRUCT + mask NIfTI + preview PNG out.

The steps are the ingestion checks (``data.ct_input``), the model's own preprocessing and sliding-window
inference mapped back to the CT grid (``inference``), post-processing, then the three outputs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dose3d_fl.clinical.inference import load_predictor, predict_organ
from dose3d_fl.clinical.model_file import load_segmentation_model
from dose3d_fl.clinical.overlay import Outline, save_orthogonal_views
from dose3d_fl.clinical.seg_export import build_segmentation
from dose3d_fl.clinical.structure_export import build_predicted_structure_set
from dose3d_fl.data.ct_input import load_input_series
from dose3d_fl.data.nifti import save_nifti

log = logging.getLogger(__name__)

RTSTRUCT_NAME = "rtstruct.dcm"
MASK_NAME = "mask.nii.gz"
PREVIEW_NAME = "preview.png"
SEG_NAME = "seg.dcm"
# Display colours of known structures (as the synthetic sites draw them); others get the first.
ROI_COLORS = {"SPLEEN": (255, 128, 0), "LIVER": (160, 32, 240), "BODY": (0, 255, 0)}


@dataclass(frozen=True)
class SegmentConfig:
    """What ``dose3d segment`` is asked to do.

    Args:
        model: model file (``dose3d train``'s ``model.pt`` or NVFlare's ``FL_global_model.pt``).
        dicom: folder holding the CT series.
        out: output folder (created).
        roi_name: ROIName written into the RTSTRUCT.
        profile: profile for a model file that stores none (default ``cpu-small``).
        series_uid: which series when the folder holds several.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        color: ROI display colour; default by ROI name.
        dicom_seg: also write the mask as a DICOM Segmentation (``seg.dcm``).
    """

    model: Path
    dicom: Path
    out: Path
    roi_name: str = "SPLEEN"
    profile: str | None = None
    series_uid: str | None = None
    device: str | None = None
    color: tuple[int, int, int] | None = None
    dicom_seg: bool = False


@dataclass
class SegmentResult:
    """What was written and what was found."""

    rtstruct: Path
    mask: Path
    preview: Path
    series_instance_uid: str
    slices: int
    other_files: int
    profile: str
    profile_source: str
    voxels: int
    volume_ml: float
    contour_slices: int
    seconds: dict[str, float] = field(default_factory=dict)
    segmentation: Path | None = None


def hex_color(rgb: tuple[int, int, int]) -> str:
    """``(255, 128, 0)`` -> ``"#ff8000"`` (matplotlib's colour notation)."""
    return "#" + "".join(f"{value:02x}" for value in rgb)


def segment_ct(config: SegmentConfig) -> SegmentResult:
    """Segment one CT series and write the RTSTRUCT, the mask NIfTI, the preview PNG (and a DICOM SEG).

    An empty prediction gives an RTSTRUCT whose ROI has no contour, and no DICOM SEG (it cannot be empty).

    Raises:
        ModelFileError: the model file cannot be used.
        InputSeriesError: the folder does not hold one usable CT series.
        CaseRejectedError: the series breaks an ingestion rule.
        DeviceUnavailableError: a CUDA device is asked for on a machine without one.
    """
    start = time.perf_counter()
    model = load_segmentation_model(config.model, config.profile)
    predictor = load_predictor(model, config.device)
    series = load_input_series(config.dicom, config.series_uid)
    volume = series.volume
    load_seconds = time.perf_counter() - start

    prediction = predict_organ(predictor, volume)
    mask = prediction.mask

    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    color = config.color or ROI_COLORS.get(config.roi_name.strip().upper(), ROI_COLORS["SPLEEN"])
    description = f"dose3d {config.roi_name} ({model.profile.name}, {model.path.name})"
    structure_set = build_predicted_structure_set(series, mask, config.roi_name, color, description)
    rtstruct_path = out / RTSTRUCT_NAME
    structure_set.save_as(rtstruct_path, enforce_file_format=True)
    mask_path = save_nifti(mask.astype(np.uint8), volume.geometry.affine_ras, out / MASK_NAME)
    voxel_ml = float(np.prod(volume.geometry.spacing)) / 1000.0
    volume_ml = float(mask.sum()) * voxel_ml
    preview = save_orthogonal_views(
        volume.hu,
        volume.geometry.affine_ras,
        [Outline(mask, hex_color(color), f"{config.roi_name} (predicted, {volume_ml:.1f} mL)")],
        out / PREVIEW_NAME,
        title=f"{config.roi_name}: {model.path.name}, profile {model.profile.name}",
    )
    segmentation = None
    if config.dicom_seg and mask.any():
        segmentation = out / SEG_NAME
        build_segmentation(series, mask, config.roi_name, model.profile.name).save_as(segmentation)
    write_seconds = time.perf_counter() - start
    return SegmentResult(
        rtstruct=rtstruct_path,
        mask=mask_path,
        preview=preview,
        series_instance_uid=str(series.reference.SeriesInstanceUID),
        slices=volume.geometry.shape[2],
        other_files=series.other_files,
        profile=model.profile.name,
        profile_source=model.profile_source,
        voxels=int(mask.sum()),
        volume_ml=volume_ml,
        contour_slices=int(mask.any(axis=(0, 1)).sum()),
        seconds={"load": load_seconds, **prediction.seconds, "write": write_seconds},
        segmentation=segmentation,
    )
