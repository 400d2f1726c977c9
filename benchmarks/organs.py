"""Organs at risk: the federated model against the central model, per organ, on the same held-out patients.

The task of ``make demo``: the synthetic federation with organs at risk (3 sites, 12, 8 and 5 patients, seed 0;
three naming conventions; partial delineation), ingested for the organs (default all seven). Two models:

* **federated**: the ``seg_fedavg`` job in NVFlare's simulator with the job's defaults (25 rounds x 4 local
  epochs, FedAvg), ``FL_global_model.pt`` of the last round, run in ``WORK/fl`` unless a model is there
  already; ``--fl-workspace`` scores an existing run instead (e.g. ``runs/demo`` after ``make demo``, the same
  job); the run's own ``summary.json`` (its sites' 6 validation cases) is copied into the result;
* **central**: ``dose3d train`` on the pooled training cases of the same split, ``rounds x local_epochs``
  epochs (the benchmark's budget for a central model, ``dose3d bench``).

Both are scored on new patients of the same three scanners (10 per scanner, synthesis seed 1000, never used
for training; ``--heldout-seed`` and ``--heldout-patients`` draw another set), ingested the same way: each
organ on the held-out cases that delineate it (the held-out sites omit organs as their habits say), with the
one validation code of the project
(``SegTrainer.validate``: Dice, HD95 and surface Dice at 4 mm on the profile's 4 mm grid). Per organ it
reports both models' means, the ratio federated / central of the mean Dice (target >= 0.98 for every organ),
and the mean paired per-case Dice difference with a 95 % bootstrap interval. Writes
``benchmarks/results/organs.json``.

The federated job's settings in the result (rounds, local epochs, the sites' learning-rate factor, FedBN or
SiloBN) are read from the run's own job configuration; options that disagree with it are refused.

Usage: ``nice -n 10 .venv/bin/python benchmarks/organs.py [--work runs/organs] [--fl-workspace runs/demo]
[--organs Spleen,Liver,...] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dose3d_fl.bench.heldout_eval import heldout_sites, paired_difference
from dose3d_fl.bench.runner import machine
from dose3d_fl.data.cases import SiteCases
from dose3d_fl.files import json_safe
from dose3d_fl.fl import DEFAULT_LOCAL_EPOCHS, DEFAULT_ROUNDS
from dose3d_fl.fl.seg_job import SegJobConfig
from dose3d_fl.fl.simulate import (
    SimulationConfig,
    final_global_model,
    server_job_dir,
    simulate_seg,
    simulation_dir,
)
from dose3d_fl.fl.site.config import SiteConfig
from dose3d_fl.fl.site.model import write_site_model
from dose3d_fl.seg.checkpoint import load_checkpoint
from dose3d_fl.seg.profiles import DEFAULT_PROFILE, SegProfile, get_profile
from dose3d_fl.seg.trainer import SegTrainer
from dose3d_fl.seg.training_run import MODEL_NAME, train_on_caches
from dose3d_fl.synth.demo_sites import DEMO_ORGANS, prepare_site_data

RESULTS = Path(__file__).parent / "results" / "organs.json"
HELDOUT_PATIENTS, HELDOUT_SEED = 10, 1000
TARGET = 0.98


def job_settings(fl_workspace: Path) -> dict[str, object]:
    """What the simulated job ran with, read from its own configuration (not from this script's arguments):
    rounds, local epochs, the sites' learning-rate factor and FedBN / SiloBN. Empty if the run kept none."""
    config = server_job_dir(simulation_dir(fl_workspace)) / "app_server" / "config"
    try:
        client = json.loads((config / "config_fed_client.json").read_text())
        server = json.loads((config / "config_fed_server.json").read_text())
    except (OSError, ValueError):
        return {}
    tokens = client["executors"][0]["executor"]["args"]["task_script_args"].split()

    def value(option: str, default: str) -> str:
        return tokens[tokens.index(option) + 1] if option in tokens else default

    rounds = [
        w["args"]["num_rounds"] for w in server.get("workflows", []) if "num_rounds" in w.get("args", {})
    ]
    return {
        "rounds": rounds[0] if rounds else None,
        "local_epochs": int(value("--local-epochs", "1")),
        "local_lr_scale": float(value("--lr-scale", "1")),
        "fedbn": "--fedbn" in tokens,
        "silobn": "--silobn" in tokens,
    }


def site_training(fl_workspace: Path) -> dict[str, bool]:
    """How the simulated sites trained (their ``WS/site_config/*.json``): the ``SiteConfig`` options that change
    the arithmetic (``channels_last``, ``cpu_bfloat16``), each true where any site had it on."""
    configs = [SiteConfig.load(path) for path in sorted((fl_workspace / "site_config").glob("*.json"))]
    return {key: any(getattr(c, key) for c in configs) for key in ("channels_last", "cpu_bfloat16")}


def score(
    weights: dict[str, torch.Tensor], sites: list[SiteCases], profile: SegProfile, threads: int
) -> dict:
    """Per organ and case (``OrganMetrics.to_json`` cases) of a model on every held-out site."""
    cases: dict[str, dict] = {}
    for site in sites:
        trainer = SegTrainer([], site.val, profile, num_threads=threads, show_progress=False)
        trainer.set_weights(weights)
        result = trainer.validate()
        cases |= {f"{site.name}/{case}": organs for case, organs in result["organ_metrics"]["cases"].items()}
    return cases


def organ_means(cases: dict[str, dict], organ: str) -> dict[str, float | int]:
    """Mean Dice, HD95 (finite values), surface Dice over the cases that score ``organ``; misses counted."""
    rows = [c[organ] for c in cases.values() if c[organ]["dice"] is not None]
    hd95 = [r["hd95"] for r in rows if r["hd95"] is not None]
    return {
        "cases": len(rows),
        "dice": float(np.mean([r["dice"] for r in rows])) if rows else math.nan,
        "hd95_mm": float(np.mean(hd95)) if hd95 else math.nan,
        "surface_dice": float(np.mean([r["surface_dice"] for r in rows])) if rows else math.nan,
        "missed": sum(r["hd95"] is None for r in rows),
    }


def organ_paired_difference(a: dict[str, dict], b: dict[str, dict], organ: str) -> dict[str, float]:
    """Mean per-case Dice difference a - b over the cases scoring ``organ``, 95 % bootstrap interval."""

    def dice(cases: dict[str, dict]) -> dict[str, float]:
        return {k: math.nan if c[organ]["dice"] is None else c[organ]["dice"] for k, c in cases.items()}

    return paired_difference(dice(a), dice(b))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("runs/organs"), help="work folder (data, runs)")
    parser.add_argument(
        "--fl-workspace",
        type=Path,
        default=None,
        help="score the final global model of this finished `dose3d fl simulate` workspace (its data are the "
        "training data) instead of running the job in WORK/fl",
    )
    parser.add_argument("--organs", default=",".join(DEMO_ORGANS), help="TG-263 organs (default all seven)")
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        help=f"segmentation profile of the central model and of the federated run this script runs (default "
        f"{DEFAULT_PROFILE})",
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--local-epochs", type=int, default=DEFAULT_LOCAL_EPOCHS)
    parser.add_argument(
        "--central-epochs",
        type=int,
        default=None,
        help="epochs of the central model (default rounds x local epochs); a central model already in "
        "WORK/central is scored as it is",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads of central training and scoring"
    )
    parser.add_argument(
        "--fedbn",
        action="store_true",
        help="the federated run used --fedbn: score each scanner's held-out patients with that site's own model "
        "(the global weights with the site's BatchNorm layers, as `dose3d fl site-model` writes it)",
    )
    parser.add_argument(
        "--silobn",
        action="store_true",
        help="the federated run used --silobn: score as with --fedbn (each site's model: the global weights with "
        "the site's own BatchNorm statistics)",
    )
    parser.add_argument(
        "--heldout-seed",
        type=int,
        default=HELDOUT_SEED,
        help=f"synthesis seed of the held-out patients (default {HELDOUT_SEED}; another seed gives new patients "
        "of the same scanners)",
    )
    parser.add_argument(
        "--heldout-patients",
        type=int,
        default=HELDOUT_PATIENTS,
        help=f"held-out patients per scanner (default {HELDOUT_PATIENTS})",
    )
    parser.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="training seed of the central model, and of the federated run when this script runs it "
        "(default: the profile's); a finished --fl-workspace keeps its own (`fl simulate --train-seed`)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    organs = tuple(o for o in args.organs.split(",") if o)
    profile = get_profile(args.profile, organs, args.train_seed)
    timings: dict[str, float] = {}

    fl_workspace = (args.fl_workspace or args.work / "fl").resolve()
    fl_model = final_global_model(server_job_dir(simulation_dir(fl_workspace)))
    if args.fl_workspace is None and not fl_model.is_file():
        start = time.perf_counter()
        job = SegJobConfig(
            num_rounds=args.rounds,
            local_epochs=args.local_epochs,
            profile=args.profile,
            organs=organs,
            tensorboard=False,
            train_seed=args.train_seed,
        )
        simulate_seg(SimulationConfig(workspace=fl_workspace, sites=3, job=job, seed=0))
        timings["federated_s"] = round(time.perf_counter() - start, 1)
    saved = torch.load(fl_model, map_location="cpu", weights_only=True)
    if tuple(saved["profile"]["organs"]) != organs:
        print(f"organs: {fl_model} segments {saved['profile']['organs']}, not {organs}", file=sys.stderr)
        return 2
    if saved["profile"]["name"] != profile.name:
        print(
            f"profile: {fl_model} was trained with profile {saved['profile']['name']!r}, the central model would "
            f"be {profile.name!r}; pass --profile {saved['profile']['name']}",
            file=sys.stderr,
        )
        return 2
    settings = job_settings(fl_workspace)
    claimed = {
        "rounds": args.rounds,
        "local_epochs": args.local_epochs,
        "fedbn": args.fedbn,
        "silobn": args.silobn,
    }
    wrong = [f"{k} {settings[k]} (not {v})" for k, v in claimed.items() if k in settings and settings[k] != v]
    if wrong:
        print(f"options: {fl_workspace} ran with {', '.join(wrong)}; pass the run's own", file=sys.stderr)
        return 2
    summary_file = fl_workspace / "summary.json"
    fl_summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    caches = prepare_site_data(fl_workspace, 3, 0, organs=organs)  # the federation's own caches and split

    central_dir = args.work / "central"
    if not (central_dir / MODEL_NAME).is_file():
        start = time.perf_counter()
        train_on_caches(
            caches,
            central_dir,
            profile,
            args.central_epochs or args.rounds * args.local_epochs,
            num_threads=args.threads,
            show_progress=False,
        )
        timings["central_s"] = round(time.perf_counter() - start, 1)
    central = load_checkpoint(central_dir / MODEL_NAME)
    # Runs made earlier: their own records (the central run's metrics.json, the job's round times).
    timings.setdefault("central_s", central.meta.get("metrics", {}).get("seconds"))
    round_times = fl_model.parents[1] / "metrics" / "round_times.jsonl"
    if "federated_s" not in timings and round_times.is_file():
        rounds = [json.loads(line)["seconds"] for line in round_times.read_text().splitlines()]
        timings["federated_rounds_s"] = round(sum(rounds), 1)

    start = time.perf_counter()
    held = prepare_site_data(
        args.work / f"heldout-seed-{args.heldout_seed}"
        f"{'' if args.heldout_patients == HELDOUT_PATIENTS else f'-{args.heldout_patients}'}",
        3,
        args.heldout_seed,
        [args.heldout_patients] * 3,
        organs=organs,
    )
    sites = heldout_sites(held, organs)
    site_norm = args.fedbn or args.silobn
    if site_norm:
        federated: dict = {}
        for site in sites:
            site_model = args.work / "fedbn_site_models" / f"{site.name}.pt"
            # The simulated site's configuration (``WS/site_config/<site>.json``) names its state folder.
            state = SiteConfig.load(fl_workspace / "site_config" / f"{site.name}.json").state_dir
            write_site_model(fl_model, state, site_model)
            weights = load_checkpoint(site_model).model
            federated |= score(weights, [site], profile, args.threads)
    else:
        federated = score(saved["model"], sites, profile, args.threads)
    scores = {
        "federated": federated,
        "central": score(central.model, sites, profile, args.threads),
    }
    timings["heldout_s"] = round(time.perf_counter() - start, 1)

    per_organ = {}
    for organ in organs:
        fed, cen = organ_means(scores["federated"], organ), organ_means(scores["central"], organ)
        ratio = fed["dice"] / cen["dice"] if cen["dice"] else math.nan
        per_organ[organ] = {
            "federated": fed,
            "central": cen,
            "federated_over_central_dice": ratio,
            "meets_target": bool(ratio >= TARGET),
            "paired_dice_difference": organ_paired_difference(scores["federated"], scores["central"], organ),
        }
    results = {
        "command": " ".join(["python benchmarks/organs.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "organs": list(organs),
        "training": "3 synthetic sites with organs at risk (12, 8, 5 patients, seed 0), partial delineation",
        "federated": os.path.relpath(fl_model),
        "federated_job": {
            "rounds": args.rounds,
            "local_epochs": args.local_epochs,
            "aggregation": "fedavg",
            "fedbn": args.fedbn,
            "silobn": args.silobn,
            "local_lr_scale": settings.get("local_lr_scale"),  # as the job's own configuration says
            "train_seed": saved["profile"].get("seed"),  # the job's seed, as its model file's profile says
            "site_training": site_training(fl_workspace),
        },
        "central_train_seed": profile.seed,
        # Under FedBN each scanner's held-out patients are segmented by that site's own model.
        "federated_scored_with": "each site's own model (FedBN)"
        if args.fedbn
        else "each site's own model (SiloBN)"
        if args.silobn
        else "the global model",
        "central": f"{central.meta.get('epochs')} epochs on the pooled training cases of the same split, "
        "profile cpu-small",
        "heldout": f"{args.heldout_patients} patients per scanner x 3 scanners, synthesis seed {args.heldout_seed}; "
        "each organ on the cases that delineate it",
        "surface_dice_tolerance_mm": 4.0,
        "target": f"federated / central mean Dice >= {TARGET} for every organ",
        "all_organs_meet_target": all(v["meets_target"] for v in per_organ.values()),
        "per_organ": per_organ,
        # What the federated run itself printed: the final model on the sites' 6 validation cases.
        "federated_validation": {
            key: fl_summary.get(key)
            for key in ("final_val_dice", "organ_val", "site_val_dice", "site_val_cases")
        },
        # Wall seconds on this host: central_s and federated_s of the whole run (federated_rounds_s: the sum of
        # the job's rounds from its server's round_times.jsonl, when the job ran before this script).
        "seconds": timings,
        "cases": scores,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(json_safe(results), indent=2) + "\n")
    print(f"{'organ':<10} {'cases':>5} {'central':>8} {'federated':>9} {'ratio':>6}  paired diff [95% CI]")
    for organ, row in per_organ.items():
        diff = row["paired_dice_difference"]
        print(
            f"{organ:<10} {row['central']['cases']:>5} {row['central']['dice']:>8.4f} "
            f"{row['federated']['dice']:>9.4f} {row['federated_over_central_dice']:>6.3f}  "
            f"{diff['mean']:+.4f} [{diff['ci95_low']:+.4f}, {diff['ci95_high']:+.4f}]"
        )
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
