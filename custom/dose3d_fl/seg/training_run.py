"""Centralised and local-only training on site caches: the baselines a federation is compared with.

Several caches pooled give the centralised model (train = union of their train splits); one cache gives
the local-only model of that site. Both use ``SegTrainer`` unchanged, as the federated client does.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dose3d_fl.data.cases import load_site_cases
from dose3d_fl.files import json_safe
from dose3d_fl.seg.baseline import hu_threshold_baseline
from dose3d_fl.seg.profiles import SegProfile
from dose3d_fl.seg.synthetic import SYNTHETIC_ID_PREFIX, SyntheticMix, mix_training_cases
from dose3d_fl.seg.trainer import SegTrainer

log = logging.getLogger(__name__)

MODEL_NAME = "model.pt"
METRICS_NAME = "metrics.json"


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def site_organ_dice(organ_metrics: dict[str, Any], case_ids: Sequence[str]) -> dict[str, float]:
    """Organ -> the mean Dice over ``case_ids`` that score it (``OrganMetrics.to_json()`` input; NaN: none)."""
    cases = [organ_metrics["cases"][case] for case in case_ids if case in organ_metrics["cases"]]
    return {
        organ: _mean([c[organ]["dice"] for c in cases if c[organ]["dice"] is not None])
        for organ in organ_metrics["organs"]
    }


def train_on_caches(
    cache_dirs: Sequence[str | Path],
    out_dir: str | Path,
    profile: SegProfile,
    epochs: int,
    *,
    num_threads: int | None = 1,
    hu_baseline: bool = False,
    on_validation: Callable[[dict[str, Any]], None] | None = None,
    show_progress: bool = True,
    synthetic: SyntheticMix | None = None,
) -> dict[str, Any]:
    """Train one model on the union of the caches' training splits; evaluate per cache and on the union.

    Validates every ``profile.val_interval`` epochs and after the last one; the final model is written to
    ``out_dir/model.pt`` and the metrics to ``out_dir/metrics.json``. The split of a cache that has none yet
    is drawn with ``profile.seed``. The task's organs are the profile's: each cache's cases are read in their
    order, an organ a case does not delineate unlabelled (``dose3d_fl.data.cases``).

    Args:
        cache_dirs: site caches written by ``dose3d ingest``.
        out_dir: output folder (created).
        profile: the segmentation profile.
        epochs: passes over the pooled training cases.
        num_threads: torch CPU threads (``None``: torch's default).
        hu_baseline: also report the best single HU interval (``hu_threshold_baseline``).
        on_validation: called with each history entry (epoch, wall and train seconds, loss, val_dice).
        show_progress: progress bars when stderr is a terminal.
        synthetic: synthetic pairs added to (or, ``only``, replacing) the training cases; validation stays real.

    Returns:
        The metrics written to ``metrics.json``: ``val_dice`` (the mean over organs of each organ's mean Dice
        over the union of the validation cases; one organ: the mean over cases), ``site_val_dice`` (cache
        name -> mean over its validation cases of their organs' mean Dice), ``organs`` (organ -> ``dice``,
        ``hd95``, ``surface_dice``, ``cases``, ``missed`` over the union), ``site_organ_dice`` (cache name ->
        organ -> mean Dice), ``tolerance_mm`` (surface Dice), ``organ_metrics`` (every case and organ),
        ``epochs``, ``started_at``
        (Unix time), ``seconds`` (wall time, caching and validation included), ``train_seconds``, ``seconds_per_epoch``,
        ``history``, case counts, and ``hu_threshold_baseline`` when asked for. Dice is measured at the
        profile's voxel size.
    """
    start, started_at = time.perf_counter(), time.time()
    sites = load_site_cases(cache_dirs, seed=profile.seed, organs=profile.organs)
    train_cases = [case for site in sites for case in site.train]
    if synthetic is not None:
        train_cases = mix_training_cases(train_cases, synthetic)
    trainer = SegTrainer(
        train_cases,
        [case for site in sites for case in site.val],
        profile,
        num_threads=num_threads,
        show_progress=show_progress,
    )
    history: list[dict[str, Any]] = []
    train_seconds = 0.0
    validation: dict[str, Any] = {}
    while trainer.epochs_done < epochs:
        losses = []
        for _ in range(min(profile.val_interval, epochs - trainer.epochs_done)):
            trainer.set_progress(trainer.epochs_done / epochs)
            result = trainer.train_epochs(1)
            train_seconds += result["seconds"]
            losses.append(result["loss"])
        # HD95 and surface Dice of the final model only (the history records the Dice).
        validation = trainer.validate(distances=trainer.epochs_done >= epochs)
        entry = {
            "epoch": trainer.epochs_done,
            "wall_seconds": round(time.perf_counter() - start, 2),
            "train_seconds": round(train_seconds, 2),
            "loss": round(_mean(losses), 4),
            "val_dice": round(validation["val_dice"], 4),
        }
        if len(profile.organs) > 1:
            entry["organ_dice"] = {organ: round(v["dice"], 4) for organ, v in validation["organs"].items()}
        history.append(entry)
        if on_validation is not None:
            on_validation(entry)
    if not validation:
        validation = trainer.validate()
    case_dice = validation["case_dice"]
    metrics: dict[str, Any] = {
        "val_dice": validation["val_dice"],
        "site_val_dice": {
            site.name: _mean([case_dice[case["id"]] for case in site.val if case["id"] in case_dice])
            for site in sites
        },
        "organs": validation["organs"],
        "site_organ_dice": {
            site.name: site_organ_dice(validation["organ_metrics"], [case["id"] for case in site.val])
            for site in sites
        },
        "tolerance_mm": validation["tolerance_mm"],
        "organ_metrics": validation["organ_metrics"],
        "epochs": trainer.epochs_done,
        "started_at": round(started_at, 3),
        "seconds": 0.0,
        "train_seconds": round(train_seconds, 2),
        "seconds_per_epoch": round(train_seconds / epochs, 2) if epochs else None,
        "steps_per_epoch": len(trainer.train_loader),
        "train_cases": {site.name: 0 if synthetic and synthetic.only else len(site.train) for site in sites},
        "synthetic_cases": sum(case["id"].startswith(SYNTHETIC_ID_PREFIX) for case in train_cases),
        "val_cases": {site.name: len(site.val) for site in sites},
        "profile": profile.name,
        "device": str(trainer.device),
        "dice_resolution_mm": list(profile.pixdim),
        "history": history,
    }
    if hu_baseline:
        metrics["hu_threshold_baseline"] = hu_threshold_baseline(trainer.train_cases, trainer.val_cases)
    metrics["seconds"] = round(time.perf_counter() - start, 2)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(out_dir / MODEL_NAME, meta={"metrics": json_safe(metrics)})
    (out_dir / METRICS_NAME).write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
    log.info("wrote %s and %s", out_dir / MODEL_NAME, out_dir / METRICS_NAME)
    return metrics
