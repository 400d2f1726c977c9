"""``dose3d segment``: a new patient's CT series in, RTSTRUCT + mask NIfTI + preview PNG out.

The steps are the ingestion checks (``data.ct_input``), the model's own preprocessing and sliding-window
inference mapped back to the CT grid (``inference``), post-processing, then the outputs. Every organ of the
model's task becomes one ROI of one structure set; an organ the model does not find is left out with a
warning, and when it finds none no structure set is written (there is no valid empty one).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dose3d_fl.clinical.inference import load_predictor, predict_organ
from dose3d_fl.clinical.model_file import ModelFileError, SegmentationModel, load_segmentation_model
from dose3d_fl.clinical.models import ModelRecord
from dose3d_fl.clinical.overlay import Outline, save_orthogonal_views
from dose3d_fl.clinical.provenance import task_of
from dose3d_fl.clinical.seg_export import build_segmentation
from dose3d_fl.clinical.structure_export import (
    NoOrganFoundError,
    PredictedOrgan,
    build_predicted_structure_set,
)
from dose3d_fl.data.ct_input import load_input_series
from dose3d_fl.data.nifti import save_nifti

log = logging.getLogger(__name__)

RTSTRUCT_NAME = "rtstruct.dcm"
MASK_NAME = "mask.nii.gz"
PREVIEW_NAME = "preview.png"
SEG_NAME = "seg.dcm"
# Display colours of known structures (as the synthetic sites draw them).
ROI_COLORS = {"SPLEEN": (255, 128, 0), "LIVER": (160, 32, 240), "BODY": (0, 255, 0)}
# Colours for other organs, in order, skipping any already used.
PALETTE = (
    (255, 128, 0),
    (0, 160, 255),
    (255, 0, 128),
    (160, 32, 240),
    (255, 220, 0),
    (0, 200, 120),
    (220, 40, 40),
    (120, 80, 40),
    (0, 255, 255),
    (255, 160, 200),
)


@dataclass(frozen=True)
class SegmentConfig:
    """What ``dose3d segment`` is asked to do.

    Args:
        model: model file (``dose3d train``'s ``model.pt`` or the server's ``FL_global_model.pt``).
        dicom: folder holding the CT series.
        out: output folder (created).
        roi_names: ROINames of the model's organs in the order of its classes (1, 2, ...); default the
            organs the model file records (its task), e.g. ``Spleen``.
        profile: profile of a model file that stores none (required then); must agree with a stored one.
        series_uid: which series when the folder holds several.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        dicom_seg: also write the masks as a DICOM Segmentation (``seg.dcm``).
    """

    model: Path
    dicom: Path
    out: Path
    roi_names: tuple[str, ...] = ()
    profile: str | None = None
    series_uid: str | None = None
    device: str | None = None
    dicom_seg: bool = False


@dataclass
class OrganResult:
    """One organ of the model on this CT: its ROI name, colour and what was found."""

    name: str
    color: tuple[int, int, int]
    voxels: int
    volume_ml: float
    contour_slices: int

    @property
    def found(self) -> bool:
        """Whether the model found the organ (it is then in the structure set)."""
        return self.voxels > 0


@dataclass
class SegmentResult:
    """What was written and what was found.

    Attributes:
        rtstruct: the structure set, ``None`` when the model found no organ (``no_rtstruct_reason`` says why).
        mask: label NIfTI on the CT grid: organ ``n`` of ``organs`` has value ``n`` (0 is background).
        model: the model's identity (hash, job, round), as the structure set names it.
        organs: every organ of the model, in class order, found or not.
    """

    rtstruct: Path | None
    mask: Path
    preview: Path
    series_instance_uid: str
    slices: int
    other_files: int
    profile: str
    profile_source: str
    model: ModelRecord
    organs: list[OrganResult]
    seconds: dict[str, float] = field(default_factory=dict)
    segmentation: Path | None = None
    no_rtstruct_reason: str | None = None

    @property
    def missing(self) -> list[str]:
        """Names of the organs the model did not find (left out of the structure set)."""
        return [organ.name for organ in self.organs if not organ.found]

    @property
    def voxels(self) -> int:
        """Voxels of all organs found."""
        return sum(organ.voxels for organ in self.organs)

    @property
    def volume_ml(self) -> float:
        """Volume of all organs found, in mL."""
        return sum(organ.volume_ml for organ in self.organs)


def hex_color(rgb: tuple[int, int, int]) -> str:
    """``(255, 128, 0)`` -> ``"#ff8000"`` (matplotlib's colour notation)."""
    return "#" + "".join(f"{value:02x}" for value in rgb)


def organ_names(model: SegmentationModel, requested: tuple[str, ...] = ()) -> list[str]:
    """The ROI names of the model's classes 1, 2, ...: ``requested``, else the organs its file records.

    Raises:
        ModelFileError: ``requested`` names a different number of organs than the network has classes.
    """
    classes = model.profile.out_channels - 1
    if requested:
        if len(requested) != classes:
            raise ModelFileError(
                f"{len(requested)} ROI name(s) given ({', '.join(requested)}), but the model segments "
                f"{classes} organ(s); give one --roi-name per organ, in the order of its classes"
            )
        return list(requested)
    task = model.record.task or task_of(model.profile)
    organs = [str(name) for name in task.get("organs", [])]
    return organs if len(organs) == classes else [f"ORGAN {n}" for n in range(1, classes + 1)]


def organ_colors(names: list[str]) -> list[tuple[int, int, int]]:
    """A distinct display colour per organ: the known organs' own, then the palette's unused ones."""
    known = [ROI_COLORS.get(name.strip().upper()) for name in names]
    free = [c for c in PALETTE if c not in known]
    colors = []
    for color in known:
        if color is None or color in colors:
            color = free.pop(0) if free else PALETTE[len(colors) % len(PALETTE)]
        colors.append(color)
    return colors


def segment_ct(config: SegmentConfig) -> SegmentResult:
    """Segment one CT series and write the RTSTRUCT, the mask NIfTI, the preview PNG (and a DICOM SEG).

    An organ the model does not find is left out of the RTSTRUCT and the SEG; when it finds none, neither
    is written (``SegmentResult.no_rtstruct_reason``), and the empty mask and the preview are, for review.

    Raises:
        ModelFileError: the model file cannot be used, or the ROI names do not fit it.
        InputSeriesError: the folder does not hold one usable CT series.
        CaseRejectedError: the series breaks an ingestion rule.
        DeviceUnavailableError: a CUDA device is asked for on a machine without one.
    """
    start = time.perf_counter()
    model = load_segmentation_model(config.model, config.profile)
    names = organ_names(model, config.roi_names)
    predictor = load_predictor(model, config.device)
    series = load_input_series(config.dicom, config.series_uid)
    volume = series.volume
    load_seconds = time.perf_counter() - start

    prediction = predict_organ(predictor, volume)
    organs = [
        PredictedOrgan(name, color, mask)
        for name, color, mask in zip(names, organ_colors(names), prediction.masks, strict=True)
    ]

    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rtstruct_path: Path | None = out / RTSTRUCT_NAME
    reason = None
    try:
        structure_set = build_predicted_structure_set(series, organs, model.record)
        structure_set.save_as(rtstruct_path, enforce_file_format=True)
    except NoOrganFoundError as err:
        rtstruct_path, reason = None, str(err)
        log.warning("%s", reason)
    labels = np.zeros(volume.geometry.shape, dtype=np.uint8)
    for value, organ in enumerate(organs, start=1):
        labels[organ.mask] = value
    mask_path = save_nifti(labels, volume.geometry.affine_ras, out / MASK_NAME)
    voxel_ml = float(np.prod(volume.geometry.spacing)) / 1000.0
    results = [
        OrganResult(
            organ.name,
            organ.color,
            int(organ.mask.sum()),
            float(organ.mask.sum()) * voxel_ml,
            int(organ.mask.any(axis=(0, 1)).sum()),
        )
        for organ in organs
    ]
    preview = save_orthogonal_views(
        volume.hu,
        volume.geometry.affine_ras,
        [
            Outline(
                organ.mask, hex_color(organ.color), f"{organ.name} (predicted, {result.volume_ml:.1f} mL)"
            )
            for organ, result in zip(organs, results, strict=True)
            if result.found
        ],
        out / PREVIEW_NAME,
        title=f"{', '.join(names)}: model {model.record.short_hash}, profile {model.profile.name}",
    )
    segmentation = None
    if config.dicom_seg and rtstruct_path is not None:
        segmentation = out / SEG_NAME
        build_segmentation(series, organs, model.record).save_as(segmentation)
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
        model=model.record,
        organs=results,
        seconds={"load": load_seconds, **prediction.seconds, "write": write_seconds},
        segmentation=segmentation,
        no_rtstruct_reason=reason,
    )
