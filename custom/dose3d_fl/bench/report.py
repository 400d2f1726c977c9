"""The benchmark's results as markdown tables (``<name>.md`` beside ``<name>.json``)."""

from __future__ import annotations

from typing import Any

from dose3d_fl.bench.systems import format_systems


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _mib(peaks: dict[str, float], counts: dict[str, int]) -> str:
    """The two largest process roles: ``role (xN) MiB``."""
    largest = sorted(peaks.items(), key=lambda kv: -kv[1])[:2]
    return ", ".join(
        f"{role}{f' (x{counts[role]})' if counts.get(role, 1) > 1 else ''} {value:.0f}"
        for role, value in largest
    )


def format_report(results: dict[str, Any]) -> str:
    """Dice per model and site, time, bytes, memory, overhead and targets."""
    config = results["config"]
    sites = sorted({site for per_site in results["site_val_dice"].values() for site in per_site})
    lines = [
        f"# Benchmark `{results['name']}`",
        "",
        f"{config['sites']} sites, profile `{config['profile']}`, seed {config['seed']}; federated runs "
        f"{config['rounds']} rounds x {config['local_epochs']} local epochs, central and local-only "
        f"{config['rounds'] * config['local_epochs']} epochs; {results['machine']['cpus']} CPU cores; "
        f"the whole benchmark took {results['seconds']:.0f} s.",
        "",
        "## Dice of each final model (validation cases at 4 mm for cpu-small)",
        "",
        "| run | " + " | ".join(sites) + " | union | / central | wall s | s to Dice "
        f"{results['target_dice']:.2f} | peak RSS MiB (largest processes) |",
        "|---|" + "---|" * (len(sites) + 5),
    ]
    for name, run in results["runs"].items():
        per_site = results["site_val_dice"][name]
        union = results["union_val_dice"][name]
        ratio = results["union_over_central"].get(name)
        lines.append(
            f"| {name} | "
            + " | ".join(_num(per_site.get(site)) for site in sites)
            + f" | **{_num(union)}** | {_num(ratio)} | {_num(run['wall_seconds'], 0)} | "
            f"{_num(results['seconds_to_target'].get(name), 0)} | {_mib(run['peak_rss_mib'], run.get('processes', {}))} |"
        )
    lines += ["", "## Federated runs: bytes per site per round, overhead, data pipeline", ""]
    lines += [
        "| run | tensor dtypes | sent per site per round (bytes) | received per site per round (bytes) | "
        "overhead ratio | fixed s/round | steady fixed s/round | first round s (fixed) | compute share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in results["runs"].items():
        if run["kind"] != "federated":
            continue
        wire = run["wire_bytes"]
        sent = sorted({int(v["sent_per_round"]) for v in wire.values() if v["sent_per_round"]})
        received = sorted({int(v["received_per_round"]) for v in wire.values() if v["received_per_round"]})
        over = run["overhead"]
        lines.append(
            f"| {name} | {', '.join(run['wire_dtypes'])} | {' / '.join(map(str, sent))} | "
            f"{' / '.join(map(str, received))} | {_num(over.get('overhead_ratio'))} | "
            f"{_num(over.get('fixed_seconds_per_round'), 2)} | {_num(over.get('steady_fixed_seconds_per_round'), 2)} | "
            f"{_num(over.get('first_round_wall_seconds'), 1)} ({_num(over.get('first_round_fixed_seconds'), 1)}) | "
            f"{_num(run['data_pipeline'].get('compute_share'))} |"
        )
    lines += [
        "",
        "## Orchestration overhead by number of sites "
        f"({config['overhead_rounds']} rounds x {config['overhead_local_epochs']} local epoch)",
        "",
        "| sites | run | overhead ratio | fixed s/round | steady ratio | steady fixed s/round (median) | "
        "slowest-site compute s/round | first round s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for count, over in results["overhead_by_sites"].items():
        lines.append(
            f"| {count} | {over['run']} | {_num(over.get('overhead_ratio'))} | "
            f"{_num(over.get('fixed_seconds_per_round'), 2)} | {_num(over.get('steady_overhead_ratio'))} | "
            f"{_num(over.get('steady_fixed_seconds_per_round'), 2)} ({_num(over.get('steady_fixed_seconds_median'), 2)}) | "
            f"{_num(over.get('steady_compute_seconds_per_round'), 2)} | {_num(over.get('first_round_wall_seconds'), 1)} |"
        )
    lines += ["", "## Targets", "", "| figure | value | target |", "|---|---|---|"]
    for label, value, target in (
        ("FedAvg / central Dice", results.get("fedavg_over_central_dice"), ">= 0.98"),
        (
            f"best FL variant ({results.get('best_fl_variant')}) / central Dice",
            results.get("best_fl_over_central_dice"),
            ">= 1.00",
        ),
        (
            "best FL variant beats every local-only model (union)",
            results.get("fl_beats_every_local_model"),
            "yes",
        ),
        (
            f"FedAvg / central time to union Dice {results['target_dice']:.2f}",
            results.get("fedavg_over_central_time_to_target"),
            "<= 2",
        ),
        ("FedAvg overhead ratio (demo defaults)", results.get("overhead_ratio"), "<= 1.15"),
        *(
            (
                f"fixed cost per round, {count} sites, after round 1 (s)",
                over.get("steady_fixed_seconds_per_round"),
                "<= 1.0",
            )
            for count, over in results["overhead_by_sites"].items()
            if count.isdigit()  # not the comparison run with NVFlare's default polling
        ),
    ):
        lines.append(f"| {label} | {_num(value, 4)} | {target} |")  # 4 digits: 0.9998 is not 1.000
    lines += format_systems(results)
    failed = results.get("failed_runs") or {}
    if failed:
        lines += ["", "## Failed runs (not in the tables above; their logs are in the work folder)", ""]
        lines += [f"* `{name}`: {reason}" for name, reason in failed.items()]
    return "\n".join(lines) + "\n"
