"""How the simulated sites run on a shared machine: two settings of the same job, alternating.

``--compare pinning`` (default): the sites pinned to cores against the same sites left to the operating
system. With more simulated sites than cores, ``dose3d fl simulate`` pins each site's training thread to one
core, balanced by cases (``dose3d_fl.fl.simulate.write_site_configs``). The two ways must train the same
model to the last digit: the sites compute with one thread either way, and the server sums their updates in
a fixed order.

``--compare channels-last``: the sites (pinned) training in torch's ``channels_last_3d`` memory format
against the contiguous one (``dose3d fl simulate --channels-last``). Here the models differ in the last
digits (the convolutions sum in another order); ``same_model`` says whether they are identical, and the
figures of both are kept.

``--compare bfloat16``: the sites (pinned) training under bfloat16 autocast on the CPU against float32
(``dose3d fl simulate --cpu-bfloat16``). The models differ (the convolutions round to bfloat16); the figures
of both are kept, a few rounds of one seed: not a measure of what bfloat16 does to the trained model.

Each pair runs the demo's job (its organs, SiloBN, 8 local epochs) for a few rounds on the demo's synthetic
sites both ways, alternating which goes first, and records the wall time of each run and its round times
(the server's ``round_times.jsonl``).

Usage: ``python benchmarks/sim_core_pinning.py [--compare pinning|channels-last|bfloat16] [--rounds 4]
[--repeats 2] [--work runs/bench-pinning]``; writes ``benchmarks/results/sim_core_pinning.json``,
``sim_channels_last.json`` or ``sim_cpu_bfloat16.json`` (``--out``). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from dose3d_fl.bench.runner import machine
from dose3d_fl.fl.seg_job import SegJobConfig
from dose3d_fl.fl.shared_machine import available_cores
from dose3d_fl.fl.simulate import SimulationConfig, simulate_seg
from dose3d_fl.synth.demo_sites import DEMO_ORGANS, prepare_site_data

RESULTS = Path(__file__).parent / "results"
# What each comparison varies: its results file, and the two settings (the first is the default one).
COMPARISONS = {
    "pinning": (
        "sim_core_pinning.json",
        (("pinned", {"pin_cores": True}), ("os_scheduled", {"pin_cores": False})),
    ),
    "channels-last": (
        "sim_channels_last.json",
        (("contiguous", {"channels_last": False}), ("channels_last", {"channels_last": True})),
    ),
    "bfloat16": (
        "sim_cpu_bfloat16.json",
        (("float32", {"cpu_bfloat16": False}), ("bfloat16", {"cpu_bfloat16": True})),
    ),
}
# The parts of summary.json that describe the trained model (not the time it took).
MODEL_KEYS = ("round_val_dice", "organ_val", "cross_site", "site_organ_dice")


def run_once(data: Path, workspace: Path, rounds: int, setting: dict[str, bool]) -> dict[str, Any]:
    """One simulation (``setting``: ``SimulationConfig`` fields) on a fresh copy of the prepared site caches;
    wall time, round times and the model's figures."""
    shutil.rmtree(workspace, ignore_errors=True)
    shutil.copytree(data, workspace / "data", ignore=shutil.ignore_patterns("fl_state"))
    job = SegJobConfig(num_rounds=rounds, local_epochs=8, silobn=True, organs=DEMO_ORGANS)
    started = time.perf_counter()
    summary = simulate_seg(SimulationConfig(workspace=workspace, job=job, **setting))
    wall = time.perf_counter() - started
    times_file = next((workspace / "sim").rglob("round_times.jsonl"))
    rounds_s = [json.loads(line)["seconds"] for line in times_file.read_text().splitlines() if line.strip()]
    return {
        **setting,
        "wall_s": round(wall, 1),
        "round_s": rounds_s,
        "rounds_after_first_mean_s": round(statistics.mean(rounds_s[1:]), 2) if len(rounds_s) > 1 else None,
        "model": {key: summary.get(key) for key in MODEL_KEYS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="pairs of runs (default 2)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-pinning"))
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="pinning")
    parser.add_argument(
        "--out", type=Path, default=None, help="default benchmarks/results/<comparison's file>"
    )
    args = parser.parse_args()
    file_name, settings = COMPARISONS[args.compare]
    out = args.out or RESULTS / file_name

    data = args.work / "prepared" / "data"
    if not data.is_dir():
        prepare_site_data(args.work / "prepared", 3, 0, organs=DEMO_ORGANS)
    runs = []
    for repeat in range(args.repeats):
        for way, setting in settings if repeat % 2 == 0 else settings[::-1]:
            runs.append({"way": way, **run_once(data, args.work / f"run-{len(runs)}", args.rounds, setting)})
            print(f"{way}: {runs[-1]['wall_s']} s", flush=True)
    by_way = {way: [r for r in runs if r["way"] == way] for way, _ in settings}
    result = {
        "command": f"python benchmarks/sim_core_pinning.py --compare {args.compare} "
        f"--rounds {args.rounds} --repeats {args.repeats} --work {args.work}",
        "machine": {**machine(), "cores": len(available_cores())},
        "job": {
            "sites": 3,
            "rounds": args.rounds,
            "local_epochs": 8,
            "silobn": True,
            "organs": list(DEMO_ORGANS),
        },
        "wall_s": {way: [r["wall_s"] for r in rs] for way, rs in by_way.items()},
        "rounds_after_first_mean_s": {
            way: [r["rounds_after_first_mean_s"] for r in rs] for way, rs in by_way.items()
        },
        "same_model": all(r["model"] == runs[0]["model"] for r in runs),
        "runs": [{k: v for k, v in r.items() if k != "model"} for r in runs],
        "model": runs[0]["model"],
    }
    if not result["same_model"]:  # the first run's model of each way (repeats of one way are identical)
        result["model"] = {way: rs[0]["model"] for way, rs in by_way.items()}
        result["same_model_within_each_way"] = all(
            r["model"] == rs[0]["model"] for rs in by_way.values() for r in rs
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("wall_s", "rounds_after_first_mean_s", "same_model")}, indent=2))


if __name__ == "__main__":
    main()
