"""A site's fixed train/validation split, stored with its cache as ``CACHE/split.json``.

The split is drawn once (seeded) and reused afterwards, so validation cases never leak into training when a
run is repeated. Cases added to the cache later are assigned by a hash of their id (stable, independent of
the other cases); cases gone from the manifest are dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dose3d_fl.data.manifest import Manifest
from dose3d_fl.files import write_json_atomic

log = logging.getLogger(__name__)

SPLIT_NAME = "split.json"
SPLIT_FORMAT = "dose3d-site-split"
SPLIT_VERSION = 1
DEFAULT_VAL_FRACTION = 0.25


@dataclass
class SiteSplit:
    """Case ids for training and validation at one site."""

    train: list[str]
    val: list[str]
    seed: int
    val_fraction: float
    format: str = SPLIT_FORMAT
    version: int = SPLIT_VERSION

    def save(self, cache_dir: Path) -> Path:
        """Write ``split.json`` atomically."""
        return write_json_atomic(cache_dir / SPLIT_NAME, asdict(self))


def draw_split(case_ids: list[str], val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0) -> SiteSplit:
    """A seeded random split with ``round(n * val_fraction)`` validation cases, at least one of each.

    Raises:
        ValueError: fewer than two cases, or a fraction outside (0, 1).
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    if len(case_ids) < 2:
        raise ValueError(f"a train/validation split needs at least 2 cases, the cache has {len(case_ids)}")
    ids = sorted(case_ids)
    random.Random(seed).shuffle(ids)
    n_val = min(max(1, round(len(ids) * val_fraction)), len(ids) - 1)
    return SiteSplit(train=sorted(ids[n_val:]), val=sorted(ids[:n_val]), seed=seed, val_fraction=val_fraction)


def _hash_fraction(case_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def load_or_create_split(
    cache_dir: str | Path, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0
) -> SiteSplit:
    """The cache's split: read from ``split.json``, or drawn and written there on first use.

    ``val_fraction`` and ``seed`` only matter when the split is drawn; an existing split is kept whatever
    they are, updated only for cases added to or removed from the manifest.

    Raises:
        FileNotFoundError: no manifest in ``cache_dir``.
        ValueError: an unreadable ``split.json``, or one that no longer leaves a training and a validation
            case (delete it to draw a new split).
    """
    cache_dir = Path(cache_dir)
    case_ids = [case.id for case in Manifest.load(cache_dir).cases]
    path = cache_dir / SPLIT_NAME
    if not path.is_file():
        split = draw_split(case_ids, val_fraction, seed)
        split.save(cache_dir)
        log.info("%s: drew %d training and %d validation case(s)", path, len(split.train), len(split.val))
        return split

    data = json.loads(path.read_text())
    if data.get("format") != SPLIT_FORMAT or data.get("version") != SPLIT_VERSION:
        raise ValueError(
            f"{path} is not a {SPLIT_FORMAT} file version {SPLIT_VERSION}; delete it to draw a new split"
        )
    split = SiteSplit(**data)
    present = set(case_ids)
    known = set(split.train) | set(split.val)
    train = [case for case in split.train if case in present]
    val = [case for case in split.val if case in present]
    for case in sorted(present - known):
        (val if _hash_fraction(case, split.seed) < split.val_fraction else train).append(case)
    if not train or not val:
        raise ValueError(
            f"{path} leaves {len(train)} training and {len(val)} validation case(s) of the manifest's "
            f"{len(case_ids)}; delete it to draw a new split"
        )
    updated = SiteSplit(sorted(train), sorted(val), split.seed, split.val_fraction)
    if updated != split:
        log.info(
            "%s: updated for %d new and %d removed case(s)", path, len(present - known), len(known - present)
        )
        updated.save(cache_dir)
    return updated


def split_cases(
    cache_dir: str | Path, split: SiteSplit, organs: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Trainer case dicts (``id``, absolute ``image`` and ``label`` paths) for a split's train and val ids.

    Args:
        cache_dir: the site cache.
        split: its split.
        organs: the task's organs: each case then carries the task's ``labelled`` row (and ``organ_values``
            where the cache's organ order differs), and a case delineating none of them is left out
            (``dose3d_fl.data.cases``); None: the cases as the cache has them.
    """
    from dose3d_fl.data.cases import task_case, task_labels  # cases.py imports this module

    cache_dir = Path(cache_dir).resolve()
    manifest = Manifest.load(cache_dir)
    labels = task_labels(manifest.organs, organs) if organs is not None else None
    by_id: dict[str, dict[str, Any] | None] = {}
    for case in manifest.cases:
        entry: dict[str, Any] | None = {
            "id": case.id,
            "image": str(cache_dir / case.image),
            "label": str(cache_dir / case.label),
        }
        if labels is not None:
            entry = task_case(entry, labels, case.labelled)
        by_id[case.id] = entry
    train = [by_id[case] for case in split.train if by_id[case] is not None]
    val = [by_id[case] for case in split.val if by_id[case] is not None]
    return train, val
