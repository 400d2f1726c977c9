"""Fixed cost per round against the sites' task request interval: the same simulator run at each interval.

Runs the ``seg_fedavg`` job (3 sites of the ``make demo`` data, ``--rounds`` x 4 local epochs) once per
interval and repetition, the intervals interleaved so that a slower spell of the machine falls on all of
them. Per run: the steady fixed cost per round (wall minus the slowest site's compute, after round 1), the
slowest site's compute per round, and the CPU seconds of the whole process tree (``RUSAGE_CHILDREN``), which
would show what the extra task requests of a shorter interval cost. Writes ``benchmarks/results/polling.json``.

Usage: ``.venv/bin/python benchmarks/polling.py [--intervals 0.5 0.2] [--reps 3] [--rounds 8]``, on an
otherwise idle machine (about 90 s per run on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dose3d_fl.bench.fl_figures import overhead, round_figures
from dose3d_fl.bench.runner import federated_command, machine
from dose3d_fl.fl.seg_job import TASK_CHECK_PERIOD
from dose3d_fl.fl.simulate import server_job_dir, simulation_dir
from dose3d_fl.synth.demo_sites import prepare_site_data

RESULTS = Path(__file__).parent / "results" / "polling.json"
FIGURES = (
    "steady_fixed_seconds_per_round",
    "steady_fixed_seconds_median",
    "steady_compute_seconds_per_round",
    "first_round_fixed_seconds",
    "overhead_ratio",
    "steady_overhead_ratio",
)


def cpu_seconds_of_children() -> float:
    """User + system CPU seconds of this process's finished children and their descendants."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(work: Path, data: Path, interval: float, rounds: int, seed: int) -> dict[str, float]:
    """One simulator run at ``interval``; its overhead figures, wall and CPU seconds."""
    workspace = work / f"interval-{interval:g}"
    job = {
        "num_rounds": rounds,
        "local_epochs": 4,
        "cross_site_evaluation": False,
        "task_request_interval": interval,
        "task_check_period": TASK_CHECK_PERIOD,
    }
    shutil.rmtree(workspace, ignore_errors=True)  # each run's figures from its own files only
    command = federated_command(workspace, data, sites=3, seed=seed, job=job)
    cpu_before, start = cpu_seconds_of_children(), time.perf_counter()
    with (work / f"interval-{interval:g}.log").open("w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    wall, cpu = time.perf_counter() - start, cpu_seconds_of_children() - cpu_before
    figures = overhead(round_figures(server_job_dir(simulation_dir(workspace))))
    return {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), **{k: figures[k] for k in FIGURES}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.5, 0.2])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-polling"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    prepare_site_data(args.work, 3, args.seed)
    runs: dict[str, list[dict[str, float]]] = {f"{i:g}": [] for i in args.intervals}
    for rep in range(args.reps):
        for interval in args.intervals:
            result = one_run(args.work, args.work / "data", interval, args.rounds, args.seed)
            runs[f"{interval:g}"].append(result)
            print(f"rep {rep + 1}/{args.reps}, interval {interval:g} s: {json.dumps(result)}", flush=True)
    keys = (
        "steady_fixed_seconds_per_round",
        "steady_compute_seconds_per_round",
        "cpu_seconds",
        "wall_seconds",
    )
    results = {
        "command": " ".join(["python benchmarks/polling.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "setting": f"3 sites (make demo data), {args.rounds} rounds x 4 local epochs, task check period "
        f"{TASK_CHECK_PERIOD:g} s",
        "median": {
            interval: {key: statistics.median(r[key] for r in reps) for key in keys}
            for interval, reps in runs.items()
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["median"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
