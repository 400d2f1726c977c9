"""Every validation case of every site segmented by the run's model; the worst and the median drawn.

The model is the global model, or, after a FedBN or SiloBN job, each site's own model (the global weights with
the site's BatchNorm; ``WS/site_models/<site>.pt``, written by ``dose3d fl simulate``), the model that site uses.

Only a simulator workspace holds site data (``WS/data/cache``); a result downloaded from a real federation
has none, and the report says so instead. Metrics: :mod:`dose3d_fl.report.case_metrics`. The views
(``clinical.overlay``) carry patient directions and slice positions in mm.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from dose3d_fl.clinical.inference import load_predictor
from dose3d_fl.clinical.model_file import ModelFileError, SegmentationModel, load_segmentation_model
from dose3d_fl.clinical.overlay import Outline, save_orthogonal_views
from dose3d_fl.report.case_metrics import (
    ROLE_PHRASES,
    CaseMetrics,
    SiteCases,
    evaluate_site,
    worst_and_median,
    write_cases_csv,
)

CASES_CSV = "cases.csv"

log = logging.getLogger(__name__)

LABEL_COLOUR = "#00d000"
PREDICTION_COLOUR = "#ff8000"


@dataclass
class CaseOverlay:
    """One drawn case.

    Attributes:
        role: ``"worst"``, ``"median"`` or ``"only case"`` (by Dice within its site).
        row: the case's metrics.
        png: the picture.
    """

    role: str
    row: CaseMetrics
    png: Path


@dataclass
class CaseReview:
    """The run's model on every validation case of the cached sites.

    Attributes:
        rows: one per (site, case, organ), sites in order.
        overlays: worst and median case of each site.
        skipped: one-line reasons for cases or sites not evaluated.
        profile: the profile the predictions used, and where it came from.
        pixdim: the profile's voxel size (the training grid).
        seconds: wall time of the whole review.
        site_models: the sites segmented by their own model (FedBN, SiloBN): site -> model file name.
    """

    rows: list[CaseMetrics] = field(default_factory=list)
    overlays: list[CaseOverlay] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    profile: str = ""
    pixdim: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0
    site_models: dict[str, str] = field(default_factory=dict)


def draw_case(
    site: SiteCases, row: CaseMetrics, role: str, out_dir: Path, model: str = "global model"
) -> CaseOverlay:
    """Outline the label and the prediction of one evaluated case of ``site`` over its CT (``model``: what
    predicted it, for the legend)."""
    case = site.cases[row.case_id]
    image = nib.load(site.cache / case.image)
    label = np.asarray(nib.load(site.cache / case.label).dataobj) == site.label_value(row.organ)
    m = row.metrics
    hd95 = f"{m.hd95_mm:.1f} mm" if m.hd95_mm is not None else "n/a"
    png = save_orthogonal_views(
        np.asarray(image.dataobj, dtype=np.float32),
        image.affine,
        [
            Outline(label, LABEL_COLOUR, f"label (site's RTSTRUCT), {m.label_ml:.1f} mL"),
            Outline(
                site.predicted_mask(row.case_id, row.organ),
                PREDICTION_COLOUR,
                f"{model}, {m.predicted_ml:.1f} mL",
            ),
        ],
        out_dir / f"case_{row.site}_{role.replace(' ', '_')}.png",
        title=f"{row.site} {row.case_id} ({ROLE_PHRASES[role]}): {row.organ}, Dice {m.dice:.3f}, HD95 {hd95}",
    )
    return CaseOverlay(role, row, png)


def review_cases(
    model: SegmentationModel,
    caches: list[Path],
    out_dir: Path,
    draw: bool = True,
    site_models: Mapping[str, Path] | None = None,
) -> CaseReview:
    """Segment every validation case of every cache; draw each site's worst and median case.

    Args:
        model: the global model with its profile.
        caches: site caches (``manifest.json`` and ``split.json``).
        out_dir: where ``case_<site>_<role>.png`` and ``cases.csv`` (the table) go.
        draw: draw the overlays (the table is made either way).
        site_models: a site's own model file by site (cache folder name), used for that site's cases instead
            of the global model (FedBN, SiloBN). One that cannot be read is named in ``skipped``, and that
            site's cases are segmented by the global model.
    """
    start = time.perf_counter()
    global_predictor = load_predictor(model)
    review = CaseReview(profile=model.profile_source, pixdim=tuple(model.profile.pixdim))
    for cache in caches:
        predictor, used = global_predictor, "global model"
        if site_models and cache.name in site_models:
            path = Path(site_models[cache.name])
            try:
                predictor, used = load_predictor(load_segmentation_model(path)), "site's own model"
                review.site_models[cache.name] = path.name
            except ModelFileError as err:
                review.skipped.append(f"{cache.name}'s own model: {err}; its cases used the global model")
                log.warning("%s", review.skipped[-1])
        site = evaluate_site(predictor, cache)
        review.rows += site.rows
        review.skipped += site.skipped
        if draw:
            review.overlays += [
                draw_case(site, row, role, out_dir, used) for role, row in worst_and_median(site.rows)
            ]
    write_cases_csv(review.rows, out_dir / CASES_CSV)
    review.seconds = time.perf_counter() - start
    log.info("%d validation case(s) of %d site(s) in %.1f s", len(review.rows), len(caches), review.seconds)
    return review
