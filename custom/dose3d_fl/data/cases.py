"""Training cases of a site cache: the case type, its dictionary keys and the split cases of each cache.

A case is the dictionary MONAI's dictionary transforms take: ``{"image": path, "label": path, "id": ...}``.
Segmentation (``seg/``) and the GAN (``gan/``) read the same cases, so the type lives here, with the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dose3d_fl.data.split import DEFAULT_VAL_FRACTION, load_or_create_split, split_cases

__all__ = ["IMAGE", "LABEL", "Case", "SiteCases", "case_id", "load_site_cases"]

IMAGE, LABEL = "image", "label"
Case = dict[str, str]


def case_id(case: Case) -> str:
    """A case's ``id`` entry, or its image file name without NIfTI suffixes."""
    return case.get("id") or Path(case[IMAGE]).name.removesuffix(".gz").removesuffix(".nii")


@dataclass
class SiteCases:
    """One site cache's training and validation cases (from its fixed ``split.json``)."""

    name: str
    cache_dir: Path
    train: list[Case]
    val: list[Case]


def load_site_cases(
    cache_dirs: Sequence[str | Path], seed: int = 0, val_fraction: float = DEFAULT_VAL_FRACTION
) -> list[SiteCases]:
    """The split cases of each cache (the split is drawn and stored on first use).

    Raises:
        ValueError: two caches with the same folder name (their metrics would be indistinguishable).
    """
    sites: list[SiteCases] = []
    for cache_dir in map(Path, cache_dirs):
        if any(site.name == cache_dir.name for site in sites):
            raise ValueError(
                f"two caches are named {cache_dir.name!r}; give each site cache its own folder name"
            )
        train, val = split_cases(cache_dir, load_or_create_split(cache_dir, val_fraction, seed))
        sites.append(SiteCases(cache_dir.name, cache_dir, train, val))
    return sites
