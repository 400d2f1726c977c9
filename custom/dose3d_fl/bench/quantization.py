"""Weight exchange in int8 against float32: real wire bytes per round and held-out Dice, same sites and seed.

``python -m dose3d_fl.bench.quantization [--rounds 8] [--local-epochs 2] [--work runs/bench-int8]
[--out benchmarks/results/quantization_int8.json]`` runs the seg job twice in the simulator (float32, then
``--quantization int8``) on the bench's three sites with the wire meters (``fl.wire_meter``), scores both
final models on the sites' validation cases and on the 30 held-out patients (``bench.heldout_eval``), and
writes the bytes each site sent and received per training round, their ratio to float32, and the paired
held-out Dice difference int8 - float32 with its 95 % interval. Targets (issue 26): at most 0.25x float32's
bytes per round, held-out Dice within 0.005 of float32's.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from dose3d_fl.bench.config import BenchConfig
from dose3d_fl.bench.evaluate import Evaluator
from dose3d_fl.bench.fl_figures import round_figures, wire_bytes, wire_dtypes
from dose3d_fl.bench.heldout_eval import heldout_evaluator, paired_difference
from dose3d_fl.bench.runner import machine, run_federated, site_data
from dose3d_fl.data.cases import load_site_cases
from dose3d_fl.files import json_safe, write_json_atomic
from dose3d_fl.fl.simulate import final_global_model, server_job_dir
from dose3d_fl.seg.profiles import get_profile

RESULTS = Path("benchmarks/results/quantization_int8.json")
BYTES_TARGET = 0.25
DICE_LOSS_TARGET = 0.005
VARIANTS = (("float32", {}), ("int8", {"quantization": "int8"}))


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def compare(rounds: int, local_epochs: int, work: Path, seed: int = 0) -> dict[str, Any]:
    """Run both variants and return the results document (see the module docstring)."""
    started = time.perf_counter()
    config = BenchConfig(name="quantization_int8", rounds=rounds, local_epochs=local_epochs, seed=seed)
    profile = get_profile(config.profile)
    data, caches = site_data(work, config.sites, seed)
    validation = Evaluator(load_site_cases(caches, seed=profile.seed), profile)
    heldout = heldout_evaluator(work, profile)
    runs: dict[str, dict[str, Any]] = {}
    scores: dict[str, dict[str, Any]] = {}
    for name, changes in VARIANTS:
        job = {"num_rounds": rounds, "local_epochs": local_epochs, **changes}
        measured, run_root = run_federated(name, data, work, config.sites, config, job)
        model = final_global_model(server_job_dir(run_root))
        scores[name] = heldout.evaluate(model)
        per_site = wire_bytes(run_root)
        runs[name] = {
            "job": job,
            "wall_seconds": measured.wall_seconds,
            "union_val_dice": validation.evaluate(model)["union_val_dice"],
            "heldout_union_dice": scores[name]["union_val_dice"],
            "heldout_site_dice": scores[name]["site_val_dice"],
            "wire_bytes": per_site,
            "wire_dtypes": wire_dtypes(run_root),
            "sent_per_round": _mean([s["sent_per_round"] for s in per_site.values()]),
            "received_per_round": _mean([s["received_per_round"] for s in per_site.values()]),
            "round_union_dice": [
                r["received_model_union_dice"] for r in round_figures(server_job_dir(run_root))
            ],
        }
    base, int8 = runs["float32"], runs["int8"]
    sent_ratio = int8["sent_per_round"] / base["sent_per_round"]
    received_ratio = int8["received_per_round"] / base["received_per_round"]
    difference = paired_difference(scores["int8"]["case_dice"], scores["float32"]["case_dice"])
    loss = base["heldout_union_dice"] - int8["heldout_union_dice"]
    return {
        "command": "python -m dose3d_fl.bench.quantization " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "setting": f"3 sites (bench data), {rounds} rounds x {local_epochs} local epochs, {profile.name}, seed {seed}",
        "heldout": "10 patients per scanner x 3 scanners, synthesis seed 1000",
        "runs": runs,
        "sent_over_float32": sent_ratio,
        "received_over_float32": received_ratio,
        "heldout_dice_loss": loss,
        "heldout_paired_difference_int8_minus_float32": difference,
        "targets": {
            "bytes_per_round_at_most_0.25x_float32": {
                "measured": {"sent": round(sent_ratio, 4), "received": round(received_ratio, 4)},
                "met": sent_ratio <= BYTES_TARGET and received_ratio <= BYTES_TARGET,
            },
            "heldout_dice_loss_at_most_0.005": {"measured": round(loss, 4), "met": loss <= DICE_LOSS_TARGET},
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-int8"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    results = compare(args.rounds, args.local_epochs, args.work, args.seed)
    write_json_atomic(args.out, json_safe(results))
    targets = results["targets"]
    print(json.dumps(targets, indent=2))
    print(f"results: {args.out} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
