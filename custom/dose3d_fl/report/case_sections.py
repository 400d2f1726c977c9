"""The report's per-case sections: every validation case on the CT grid, each site's worst and median case.

The numbers come from :func:`dose3d_fl.report.overlays.review_cases`; this module only lays them out, and says
which grid each Dice on the page was computed on.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from dose3d_fl.report.case_metrics import (
    HD_PERCENTILE,
    ROLE_PHRASES,
    SURFACE_TOLERANCE_MM,
    CaseMetrics,
    worst_and_median,
)
from dose3d_fl.report.html import Section, figure, paragraph, table
from dose3d_fl.report.overlays import CASES_CSV, CaseReview
from dose3d_fl.report.run_metrics import CrossSiteDice

CASES_TITLE = "Every validation case on the CT grid"
OVERLAYS_TITLE = "Worst and median case per site"
CASE_HEADERS = [
    "site",
    "case",
    "organ",
    "CT voxel (mm)",
    "label (mL)",
    "predicted (mL)",
    "difference (mL)",
    "difference (%)",
    "Dice",
    f"HD{HD_PERCENTILE:.0f} (mm)",
    f"surface Dice ({SURFACE_TOLERANCE_MM:g} mm)",
    "role",
]
CASE_FORMATS = [None, None, None, None, "%.1f", "%.1f", "%+.1f", "%+.1f", "%.3f", "%.1f", "%.3f", None]


def _mm(values: Iterable[float]) -> str:
    return " x ".join(f"{v:g}" for v in values)


def grid_explanation(review: CaseReview) -> str:
    """The sentence that says why the rounds' Dice (training grid) and the table's (CT grid) differ."""
    ct_grids = sorted({_mm(row.spacing_mm) for row in review.rows})
    return (
        "Two grids. The Dice per round and the cross-site Dice above were computed by each site during "
        "training, on the training grid: the CT resampled to the profile's "
        f"{_mm(review.pixdim)} mm voxels and cropped to the body, the label resampled by nearest neighbour, "
        "the network's output taken as it is. "
        "This table is computed by the report on each CT's own grid "
        f"({', '.join(ct_grids) or 'none'} mm, as the CT was exported): the prediction mapped back to the CT "
        "grid as dose3d segment does it (probability interpolated back, threshold 0.5, largest connected "
        "component, holes filled slice by slice) against the label rasterised from the site's RTSTRUCT on "
        "that grid. They differ because the two grids put the organ's boundary on different voxels and only "
        "the table's prediction is post-processed; the CT-grid figures describe what a planning system "
        "imports from dose3d segment."
    )


def _roles(rows: list[CaseMetrics]) -> dict[tuple[str, str, str], str]:
    sites = sorted({row.site for row in rows})
    return {
        row.key: role for site in sites for role, row in worst_and_median([r for r in rows if r.site == site])
    }


def case_rows(rows: list[CaseMetrics]) -> list[list[object]]:
    """Table rows, by site and then worst Dice first."""
    roles = _roles(rows)
    table_rows = []
    for row in sorted(rows, key=lambda r: (r.site, r.metrics.dice, r.case_id, r.organ)):
        m = row.metrics
        percent = 100.0 * m.volume_difference_ml / m.label_ml if m.label_ml > 0 else None
        table_rows.append(
            [
                row.site,
                row.case_id,
                row.organ,
                _mm(row.spacing_mm),
                m.label_ml,
                m.predicted_ml,
                m.volume_difference_ml,
                percent,
                m.dice,
                m.hd95_mm,
                m.surface_dice,
                roles.get(row.key, ""),
            ]
        )
    return table_rows


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def site_rows(rows: list[CaseMetrics], cross: CrossSiteDice | None) -> list[list[object]]:
    """Per site: cases, the training-grid Dice of cross-site evaluation, and the CT-grid summary."""
    final = cross.final_global() if cross is not None else {}
    result = []
    for site in sorted({row.site for row in rows}):
        mine = [row.metrics for row in rows if row.site == site]
        result.append(
            [
                site,
                len(mine),
                final.get(site),
                statistics.fmean(m.dice for m in mine),
                min(m.dice for m in mine),
                _median([m.hd95_mm for m in mine]),
                _median([m.surface_dice for m in mine]),
            ]
        )
    return result


def cases_section(review: CaseReview, cross: CrossSiteDice | None) -> Section:
    """The per-site summary and the per-case table, with the grid explanation and the skipped cases."""
    parts = [paragraph(grid_explanation(review))]
    if review.rows:
        dice = [row.metrics.dice for row in review.rows]
        parts += [
            paragraph(
                f"Over all {len(dice)} validation case(s) on the CT grid: mean Dice "
                f"{statistics.fmean(dice):.3f}, lowest {min(dice):.3f}."
            ),
            table(
                [
                    "site",
                    "val cases",
                    "Dice, training grid (cross-site, final global)",
                    "Dice, CT grid (mean)",
                    "Dice, CT grid (lowest)",
                    f"HD{HD_PERCENTILE:.0f} (mm, median)",
                    f"surface Dice {SURFACE_TOLERANCE_MM:g} mm (median)",
                ],
                site_rows(review.rows, cross),
                [None, None, "%.3f", "%.3f", "%.3f", "%.1f", "%.3f"],
                "compact",
            ),
            table(CASE_HEADERS, case_rows(review.rows), CASE_FORMATS, "compact"),
        ]
    else:
        parts.append(paragraph("No validation case could be evaluated."))
    parts += [paragraph(f"Not evaluated: {reason}", "note") for reason in review.skipped]
    parts.append(
        paragraph(
            "Metrics: monai.metrics.compute_dice, compute_hausdorff_distance (95th percentile) and "
            f"compute_surface_dice (tolerance {SURFACE_TOLERANCE_MM:g} mm), in mm through each CT's voxel "
            "spacing. Difference: predicted minus label volume. A dash: the distance is undefined (an empty "
            "prediction or label). Role: the site's worst case by Dice and its median case, drawn below. "
            f"Prediction: {review.profile}; "
            + ("each site's own model (FedBN or SiloBN). " if review.site_models else "the global model. ")
            + f"{len({(row.site, row.case_id) for row in review.rows})} case(s), {len(review.rows)} organ row(s) "
            f"in {review.seconds:.1f} s. The table "
            f"as CSV: {CASES_CSV} beside this page.",
            "note",
        )
    )
    return Section(CASES_TITLE, "\n".join(parts))


def overlays_section(review: CaseReview) -> Section:
    """Each site's worst and median validation case, label and prediction outlined over the CT."""
    if not review.overlays:
        return Section(OVERLAYS_TITLE, paragraph("No validation case was evaluated, so none is drawn."))
    parts = []
    for overlay in review.overlays:
        row, m = overlay.row, overlay.row.metrics
        hd95 = f"{m.hd95_mm:.1f} mm" if m.hd95_mm is not None else "undefined"
        parts.append(
            figure(
                overlay.png.name,
                f"{row.site}, {ROLE_PHRASES[overlay.role]} ({row.case_id}, {row.organ}): Dice "
                f"{m.dice:.3f}, HD95 {hd95}, label {m.label_ml:.1f} mL, predicted {m.predicted_ml:.1f} mL.",
                f"{row.site} {overlay.role} case",
            )
        )
    parts.append(
        paragraph(
            "Green: the label from the site's RTSTRUCT; orange: "
            + (
                "the site's own model (the global weights with the site's BatchNorm: "
                + ", ".join(f"{site} {name}" for site, name in sorted(review.site_models.items()))
                + ")"
                if review.site_models
                else "the global model"
            )
            + ", both on the CT's own grid. "
            "Letters at the edges of each view are the patient's directions (R/L right/left, A/P "
            "anterior/posterior, S/I superior/inferior); each view's title gives its slice position in DICOM "
            "patient coordinates (mm), the planes passing through the centre of the label. Soft-tissue "
            "window (level 40 HU, width 400 HU).",
            "note",
        )
    )
    return Section(OVERLAYS_TITLE, "\n".join(parts))
