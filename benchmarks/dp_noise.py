"""Dice against the DP noise multiplier: the seg job in NVFlare's simulator with every site's ``GaussianDP``.

Each noise multiplier ``sigma`` is one simulator run of the same job on the same data and seed: 3 sites of the
``make demo`` data (``prepare_site_data``), profile ``cpu-small-dp`` (instance norm: no BatchNorm running
statistics, as DP needs), ``--rounds`` x ``--local-epochs``, FULL transfer, the same clip ``C`` at every site;
``sigma`` 0 is the run without the DP filter. Each run starts in its own process (``--one``). Per run: the
union validation Dice of the final global model (cross-site evaluation, over the sites' validation cases), the
epsilon each site spent (its ledger, opacus RDP accountant, sample rate 1, replace-one adjacency: sensitivity
``2C``), the sites' update norms before clipping (median, share clipped), the noise standard deviation per
coordinate ``2 sigma C`` and the noise norm per update it implies (``std * sqrt(d)``, ``d`` coordinates).
Also the epsilon after ``--rounds`` releases at other noise multipliers (the accountant alone, no run).
Writes ``benchmarks/results/dp_noise.json`` and ``.md``.

Usage: ``.venv/bin/python benchmarks/dp_noise.py [--sigmas 0 0.001 0.01 0.1] [--clip 5] [--rounds 8]
[--local-epochs 2] [--seeds 0] [--work runs/bench-dp-noise]`` (about 2.5 minutes per run on 2 cores with the
defaults).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dose3d_fl.bench.runner import machine
from dose3d_fl.fl.policy.dp import PrivacyLedger, Release, noise_std, sensitivity
from dose3d_fl.fl.policy.privacy import DPConfig
from dose3d_fl.fl.seg_job import SegJobConfig
from dose3d_fl.fl.simulate import (
    SimulationConfig,
    final_global_model,
    server_job_dir,
    simulate_seg,
    simulation_dir,
)
from dose3d_fl.synth.demo_sites import prepare_site_data

RESULTS = Path(__file__).parent / "results" / "dp_noise.json"
PROFILE = "cpu-small-dp"
SITES = 3
DELTA = 1e-5
REFERENCE_SIGMAS = (0.3, 1.0, 2.0, 5.0, 10.0)


def one_run(workspace: Path, config: dict) -> None:
    """One simulator run (in this process): ``config`` holds ``sigma``, ``clip``, ``rounds``, ``local_epochs``,
    ``seed``; ``workspace/data`` holds the site caches."""
    job = SegJobConfig(
        num_rounds=config["rounds"],
        local_epochs=config["local_epochs"],
        profile=PROFILE,
        tensorboard=False,
        min_clients=SITES,
    )
    dp = None
    if config["sigma"] > 0:
        dp = DPConfig(
            clip_norm=config["clip"],
            noise_multiplier=config["sigma"],
            epsilon_budget=1e300,  # no halt: the table shows what each sigma costs
            delta=DELTA,
            seed=config["seed"],
        )
    simulate_seg(SimulationConfig(workspace=workspace, sites=SITES, job=job, seed=config["seed"], dp=dp))


def measure(workspace: Path, config: dict, seconds: float) -> dict:
    """The figures of a finished run, from its summary and the sites' ledgers."""
    summary = json.loads((workspace / "summary.json").read_text())
    sim = simulation_dir(workspace)
    ledgers = {
        p.parent.parent.name: PrivacyLedger(p) for p in sorted(sim.glob("site-*/local/dp_ledger.json"))
    }
    norms = [r.update_norm for ledger in ledgers.values() for r in ledger.releases]
    result = {
        "sigma": config["sigma"],
        "seed": config["seed"],
        "final_val_dice": summary["final_val_dice"],
        "round_val_dice": summary["round_val_dice"],
        "site_val_dice": summary["site_val_dice"],
        "wall_seconds": round(seconds, 1),
    }
    if config["sigma"] > 0:
        coordinates = _coordinates(workspace)
        std = noise_std(config["clip"], config["sigma"])
        result |= {
            "epsilon_per_site": {site: ledger.epsilon(DELTA) for site, ledger in ledgers.items()},
            "releases_per_site": {site: len(ledger.releases) for site, ledger in ledgers.items()},
            "noise_std": std,
            "noise_norm_per_update": std * math.sqrt(coordinates),
            "coordinates": coordinates,
            "update_norm_median": statistics.median(norms),
            "update_norm_range": [min(norms), max(norms)],
            "share_clipped": sum(n > config["clip"] for n in norms) / len(norms),
        }
    return result


def _coordinates(workspace: Path) -> int:
    """Floating-point coordinates of the model (the noise's dimension), from the final global model."""
    import torch

    model = final_global_model(server_job_dir(simulation_dir(workspace)))
    weights = torch.load(model, weights_only=False)["model"]
    return sum(v.numel() for v in weights.values() if v.is_floating_point())


def epsilon_after(rounds: int, sigma: float, clip: float) -> float:
    """Epsilon of ``rounds`` releases at noise multiplier ``sigma`` (delta ``DELTA``)."""
    ledger = PrivacyLedger(Path("/nonexistent"))
    std = noise_std(clip, sigma)
    ledger.releases = [Release("-", r, sigma, clip, 0.0, 0.0, std) for r in range(rounds)]
    return ledger.epsilon(DELTA)


def markdown(results: dict) -> str:
    """The Dice-vs-noise table and the setting, as Markdown."""
    lines = [
        "# Dice against the DP noise multiplier",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Setting: {results['setting']}",
        "",
        "| sigma | noise std per coordinate (2 sigma C) | noise norm per update | epsilon per site "
        f"(delta {DELTA:g}) | update norm before clipping, median (range) | releases clipped | union val Dice "
        "| seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        dice = "n/a" if run["final_val_dice"] is None else f"{run['final_val_dice']:.3f}"
        if run["sigma"] == 0:
            lines.append(
                f"| 0 (no DP filter) | 0 | 0 | no guarantee | not clipped | - | {dice} | {run['seed']} |"
            )
            continue
        eps = max(run["epsilon_per_site"].values())
        low, high = run["update_norm_range"]
        lines.append(
            f"| {run['sigma']:g} | {run['noise_std']:.3g} | {run['noise_norm_per_update']:.3g} | {eps:.3g} | "
            f"{run['update_norm_median']:.3g} ({low:.3g}-{high:.3g}) | {run['share_clipped']:.0%} | {dice} | "
            f"{run['seed']} |"
        )
    lines += [
        "",
        f"Epsilon after {results['rounds']} releases at other noise multipliers (the accountant alone, no run):",
        "",
        "| sigma | " + " | ".join(f"{s:g}" for s in REFERENCE_SIGMAS) + " |",
        "|---|" + "---|" * len(REFERENCE_SIGMAS),
        "| epsilon | "
        + " | ".join(f"{results['epsilon_by_sigma'][f'{s:g}']:.3g}" for s in REFERENCE_SIGMAS)
        + " |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.001, 0.01, 0.1])
    parser.add_argument("--clip", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-dp-noise"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", nargs=2, metavar=("WORKSPACE", "CONFIG_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        one_run(Path(args.one[0]), json.loads(args.one[1]))
        return 0

    runs = []
    for seed in args.seeds:
        data = args.work / f"data-seed{seed}"
        prepare_site_data(data, SITES, seed)
        for sigma in args.sigmas:
            workspace = args.work / f"seed{seed}-sigma{sigma:g}"
            shutil.rmtree(workspace, ignore_errors=True)  # a fresh ledger and workspace for every run
            workspace.mkdir(parents=True)
            (workspace / "data").symlink_to((data / "data").resolve(), target_is_directory=True)
            config = {
                "sigma": sigma,
                "clip": args.clip,
                "rounds": args.rounds,
                "local_epochs": args.local_epochs,
                "seed": seed,
            }
            start = time.perf_counter()
            with (workspace / "run.log").open("w") as log:
                subprocess.run(
                    [sys.executable, __file__, "--one", str(workspace), json.dumps(config)],
                    check=True,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            runs.append(measure(workspace, config, time.perf_counter() - start))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "round_val_dice"}), flush=True)

    results = {
        "command": " ".join(["python benchmarks/dp_noise.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "setting": (
            f"{SITES} sites (make demo data), profile {PROFILE}, {args.rounds} rounds x {args.local_epochs} local "
            f"epochs, FULL transfer, clip C = {args.clip:g} at every site, sensitivity {sensitivity(args.clip):g} "
            f"(replace-one adjacency), seeds {' '.join(map(str, args.seeds))} (data synthesis and DP noise; the "
            "network's initialisation is the profile's), union validation Dice of the final global model by "
            "cross-site evaluation"
        ),
        "rounds": args.rounds,
        "clip_norm": args.clip,
        "delta": DELTA,
        "runs": runs,
        "epsilon_by_sigma": {f"{s:g}": epsilon_after(args.rounds, s, args.clip) for s in REFERENCE_SIGMAS},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
