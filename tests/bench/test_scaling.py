"""Scaling figures and the 10-hospital projection: interpolation, link arithmetic, measured message sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dose3d_fl.bench.scaling import (
    Link,
    format_scaling,
    interpolated_fixed_cost,
    message_bytes,
    project,
    projection,
)

ROOT = Path(__file__).resolve().parents[2]


def _run(sites: int, fixed: float) -> dict:
    return {
        "sites": sites,
        "profile": "cpu-small",
        "steady_fixed_seconds_per_round": fixed,
        "steady_fixed_seconds_median": fixed,
        "first_round_fixed_seconds": 10.0,
        "steady_compute_seconds_per_round": 1.0,
        "server_peak_rss_mib": 500.0,
        "site_peak_rss_mib": 700.0,
        "peak_total_rss_mib": 700.0 * sites,
        "sent_bytes_per_site_per_round": 632000,
        "received_bytes_per_site_per_round": 631000,
        "wall_seconds": 60.0,
    }


def test_fixed_cost_is_interpolated_between_measured_site_counts() -> None:
    runs = {"a": _run(8, 0.5), "b": _run(16, 0.9), "c": _run(3, 0.4)}
    assert interpolated_fixed_cost(runs, 10) == pytest.approx(0.6)
    assert interpolated_fixed_cost(runs, 8) == pytest.approx(0.5)
    assert interpolated_fixed_cost(runs, 2) == pytest.approx(0.4)  # below the range: the nearest
    assert interpolated_fixed_cost(runs, 40) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="no scaling measurement"):
        interpolated_fixed_cost({}, 10)


def test_projection_adds_transfer_latency_and_fixed_cost() -> None:
    # 12.5 MB each way at 100 Mbit/s (12.5 MB/s): 2 s per hospital; 10 hospitals on one link: 20 s.
    p = projection(12_500_000, 12_500_000, 0.6, 10, Link(100.0, 0.05))
    assert p["transfer_seconds_own_links"] == pytest.approx(2.0)
    assert p["transfer_seconds_shared_link"] == pytest.approx(20.0)
    assert p["latency_seconds"] == pytest.approx(0.2)
    assert p["seconds_per_round_shared_link"] == pytest.approx(20.8)
    assert p["seconds_per_round_own_links"] == pytest.approx(2.8)


def test_message_size_matches_what_the_wire_meter_measured() -> None:
    """The serialised float32 message of the bench's model is within 0.5 % of the bytes the wire meters counted
    in the benchmark (``default.json``); int8 is under a quarter of it."""
    measured = json.loads((ROOT / "benchmarks" / "results" / "default.json").read_text())
    sent = measured["runs"]["fedavg"]["wire_bytes"]["site-1"]["sent_per_round"]
    fp32, int8 = message_bytes("cpu-small"), message_bytes("cpu-small", "int8")
    assert abs(fp32["serialized_bytes"] - sent) / sent < 0.005
    assert int8["serialized_bytes"] < 0.26 * fp32["serialized_bytes"]
    with pytest.raises(ValueError, match="float32 or int8"):
        message_bytes("cpu-small", "float16")


def test_project_and_format() -> None:
    tiny = _run(10, 5.0) | {"profile": "cpu-tiny"}  # another profile's run: not used for cpu-small's cost
    results = {"runs": {"a": _run(8, 0.5), "b": _run(16, 0.9), "t": tiny}}
    results["projections"] = {"cpu-small": project(results, "cpu-small", 10)}
    p = results["projections"]["cpu-small"]
    assert p["fixed_seconds_interpolated"] == pytest.approx(0.6)
    assert p["fixed_cost_measured_with"] == "cpu-small"
    assert p["int8"]["seconds_per_round_shared_link"] < p["float32"]["seconds_per_round_shared_link"]
    text = format_scaling(results)
    assert "| a | 8 |" in text and "Projection: 10 hospitals, cpu-small model, 100 Mbit/s, 50 ms" in text
