"""Score a finished ``dose3d bench``'s final models on held-out patients: FL against central beyond 6 cases.

The benchmark's Dice targets are read on the sites' 6 validation cases, where one case moves the union Dice by
up to 0.02. This script synthesises new patients with the same three scanners (a seed the benchmark never
used), ingests them, and scores every final model of a bench work folder on all of them with the benchmark's
own evaluator. For each run it reports the union Dice, its ratio to the central model's, and the mean paired
per-case difference from the central model with a 95 % bootstrap interval over the cases. No model is
trained again. A FedBN run has one model per site (``bench.site_models``): each held-out scanner's patients are
scored with the model of the site with that scanner. Writes ``benchmarks/results/heldout.json``.

``--replica NAME`` (repeatable) adds the final models that ``benchmarks/fedavg_replica.py NAME ... --save`` kept,
one per site: each held-out scanner's patients are scored with the model of the site with that scanner, as
``NAME`` (the global weights, under FedBN with the site's own normalisation) and ``NAME/personal`` (the site's
model after its last local training).

Usage: ``.venv/bin/python benchmarks/heldout.py [--work runs/bench-default] [--patients 10] [--seed 1000]
[--replica NAME ...] [--out FILE]`` (about 2 minutes on 2 cores for 30 patients, 20 s more per replica).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dose3d_fl.bench.evaluate import Evaluator
from dose3d_fl.bench.heldout_eval import heldout_sites, paired_difference
from dose3d_fl.bench.peers import load_final_model
from dose3d_fl.bench.runner import final_model_file, machine, site_models_folder
from dose3d_fl.bench.site_models import load_site_models
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.synth.demo_sites import prepare_site_data

RESULTS = Path(__file__).parent / "results" / "heldout.json"
REPLICAS = Path("runs") / "replica"


def model_files(work: Path, results: dict) -> dict[str, Path]:
    """Each run of the bench's results -> its final model file (a FedBN run: its folder of site models)."""
    files = {}
    for name, run in results["runs"].items():
        folder = site_models_folder(work, name)
        files[name] = folder if folder.is_dir() else final_model_file(work, name, run["kind"])
    return files


def replica_models(name: str, sites: list[str]) -> dict[str, dict[str, dict]]:
    """A saved replica's models: ``{run: {site: state dict}}`` for its global and personal models."""
    models = {}
    for label, run in (("global", name), ("personal", f"{name}/personal")):
        folder = REPLICAS / name / label
        models[run] = load_site_models(folder) if folder.is_dir() else {}
        if sorted(models[run]) != sites:
            raise FileNotFoundError(
                f"{folder}: not one model for each of {', '.join(sites)}; "
                f"run benchmarks/fedavg_replica.py {name} ... --save"
            )
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work", type=Path, default=Path("runs/bench-default"), help="a finished bench's work folder"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="its results JSON (default: benchmarks/results/default.json)",
    )
    parser.add_argument("--patients", type=int, default=10, help="held-out patients per scanner (site)")
    parser.add_argument("--seed", type=int, default=1000, help="synthesis seed of the held-out patients")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--replica", action="append", default=[], help="a fedavg_replica.py run saved with --save"
    )
    args = parser.parse_args(argv)

    bench = json.loads((args.results or RESULTS.with_name("default.json")).read_text())
    files = model_files(args.work, bench)
    missing = [str(path) for path in files.values() if not path.exists()]
    if missing:
        print(
            f"heldout: no model file at {', '.join(missing)}; run dose3d bench --work {args.work} first",
            file=sys.stderr,
        )
        return 2
    site_names = [f"site-{k}" for k in range(1, 4)]
    try:
        replicas = {run: m for name in args.replica for run, m in replica_models(name, site_names).items()}
    except FileNotFoundError as err:
        print(f"heldout: {err}", file=sys.stderr)
        return 2
    caches = prepare_site_data(args.work / f"heldout-seed-{args.seed}", 3, args.seed, [args.patients] * 3)
    profile = get_profile(bench["config"]["profile"])
    evaluator = Evaluator(heldout_sites(caches), profile, num_threads=os.cpu_count())

    def score(name: str, path: Path) -> dict:
        if path.is_dir():
            return evaluator.evaluate_site_weights(load_site_models(path))
        if bench["runs"][name]["kind"] == "peer":  # a plain state dict
            return evaluator.evaluate_weights(load_final_model(path.parent))
        return evaluator.evaluate(path)

    scores = {name: score(name, path) for name, path in files.items()}
    scores |= {run: evaluator.evaluate_site_weights(models) for run, models in replicas.items()}
    central = scores["central"]
    runs = {
        name: {
            "union_dice": score["union_val_dice"],
            "site_dice": score["site_val_dice"],
            "over_central": score["union_val_dice"] / central["union_val_dice"],
            "difference_from_central": paired_difference(score["case_dice"], central["case_dice"]),
        }
        for name, score in scores.items()
    }
    results = {
        "command": " ".join(["python benchmarks/heldout.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "bench_work": str(args.work),
        "heldout": f"{args.patients} patients per scanner x 3 scanners, synthesis seed {args.seed}",
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, run in runs.items():
        diff = run["difference_from_central"]
        print(
            f"{name:22s} union {run['union_dice']:.4f}  / central {run['over_central']:.4f}  "
            f"paired diff {diff['mean']:+.4f} [{diff['ci95_low']:+.4f}, {diff['ci95_high']:+.4f}]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
