"""Scaling by simulation, and a 10-hospital projection from the measurements.

``python -m dose3d_fl.bench.scaling [--sites 3,8,16,32] [--profile cpu-small] [--patients 3] [--rounds 5]``
runs this project's FedAvg job in the NVFlare simulator with each number of sites (one worker process per
site, as each hospital runs its own client; the demo's scanners cycled over the sites, ``--patients`` per
site), and measures per site count: the fixed cost per round after round 1 (round wall time minus the slowest
site's compute, ``bench.fl_figures.overhead``), the server's peak memory (the simulator's server process),
the sites' peak memory, the bytes per site per round and the whole process's wall time (and
``MALLOC_ARENA_MAX`` if set: glibc's per-thread arenas add to every site process; with ``MALLOC_ARENA_MAX=1``
and the ``cpu-tiny`` profile 32 site processes fit in 24 GB). Results go to
``OUT/scaling.json`` and ``scaling.md``; a run adds its site counts to what the file already holds.

The projection (``projection``) puts the measurements and a model's message size together for a federation
of ``hospitals`` sites over one link: per round, the bytes that cross it divided by its bandwidth, plus the
link's latency for each message on a round's critical path, plus the measured fixed cost (interpolated
between the measured site counts). The message size of a model is measured, not estimated: the model's
weights are serialised as the job sends them (``message_bytes``: a ``DXO`` of weights in a ``Shareable``,
FOBS-encoded, as ``fl.wire_meter`` counts; int8 packed as ``fl.policy.quantization`` packs them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dose3d_fl.bench.config import BenchConfig
from dose3d_fl.bench.fl_figures import overhead, round_figures, wire_bytes
from dose3d_fl.bench.runner import machine, run_federated, site_data
from dose3d_fl.files import json_safe
from dose3d_fl.fl.simulate import server_job_dir

logger = logging.getLogger(__name__)

RESULTS_NAME = "scaling"
# Messages on a round's critical path for one site: its task request, the task (the global model), its
# result (the update) and the server's reply; the sites' messages overlap each other.
MESSAGES_PER_ROUND = 4


@dataclass(frozen=True)
class Link:
    """A network link between the sites and the server: bandwidth in Mbit/s, one-way latency in seconds."""

    mbit_per_s: float = 100.0
    latency_s: float = 0.05


def run_scaling(
    sites: list[int], profile: str, patients: int, rounds: int, local_epochs: int, work: Path, out: Path
) -> dict[str, Any]:
    """Run the job with each number of ``sites``; merge the figures into ``out/scaling.json``; return them."""
    path = out / f"{RESULTS_NAME}.json"
    results = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    config = BenchConfig(name=RESULTS_NAME, profile=profile, patients=(patients,))
    job = {"num_rounds": rounds, "local_epochs": local_epochs}
    for count in sites:
        data, _ = site_data(work, count, config.seed, config.patients)
        name = f"{profile}-{count}-sites"
        measured, run_root = run_federated(name, data, work, count, config, job)
        figures = overhead(round_figures(server_job_dir(run_root)))
        wire = wire_bytes(run_root)
        sent = [site["sent_per_round"] for site in wire.values() if site.get("sent_per_round")]
        received = [site["received_per_round"] for site in wire.values() if site.get("received_per_round")]
        results["runs"][name] = {
            "sites": count,
            "profile": profile,
            "patients_per_site": patients,
            "rounds": rounds,
            "local_epochs": local_epochs,
            "steady_fixed_seconds_per_round": figures["steady_fixed_seconds_per_round"],
            "steady_fixed_seconds_median": figures["steady_fixed_seconds_median"],
            "first_round_fixed_seconds": figures["first_round_fixed_seconds"],
            "steady_compute_seconds_per_round": figures["steady_compute_seconds_per_round"],
            "server_peak_rss_mib": measured.peak_rss_mib.get("simulator"),
            "site_peak_rss_mib": measured.peak_rss_mib.get("site worker"),
            "peak_total_rss_mib": measured.peak_total_rss_mib,
            "processes": measured.processes,
            "wall_seconds": measured.wall_seconds,
            "sent_bytes_per_site_per_round": round(sum(sent) / len(sent)) if sent else None,
            "received_bytes_per_site_per_round": round(sum(received) / len(received)) if received else None,
            "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
            "command": f"python -m dose3d_fl.bench.scaling --sites {count} --profile {profile} "
            f"--patients {patients} --rounds {rounds} --local-epochs {local_epochs}",
        }
        logger.info("scaling: %s: %s", name, results["runs"][name])
    results["machine"] = machine()
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(results), indent=2) + "\n")
    return results


def message_bytes(profile: str, quantization: str = "float32") -> dict[str, int]:
    """The FOBS-encoded size of a model message of ``profile``'s network, as the job sends its weights
    (``fl.wire_meter.weights_message_bytes``).

    Returns:
        ``serialized_bytes`` (the whole message) and ``tensor_bytes`` (the float32 weights alone).

    Raises:
        ValueError: a quantization other than ``float32`` or ``int8``.
    """
    from dose3d_fl.fl.wire_meter import weights_message_bytes
    from dose3d_fl.seg.network import build_network
    from dose3d_fl.seg.profiles import get_profile

    weights = {
        k: v.detach().cpu().numpy() for k, v in build_network(get_profile(profile)).state_dict().items()
    }
    return {
        "serialized_bytes": weights_message_bytes(weights, quantization),
        "tensor_bytes": sum(int(v.nbytes) for v in weights.values()),
    }


def interpolated_fixed_cost(runs: dict[str, dict[str, Any]], sites: int) -> float:
    """The steady fixed cost per round at ``sites``, linear between the nearest measured site counts (the
    nearest measured one outside their range).

    Raises:
        ValueError: no measurement.
    """
    points = sorted((r["sites"], r["steady_fixed_seconds_per_round"]) for r in runs.values())
    if not points:
        raise ValueError("no scaling measurement: run python -m dose3d_fl.bench.scaling first")
    below = [p for p in points if p[0] <= sites]
    above = [p for p in points if p[0] >= sites]
    if not below:
        return above[0][1]
    if not above:
        return below[-1][1]
    (x0, y0), (x1, y1) = below[-1], above[0]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (sites - x0) / (x1 - x0)


def projection(
    down_bytes: int, up_bytes: int, fixed_seconds: float, hospitals: int, link: Link
) -> dict[str, float]:
    """Orchestration and communication seconds per round (the sites' training comes on top).

    Two cases: every hospital's messages share the server's one link (its ``hospitals`` downloads and
    uploads cross it one after another), and every hospital has a link of its own to the server (its own
    download and upload; the hospitals in parallel).

    Args:
        down_bytes: one site's task message (the global model) in bytes.
        up_bytes: one site's result message in bytes.
        fixed_seconds: the measured fixed cost per round at this many sites.
        hospitals: sites of the federation.
        link: bandwidth and one-way latency.
    """
    bytes_per_s = link.mbit_per_s * 1e6 / 8
    latency = MESSAGES_PER_ROUND * link.latency_s
    shared = hospitals * (down_bytes + up_bytes) / bytes_per_s
    own = (down_bytes + up_bytes) / bytes_per_s
    return {
        "transfer_seconds_shared_link": round(shared, 3),
        "transfer_seconds_own_links": round(own, 3),
        "latency_seconds": round(latency, 3),
        "fixed_seconds": round(fixed_seconds, 3),
        "seconds_per_round_shared_link": round(shared + latency + fixed_seconds, 3),
        "seconds_per_round_own_links": round(own + latency + fixed_seconds, 3),
    }


def project(
    results: dict[str, Any],
    profile: str,
    hospitals: int = 10,
    link: Link = Link(),
    measured_profile: str = "cpu-small",
) -> dict[str, Any]:
    """The projection for ``hospitals`` sites with ``profile``'s model, float32 and int8, from the fixed
    costs ``results`` measured with ``measured_profile``'s runs."""
    runs = {k: r for k, r in results["runs"].items() if r["profile"] == measured_profile}
    fixed = interpolated_fixed_cost(runs, hospitals)
    out: dict[str, Any] = {
        "hospitals": hospitals,
        "fixed_cost_measured_with": measured_profile,
        "link": {"mbit_per_s": link.mbit_per_s, "latency_s": link.latency_s},
        "profile": profile,
        "messages_per_round": MESSAGES_PER_ROUND,
        "fixed_seconds_interpolated": round(fixed, 3),
    }
    for quantization in ("float32", "int8"):
        size = message_bytes(profile, quantization)
        out[quantization] = {
            **size,
            **projection(size["serialized_bytes"], size["serialized_bytes"], fixed, hospitals, link),
        }
    return out


def format_scaling(results: dict[str, Any]) -> str:
    """Markdown: the scaling table and each projection."""
    lines = [
        "# Scaling by simulation",
        "",
        "| run | sites | fixed s/round after round 1 (median) | round 1 fixed s | compute s/round | server peak "
        "MiB | site peak MiB | all processes peak MiB | bytes sent / received per site per round | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in sorted(results["runs"].items(), key=lambda item: (item[1]["profile"], item[1]["sites"])):
        lines.append(
            f"| {name} | {r['sites']} | {r['steady_fixed_seconds_per_round']:.3f} ({r['steady_fixed_seconds_median']:.3f}) "
            f"| {r['first_round_fixed_seconds']:.1f} | {r['steady_compute_seconds_per_round']:.2f} "
            f"| {r['server_peak_rss_mib']} | {r['site_peak_rss_mib']} | {r['peak_total_rss_mib']} "
            f"| {r['sent_bytes_per_site_per_round']} / {r['received_bytes_per_site_per_round']} | {r['wall_seconds']} |"
        )
    for key, p in (results.get("projections") or {}).items():
        lines += [
            "",
            f"## Projection: {p['hospitals']} hospitals, {p['profile']} model, {p['link']['mbit_per_s']:g} Mbit/s, "
            f"{p['link']['latency_s'] * 1000:g} ms latency ({key})",
            "",
            f"Fixed cost per round interpolated at {p['hospitals']} sites: {p['fixed_seconds_interpolated']} s; "
            f"{p['messages_per_round']} messages per round on the critical path.",
            "",
            "| exchange | message bytes | one shared server link: transfer s / s per round | a link per hospital: "
            "transfer s / s per round |",
            "|---|---|---|---|",
        ]
        for quantization in ("float32", "int8"):
            q = p[quantization]
            lines.append(
                f"| {quantization} | {q['serialized_bytes']:,} | {q['transfer_seconds_shared_link']} / "
                f"**{q['seconds_per_round_shared_link']}** | {q['transfer_seconds_own_links']} / "
                f"**{q['seconds_per_round_own_links']}** |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dose3d_fl.bench.scaling", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sites", default="3,8,16,32", help="site counts, comma-separated")
    parser.add_argument("--profile", default="cpu-small", help="segmentation profile of the simulated runs")
    parser.add_argument("--patients", type=int, default=3, help="synthetic patients per site")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument(
        "--project",
        default="organs-gpu,cpu-small",
        help="profiles of the 10-hospital projection (empty: keep the file's projections)",
    )
    parser.add_argument("--hospitals", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-scaling"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    counts = [int(s) for s in args.sites.split(",") if s.strip()]
    results = run_scaling(
        counts, args.profile, args.patients, args.rounds, args.local_epochs, args.work, args.out
    )
    profiles = [profile for profile in args.project.split(",") if profile]
    if profiles:  # else the file keeps the projections it has
        results["projections"] = {profile: project(results, profile, args.hospitals) for profile in profiles}
    (args.out / f"{RESULTS_NAME}.json").write_text(json.dumps(json_safe(results), indent=2) + "\n")
    (args.out / f"{RESULTS_NAME}.md").write_text(format_scaling(results))
    print(format_scaling(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
