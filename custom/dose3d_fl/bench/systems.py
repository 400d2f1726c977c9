"""One row per system of the comparison, the same fields for every one (``results["systems"]``).

Systems: central and local-only training, this project's federated runs, and the peers (stock NVFlare,
Flower). Fields (``SYSTEM_FIELDS``), ``None`` where a field does not apply to a system (a central run sends no
bytes and has no rounds):

* ``heldout_union_dice``: union Dice of the final model on the held-out patients (``bench.heldout_eval``),
  and ``heldout_difference_from_central``: the paired per-case difference with its 95 % interval;
* ``seconds_to_target``: from the process start until a model with union validation Dice >= the target existed;
* ``wall_seconds``: the whole process, start-up and shutdown included;
* ``fixed_seconds_per_round``: after round 1 (round wall time minus the slowest site's compute), and
  ``fixed_seconds_per_round_all`` over all rounds (round 1 holds the start-up);
* ``overhead_ratio`` (training wall / slowest site's compute, round 1 on) and
  ``whole_process_overhead_ratio`` (process wall / the same compute: start-up and shutdown included);
* ``sent_bytes_per_round`` / ``received_bytes_per_round``: per site, as the framework serialises them;
* ``peak_rss_mib``: the largest process of the run; ``peak_total_rss_mib``: all its processes at one time.
"""

from __future__ import annotations

import statistics
from typing import Any

SYSTEM_FIELDS = (
    "kind",
    "heldout_union_dice",
    "heldout_difference_from_central",
    "union_val_dice",
    "seconds_to_target",
    "wall_seconds",
    "fixed_seconds_per_round",
    "fixed_seconds_per_round_all",
    "overhead_ratio",
    "whole_process_overhead_ratio",
    "sent_bytes_per_round",
    "received_bytes_per_round",
    "peak_rss_mib",
    "peak_total_rss_mib",
)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.mean(present), 1) if present else None


def system_row(
    run: dict[str, Any], union_val_dice: float | None, heldout: dict[str, Any] | None
) -> dict[str, Any]:
    """The row of one run of ``results["runs"]`` (any kind), with its held-out figures if scored."""
    kind = run["kind"]
    row: dict[str, Any] = dict.fromkeys(SYSTEM_FIELDS)
    row |= {
        "kind": kind,
        "union_val_dice": union_val_dice,
        "seconds_to_target": run.get("seconds_to_target"),
        "wall_seconds": run["wall_seconds"],
        "peak_rss_mib": max(run["peak_rss_mib"].values(), default=None),
        "peak_total_rss_mib": run.get("peak_total_rss_mib"),
    }
    if heldout:
        row["heldout_union_dice"] = heldout.get("union_dice")
        row["heldout_difference_from_central"] = heldout.get("difference_from_central")
    if kind == "federated":
        overhead = run.get("overhead") or {}
        compute = overhead.get("slowest_site_compute_seconds")
        wire = run.get("wire_bytes") or {}
        row |= {
            "fixed_seconds_per_round": overhead.get("steady_fixed_seconds_per_round"),
            "fixed_seconds_per_round_all": overhead.get("fixed_seconds_per_round"),
            "overhead_ratio": overhead.get("overhead_ratio"),
            "whole_process_overhead_ratio": round(run["wall_seconds"] / compute, 3) if compute else None,
            "sent_bytes_per_round": _mean([site.get("sent_per_round") for site in wire.values()]),
            "received_bytes_per_round": _mean([site.get("received_per_round") for site in wire.values()]),
        }
    elif kind == "peer":
        peer = run.get("peer") or {}
        row |= {
            "fixed_seconds_per_round": peer.get("steady_fixed_seconds_per_round"),
            "fixed_seconds_per_round_all": peer.get("fixed_seconds_per_round"),
            "overhead_ratio": peer.get("overhead_ratio"),
            "whole_process_overhead_ratio": peer.get("whole_process_overhead_ratio"),
            "sent_bytes_per_round": peer.get("sent_bytes_per_round"),
            "received_bytes_per_round": peer.get("received_bytes_per_round"),
        }
    return row


def systems_table(results: dict[str, Any], heldout: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every run's row (``system_row``), by run name."""
    return {
        name: system_row(run, results["union_val_dice"].get(name), heldout.get(name))
        for name, run in results["runs"].items()
    }


def peer_targets(systems: dict[str, dict[str, Any]], project: str = "fedavg") -> dict[str, Any]:
    """Issue 26's targets against the peers, with what was measured (``None``: not measurable in this run).

    * this project's time to the target Dice <= 0.5x stock NVFlare's and <= Flower's;
    * this project's fixed cost per round (after round 1) <= 0.2x stock NVFlare's;
    * this project's whole-process overhead ratio <= 1.15.
    """
    ours = systems.get(project) or {}
    nvflare = systems.get("peer-nvflare") or {}
    flower = systems.get("peer-flower") or {}

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    def check(value: float | None, limit: float) -> dict[str, Any]:
        return {"measured": value, "limit": limit, "met": None if value is None else value <= limit}

    return {
        "time_to_target_over_stock_nvflare": check(
            ratio(ours.get("seconds_to_target"), nvflare.get("seconds_to_target")), 0.5
        ),
        "time_to_target_over_flower": check(
            ratio(ours.get("seconds_to_target"), flower.get("seconds_to_target")), 1.0
        ),
        "fixed_cost_over_stock_nvflare": check(
            ratio(ours.get("fixed_seconds_per_round"), nvflare.get("fixed_seconds_per_round")), 0.2
        ),
        "whole_process_overhead_ratio": check(ours.get("whole_process_overhead_ratio"), 1.15),
    }


def met_label(met: bool | None) -> str:
    """How a target's outcome reads in a report: ``yes``, ``**no**`` or ``not measured`` (``None``)."""
    return {None: "not measured", True: "yes", False: "**no**"}[met]


def format_systems(results: dict[str, Any]) -> list[str]:
    """Markdown lines: the systems table and the peer targets (empty when the run has no systems table)."""
    systems = results.get("systems")
    if not systems:
        return []

    def num(value: Any, digits: int = 3) -> str:
        if value is None:
            return "n/a"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = [
        "",
        "## Systems side by side (held-out patients for Dice)",
        "",
        "| system | held-out union Dice | paired diff. from central [95 % CI] | s to target | whole-process s "
        "| fixed s/round after round 1 | whole-process overhead ratio | sent / received bytes per site per round "
        "| peak RSS MiB (largest process / all) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in systems.items():
        diff = row.get("heldout_difference_from_central") or {}
        interval = (
            f"{diff['mean']:+.4f} [{diff['ci95_low']:+.4f}, {diff['ci95_high']:+.4f}]"
            if diff.get("cases")
            else "n/a"
        )
        lines.append(
            f"| {name} | {num(row['heldout_union_dice'], 4)} | {interval} | {num(row['seconds_to_target'], 1)} "
            f"| {num(row['wall_seconds'], 1)} | {num(row['fixed_seconds_per_round'])} "
            f"| {num(row['whole_process_overhead_ratio'])} "
            f"| {num(row['sent_bytes_per_round'], 0)} / {num(row['received_bytes_per_round'], 0)} "
            f"| {num(row['peak_rss_mib'], 0)} / {num(row['peak_total_rss_mib'], 0)} |"
        )
    for name, reason in (results.get("skipped_peers") or {}).items():
        lines.append(f"| {name} | skipped: {reason} | | | | | | | |")
    targets = results.get("peer_targets") or {}
    if targets:
        lines += ["", "| target (issue 26) | measured | limit | met? |", "|---|---|---|---|"]
        for name, target in targets.items():
            met = met_label(target["met"])
            lines.append(f"| {name} | {num(target['measured'])} | {target['limit']} | {met} |")
    return lines
