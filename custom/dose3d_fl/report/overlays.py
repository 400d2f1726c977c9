"""Sample validation cases segmented by the run's global model, outlined over the CT with their label.

Only a simulator workspace holds site data (``WS/data/cache``); a result downloaded from a real federation
has none, and the section is left out. Dice is ``monai.metrics.compute_dice``; no hand-written metric.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.metrics import compute_dice

from dose3d_fl.clinical.inference import load_predictor, predict_organ_nifti
from dose3d_fl.clinical.model_file import load_segmentation_model
from dose3d_fl.clinical.overlay import Outline, save_orthogonal_views
from dose3d_fl.data.manifest import Manifest
from dose3d_fl.data.split import SPLIT_NAME

log = logging.getLogger(__name__)


@dataclass
class CaseOverlay:
    """One drawn case."""

    site: str
    case_id: str
    png: Path
    dice: float
    profile_source: str


def _sample_case(cache: Path) -> tuple[str, Path, Path] | None:
    manifest = Manifest.load(cache)
    split_path = cache / SPLIT_NAME
    wanted = json.loads(split_path.read_text())["val"] if split_path.is_file() else []
    for case in manifest.cases:
        if not wanted or case.id in wanted:
            return case.id, cache / case.image, cache / case.label
    return None


def case_dice(predicted: np.ndarray, label: np.ndarray) -> float:
    """Dice of a predicted mask against its label, 0.0 when the label is empty (never NaN).

    MONAI gives NaN for an empty label (``ignore_empty``); the report shows 0.0 there, as it always has,
    so a case without a label cannot pass for a good one.
    """
    as_batch = [torch.from_numpy(np.ascontiguousarray(m, dtype=bool))[None, None] for m in (predicted, label)]
    return float(torch.nan_to_num(compute_dice(*as_batch, ignore_empty=True), nan=0.0).item())


def draw_case_overlays(
    model_path: Path, profile: str | None, caches: list[Path], out_dir: Path, limit: int
) -> list[CaseOverlay]:
    """Segment the first validation case of up to ``limit`` site caches and draw label vs. prediction.

    Args:
        model_path: the global model file.
        profile: the job's profile name, for a model file that stores none.
        caches: site caches (``manifest.json`` and, if present, ``split.json``).
        out_dir: where ``overlay_<site>.png`` go.
        limit: most cases drawn.

    Returns:
        The drawn cases, with the Dice of each prediction against its label at the case's resolution.
    """
    if limit <= 0 or not caches:
        return []
    model = load_segmentation_model(model_path, profile, "named by the job's client configuration")
    predictor = load_predictor(model)
    overlays = []
    for cache in caches[:limit]:
        sample = _sample_case(cache)
        if sample is None:
            continue
        case_id, image_path, label_path = sample
        image = nib.load(image_path)
        label = np.asarray(nib.load(label_path).dataobj) > 0
        predicted = predict_organ_nifti(predictor, image_path).mask
        dice = case_dice(predicted, label)
        png = save_orthogonal_views(
            np.asarray(image.dataobj, dtype=np.float32),
            image.affine,
            [
                Outline(label, "#00d000", "label (site's RTSTRUCT)"),
                Outline(predicted, "#ff8000", "global model"),
            ],
            out_dir / f"overlay_{cache.name}.png",
            title=f"{cache.name} {case_id}: Dice {dice:.3f}",
        )
        overlays.append(CaseOverlay(cache.name, case_id, png, dice, model.profile_source))
        log.info("%s %s: Dice %.4f", cache.name, case_id, dice)
    return overlays
