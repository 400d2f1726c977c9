"""Training cases of a site cache: the case type, its dictionary keys and the split cases of each cache.

A case is the dictionary MONAI's dictionary transforms take: ``{"image": path, "label": path, "id": ...}``.
Segmentation (``seg/``) and the GAN (``gan/``) read the same cases, so the type lives here, with the cache.

**Organs.** A cache's label holds ``0`` (background) and ``i + 1`` for the i-th organ of the cache's organ
list (``manifest.json``'s ``"organs"``, the list ``dose3d ingest`` was given), and each case lists the organs
its structure set delineates (``"labelled"``); an organ absent there is *unlabelled* for that case, not
background. A cache written before organ lists has the organs ``["Spleen"]``, all labelled.

A task (a training run or a job) names its own organs. Its cases are read in the task's order
(:func:`task_labels`): each case dict gets ``"labelled"``, the task's ``(N,)`` bool row, and, where the
cache's order differs from the task's, ``"organ_values"``: the task's value for each cache value, which
``seg.transforms`` applies when the label is loaded. A task organ the cache does not have is unlabelled for
all its cases; a cache organ the task does not have becomes background (it is not one of the task's organs).
A case that delineates none of the task's organs teaches nothing and is left out, with a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dose3d_fl.data.split import DEFAULT_VAL_FRACTION, load_or_create_split, split_cases

__all__ = [
    "IMAGE",
    "LABEL",
    "LABELLED",
    "LABEL_VALUES",
    "LEGACY_ORGANS",
    "Case",
    "SiteCases",
    "TaskLabels",
    "case_id",
    "labelled_row",
    "load_site_cases",
    "task_labels",
]

log = logging.getLogger(__name__)

IMAGE, LABEL = "image", "label"
# The task's (N,) bool row of organs the case delineates, and the cache value -> task value lookup. (No key
# may start with "label_": MONAI's spatial transforms take such keys for the label's meta dictionary.)
LABELLED, LABEL_VALUES = "labelled", "organ_values"
# The organs of a cache written before manifests named them: the spleen, the single-organ task.
LEGACY_ORGANS = ("Spleen",)
Case = dict[str, Any]


def case_id(case: Case) -> str:
    """A case's ``id`` entry, or its image file name without NIfTI suffixes."""
    return case.get("id") or Path(case[IMAGE]).name.removesuffix(".gz").removesuffix(".nii")


def labelled_row(case: Case, organs: int) -> np.ndarray:
    """The case's ``(organs,)`` bool row (all true for a case that carries none: every organ labelled).

    Raises:
        ValueError: the case's row has another length.
    """
    row = case.get(LABELLED)
    if row is None:
        return np.ones(organs, dtype=bool)
    row = np.asarray(row, dtype=bool).reshape(-1)
    if row.shape != (organs,):
        raise ValueError(
            f"case {case_id(case)} lists {row.shape[0]} organs as labelled or not; the task has {organs}"
        )
    return row


@dataclass(frozen=True)
class TaskLabels:
    """How one cache's labels read in a task's organ order.

    Attributes:
        organs: the task's organs, in label order.
        cache_organs: the cache's organs, in its label order.
        values: for each cache label value (index), the task's value (0: not a task organ).
    """

    organs: tuple[str, ...]
    cache_organs: tuple[str, ...]
    values: tuple[int, ...]

    @property
    def identity(self) -> bool:
        """Whether the cache's values already are the task's."""
        return self.values == tuple(range(len(self.values)))

    def row(self, case_organs: Sequence[str] | None) -> np.ndarray:
        """The task's ``(N,)`` bool row for a case that delineates ``case_organs`` (None: all cache organs)."""
        delineated = set(self.cache_organs if case_organs is None else case_organs)
        return np.array([organ in delineated and organ in self.cache_organs for organ in self.organs], bool)


def task_labels(cache_organs: Sequence[str] | None, organs: Sequence[str]) -> TaskLabels:
    """The remapping of a cache's organs (None: a cache without an organ list) to a task's organs."""
    cache = tuple(cache_organs or LEGACY_ORGANS)
    values = (0, *(organs.index(organ) + 1 if organ in organs else 0 for organ in cache))
    return TaskLabels(tuple(organs), cache, tuple(values))


def task_case(case: Case, labels: TaskLabels, case_organs: Sequence[str] | None) -> Case | None:
    """``case`` with the task's ``labelled`` row (and ``organ_values`` if needed); None if it has no task organ."""
    row = labels.row(case_organs)
    if not row.any():
        log.info(
            "case %s delineates none of the task's organs (%s); left out",
            case_id(case),
            ", ".join(labels.organs),
        )
        return None
    out = {**case, LABELLED: row}
    if not labels.identity:
        out[LABEL_VALUES] = np.asarray(labels.values, dtype=np.int64)
    return out


@dataclass
class SiteCases:
    """One site cache's training and validation cases (from its fixed ``split.json``)."""

    name: str
    cache_dir: Path
    train: list[Case]
    val: list[Case]


def load_site_cases(
    cache_dirs: Sequence[str | Path],
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    organs: Sequence[str] | None = None,
) -> list[SiteCases]:
    """The split cases of each cache (the split is drawn and stored on first use).

    Args:
        cache_dirs: site caches written by ``dose3d ingest``.
        seed: seed of a split drawn now.
        val_fraction: validation share of a split drawn now.
        organs: the task's organs: the cases then carry its ``labelled`` rows and are read in its label
            order (module doc); None: the cases as the cache has them.

    Raises:
        ValueError: two caches with the same folder name (their metrics would be indistinguishable).
    """
    sites: list[SiteCases] = []
    for cache_dir in map(Path, cache_dirs):
        if any(site.name == cache_dir.name for site in sites):
            raise ValueError(
                f"two caches are named {cache_dir.name!r}; give each site cache its own folder name"
            )
        split = load_or_create_split(cache_dir, val_fraction, seed)
        train, val = split_cases(cache_dir, split, organs)
        sites.append(SiteCases(cache_dir.name, cache_dir, train, val))
    return sites
