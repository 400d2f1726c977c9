"""Figures of one simulated federated run, read from the files the server and the sites wrote.

* ``metrics/round_times.jsonl`` (``SegFedAvg``): when each round ended, on the server's clock.
* ``metrics/round_metrics.jsonl`` (NVFlare's FedAvg): what each site reported for the round, including the
  seconds it spent validating, training and caching (``seg_client``).
* ``wire_bytes.jsonl`` in each workspace (``fl.wire_meter.WireMeter``): the size of every model message sent.

Orchestration overhead follows the issue's definition: the federated wall time divided by the compute
measured inside the sites, per round the slowest site's (validation + training + first-round caching); the
fixed cost of a round is its wall time minus that compute.
"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path
from typing import Any

from dose3d_fl.fl.server.controller import ROUND_TIMES_NAME
from dose3d_fl.fl.wire_meter import WIRE_LOG

COMPUTE_METRICS = ("val_seconds", "train_seconds", "cache_seconds")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    )


def _site_metrics(record: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {site["name"]: {m["name"]: m["value"] for m in site["metrics"]} for site in record["sites"]}


def round_figures(server_job_dir: Path) -> list[dict[str, Any]]:
    """Per round: wall seconds (end to end, from the previous round's end), the slowest site's compute, the
    fixed cost, the sites' Dice of the model they received and their data-wait and training seconds."""
    times = {t["round"]: t for t in _jsonl(server_job_dir / "metrics" / ROUND_TIMES_NAME)}
    records = {r["round"]: r for r in _jsonl(server_job_dir / "metrics" / "round_metrics.jsonl")}
    rounds = []
    previous_end = None
    for number in sorted(times):
        timing, sites = times[number], _site_metrics(records.get(number, {"sites": []}))
        wall = timing["seconds"] if previous_end is None else timing["ended"] - previous_end
        compute = {site: sum(m.get(key, 0.0) for key in COMPUTE_METRICS) for site, m in sites.items()}
        slowest = max(compute.values(), default=0.0)
        cases = {site: int(m.get("val_cases", 1)) for site, m in sites.items()}
        dice = sum(m["val_dice"] * cases[site] for site, m in sites.items()) / max(sum(cases.values()), 1)
        rounds.append(
            {
                "round": number + 1,
                "ended": timing["ended"],
                "wall_seconds": round(wall, 3),
                "slowest_site_compute_seconds": round(slowest, 3),
                "fixed_seconds": round(wall - slowest, 3),
                "received_model_union_dice": dice,
                "data_seconds": sum(m.get("data_seconds", 0.0) for m in sites.values()),
                "train_seconds": sum(m.get("train_seconds", 0.0) for m in sites.values()),
            }
        )
        previous_end = timing["ended"]
    return rounds


def overhead(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Overhead ratio and fixed cost per round, over all rounds and over the rounds after the first (the
    first also holds the sites' start-up: importing the libraries and building their trainers)."""
    if not rounds:
        return {}
    steady = rounds[1:] or rounds
    wall = sum(r["wall_seconds"] for r in rounds)
    compute = sum(r["slowest_site_compute_seconds"] for r in rounds)
    steady_wall = sum(r["wall_seconds"] for r in steady)
    steady_compute = sum(r["slowest_site_compute_seconds"] for r in steady)
    return {
        "rounds": len(rounds),
        "training_wall_seconds": round(wall, 2),
        "slowest_site_compute_seconds": round(compute, 2),
        "overhead_ratio": round(wall / compute, 3) if compute else None,
        "fixed_seconds_per_round": round((wall - compute) / len(rounds), 3),
        "first_round_wall_seconds": rounds[0]["wall_seconds"],
        "first_round_fixed_seconds": rounds[0]["fixed_seconds"],
        "steady_overhead_ratio": round(steady_wall / steady_compute, 3) if steady_compute else None,
        "steady_fixed_seconds_per_round": round((steady_wall - steady_compute) / len(steady), 3),
        "steady_fixed_seconds_median": round(statistics.median(r["fixed_seconds"] for r in steady), 3),
        "steady_compute_seconds_per_round": round(steady_compute / len(steady), 3),
    }


def data_pipeline(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of the sites' training time spent computing rather than waiting for batches."""
    train = sum(r["train_seconds"] for r in rounds)
    data = sum(r["data_seconds"] for r in rounds)
    return {
        "train_seconds": round(train, 2),
        "data_wait_seconds": round(data, 2),
        "compute_share": round(1.0 - data / train, 4) if train else None,
    }


def _train_messages(sim_job_root: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(workspace folder, entry)`` for every training-task message in the run's wire logs."""
    return [
        (log.parent.name, entry)
        for log in sorted(sim_job_root.glob(f"*/{WIRE_LOG}"))
        for entry in _jsonl(log)
        if entry.get("task") == "train"
    ]


def wire_bytes(sim_job_root: Path) -> dict[str, dict[str, float]]:
    """Mean bytes per training round, per site: ``sent`` (its results) and ``received`` (the global model)."""
    sent: dict[str, list[int]] = {}
    received: dict[str, list[int]] = {}
    for folder, entry in _train_messages(sim_job_root):
        if folder == "server":
            received.setdefault(str(entry["receiver"]), []).append(entry["serialized_bytes"])
        else:
            sent.setdefault(str(entry["sender"]), []).append(entry["serialized_bytes"])
    sites = sorted(set(sent) | set(received))
    return {
        site: {
            "sent_per_round": round(statistics.mean(sent[site]), 1) if site in sent else None,
            "received_per_round": round(statistics.mean(received[site]), 1) if site in received else None,
        }
        for site in sites
    }


def wire_dtypes(sim_job_root: Path) -> list[str]:
    """The tensor dtypes that travelled in training messages."""
    return sorted({dtype for _, entry in _train_messages(sim_job_root) for dtype in entry.get("dtypes", [])})


def time_to_dice(
    rounds: list[dict[str, Any]], final_dice: float, launched_at: float, target: float
) -> float | None:
    """Seconds from the run's launch until a global model with union Dice >= ``target`` existed.

    The Dice of round ``r``'s model is what the sites measured on it at the start of round ``r + 1``; it
    existed when round ``r`` ended. The last model's Dice is ``final_dice`` (the benchmark's evaluation).
    """
    for previous, current in itertools.pairwise(rounds):
        if current["received_model_union_dice"] >= target:
            return round(previous["ended"] - launched_at, 1)
    if rounds and final_dice >= target:
        return round(rounds[-1]["ended"] - launched_at, 1)
    return None
