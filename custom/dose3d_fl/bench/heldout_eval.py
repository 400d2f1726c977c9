"""Held-out patients for the benchmark's Dice claims: new synthetic patients of the same three scanners.

The same synthesis seed and counts as ``benchmarks/heldout.py`` (10 patients per scanner, seed 1000, never
used for training, tuning or choosing), the same evaluator as every other figure of the benchmark
(``bench.evaluate``), and the paired per-case difference between two models with a 95 % bootstrap interval.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dose3d_fl.bench.evaluate import Evaluator
from dose3d_fl.data.cases import SiteCases
from dose3d_fl.data.manifest import Manifest
from dose3d_fl.data.split import SiteSplit, split_cases
from dose3d_fl.seg.profiles import SegProfile
from dose3d_fl.synth.demo_sites import prepare_site_data

HELDOUT_PATIENTS = 10
HELDOUT_SEED = 1000


def heldout_sites(caches: list[Path], organs: Sequence[str] | None = None) -> list[SiteCases]:
    """Every ingested case of each held-out cache, all of them for evaluation, read in the order of the
    task's ``organs`` (None: the cache's own)."""
    sites = []
    for cache in caches:
        ids = [case.id for case in Manifest.load(cache).cases]
        _, cases = split_cases(cache, SiteSplit(train=[], val=ids, seed=0, val_fraction=1.0), organs)
        sites.append(SiteCases(cache.name, cache, [], cases))
    return sites


def heldout_evaluator(
    work: Path,
    profile: SegProfile,
    patients: int = HELDOUT_PATIENTS,
    seed: int = HELDOUT_SEED,
    sites: int = 3,
) -> Evaluator:
    """Synthesise and ingest the held-out patients once under ``work`` and return an evaluator on all of them.

    Args:
        work: the benchmark's work folder (the patients go to ``work/heldout-seed-<seed>``).
        profile: the benchmark's profile (preprocessing of the cases).
        patients: held-out patients per scanner.
        seed: synthesis seed (one the benchmark never trains on).
        sites: scanners (the benchmark's sites).

    The patients are ingested for the profile's organs and scored on them.
    """
    organs = profile.organs if len(profile.organs) > 1 else None
    folder = work / (f"heldout-seed-{seed}" + (f"-{len(organs)}-organs" if organs else ""))
    caches = prepare_site_data(folder, sites, seed, [patients] * sites, organs=organs)
    return Evaluator(heldout_sites(caches, organs), profile, num_threads=os.cpu_count())


def paired_difference(
    cases: dict[str, float], reference: dict[str, float], resamples: int = 10000, seed: int = 0
) -> dict[str, float]:
    """Mean per-case Dice difference from ``reference`` over the cases both scored, with a 95 % percentile
    bootstrap interval (cases resampled with replacement)."""
    keys = sorted(
        k for k in cases if k in reference and not math.isnan(cases[k]) and not math.isnan(reference[k])
    )
    if not keys:
        return {"cases": 0, "mean": math.nan, "ci95_low": math.nan, "ci95_high": math.nan}
    differences = np.array([cases[k] - reference[k] for k in keys])
    draws = np.random.default_rng(seed).integers(0, len(keys), size=(resamples, len(keys)))
    means = differences[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "cases": len(keys),
        "mean": float(differences.mean()),
        "ci95_low": float(low),
        "ci95_high": float(high),
    }


def paired_difference_over_seeds(
    cases: dict[int, dict[str, float]],
    reference: dict[int, dict[str, float]],
    resamples: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean per-case Dice difference from ``reference`` over training seeds and held-out cases, with a 95 %
    percentile bootstrap interval that resamples seeds and cases (both with replacement), so that the
    interval holds the variation between training runs as well as between patients.

    Args:
        cases: training seed -> case -> Dice (NaN: the case does not score this organ).
        reference: the same for the reference model (each seed's own reference run).
        resamples: bootstrap draws.
        seed: the bootstrap's random seed.

    Returns:
        ``mean``, ``ci95_low``, ``ci95_high``, ``per_seed`` (each seed's mean difference), ``seeds`` and
        ``cases`` (the cases every seed of both models scored).
    """
    seeds = sorted(set(cases) & set(reference))
    keys = sorted(
        k
        for k in set.intersection(*(set(cases[s]) & set(reference[s]) for s in seeds))
        if all(not math.isnan(cases[s][k]) and not math.isnan(reference[s][k]) for s in seeds)
    ) if seeds else []  # fmt: skip
    if not keys:
        return {"mean": math.nan, "ci95_low": math.nan, "ci95_high": math.nan, "per_seed": [], "seeds": len(seeds),
                "cases": 0}  # fmt: skip
    diff = np.array([[cases[s][k] - reference[s][k] for k in keys] for s in seeds])
    rng = np.random.default_rng(seed)
    pick_s = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
    pick_c = rng.integers(0, len(keys), size=(resamples, len(keys)))
    means = np.take_along_axis(diff[pick_s], pick_c[:, None, :], axis=2).mean(axis=(1, 2))
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": float(diff.mean()),
        "ci95_low": float(low),
        "ci95_high": float(high),
        "per_seed": [float(v) for v in diff.mean(1)],
        "seeds": len(seeds),
        "cases": len(keys),
    }


def heldout_scores(evaluator: Evaluator, models: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each final model on the held-out patients: union, per-scanner and per-case Dice, and the paired per-case
    difference from the model named ``central`` (95 % bootstrap interval).

    Args:
        evaluator: ``heldout_evaluator``'s.
        models: run name -> its final model: a model file, a state dict, or one state dict per site (FedBN:
            each scanner's patients scored with the model of the site with that scanner); ``None``: skipped.
    """
    scores = {}
    for name, model in models.items():
        if isinstance(model, Path):
            scores[name] = evaluator.evaluate(model)
        elif model and all(isinstance(v, dict) for v in model.values()):
            scores[name] = evaluator.evaluate_site_weights(model)
        elif model:
            scores[name] = evaluator.evaluate_weights(model)
    central = scores.get("central")
    return {
        name: {
            "union_dice": score["union_val_dice"],
            "site_dice": score["site_val_dice"],
            "case_dice": score["case_dice"],
            "difference_from_central": (
                paired_difference(score["case_dice"], central["case_dice"]) if central else None
            ),
        }
        for name, score in scores.items()
    }
