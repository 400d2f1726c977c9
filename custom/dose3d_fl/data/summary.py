"""Per-site data summary from a cache manifest: what a site can train on, at a glance."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dose3d_fl.data.manifest import Manifest


@dataclass(frozen=True)
class SiteDataSummary:
    """Counts and statistics of one site cache.

    Attributes:
        name: the site (cache folder name).
        accepted: usable cases.
        rejected: things in the input that are not cases.
        skipped_non_dicom: files that are not DICOM.
        in_plane_mm: smallest and largest in-plane voxel size.
        slice_mm: smallest and largest slice spacing.
        roi: the ROI asked for.
        roi_ml: mean, smallest and largest ROI volume.
        flagged: cases with a label quality flag (still usable).
        flags: flags by check.
        ignored: DICOM objects without an image volume, by modality.
        duplicate_files: files repeating an instance of another file.
        read_without_preamble: DICOM files without the preamble, read all the same.
        organs: organ -> (cases that delineate it, their mean volume in mL), in the cache's label order.
        unmapped_rois: local ROI names that nothing maps to a TG-263 name.
    """

    name: str
    accepted: int
    rejected: int
    skipped_non_dicom: int
    in_plane_mm: tuple[float, float]
    slice_mm: tuple[float, float]
    roi: str
    roi_ml: tuple[float, float, float]
    flagged: int = 0
    flags: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)
    duplicate_files: int = 0
    read_without_preamble: int = 0
    organs: dict[str, tuple[int, float]] = field(default_factory=dict)
    unmapped_rois: tuple[str, ...] = ()

    @classmethod
    def from_manifest(cls, name: str, manifest: Manifest) -> SiteDataSummary:
        """Summarise a manifest; statistics are NaN when there is no case."""
        spacing = np.array([case.spacing for case in manifest.cases], dtype=float).reshape(-1, 3)
        volumes = np.array([case.roi_volume_ml for case in manifest.cases], dtype=float)
        in_plane = spacing[:, :2].ravel()
        flags = Counter(flag.check for case in manifest.cases for flag in case.flags)
        organs: dict[str, tuple[int, float]] = {}
        for organ in manifest.organs:
            cases = [case for case in manifest.cases if organ in manifest.case_organs(case)]
            sizes = [case.organ_volumes_ml.get(organ, case.roi_volume_ml) for case in cases]
            organs[organ] = (len(cases), float(np.mean(sizes)) if sizes else float("nan"))
        return cls(
            name=name,
            accepted=len(manifest.cases),
            rejected=len(manifest.rejected),
            skipped_non_dicom=manifest.skipped_non_dicom,
            in_plane_mm=_range(in_plane),
            slice_mm=_range(spacing[:, 2]),
            roi=manifest.roi,
            roi_ml=(
                (float(volumes.mean()), float(volumes.min()), float(volumes.max()))
                if volumes.size
                else (float("nan"),) * 3
            ),
            flagged=len(manifest.flagged_cases),
            flags=dict(sorted(flags.items())),
            ignored=dict(manifest.ignored_dicom_objects),
            duplicate_files=manifest.duplicate_files,
            read_without_preamble=manifest.read_without_preamble,
            organs=organs,
            unmapped_rois=tuple(name.roi for name in manifest.unmapped_rois),
        )

    def notes(self) -> str:
        """What else the input held, in one line ("" when nothing): ignored objects, duplicates, flags."""
        parts = []
        if self.ignored:
            listed = ", ".join(f"{kind} {count}" for kind, count in self.ignored.items())
            parts.append(f"ignored DICOM objects without an image volume: {listed}")
        if self.duplicate_files:
            parts.append(f"{self.duplicate_files} duplicate file(s) not used")
        if self.read_without_preamble:
            parts.append(f"{self.read_without_preamble} file(s) read without DICOM preamble")
        if self.flags:
            parts.append(
                "label flags: " + ", ".join(f"{check} {count}" for check, count in self.flags.items())
            )
        if self.unmapped_rois:
            parts.append(
                f"unmapped ROI names (unlabelled, see the manifest): {', '.join(self.unmapped_rois)}"
            )
        return "; ".join(parts)


def _range(values: np.ndarray) -> tuple[float, float]:
    return (float(values.min()), float(values.max())) if values.size else (float("nan"), float("nan"))


def _span(low: float, high: float) -> str:
    return f"{low:.2f}" if np.isclose(low, high) else f"{low:.2f}-{high:.2f}"


def summarise_caches(cache_dirs: list[Path]) -> list[SiteDataSummary]:
    """Load each cache's manifest and summarise it (the folder name names the site)."""
    return [SiteDataSummary.from_manifest(Path(d).name, Manifest.load(Path(d))) for d in cache_dirs]


def format_summary_table(summaries: list[SiteDataSummary]) -> str:
    """A plain-text table, one row per site, then one line per site whose input held more to say."""
    header = (
        f"{'site':<12} {'accepted':>8} {'rejected':>8} {'flagged':>7} {'non-DICOM':>9} {'in-plane mm':>12} "
        f"{'slice mm':>10}  ROI volume mL (mean, min-max)"
    )
    lines = [header, "-" * len(header)]
    for s in summaries:
        mean, low, high = s.roi_ml
        volume = (
            f"{s.roi} {mean:.1f} ({low:.1f}-{high:.1f})"
            if len(s.organs) <= 1
            else f"{len(s.organs)} organs: below"
        )
        lines.append(
            f"{s.name:<12} {s.accepted:>8} {s.rejected:>8} {s.flagged:>7} {s.skipped_non_dicom:>9} "
            f"{_span(*s.in_plane_mm):>12} {_span(*s.slice_mm):>10}  {volume}"
        )
    lines.extend(f"{s.name}: {s.notes()}" for s in summaries if s.notes())
    lines.extend(format_organ_table(summaries))
    return "\n".join(lines)


def format_organ_table(summaries: list[SiteDataSummary]) -> list[str]:
    """For multi-organ caches: per organ and site, the cases that delineate it and its mean volume.

    An organ a case does not delineate is unlabelled for it (not background); empty when every cache holds
    one organ.
    """
    if all(len(s.organs) <= 1 for s in summaries):
        return []
    organs = list(dict.fromkeys(organ for s in summaries for organ in s.organs))
    header = f"{'organ':<12}" + "".join(f" {s.name + ' cases, mL':>22}" for s in summaries)
    lines = ["", "organs delineated (cases of the site) and their mean volume", header, "-" * len(header)]
    for organ in organs:
        cells = []
        for s in summaries:
            count, mean = s.organs.get(organ, (0, float("nan")))
            cells.append(f" {f'{count}/{s.accepted}, {mean:.0f}' if count else f'0/{s.accepted}':>22}")
        lines.append(f"{organ:<12}" + "".join(cells))
    return lines
