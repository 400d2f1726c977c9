"""Final Dice with one Byzantine site: FedAvg against the coordinate-wise median and trimmed mean, FULL and DIFF.

The setting of ``tests/fl/server/test_robust_simulation.py``, repeated over data seeds and every aggregation:
NVFlare's simulator, 5 sites of 3 tiny DICOM-derived cases each (``tests.data.dicom_builders.SMALL``: the
same ellipsoid organ in every case, noise drawn per case and seed, so the sites are near-IID), the job's
``cpu-small`` MONAI UNet, 8 rounds x 2 local epochs at ``local_lr_scale`` 1, no cross-site evaluation. In
the attacked runs site-5 sends ``-10`` times its update every round (``tests/fl/server/sign_flip.py``) and
``max_norm_ratio`` is 30 in every run, so that the server's norm check lets the attacker through (a x10
update sits at the default limit of 10x; the test's docstring says why). Per run: the union validation Dice
of the final global model (scored here on every site's validation cases), the Dice the sites measured for
each round's global model, the attacker's update norm over the median honest one, and what the server
rejected.

Usage: ``.venv/bin/python benchmarks/robust_aggregation.py [--seeds 0 1 2] [--variants ...]``; about one
minute per run on 2 cores. Writes ``benchmarks/results/robust_aggregation.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the test's cases and attacker (tests/), also for the simulated sites

import torch  # noqa: E402

from dose3d_fl.bench.evaluate import Evaluator  # noqa: E402
from dose3d_fl.bench.runner import machine  # noqa: E402
from dose3d_fl.data.cases import load_site_cases  # noqa: E402
from dose3d_fl.data.ingest import ingest_site  # noqa: E402
from dose3d_fl.fl.seg_job import SegJobConfig  # noqa: E402
from dose3d_fl.fl.server.transfer_log import LOG_NAME  # noqa: E402
from dose3d_fl.fl.simulate import (  # noqa: E402
    SimulationConfig,
    final_global_model,
    server_job_dir,
    simulate_seg,
    simulation_dir,
)
from dose3d_fl.seg.profiles import get_profile  # noqa: E402
from tests.data.dicom_builders import SMALL, make_study  # noqa: E402
from tests.fl.server.sign_flip import add_sign_flip  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "robust_aggregation.json"
SITES = 5
CASES = 3
ATTACKER = "site-5"
FACTOR = -10.0
# name -> (attacked, aggregation, transfer)
VARIANTS = {
    "clean-fedavg": (False, "fedavg", "full"),
    "clean-median": (False, "median", "full"),
    "clean-trimmed-mean": (False, "trimmed_mean", "full"),
    "attack-fedavg": (True, "fedavg", "full"),
    "attack-median-full": (True, "median", "full"),
    "attack-median-diff": (True, "median", "diff"),
    "attack-trimmed-mean-full": (True, "trimmed_mean", "full"),
    "attack-trimmed-mean-diff": (True, "trimmed_mean", "diff"),
}


def site_caches(root: Path, seed: int) -> Path:
    """5 sites x 3 cases; seed 0 gives the test's cases."""
    cache = root / f"data-seed{seed}" / "cache"
    for site in range(1, SITES + 1):
        if (cache / f"site-{site}").is_dir():
            continue
        dicom = cache.parent / "dicom" / f"site-{site}"
        for case in range(CASES):
            make_study(SMALL, seed=seed * 1000 + site * 100 + case).write(dicom / f"case{case}")
        ingest_site(dicom, cache / f"site-{site}")
    return cache


def one_run(caches: Path, workspace: Path, job: SegJobConfig, attacked: bool) -> dict:
    shutil.rmtree(workspace, ignore_errors=True)
    shutil.copytree(caches, workspace / "data" / "cache")  # the same caches, no site state of another run
    start = time.perf_counter()
    summary = simulate_seg(
        SimulationConfig(workspace=workspace, sites=SITES, job=job),
        customize=(lambda recipe: add_sign_flip(recipe, ATTACKER, FACTOR)) if attacked else None,
    )
    wall = time.perf_counter() - start
    server = server_job_dir(simulation_dir(workspace))
    weights = torch.load(final_global_model(server), weights_only=False)["model"]
    sites = load_site_cases(sorted((workspace / "data" / "cache").glob("site-*")))
    scores = Evaluator(sites, get_profile(job.profile)).evaluate_weights(weights)
    log = [json.loads(line) for line in (server / LOG_NAME).read_text().splitlines()]
    ratios = []
    for round_ in range(job.num_rounds):
        norms = {e["site"]: e.get("update_norm") for e in log if e["round"] == round_}
        honest = [n for site, n in norms.items() if site != ATTACKER and n is not None]
        if attacked and norms.get(ATTACKER) and honest:
            ratios.append(round(norms[ATTACKER] / statistics.median(honest), 2))
    return {
        "final_union_val_dice": round(scores["union_val_dice"], 4),
        "site_val_dice": {s: round(d, 4) for s, d in scores["site_val_dice"].items()},
        "round_val_dice": [round(d, 4) for d in summary["round_val_dice"]],
        "attacker_norm_over_median_honest": ratios,
        "rejected_rounds": summary["rejected_rounds"],
        "wall_seconds": round(wall, 1),
    }


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        "# Robust aggregation against one sign-flipping site",
        "",
        f"Command: `{result['command']}`",
        "",
        result["setting"],
        "",
        "| variant | final union val Dice, mean | min | max | per seed | attacker norm / median honest |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in result["summary"].items():
        ratio = row["attacker_norm_over_median_honest"]
        lines.append(
            f"| {name} | {row['mean']:.4f} | {row['min']:.4f} | {row['max']:.4f} | "
            f"{', '.join(f'{d:.4f}' for d in row['per_seed'])} | "
            f"{'-' if ratio is None else f'{ratio[0]:.1f} to {ratio[1]:.1f}'} |"
        )
    lines += [
        "",
        "What was measured: " + result["measured"],
        "",
        "What was not: " + result["not_measured"],
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-robust-aggregation"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

    runs: dict[str, dict[str, dict]] = {name: {} for name in args.variants}
    for seed in args.seeds:
        caches = site_caches(args.work.resolve(), seed)
        for name in args.variants:
            attacked, aggregation, transfer = VARIANTS[name]
            job = SegJobConfig(
                num_rounds=args.rounds,
                local_epochs=args.local_epochs,
                local_lr_scale=1.0,
                tensorboard=False,
                cross_site_evaluation=False,
                max_norm_ratio=30.0,
                aggregation=aggregation,
                transfer=transfer,
            )
            run = one_run(caches, args.work.resolve() / f"seed{seed}" / name, job, attacked)
            runs[name][str(seed)] = run
            print(
                f"seed {seed} {name}: final Dice {run['final_union_val_dice']:.4f} ({run['wall_seconds']} s)"
            )

    summary = {}
    for name, by_seed in runs.items():
        dice = [r["final_union_val_dice"] for r in by_seed.values()]
        ratios = [x for r in by_seed.values() for x in r["attacker_norm_over_median_honest"]]
        summary[name] = {
            "mean": round(statistics.mean(dice), 4),
            "min": min(dice),
            "max": max(dice),
            "per_seed": dice,
            "attacker_norm_over_median_honest": [min(ratios), max(ratios)] if ratios else None,
            "rejected_updates": sum(len(v) for r in by_seed.values() for v in r["rejected_rounds"].values()),
        }
    command = "python benchmarks/robust_aggregation.py" + (
        ""
        if argv is None and len(sys.argv) == 1
        else " " + " ".join(argv if argv is not None else sys.argv[1:])
    )
    result = {
        "command": command,
        "machine": machine(),
        "setting": (
            f"NVFlare simulator, {SITES} sites x {CASES} tiny DICOM-derived cases (2 train, 1 validation; the same "
            "organ, noise per case and seed: near-IID sites), cpu-small MONAI UNet, "
            f"{args.rounds} rounds x {args.local_epochs} local epochs, local_lr_scale 1, max_norm_ratio 30, "
            f"no cross-site evaluation; attacked runs: {ATTACKER} sends {FACTOR:g} x its update every round; "
            f"data seeds {', '.join(map(str, args.seeds))} (the network's initial weights are the profile's, "
            "the same in every run)"
        ),
        "measured": (
            "union validation Dice (5 validation cases, one per site) of each run's final global model, scored "
            "by one evaluator; the sites' Dice of every round's global model; the attacker's update norm over "
            "the median honest site's, per round (server transfer log); updates the server rejected"
        ),
        "not_measured": (
            "heterogeneous (non-IID) sites, where a median costs accuracy even without an attacker; more than "
            "one attacker; an attacker that adapts to the aggregator (e.g. small coordinated shifts inside the "
            "honest range); the default max_norm_ratio 10, at which a x10 update is near the limit; other "
            "initial weights; timings (the machine was shared)"
        ),
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, args.out.with_suffix(".md"))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
