"""Rounds that resume by themselves: kill -9 the server, then one site, during a job on a real POC; measure.

A POC on loopback (server + 2 sites as NVFlare processes, the server kit with ``AutoResume``), the tiny site
caches of the deploy tests (4 coarse 12-slice studies per site), the ``seg_fedavg`` job with ``cpu-small``.
Three jobs run in turn on the same POC:

1. the reference: the job uninterrupted;
2. server fault: the server and its job process are SIGKILLed during round 2, the server is restarted from its
   kit; nothing is submitted by hand (the server resubmits the job itself);
3. site fault: hospital-b's client and job process are SIGKILLed during round 2 and restarted from its kit.

Writes ``benchmarks/results/resume_fault.json``: for each fault the rounds planned, the round in progress at
the kill, the rounds lost, the seconds from the restart to the recovery and the final global model's Dice on
both sites' validation cases (with the reference's for comparison).

Usage: ``.venv/bin/python benchmarks/resume_fault.py [--rounds 4] [--epochs 2]`` (about 6 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.chdir(REPO)  # server/project.yml, sites/local, server/local are found from the repository root

import sys  # noqa: E402

sys.path.insert(0, str(REPO))

from dose3d_fl.bench.runner import machine  # noqa: E402
from dose3d_fl.deploy.poc import PocConfig, poc_down, poc_up  # noqa: E402
from dose3d_fl.deploy.processes import free_port  # noqa: E402
from dose3d_fl.fl.seg_job import JOB_NAME, SegJobConfig, export_seg_job  # noqa: E402
from tests.deploy.conftest import make_tiny_cache  # noqa: E402
from tests.deploy.resume_drill import Drill, server_fault, site_fault  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "resume_fault.json"
SITES = ("hospital-a", "hospital-b")
KEPT = (
    "fault",
    "rounds_planned",
    "round_at_kill",
    "rounds_lost",
    "rounds_completed_before_kill",
    "rounds_missed_by_site",
    "first_round_with_site_after_restart",
    "seconds_restart_to_resubmitted",
    "seconds_restart_to_first_round_done",
    "seconds_restart_to_rejoined",
    "seconds_restart_to_first_round_with_site",
    "interrupted_job_status",
    "resume_job_status",
    "job_status",
    "final_dice",
    "server_round_lines",
    "participation",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--work", type=Path, default=REPO / "runs" / "bench-resume-fault", help="POC and logs (emptied first)"
    )
    args = parser.parse_args()
    job_config = SegJobConfig(
        num_rounds=args.rounds,
        min_clients=2,
        local_epochs=args.epochs,
        tensorboard=False,
        cross_site_evaluation=False,
        min_responses=1,
        round_timeout=90,
        dead_client_grace_period=10,
    )
    started = time.monotonic()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    os.environ["HOME"] = str(work / "user_home")  # NVFlare's startup-kit registry stays in the work folder
    config = PocConfig(root=work / "poc", sites=SITES, port=free_port())
    for seed, site in enumerate(SITES, 1):
        make_tiny_cache(work / "dicom" / site, config.cache_dir(site), seed, cases=4)
    kits = poc_up(config, on_progress=print)
    try:
        drill = Drill(config, kits, SITES, job_config.profile)
        job = export_seg_job(work / "jobs", job_config)
        status, result = drill.finish(drill.submit(job))
        reference = {"job_status": status, "final_dice": drill.final_dice(result)}
        print(f"reference: {reference}", flush=True)
        server = server_fault(drill, job, JOB_NAME)
        print(f"server fault: {_kept(server)}", flush=True)
        site = site_fault(drill, job, JOB_NAME, "hospital-b")
        print(f"site fault: {_kept(site)}", flush=True)
    finally:
        poc_down(config)
    report = {
        "command": " ".join([".venv/bin/python benchmarks/resume_fault.py", *sys.argv[1:]]),
        "machine": machine(),
        "setup": (
            f"NVFlare POC on loopback: server + {len(SITES)} sites, 4 tiny cases per site, seg_fedavg with "
            f"cpu-small, {args.rounds} rounds x {args.epochs} local epochs, round_timeout 90 s; the server kit "
            "has the AutoResume component (dose3d poc up)"
        ),
        "reference": reference,
        "server_fault": _kept(server),
        "site_fault": _kept(site),
        "seconds_total": round(time.monotonic() - started, 1),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def _kept(outcome: dict[str, Any]) -> dict[str, Any]:
    return {key: outcome[key] for key in KEPT if key in outcome}


if __name__ == "__main__":
    main()
