"""``dose3d report``: one HTML page with PNGs that shows how a federated run did, from its own files."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from dose3d_fl.clinical.model_file import ModelFileError, SegmentationModel, load_segmentation_model
from dose3d_fl.report.case_sections import CASES_TITLE, cases_section, overlays_section
from dose3d_fl.report.comparison import ComparedRun, read_training_run
from dose3d_fl.report.extras import OPTIONAL_SECTIONS
from dose3d_fl.report.html import Section, details, figure, paragraph, render_page, table
from dose3d_fl.report.locate import RunFiles, locate_run
from dose3d_fl.report.overlays import review_cases
from dose3d_fl.report.plots import plot_cross_site, plot_dice_per_round
from dose3d_fl.report.provenance import provenance_section, read_provenance
from dose3d_fl.report.run_metrics import (
    CrossSiteDice,
    RoundDice,
    model_label,
    read_cross_site,
    read_round_dice,
)

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"


@dataclass(frozen=True)
class ReportConfig:
    """What ``dose3d report`` is asked to do.

    Args:
        run: simulator workspace, server job folder or downloaded job result.
        out: output folder (default ``RUN/report``).
        compare: name -> ``dose3d train`` output folder, shown beside the federated model (folders
            ``RUN/<name>/metrics.json`` are added by themselves).
        cases: segment every validation case of the workspace's site caches with the global model, for the
            per-case table (CT grid).
        overlays: draw each site's worst and median case (needs ``cases``).
    """

    run: Path
    out: Path | None = None
    compare: dict[str, Path] = field(default_factory=dict)
    cases: bool = True
    overlays: bool = True


def build_report(config: ReportConfig) -> Path:
    """Write ``report.html`` and its PNGs; return the HTML path.

    Raises:
        RunNotFoundError: no single run under ``config.run``.
        FileNotFoundError: a ``--compare`` folder without ``metrics.json``.
    """
    files = locate_run(config.run)
    out = Path(config.out) if config.out is not None else files.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    rounds = read_round_dice(files.round_metrics) if files.round_metrics else None
    cross = read_cross_site(files.cross_site) if files.cross_site else None
    summary = json.loads(files.summary.read_text()) if files.summary else None
    if summary is not None and not _summary_matches(summary, cross):
        log.warning(
            "%s does not match %s (another run's summary?); not used", files.summary, files.cross_site
        )
        summary = None

    model, model_problem = _inference_model(files)
    sections = [
        provenance_section(read_provenance(files.global_model), model.profile_source if model else None),
        _dice_per_round_section(files, rounds, cross, summary, out),
    ]
    if cross is not None and cross.dice:
        sections.append(_cross_site_section(files, cross, out))
    compared = [
        read_training_run(name, folder) for name, folder in {**files.baselines, **config.compare}.items()
    ]
    if cross is not None and cross.final_global() and compared:
        sections.append(_comparison_section(files, cross, compared))
    sections += _case_sections(files, config, model, model_problem, cross, out)
    sections += [s for make in OPTIONAL_SECTIONS if (s := make(files, out)) is not None]

    subtitle = f"Run: {files.root.resolve()} (server job folder {files.server_dir.resolve()})"
    path = out / REPORT_NAME
    path.write_text(render_page("dose3d-fl federated run report", subtitle, sections))
    log.info("wrote %s", path)
    return path


def _summary_matches(summary: dict, cross: CrossSiteDice | None) -> bool:
    """Whether ``summary.json`` was written from these cross-site results (a later run may have replaced them)."""
    return cross is None or summary.get("cross_site") == cross.dice


def _dice_per_round_section(
    files: RunFiles, rounds: RoundDice | None, cross: CrossSiteDice | None, summary: dict | None, out: Path
) -> Section:
    if rounds is None or not rounds.rounds:
        return Section("Global validation Dice per round", paragraph("The run wrote no round metrics."))
    final = cross.final_global() if cross is not None else {}
    if summary is not None and summary.get("round_val_dice"):
        values = summary["round_val_dice"]
        union = (list(range(1, len(values) + 1)), values, "global (all sites' validation cases)")
        union_source = f"{files.summary}"
    else:
        pairs = [(r, v) for r, v in zip(rounds.rounds, rounds.aggregated, strict=True) if v is not None]
        union = ([r for r, _ in pairs], [v for _, v in pairs], "global (NVFlare aggregate)")
        union_source = f"{files.round_metrics} (aggregated_metrics, weighted by training steps)"
    plot_dice_per_round(rounds, out / "dice_per_round.png", final, union)
    last = rounds.rounds[-1] + 1
    headers = ["rounds aggregated", *sorted(rounds.sites), union[2]]
    union_at = dict(zip(union[0], union[1], strict=True))
    rows = [
        [r, *(rounds.sites[s][i] for s in sorted(rounds.sites)), union_at.get(r)]
        for i, r in enumerate(rounds.rounds)
    ]
    if final:
        rows.append([last, *(final.get(s) for s in sorted(rounds.sites)), union_at.get(last)])
    overall = (
        [
            paragraph(
                f"Final global model, mean over all {sum(cross.cases.get(s, 1) for s in final)} validation "
                f"cases (sites weighted by their cases, from cross-site evaluation): "
                f"{cross.case_weighted(final):.4f}."
            )
        ]
        if cross is not None and final
        else []
    )
    body = [
        *overall,
        figure(
            "dice_per_round.png",
            "Dice of the global model on each site's validation cases after each number of FedAvg rounds "
            "(round 0: the initial model).",
            "Dice per round",
        ),
        details("Dice per round, as a table", table(headers, rows)),
        paragraph(
            f"Per-site values: {files.round_metrics} (what each site reported for the global model it "
            f"received); after the last round: {files.cross_site} (cross-site evaluation of the final "
            f"global model). Global line: {union_source}. Dice at the training profile's voxel size.",
            "note",
        ),
    ]
    return Section("Global validation Dice per round", "\n".join(body))


def _cross_site_section(files: RunFiles, cross: CrossSiteDice, out: Path) -> Section:
    low, high = plot_cross_site(cross, out / "cross_site.png")
    rows = [
        [site, cross.cases.get(site), *(cross.dice[site].get(m) for m in cross.models)]
        for site in cross.sites
    ]
    body = [
        figure(
            "cross_site.png",
            "Cross-site evaluation: each row is a site's validation data, each column a model. The colours "
            f"span the values' own range, {low:.3f} to {high:.3f}, not 0 to 1.",
            "Cross-site Dice matrix",
        ),
        table(["data site", "val cases", *(model_label(m) for m in cross.models)], rows),
        paragraph(f"From {files.cross_site}.", "note"),
    ]
    return Section("Cross-site Dice", "\n".join(body))


def _comparison_section(files: RunFiles, cross: CrossSiteDice, compared: list[ComparedRun]) -> Section:
    final = cross.final_global()
    federated = ComparedRun(
        name="federated",
        kind="federated (FedAvg, final global model)",
        val_dice=cross.case_weighted(final),
        site_dice=dict(final),
        detail=f"{len(final)} sites",
        source=files.cross_site,
    )
    runs = [federated, *compared]
    sites = sorted({site for run in runs for site in run.site_dice})
    rows = [[r.name, r.kind, r.val_dice, *(r.site_dice.get(s) for s in sites), r.detail] for r in runs]
    sources = "; ".join(f"{r.name}: {r.source}" for r in runs)
    body = [
        table(["run", "kind", "val Dice (all cases)", *sites, "training"], rows),
        paragraph(
            "Validation Dice on each site's fixed validation split (split.json), at the profile's voxel size. "
            f"The federated row weights sites by their validation cases. Sources: {sources}.",
            "note",
        ),
    ]
    return Section("Federated vs. local vs. central", "\n".join(body))


def _inference_model(files: RunFiles) -> tuple[SegmentationModel | None, str | None]:
    """The global model with the profile to segment with, or the one-line reason it cannot be used."""
    if files.global_model is None:
        return None, "the run holds no saved global model"
    try:
        # The profile the file stores (the job's organs included); the job's profile name only for a file
        # saved before the server recorded it.
        return (
            load_segmentation_model(
                files.global_model,
                files.profile_name,
                "named by the job's client configuration",
                fallback=True,
            ),
            None,
        )
    except ModelFileError as err:
        log.warning("%s", err)
        return None, str(err)


def _case_sections(
    files: RunFiles,
    config: ReportConfig,
    model: SegmentationModel | None,
    problem: str | None,
    cross: CrossSiteDice | None,
    out: Path,
) -> list[Section]:
    """The per-case table and the worst/median pictures, or one section saying why there are none."""
    if not config.cases:
        return [Section(CASES_TITLE, paragraph("Not computed: the report was asked not to (--no-cases)."))]
    if not files.caches:
        return [
            Section(
                CASES_TITLE,
                paragraph(
                    f"{files.root} holds no site data (a simulator workspace keeps it under "
                    "data/cache/<site>; a real federation's cases never leave their sites), so no case is "
                    "evaluated here."
                ),
            )
        ]
    if model is None:
        return [Section(CASES_TITLE, paragraph(f"Not evaluated: {problem}."))]
    review = review_cases(model, files.caches, out, draw=config.overlays, site_models=files.site_models)
    sections = [cases_section(review, cross)]
    if config.overlays:
        sections.append(overlays_section(review))
    return sections
