"""``dose3d fl simulate --job gan``: the gan_fedavg job in NVFlare's simulator, run the way the segmentation
job runs (same synthetic data, same site configurations), with a summary of the GAN's quality metrics.

For ``dose3d report WS`` it also writes ``WS/gan/metrics.json`` (the final global model's metrics, mean over
the sites) and ``WS/gan/samples.png`` (the first site's training crops | the final generator's images for the
same label maps): in the simulator every site's data is on this machine; at a real site the same picture is
drawn by ``dose3d_fl.gan.sampling.comparison_grid_for_model`` on the site's own cache.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nvflare.recipe import SimEnv
from nvflare.recipe.spec import Recipe

from dose3d_fl.fl.gan_job import JOB_NAME, GanJobConfig, build_gan_recipe
from dose3d_fl.fl.log_config import write_log_config
from dose3d_fl.fl.seg_job import execute_seg_recipe
from dose3d_fl.fl.simulate import (
    add_site_policy,
    final_global_model,
    server_job_dir,
    simulated_sites_environment,
    simulation_dir,
    write_site_configs,
)
from dose3d_fl.gan.sampling import comparison_grid_for_model
from dose3d_fl.synth.demo_sites import prepare_site_data

logger = logging.getLogger(__name__)

REPORT_DIR = "gan"

QUALITY_KEYS = (
    "gan_mmd",
    "gan_msssim",
    "gan_diversity",
    "gan_msssim_real",
    "gan_tissue_hu_error",
    "gan_label_ok",
    "gan_best_ncc",
    "gan_dropped_memorized",
)


@dataclass(frozen=True)
class GanSimulationConfig:
    """Options of :func:`simulate_gan`.

    Args:
        workspace: ``data/``, ``site_config/``, ``sim/`` (NVFlare) and ``summary.json`` go here.
        sites: number of simulated sites.
        job: the job arguments (rounds, local epochs, profile, aggregation).
        seed: synthetic data seed.
        keep_payloads: the sites' payload audit also keeps every message they send.
        pin_cores: pin the sites to cores when they outnumber them
            (:func:`~dose3d_fl.fl.simulate.write_site_configs`); False leaves them to the operating system.
    """

    workspace: Path
    sites: int = 3
    job: GanJobConfig = field(default_factory=GanJobConfig)
    seed: int = 0
    keep_payloads: bool = False
    pin_cores: bool = True


def simulate_gan(config: GanSimulationConfig, recipe_hook: Callable[[Recipe], None] | None = None) -> dict:
    """Run the GAN job in the simulator and summarise its quality metrics (also ``WS/summary.json``).

    Args:
        config: workspace, sites and job arguments.
        recipe_hook: called with the recipe before it runs (e.g. to add filters, as a site policy would).
    """
    workspace = Path(config.workspace).resolve()
    caches = prepare_site_data(workspace, config.sites, config.seed)
    site_configs = write_site_configs(workspace, caches, config.pin_cores)
    job = GanJobConfig(**{**config.job.__dict__, "min_clients": config.sites})
    env = SimEnv(
        num_clients=config.sites,
        num_threads=config.sites,
        workspace_root=str(workspace / "sim"),
        log_config=str(write_log_config(workspace)),
    )
    recipe = build_gan_recipe(job)
    add_site_policy(recipe, keep_payloads=config.keep_payloads)  # the weights-only guard and payload audit
    if recipe_hook is not None:
        recipe_hook(recipe)
    with simulated_sites_environment(site_configs):
        execute_seg_recipe(recipe, env)
    server_job = server_job_dir(simulation_dir(workspace, JOB_NAME))
    summary = summarise_gan_simulation(server_job)
    summary["aggregation"] = job.aggregation
    (workspace / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report_files(workspace / REPORT_DIR, summary, final_global_model(server_job), caches[0], job)
    return summary


def write_report_files(out_dir: Path, summary: dict, model: Path, cache: Path, job: GanJobConfig) -> None:
    """``metrics.json`` and ``samples.png`` for the run report (``dose3d_fl.report.extras``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    finite = {name: value for name, value in summary["final"].items() if not math.isnan(value)}
    (out_dir / "metrics.json").write_text(json.dumps(finite, indent=2) + "\n")
    comparison_grid_for_model(model, [cache], out_dir / "samples.png", profile=job.profile)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def summarise_gan_simulation(server_job: Path) -> dict:
    """Quality metrics from the server's own result files.

    ``rounds[r]`` holds the mean over sites of what each site measured on the global model it received at
    the start of round ``r + 1`` (``metrics/round_metrics.jsonl``; round 1: the initial model);
    ``final`` and ``site_final`` are the final global model's metrics from cross-site evaluation.
    """
    rounds = []
    for line in (server_job / "metrics" / "round_metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        per_site = [{m["name"]: m["value"] for m in site["metrics"]} for site in record["sites"]]
        rounds.append({key: _mean([s[key] for s in per_site if key in s]) for key in QUALITY_KEYS})
    cross_site = json.loads((server_job / "cross_site_val" / "cross_val_results.json").read_text())
    models = {model for results in cross_site.values() for model in results}
    final_model = next((m for m in models if "global" in m.lower() and "best" not in m.lower()), None)
    if final_model is None:
        raise ValueError(f"{server_job}: cross-site results have no final global model: {sorted(models)}")
    site_final = {
        site: {key: results[final_model][key] for key in QUALITY_KEYS if key in results[final_model]}
        for site, results in cross_site.items()
        if final_model in results
    }
    final = {
        key: _mean([metrics[key] for metrics in site_final.values() if key in metrics])
        for key in QUALITY_KEYS
    }
    return {"final": final, "site_final": site_final, "rounds": rounds}


def format_gan_summary(summary: dict) -> str:
    """Plain-text tables: metrics of the received global model per round, the final model per site."""
    names = (
        "mmd",
        "msssim",
        "diversity",
        "msssim_real",
        "tissue_hu_error",
        "label_ok",
        "best_ncc",
        "dropped_memorized",
    )
    header = "".join(f"{name:>18}" for name in names)
    lines = [f"round{header}   (site means, global model received at the round's start)"]
    for index, values in enumerate(summary["rounds"], start=1):
        lines.append(f"{index:>5}" + "".join(f"{values[f'gan_{n}']:>18.4f}" for n in names))
    lines += ["", f"{'site':<10}{header}   (final global model, cross-site evaluation)"]
    for site, values in sorted(summary["site_final"].items()):
        lines.append(f"{site:<10}" + "".join(f"{values.get(f'gan_{n}', math.nan):>18.4f}" for n in names))
    lines.append(f"{'mean':<10}" + "".join(f"{summary['final'][f'gan_{n}']:>18.4f}" for n in names))
    return "\n".join(lines)
