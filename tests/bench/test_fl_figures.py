"""Overhead, data-pipeline and byte figures computed from the files a simulated run leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dose3d_fl.bench.fl_figures import data_pipeline, overhead, round_figures, time_to_dice, wire_bytes


def _site(name: str, dice: float, val: float, train: float, cache: float = 0.0, data: float = 0.1) -> dict:
    metrics = {
        "val_dice": dice,
        "val_cases": 2,
        "val_seconds": val,
        "train_seconds": train,
        "cache_seconds": cache,
        "data_seconds": data,
    }
    return {"name": name, "metrics": [{"name": k, "value": v} for k, v in metrics.items()]}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """Three rounds: a 20 s first round (start-up), then rounds of 6 s and 5 s wall."""
    job = tmp_path / "sim" / "server" / "simulate_job"
    (job / "metrics").mkdir(parents=True)
    times = [(0, 20.0, 1000.0), (1, 5.5, 1006.0), (2, 4.8, 1011.0)]
    (job / "metrics" / "round_times.jsonl").write_text(
        "".join(json.dumps({"round": r, "seconds": s, "ended": e}) + "\n" for r, s, e in times)
    )
    records = [
        {"round": 0, "sites": [_site("a", 0.0, 1.0, 2.0, cache=3.0), _site("b", 0.0, 0.5, 1.0)]},
        {"round": 1, "sites": [_site("a", 0.5, 1.0, 4.0), _site("b", 0.7, 0.5, 1.0)]},
        {"round": 2, "sites": [_site("a", 0.9, 1.0, 3.0), _site("b", 0.95, 0.5, 1.0)]},
    ]
    (job / "metrics" / "round_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    wire = [
        ("server", {"sender": "server", "receiver": "a", "task": "train", "serialized_bytes": 100}),
        ("server", {"sender": "server", "receiver": "a", "task": "train", "serialized_bytes": 300}),
        ("a", {"sender": "a", "receiver": "server", "task": "train", "serialized_bytes": 50}),
        ("a", {"sender": "a", "receiver": "server", "task": "validate", "serialized_bytes": 5}),
    ]
    for folder, entry in wire:
        (tmp_path / "sim" / folder).mkdir(parents=True, exist_ok=True)
        with (tmp_path / "sim" / folder / "wire_bytes.jsonl").open("a") as out:
            out.write(json.dumps(entry) + "\n")
    return tmp_path / "sim"


def test_round_walls_are_end_to_end_and_compute_is_the_slowest_site(run: Path) -> None:
    rounds = round_figures(run / "server" / "simulate_job")
    assert [r["wall_seconds"] for r in rounds] == [20.0, 6.0, 5.0]
    assert [r["slowest_site_compute_seconds"] for r in rounds] == [6.0, 5.0, 4.0]
    assert [r["fixed_seconds"] for r in rounds] == [14.0, 1.0, 1.0]
    assert rounds[2]["received_model_union_dice"] == pytest.approx(0.925)


def test_overhead_over_all_rounds_and_after_the_first(run: Path) -> None:
    figures = overhead(round_figures(run / "server" / "simulate_job"))
    assert figures["overhead_ratio"] == pytest.approx(31 / 15, abs=1e-3)
    assert figures["fixed_seconds_per_round"] == pytest.approx(16 / 3, abs=1e-3)
    assert figures["steady_overhead_ratio"] == pytest.approx(11 / 9, abs=1e-3)
    assert figures["steady_fixed_seconds_per_round"] == pytest.approx(1.0)
    assert figures["first_round_fixed_seconds"] == 14.0


def test_data_share_and_bytes_per_round(run: Path) -> None:
    pipeline = data_pipeline(round_figures(run / "server" / "simulate_job"))
    assert pipeline["compute_share"] == pytest.approx(1 - 0.6 / 12)
    wire = wire_bytes(run)
    assert wire["a"] == {"sent_per_round": 50.0, "received_per_round": 200.0}  # train task only


def test_time_to_dice_uses_the_round_that_produced_the_model(run: Path) -> None:
    rounds = round_figures(run / "server" / "simulate_job")
    # The round-2 model (ended at 1006) scored 0.925 when the sites received it in round 3.
    assert time_to_dice(rounds, final_dice=0.96, launched_at=990.0, target=0.9) == 16.0
    assert time_to_dice(rounds, final_dice=0.96, launched_at=990.0, target=0.95) == 21.0  # the final model
    assert time_to_dice(rounds, final_dice=0.5, launched_at=990.0, target=0.99) is None
