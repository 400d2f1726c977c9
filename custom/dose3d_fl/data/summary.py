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

    @classmethod
    def from_manifest(cls, name: str, manifest: Manifest) -> SiteDataSummary:
        """Summarise a manifest; statistics are NaN when there is no case."""
        spacing = np.array([case.spacing for case in manifest.cases], dtype=float).reshape(-1, 3)
        volumes = np.array([case.roi_volume_ml for case in manifest.cases], dtype=float)
        in_plane = spacing[:, :2].ravel()
        flags = Counter(flag.check for case in manifest.cases for flag in case.flags)
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
        lines.append(
            f"{s.name:<12} {s.accepted:>8} {s.rejected:>8} {s.flagged:>7} {s.skipped_non_dicom:>9} "
            f"{_span(*s.in_plane_mm):>12} {_span(*s.slice_mm):>10}  {s.roi} {mean:.1f} ({low:.1f}-{high:.1f})"
        )
    lines.extend(f"{s.name}: {s.notes()}" for s in summaries if s.notes())
    return "\n".join(lines)
