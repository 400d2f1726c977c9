"""``dose3d fl simulate``: the seg_fedavg job in NVFlare's simulator on synthetic sites, with a Dice summary.

Data are synthesised and ingested into ``WS/data`` if missing; each simulated site gets its own
configuration in ``WS/site_config`` (found through ``DOSE3D_SITE_CONFIG_DIR``), so the job itself stays the
one that is exported to ``jobs/seg_fedavg``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe
from nvflare.recipe import SimEnv

from dose3d_fl.clinical.model_file import ModelFileError
from dose3d_fl.clinical.models import GLOBAL_MODEL_NAME, SITE_MODELS_DIR
from dose3d_fl.fl.log_config import write_log_config
from dose3d_fl.fl.organ_summary import format_organ_table, organ_union, round_organ_dice
from dose3d_fl.fl.policy.privacy import JOB_TASKS, DPConfig, policy_filters, site_privacy_policy
from dose3d_fl.fl.seg_job import (
    JOB_NAME,
    SegJobConfig,
    add_quantization,
    build_seg_recipe,
    execute_seg_recipe,
)
from dose3d_fl.fl.server.resilient import CHECKPOINT_DIR_ENV
from dose3d_fl.fl.server.transfer_log import LOG_NAME
from dose3d_fl.fl.shared_machine import shared_machine_configs
from dose3d_fl.fl.site.config import SITE_CONFIG_DIR_ENV, SiteConfig
from dose3d_fl.fl.site.model import write_site_model
from dose3d_fl.seg.organ_metrics import DEFAULT_TOLERANCE_MM
from dose3d_fl.synth.demo_sites import prepare_site_data

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulationConfig:
    """Options of :func:`simulate_seg`.

    Args:
        workspace: everything goes here: ``data/``, ``site_config/``, ``sim/`` (NVFlare) and ``summary.json``.
        sites: number of simulated sites.
        job: the job arguments (rounds, local epochs, profile).
        seed: synthetic data seed.
        dp: differential privacy at every simulated site (``None``: none).
        keep_payloads: the sites' payload audit also keeps every serialised message they send.
        min_clients: sites each round trains (a random sample when fewer than ``sites``); ``None``: every
            site. It replaces the job's ``min_clients``.
        pin_cores: pin the sites to cores when they outnumber them (:func:`write_site_configs`); False
            leaves them to the operating system (``benchmarks/sim_core_pinning.py`` compares the two).
        channels_last: the sites train in torch's ``channels_last_3d`` memory format (``SiteConfig``; no
            gain measured with three sites on two cores, ``benchmarks/sim_core_pinning.py --compare
            channels-last``).
        cpu_bfloat16: the sites train under bfloat16 autocast on the CPU (``SiteConfig``;
            ``benchmarks/sim_core_pinning.py --compare bfloat16``).

    Raises:
        ValueError: ``min_clients`` is not between 1 and ``sites``.
    """

    workspace: Path
    sites: int = 3
    job: SegJobConfig = field(default_factory=SegJobConfig)
    seed: int = 0
    dp: DPConfig | None = None
    keep_payloads: bool = False
    min_clients: int | None = None
    pin_cores: bool = True
    channels_last: bool = False
    cpu_bfloat16: bool = False

    @property
    def site_training(self) -> dict[str, bool]:
        """The ``SiteConfig`` training options of every simulated site."""
        return {"channels_last": self.channels_last, "cpu_bfloat16": self.cpu_bfloat16}

    def __post_init__(self) -> None:
        if self.min_clients is not None and not 1 <= self.min_clients <= self.sites:
            raise ValueError(
                f"min_clients {self.min_clients} must be between 1 and the {self.sites} simulated sites"
            )


def add_site_policy(recipe: FedAvgRecipe, dp: DPConfig | None = None, keep_payloads: bool = False) -> None:
    """Give every simulated site the filters of the site policy (``sites/local/privacy.json``).

    NVFlare's simulator ignores site privacy scopes, so the policy's filters become job filters here; POC and
    provisioned sites apply the same filters from their own ``local/privacy.json``.
    """
    data_filters, result_filters = policy_filters(site_privacy_policy(dp=dp, keep_payloads=keep_payloads))
    for data_filter in data_filters:
        recipe.add_client_input_filter(data_filter, tasks=list(JOB_TASKS))
    for result_filter in result_filters:
        recipe.add_client_output_filter(result_filter, tasks=list(JOB_TASKS))


def write_site_configs(
    workspace: Path, caches: list[Path], pin_cores: bool = True, training: Mapping[str, Any] | None = None
) -> Path:
    """One configuration per simulated site, ``WS/site_config/<site>.json``; the sites share this machine's
    cores (:func:`~dose3d_fl.fl.shared_machine.shared_machine_configs`: threads, and a core each when they
    outnumber the cores unless ``pin_cores`` is False), with the ``SiteConfig`` options of ``training``."""
    folder = workspace / "site_config"
    configs = shared_machine_configs({cache.name: cache for cache in caches}, pin_cores, training)
    for site, config in configs.items():
        config.save(folder / f"{site}.json")
    return folder


@contextlib.contextmanager
def simulated_sites_environment(site_config_dir: Path, checkpoint_dir: Path | None = None) -> Iterator[None]:
    """Point the simulated sites at their configurations (and the server at its checkpoint folder).

    NVFlare's simulator gives a simulated site no ``local/`` folder of its own that outlives a run, so the
    environment its processes inherit is the one channel (``dose3d_fl.fl.site.config``). The variables are
    set for the block only and restored after it.
    """
    changes = {SITE_CONFIG_DIR_ENV: str(site_config_dir)}
    if checkpoint_dir is not None:
        changes[CHECKPOINT_DIR_ENV] = str(checkpoint_dir)
    previous = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def simulate_seg(config: SimulationConfig, customize: Callable[[FedAvgRecipe], None] | None = None) -> dict:
    """Run the segmentation job in the simulator and summarise its Dice figures (also ``WS/summary.json``).

    Args:
        config: what to simulate.
        customize: called with the recipe before it runs, to add job components (fault-injection drills and
            tests add filters at chosen sites this way).
    """
    workspace = Path(config.workspace).resolve()
    caches = prepare_site_data(workspace, config.sites, config.seed, organs=config.job.seg_profile.organs)
    site_configs = write_site_configs(workspace, caches, config.pin_cores, config.site_training)
    job = SegJobConfig(**{**config.job.__dict__, "min_clients": config.min_clients or config.sites})
    recipe = build_seg_recipe(dataclasses.replace(job, quantization=""))
    add_site_policy(recipe, dp=config.dp, keep_payloads=config.keep_payloads)
    # float16 after the site policy, as in a POC (NVFlare runs a site's scope filters before a job's): the
    # guard, DP (which clips and noises the float32 update) and the audit see float32; float16 rounds the release.
    if job.quantization:
        add_quantization(recipe, job.quantization)
    if customize is not None:
        customize(recipe)
    env = SimEnv(
        num_clients=config.sites,
        num_threads=config.sites,
        workspace_root=str(workspace / "sim"),
        log_config=str(write_log_config(workspace)),
    )
    # The simulator recreates the server workspace for every run: round checkpoints live beside it.
    with simulated_sites_environment(site_configs, workspace / "checkpoints"):
        execute_seg_recipe(recipe, env)
    server_job = server_job_dir(simulation_dir(workspace))
    summary = summarise_simulation(server_job, job.num_rounds)
    if job.site_norm:  # the sites scored every model with their own BatchNorm (seg_client)
        summary["fedbn"] = True
        summary["site_norm"] = "statistics" if job.silobn else "layers"
        summary["site_models"] = write_simulated_site_models(
            final_global_model(server_job), site_configs, workspace / SITE_MODELS_DIR
        )
    (workspace / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def write_simulated_site_models(global_file: Path, site_config_dir: Path, out: Path) -> dict[str, str]:
    """After a FedBN or SiloBN simulation, each site's own model (``dose3d fl site-model`` for every simulated
    site) as ``out/<site>.pt``, which ``dose3d report`` segments that site's cases with; ``{site: path}``.

    A site whose model cannot be written (no global model, no state) is logged and left out.
    """
    written = {}
    for config_file in sorted(site_config_dir.glob("*.json")):
        site = config_file.stem
        try:
            state = SiteConfig.load(config_file).state_dir
            written[site] = str(write_site_model(global_file, state, out / f"{site}.pt"))
        except (ModelFileError, OSError, KeyError, ValueError) as err:
            logger.warning("%s: no site model written (%s)", site, err)
    return written


def tensorboard_dir(workspace: Path, job_name: str = JOB_NAME) -> Path:
    """Where the server of a simulation in ``workspace`` writes the TensorBoard events the sites stream.

    One folder per site below it; open them with ``tensorboard --logdir <this folder>``. In a POC or a real
    federation the same folder is ``tb_events/`` in the server's workspace of the job while it runs, and
    ``<job id>/workspace/tb_events`` in the job's downloaded result.
    """
    return server_job_dir(simulation_dir(workspace, job_name)) / "tb_events"


def simulation_dir(workspace: Path, job_name: str = JOB_NAME) -> Path:
    """The simulator's folder of job ``job_name`` in a simulation's ``workspace``: the sites' and the
    server's workspaces of the run (``simulate_seg``, ``simulate_gan`` and the benchmarks' runs alike)."""
    return Path(workspace) / "sim" / job_name


def server_job_dir(simulation: Path) -> Path:
    """The server's job folder in a :func:`simulation_dir`: round metrics, cross-site results, TensorBoard
    events and ``app_server/`` with the final global model."""
    return Path(simulation) / "server" / "simulate_job"


def final_global_model(server_job: Path) -> Path:
    """The final global model file the server saved in its :func:`server_job_dir`."""
    return Path(server_job) / "app_server" / GLOBAL_MODEL_NAME


def summarise_simulation(server_job: Path, num_rounds: int) -> dict:
    """Dice figures from the server's own result files.

    ``round_val_dice[r]`` is the Dice of the global model after round ``r``, averaged over the union of the
    sites' validation cases: rounds before the last come from the Dice each site reports for the model it
    receives at the start of the next round (``metrics/round_metrics.jsonl``), the last from cross-site
    evaluation of the final global model, where each site also reports how many cases it validated. A job
    without cross-site evaluation has no figure for the final model (``final_val_dice`` ``None``).
    """
    records = [
        json.loads(line) for line in (server_job / "metrics" / "round_metrics.jsonl").read_text().splitlines()
    ]

    def site_values(record: dict, metric: str) -> dict[str, float]:
        return {
            s["name"]: next(m["value"] for m in s["metrics"] if m["name"] == metric)
            for s in record["sites"]
            if any(m["name"] == metric for m in s["metrics"])
        }

    cross_file = server_job / "cross_site_val" / "cross_val_results.json"
    cross_site = json.loads(cross_file.read_text()) if cross_file.is_file() else {}
    site_dice: dict[str, float] = {}
    site_cases: dict[str, int] = site_values(records[-1], "val_cases") if records else {}
    if cross_site:  # the file exists, empty, when the job has no cross-site evaluation
        final_model = next(
            (m for m in _model_names(cross_site) if "global" in m.lower() and "best" not in m.lower()), None
        )
        if final_model is None:
            raise ValueError(
                f"{server_job}: cross-site results have no final global model: {sorted(_model_names(cross_site))}"
            )
        site_dice = {
            site: results[final_model]["val_dice"]
            for site, results in cross_site.items()
            if final_model in results
        }
        site_cases = {
            site: results[final_model].get("val_cases", 1)
            for site, results in cross_site.items()
            if final_model in results
        }

    def union(per_site: dict[str, float]) -> float:
        # in site order: the records list the sites in the order they answered, and float sums depend on it
        total = sum(site_cases.get(site, 1) for site in per_site)
        return sum(dice * site_cases.get(site, 1) for site, dice in sorted(per_site.items())) / max(total, 1)

    rounds = [union(site_values(record, "val_dice")) for record in records if record["round"] >= 1]
    final = union(site_dice) if site_dice else None
    rounds = [*rounds[: num_rounds - 1], *([final] if final is not None else [])]
    # Per organ (fl/organ_summary.py): the final model from cross-site evaluation, the rounds as above.
    received = [
        {s["name"]: {m["name"]: m["value"] for m in s["metrics"]} for s in record["sites"]}
        for record in records
        if record["round"] >= 1
    ][: num_rounds - 1]
    final_sites = (
        {site: results[final_model] for site, results in cross_site.items() if final_model in results}
        if cross_site
        else {}
    )
    organs = organ_union(final_sites)
    return {
        **transfer_summary(server_job / LOG_NAME),
        "final_val_dice": final,
        "round_val_dice": rounds,
        "site_val_dice": site_dice,
        "site_val_cases": site_cases,
        "cross_site": {
            site: {model: results[model]["val_dice"] for model in results}
            for site, results in cross_site.items()
        },
        "organ_val": organs,
        "round_organ_dice": round_organ_dice(received, organs or None),
        "site_organ_dice": {
            site: {organ: values["dice"] for organ, values in organ_union({site: metrics}).items()}
            for site, metrics in final_sites.items()
        },
        "surface_dice_tolerance_mm": DEFAULT_TOLERANCE_MM,
    }


def transfer_summary(log: Path) -> dict:
    """From the server's transfer log: per site, the rounds whose update was rejected or never came (an
    error instead), the tensor bytes received per round, and the epsilon a site's DP filter reported last."""
    rejected: dict[str, list[int]] = {}
    errors: dict[str, list[int]] = {}
    received: dict[str, list[int]] = {}
    epsilon: dict[str, float] = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            site, round_ = entry["site"], entry["round"] + 1
            if entry["status"] == "rejected":
                rejected.setdefault(site, []).append(round_)
            elif entry["status"] == "error":
                errors.setdefault(site, []).append(round_)
            if "bytes" in entry:
                received.setdefault(site, []).append(entry["bytes"])
            if "dp_epsilon" in entry:
                epsilon[site] = entry["dp_epsilon"]
    return {
        "rejected_rounds": rejected,
        "error_rounds": errors,
        "bytes_received_per_round": {s: max(b) for s, b in received.items()},
        "dp_epsilon": epsilon,
    }


def _model_names(cross_site: dict) -> set[str]:
    return {model for results in cross_site.values() for model in results}


def format_simulation_summary(summary: dict) -> str:
    """Plain-text tables: global Dice per round, per-site Dice of the final model, cross-site matrix."""
    lines = ["round  Dice of the global model after the round (union of the sites' validation cases)"]
    lines += [f"{r:>5}  {dice:.4f}" for r, dice in enumerate(summary["round_val_dice"], start=1)]
    statistics = summary.get("site_norm") == "statistics"
    own_norm = "each site's own BatchNorm statistics" if statistics else "each site's own BatchNorm"
    scored = f"final model Dice ({own_norm})" if summary.get("fedbn") else "final global model Dice"
    lines += ["", f"{'site':<10} {'val cases':>9}  {scored}"]
    for site, dice in sorted(summary["site_val_dice"].items()):
        lines.append(f"{site:<10} {summary['site_val_cases'].get(site, 0):>9}  {dice:.4f}")
    final = summary["final_val_dice"]
    final_text = "not evaluated (no cross-site evaluation)" if final is None else f"{final:.4f}"
    lines.append(f"{'union':<10} {sum(summary['site_val_cases'].values()):>9}  {final_text}")
    lines += format_organ_table(
        summary.get("organ_val", {}),
        summary.get("surface_dice_tolerance_mm", 0.0),
        f"final model, each site with its own BatchNorm{' statistics (SiloBN)' if statistics else ' (FedBN)'},"
        if summary.get("fedbn")
        else "final global model",
    )
    if summary.get("site_models"):
        folder = Path(next(iter(summary["site_models"].values()))).parent
        lines += ["", f"each site's own model (dose3d segment --model, dose3d report): {folder}/<site>.pt"]
    if summary.get("dp_epsilon"):
        lines += [
            "",
            "differential privacy: epsilon spent per site "
            + ", ".join(f"{site} {eps:.3g}" for site, eps in sorted(summary["dp_epsilon"].items())),
        ]
    for key, label in (
        ("rejected_rounds", "updates rejected by the server"),
        ("error_rounds", "rounds a site sent an error"),
    ):
        if summary.get(key):
            lines += [
                "",
                f"{label}: " + "; ".join(f"{s} rounds {r}" for s, r in sorted(summary[key].items())),
            ]
    models = sorted({model for row in summary["cross_site"].values() for model in row})
    lines += [
        "",
        "cross-site Dice (rows: data site, columns: model)",
        f"{'':<10} " + " ".join(f"{m:>24}" for m in models),
    ]
    for site, row in sorted(summary["cross_site"].items()):
        lines.append(f"{site:<10} " + " ".join(f"{row.get(m, float('nan')):>24.4f}" for m in models))
    return "\n".join(lines)
