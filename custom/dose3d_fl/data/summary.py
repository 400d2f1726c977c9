"""Per-site data summary from a cache manifest: what a site can train on, at a glance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dose3d_fl.data.manifest import Manifest


@dataclass(frozen=True)
class SiteDataSummary:
    """Counts and statistics of one site cache."""

    name: str
    accepted: int
    rejected: int
    skipped_non_dicom: int
    in_plane_mm: tuple[float, float]
    slice_mm: tuple[float, float]
    roi: str
    roi_ml: tuple[float, float, float]

    @classmethod
    def from_manifest(cls, name: str, manifest: Manifest) -> SiteDataSummary:
        """Summarise a manifest; statistics are NaN when there is no case."""
        spacing = np.array([case.spacing for case in manifest.cases], dtype=float).reshape(-1, 3)
        volumes = np.array([case.roi_volume_ml for case in manifest.cases], dtype=float)
        in_plane = spacing[:, :2].ravel()
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
        )


def _range(values: np.ndarray) -> tuple[float, float]:
    return (float(values.min()), float(values.max())) if values.size else (float("nan"), float("nan"))


def _span(low: float, high: float) -> str:
    return f"{low:.2f}" if np.isclose(low, high) else f"{low:.2f}-{high:.2f}"


def summarise_caches(cache_dirs: list[Path]) -> list[SiteDataSummary]:
    """Load each cache's manifest and summarise it (the folder name names the site)."""
    return [SiteDataSummary.from_manifest(Path(d).name, Manifest.load(Path(d))) for d in cache_dirs]


def format_summary_table(summaries: list[SiteDataSummary]) -> str:
    """A plain-text table, one row per site."""
    header = (
        f"{'site':<12} {'accepted':>8} {'rejected':>8} {'non-DICOM':>9} {'in-plane mm':>12} {'slice mm':>10}  "
        "ROI volume mL (mean, min-max)"
    )
    lines = [header, "-" * len(header)]
    for s in summaries:
        mean, low, high = s.roi_ml
        lines.append(
            f"{s.name:<12} {s.accepted:>8} {s.rejected:>8} {s.skipped_non_dicom:>9} "
            f"{_span(*s.in_plane_mm):>12} {_span(*s.slice_mm):>10}  {s.roi} {mean:.1f} ({low:.1f}-{high:.1f})"
        )
    return "\n".join(lines)
