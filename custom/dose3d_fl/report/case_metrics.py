"""Per-case metrics of the global model on a site's validation cases, on each CT's own grid.

The prediction is made as ``dose3d segment`` makes it (``clinical.inference``: the profile's preprocessing,
the network, MONAI's ``Invertd`` back to the CT grid, threshold, largest component, holes filled) and compared
with the label rasterised from the site's RTSTRUCT on the same grid. Every figure is a MONAI metric:
``compute_dice``, ``compute_hausdorff_distance`` (95th percentile) and ``compute_surface_dice`` (2 mm
tolerance), the last two in millimetres through the grid's voxel spacing.

Rows are keyed by ``(site, case, organ)``: one row per organ of the model that the case delineates.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

from dose3d_fl.clinical.inference import predict_organ_nifti
from dose3d_fl.data.discovery import one_line
from dose3d_fl.data.manifest import CaseEntry, Manifest
from dose3d_fl.data.split import SPLIT_NAME
from dose3d_fl.seg.trainer import SegTrainer

log = logging.getLogger(__name__)

HD_PERCENTILE = 95.0
SURFACE_TOLERANCE_MM = 2.0
# How the page names each role of worst_and_median.
ROLE_PHRASES = {
    "worst": "worst validation case by Dice",
    "median": "median validation case by Dice",
    "only case": "only validation case",
}


@dataclass(frozen=True)
class MaskComparison:
    """A predicted organ against its label on one grid.

    Attributes:
        label_ml: label volume.
        predicted_ml: predicted volume.
        dice: Dice (0.0 when the label is empty, never NaN).
        hd95_mm: 95th percentile Hausdorff distance; ``None`` when either mask is empty.
        surface_dice: surface Dice at ``SURFACE_TOLERANCE_MM``; ``None`` when either mask is empty.
    """

    label_ml: float
    predicted_ml: float
    dice: float
    hd95_mm: float | None
    surface_dice: float | None

    @property
    def volume_difference_ml(self) -> float:
        """Predicted minus label volume."""
        return self.predicted_ml - self.label_ml


@dataclass(frozen=True)
class CaseMetrics:
    """One row of the per-case table.

    Attributes:
        site: the site whose validation case this is.
        case_id: the cache's pseudonymous case id.
        organ: the organ's TG-263 name (the task's name for it).
        spacing_mm: voxel size of the CT grid the metrics were computed on.
        metrics: the comparison on that grid.
    """

    site: str
    case_id: str
    organ: str
    spacing_mm: tuple[float, float, float]
    metrics: MaskComparison

    @property
    def key(self) -> tuple[str, str, str]:
        """``(site, case, organ)``."""
        return self.site, self.case_id, self.organ


@dataclass
class SiteCases:
    """What the report learned from one site's validation cases.

    Attributes:
        cache: the site's cache folder (its name is the site's).
        rows: one per evaluated case and organ.
        cases: case id -> its manifest entry (image and label paths, relative to ``cache``).
        masks: (case id, organ) -> the predicted mask, bit-packed (``np.packbits``) to keep a site's cases in
            memory.
        skipped: one-line reasons for validation cases (or the whole site) not evaluated.
        organs: the cache's organs in label order (value ``i + 1`` is ``organs[i]``).
    """

    cache: Path
    rows: list[CaseMetrics] = field(default_factory=list)
    cases: dict[str, CaseEntry] = field(default_factory=dict)
    masks: dict[tuple[str, str], tuple[np.ndarray, tuple[int, ...]]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    organs: list[str] = field(default_factory=list)

    @property
    def site(self) -> str:
        """The site's name."""
        return self.cache.name

    def label_value(self, organ: str) -> int:
        """The value of ``organ`` in this cache's label files."""
        return self.organs.index(organ) + 1

    def predicted_mask(self, case_id: str, organ: str) -> np.ndarray:
        """The predicted mask of one organ of a case, unpacked."""
        packed, shape = self.masks[(case_id, organ)]
        return np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape).astype(bool)


def _batch(mask: np.ndarray) -> torch.Tensor:
    """A boolean mask as MONAI's ``(batch, channel, *spatial)`` one-class input."""
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))[None, None]


def _finite(value: torch.Tensor) -> float | None:
    number = float(value.item())
    return number if math.isfinite(number) else None


def compare_masks(
    predicted: np.ndarray, label: np.ndarray, spacing_mm: tuple[float, float, float]
) -> MaskComparison:
    """Volumes, Dice, HD95 and surface Dice of a predicted mask against its label on one grid.

    Args:
        predicted: boolean mask.
        label: boolean mask of the same shape.
        spacing_mm: voxel size along the arrays' axes.

    Returns:
        The comparison; the distances are ``None`` when either mask is empty (MONAI gives inf or NaN).
    """
    if predicted.shape != label.shape:
        raise ValueError(f"prediction {predicted.shape} and label {label.shape} are not on one grid")
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    pred, truth = _batch(predicted), _batch(label)
    # MONAI gives NaN for an empty label (ignore_empty); 0.0 here, so a case without a label cannot pass
    # for a good one.
    dice = float(torch.nan_to_num(compute_dice(pred, truth, ignore_empty=True), nan=0.0).item())
    hd95 = surface = None
    if predicted.any() and label.any():
        spacing = [float(s) for s in spacing_mm]
        hd95 = _finite(
            compute_hausdorff_distance(
                pred, truth, include_background=True, percentile=HD_PERCENTILE, spacing=spacing
            )
        )
        surface = _finite(
            compute_surface_dice(
                pred, truth, [SURFACE_TOLERANCE_MM], include_background=True, spacing=spacing
            )
        )
    return MaskComparison(
        label_ml=float(label.sum()) * voxel_ml,
        predicted_ml=float(predicted.sum()) * voxel_ml,
        dice=dice,
        hd95_mm=hd95,
        surface_dice=surface,
    )


def validation_cases(cache: Path) -> tuple[list[CaseEntry], list[str]]:
    """The cache's validation cases (``split.json``), and one-line reasons for those that cannot be used.

    Only read: the report never writes into a site cache.
    """
    _, cases, reasons = _validation_split(cache)
    return cases, reasons


def _validation_split(cache: Path) -> tuple[Manifest | None, list[CaseEntry], list[str]]:
    """``validation_cases`` with the manifest it read (None where it could not read one)."""
    split_path = cache / SPLIT_NAME
    if not split_path.is_file():
        return (
            None,
            [],
            [f"{cache.name}: no {SPLIT_NAME}, so its validation cases are unknown; not evaluated"],
        )
    try:
        manifest = Manifest.load(cache)
        wanted = json.loads(split_path.read_text())["val"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, [], [f"{cache.name}: cannot read its manifest or {SPLIT_NAME} ({one_line(err, 160)})"]
    by_id = {case.id: case for case in manifest.cases}
    missing = [f"{cache.name} {c}: in {SPLIT_NAME} but not in the manifest" for c in wanted if c not in by_id]
    return manifest, [by_id[c] for c in wanted if c in by_id], missing


def evaluate_site(predictor: SegTrainer, cache: Path) -> SiteCases:
    """Segment every validation case of a site cache and compare each organ with its label on the CT grid.

    One row per case and organ of the model that the case delineates (the cache's ``organs`` and each case's
    ``labelled``, ``data/manifest.py``): an organ the site did not draw for a patient is not scored. A case
    whose files cannot be read or segmented is skipped with a one-line reason; the others go on.
    """
    result = SiteCases(cache=cache)
    manifest, cases, result.skipped = _validation_split(cache)
    if manifest is None or not cases:
        return result
    result.organs = list(manifest.organs)
    model_organs = list(predictor.profile.organs)
    if not set(model_organs) & set(result.organs):
        result.skipped.append(
            f"{cache.name}: its cache labels {', '.join(result.organs)}, none of the model's organs "
            f"({', '.join(model_organs)}); not evaluated"
        )
        return result
    for case in cases:
        try:
            label_image = nib.load(cache / case.label)
            label_values = np.asarray(label_image.dataobj)
            # float32 in the header: 2.9 mm reads 2.9000000953674316
            spacing = tuple(round(float(z), 6) for z in label_image.header.get_zooms()[:3])
            masks = predict_organ_nifti(predictor, cache / case.image).masks
            delineated = set(manifest.case_organs(case))
            scored = []
            for index, organ in enumerate(model_organs):
                if organ not in delineated:  # a case delineates only organs of its cache
                    continue
                predicted = masks[index]
                metrics = compare_masks(predicted, label_values == result.label_value(organ), spacing)
                scored.append((organ, predicted, metrics))
        except Exception as err:  # nibabel, gzip, MONAI and torch errors alike: this case only
            result.skipped.append(f"{cache.name} {case.id}: {one_line(err, 200)}")
            log.warning("%s", result.skipped[-1])
            continue
        for organ, predicted, metrics in scored:
            result.rows.append(CaseMetrics(cache.name, case.id, organ, spacing, metrics))
            result.masks[(case.id, organ)] = (np.packbits(predicted), predicted.shape)
            log.info(
                "%s %s %s: Dice %.4f, HD95 %s mm", cache.name, case.id, organ, metrics.dice, metrics.hd95_mm
            )
        result.cases[case.id] = case
    return result


CSV_COLUMNS = (
    "site",
    "case",
    "organ",
    "spacing_mm",
    "label_ml",
    "predicted_ml",
    "difference_ml",
    "dice",
    "hd95_mm",
    f"surface_dice_{SURFACE_TOLERANCE_MM:g}mm",
)


def write_cases_csv(rows: list[CaseMetrics], path: Path) -> Path:
    """The per-case table as CSV (one row per site, case and organ; empty cells for undefined distances)."""
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            m = row.metrics
            writer.writerow(
                [
                    *row.key,
                    " x ".join(f"{s:g}" for s in row.spacing_mm),
                    *(f"{v:.2f}" for v in (m.label_ml, m.predicted_ml, m.volume_difference_ml)),
                    f"{m.dice:.4f}",
                    "" if m.hd95_mm is None else f"{m.hd95_mm:.2f}",
                    "" if m.surface_dice is None else f"{m.surface_dice:.4f}",
                ]
            )
    return path


def worst_and_median(rows: list[CaseMetrics]) -> list[tuple[str, CaseMetrics]]:
    """The site's worst case by Dice and its median case, labelled; one entry for a site with one case.

    The median case is the one at position ``n // 2`` of the ``n`` cases sorted by Dice (of two, the
    better), so it is always a real case, not an average. Ties in Dice are broken by case id.
    """
    if not rows:
        return []
    ranked = sorted(rows, key=lambda row: (row.metrics.dice, row.case_id, row.organ))
    if len(ranked) == 1:
        return [("only case", ranked[0])]
    return [("worst", ranked[0]), ("median", ranked[len(ranked) // 2])]
