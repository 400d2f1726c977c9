"""Organs at risk over several training seeds: ``benchmarks/organs.py`` results, one per seed, put together.

Each input is one ``organs.py`` result file of a training seed (the federated run with ``dose3d fl simulate
--train-seed S`` and the central model with ``organs.py --train-seed S``), all on the same held-out patients
(synthesis seed 1000) and the same training data. Per organ it reports each seed's federated and central mean
Dice and their ratio, the ratio of the means over seeds (the target: >= 0.98 for every organ), and the mean
paired per-case difference federated - central with a 95 % bootstrap interval that resamples seeds and
patients (``dose3d_fl.bench.heldout_eval.paired_difference_over_seeds``). Writes
``benchmarks/results/organs_seeds.json`` (``--out``).

Usage: ``python benchmarks/organs_seeds.py RESULT.json RESULT.json ... [--out OUT]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dose3d_fl.bench.heldout_eval import paired_difference_over_seeds
from dose3d_fl.files import json_safe

RESULTS = Path(__file__).parent / "results" / "organs_seeds.json"
TARGET = 0.98


def organ_dice(cases: dict[str, dict], organ: str) -> dict[str, float]:
    """Case -> Dice of ``organ`` (NaN where the case does not delineate it)."""
    return {k: math.nan if c[organ]["dice"] is None else float(c[organ]["dice"]) for k, c in cases.items()}


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per organ over the seeds of ``results`` (``organs.py`` result dicts): see the module docstring."""
    seeds = [r["federated_job"]["train_seed"] for r in results]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"each result must be of another training seed, got {seeds}")
    organs = results[0]["organs"]
    per_organ = {}
    for organ in organs:
        fed = {s: organ_dice(r["cases"]["federated"], organ) for s, r in zip(seeds, results, strict=True)}
        cen = {s: organ_dice(r["cases"]["central"], organ) for s, r in zip(seeds, results, strict=True)}
        fed_means = [float(np.nanmean(list(fed[s].values()))) for s in seeds]
        cen_means = [float(np.nanmean(list(cen[s].values()))) for s in seeds]
        ratio = float(np.mean(fed_means) / np.mean(cen_means))
        per_organ[organ] = {
            "federated_dice_per_seed": fed_means,
            "central_dice_per_seed": cen_means,
            "ratio_per_seed": [f / c for f, c in zip(fed_means, cen_means, strict=True)],
            "federated_dice": float(np.mean(fed_means)),
            "central_dice": float(np.mean(cen_means)),
            "federated_over_central_dice": ratio,
            "meets_target": bool(ratio >= TARGET),
            "paired_dice_difference": paired_difference_over_seeds(fed, cen),
        }
    return {
        "train_seeds": seeds,
        "target": f"mean over seeds: federated / central Dice >= {TARGET} for every organ",
        "all_organs_meet_target": all(v["meets_target"] for v in per_organ.values()),
        "per_organ": per_organ,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, nargs="+", help="organs.py result files, one per training seed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = [json.loads(path.read_text()) for path in args.results]
    combined = {
        "command": " ".join(
            ["python benchmarks/organs_seeds.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "inputs": [str(path) for path in args.results],
        "federated_job": {k: v for k, v in results[0]["federated_job"].items() if k != "train_seed"},
        "heldout": results[0]["heldout"],
        **combine(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(json_safe(combined), indent=2) + "\n")
    print(f"{'organ':<10} {'central':>8} {'federated':>9} {'ratio':>6}  per seed        paired diff [95% CI]")
    for organ, row in combined["per_organ"].items():
        diff = row["paired_dice_difference"]
        per_seed = " ".join(f"{r:.3f}" for r in row["ratio_per_seed"])
        print(
            f"{organ:<10} {row['central_dice']:>8.4f} {row['federated_dice']:>9.4f} "
            f"{row['federated_over_central_dice']:>6.3f}  {per_seed:<15} {diff['mean']:+.4f} "
            f"[{diff['ci95_low']:+.4f}, {diff['ci95_high']:+.4f}]"
        )
    print(f"every organ >= {TARGET}: {combined['all_organs_meet_target']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
