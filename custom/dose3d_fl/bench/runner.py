"""The benchmark: central, local-only, FedAvg, FedProx, FedBN and weight-exchange variants on the same sites.

Every run is its own child process (its wall time and memory are its own) on the same synthetic non-IID
sites, the same profile and seeds and the same number of passes over each site's data: ``rounds x
local_epochs`` epochs for the central and the local-only models. The central and local-only runs take one
thread each and run two at a time; each federated run has the machine to itself. Every final model is
scored by one evaluator on every site's validation cases (``bench.evaluate``); a FedBN run by each site's
own model on that site's cases (``bench.site_models``).

Results: ``OUT/<name>.json`` (``fedavg_over_central_dice``, ``overhead_ratio``, ``union_val_dice`` and the
details) and ``OUT/<name>.md`` (the tables); the runs' workspaces and logs stay in ``WORK``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import math
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dose3d_fl import __version__
from dose3d_fl.bench.config import BenchConfig
from dose3d_fl.bench.evaluate import Evaluator
from dose3d_fl.bench.fl_figures import (
    data_pipeline,
    overhead,
    round_figures,
    time_to_dice,
    wire_bytes,
    wire_dtypes,
)
from dose3d_fl.bench.heldout_eval import heldout_evaluator, heldout_scores
from dose3d_fl.bench.measure import Measured, run_measured
from dose3d_fl.bench.peers import (
    FINAL_MODEL,
    load_final_model,
    peer_figures,
    peer_plan,
    run_peer,
    write_task_spec,
)
from dose3d_fl.bench.report import format_report
from dose3d_fl.bench.site_models import SITE_MODELS, fedbn_site_models, save_site_models
from dose3d_fl.bench.systems import peer_targets, systems_table
from dose3d_fl.data.cases import SiteCases, load_site_cases
from dose3d_fl.data.discovery import one_line
from dose3d_fl.files import json_safe
from dose3d_fl.fl.simulate import final_global_model, server_job_dir, simulation_dir
from dose3d_fl.seg.profiles import SegProfile, get_profile
from dose3d_fl.seg.training_run import METRICS_NAME, MODEL_NAME
from dose3d_fl.synth.demo_sites import prepare_site_data

logger = logging.getLogger(__name__)

NUMERIC_PACKAGES = ("torch", "monai", "numpy", "scipy", "nvflare")
# /proc/cpuinfo flags recorded with every result: the vector widths and the bfloat16 and AMX units.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
NVFLARE_POLLING = {"task_request_interval": 2.0, "task_check_period": 0.5, "result_poll_interval": 0.5}


@dataclass
class BenchRun:
    """One run's outcome: its model's Dice everywhere, its process measurements and its own figures."""

    name: str
    kind: str
    evaluation: dict[str, Any]
    measured: Measured
    figures: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # the final model: a file, a state dict (a peer's), or one per site (FedBN)


def _python() -> str:
    return sys.executable


def _child_env(threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _train_command(caches: list[Path], out: Path, config: BenchConfig, threads: int = 1) -> list[str]:
    return [
        _python(),
        "-m",
        "dose3d_fl.cli",
        "train",
        "--cache",
        *map(str, caches),
        "--epochs",
        str(config.epochs),
        "--profile",
        config.profile,
        "--threads",
        str(threads),
        "--seed",
        str(config.training_seed),
        "--out",
        str(out),
        *(["--organs", ",".join(config.organs)] if config.organs else []),
    ]


def run_baselines(caches: list[Path], work: Path, config: BenchConfig) -> dict[str, Measured]:
    """Central (pooled) alone with every core, as each federated run has them (equal CPU for the time
    comparisons); then one local-only model per site, two processes at a time (one thread each)."""
    cores = os.cpu_count() or 1

    def one(name: str, run_caches: list[Path], threads: int) -> tuple[str, Measured]:
        out = work / name
        logger.info("bench: %s (%d epochs on %d site cache(s))", name, config.epochs, len(run_caches))
        command = _train_command(run_caches, out, config, threads)
        return name, run_measured(command, work / f"{name}.log", env=_child_env(threads=threads))

    measured = dict([one("central", caches, cores)])
    if config.local_only:
        with ThreadPoolExecutor(max_workers=2) as pool:
            measured |= dict(pool.map(lambda c: one(f"local-{c.name}", [c], 1), caches))
    return measured


def run_federated(
    name: str, data: Path, work: Path, sites: int, config: BenchConfig, job: dict[str, Any]
) -> tuple[Measured, Path]:
    """One simulator run (``bench.fl_run``) in its own workspace sharing the ingested data."""
    workspace = work / name
    job = {"profile": config.profile, "cross_site_evaluation": False, **job}
    if config.train_seed is not None:
        job["train_seed"] = config.train_seed
    if config.organs:
        job["organs"] = list(config.organs)
    logger.info("bench: %s (%d sites, %s)", name, sites, job)
    measured = run_measured(
        federated_command(workspace, data, sites, config.seed, job), work / f"{name}.log", env=_child_env()
    )
    return measured, simulation_dir(workspace)


def federated_command(workspace: Path, data: Path, sites: int, seed: int, job: dict[str, Any]) -> list[str]:
    """The command of one simulator run (``bench.fl_run``) in ``workspace``, which gets a link to ``data``.

    Args:
        workspace: the run's workspace (created); the simulator writes to ``workspace/sim``.
        data: the ingested site data (``prepare_site_data``'s ``data`` folder).
        sites: simulated sites.
        seed: data and training seed.
        job: ``SegJobConfig`` fields.
    """
    workspace.mkdir(parents=True, exist_ok=True)
    link = workspace / "data"
    if not link.exists():
        link.symlink_to(data.resolve(), target_is_directory=True)
    config = json.dumps({"sites": sites, "seed": seed, "job": job})
    return [_python(), "-m", "dose3d_fl.bench.fl_run", str(workspace), config]


def site_models_folder(work: Path, name: str) -> Path:
    """Where the bench's FedBN run ``name`` left its per-site models (``bench.site_models``)."""
    return work / name / SITE_MODELS


def final_model_file(work: Path, name: str, kind: str) -> Path:
    """Where the bench run ``name`` left its final model in the work folder (``kind`` as in the results:
    ``federated`` for a simulator run, ``peer`` for a peer system, whose file is a plain state dict
    (``bench.peers.load_final_model``), anything else for a central or local-only training run). A FedBN run's
    global model here is only part of each site's model (``site_models_folder``)."""
    if kind == "federated":
        return final_global_model(server_job_dir(simulation_dir(work / name)))
    if kind == "peer":
        return work / name / FINAL_MODEL
    return work / name / MODEL_NAME


def site_data(
    work: Path,
    sites: int,
    seed: int,
    patients: tuple[int, ...] | None = None,
    organs: tuple[str, ...] = (),
) -> tuple[Path, list[Path]]:
    """The synthetic sites of a run under ``work`` (made once, kept): ``(data folder, site caches)``, the
    caches ingested for ``organs`` (empty: the spleen)."""
    counts = patients if patients is None or len(patients) in (1, sites) else patients[:1]
    root = work / (
        f"data-{sites}-sites"
        + (f"-{'-'.join(map(str, counts))}-patients" if counts else "")
        + (f"-{len(organs)}-organs" if len(organs) > 1 else "")
    )
    caches = prepare_site_data(root, sites, seed, counts, organs=organs or None)
    return root / "data", caches


def run_benchmark(
    config: BenchConfig, out_dir: Path, work_dir: Path, data_dir: Path | None = None
) -> dict[str, Any]:
    """Run every part of the benchmark; write ``out_dir/<name>.json`` and ``.md``; return the results.

    Args:
        config: what runs.
        out_dir: where the results go.
        work_dir: the runs' workspaces and logs.
        data_dir: where the synthetic sites and the held-out patients are made, or kept if they exist
            (default ``work_dir``; several training seeds share one).
    """
    started = time.perf_counter()
    work_dir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or work_dir
    profile = get_profile(config.profile, config.organs or None)
    data, caches = site_data(data_dir, config.sites, config.seed, config.patients, config.organs)
    sites = load_site_cases(caches, seed=profile.seed, organs=profile.organs)
    evaluator = Evaluator(sites, profile, num_threads=os.cpu_count())
    runs: dict[str, BenchRun] = {}

    for name, measured in run_baselines(caches, work_dir, config).items():
        metrics = json.loads((work_dir / name / METRICS_NAME).read_text())
        evaluation = evaluator.evaluate(final_model_file(work_dir, name, "baseline"))
        launched = metrics["started_at"] - measured.started_at
        # Only the central run validates on every site's cases while it trains; a local-only run sees its own.
        history = metrics["history"] if name == "central" else []
        reached = next((h for h in history if h["val_dice"] >= config.target_dice), None)
        runs[name] = BenchRun(
            name,
            "central" if name == "central" else "local",
            evaluation,
            measured,
            {
                "epochs": metrics["epochs"],
                "train_seconds": metrics["train_seconds"],
                "seconds_to_target": round(launched + reached["wall_seconds"], 1) if reached else None,
            },
            final_model_file(work_dir, name, "baseline"),
        )

    # A federated run that fails costs only itself: the others still run and the results name the failure.
    failed: dict[str, str] = {}
    fl_job = {"num_rounds": config.rounds, "local_epochs": config.local_epochs}
    for name, changes in config.variants:
        try:
            measured, run_root = run_federated(
                name, data, work_dir, config.sites, config, {**fl_job, **changes}
            )
            fedbn = (caches, site_models_folder(work_dir, name)) if changes.get("fedbn") else None
            runs[name] = _federated_run(name, measured, run_root, evaluator, config, fedbn)
        except (RuntimeError, OSError, ValueError, KeyError) as err:
            failed[name] = _failure(name, err)

    skipped = run_peer_systems(config, sites, profile, evaluator, work_dir, runs, failed)

    overhead_runs: dict[str, dict[str, Any]] = {}
    job = {"num_rounds": config.overhead_rounds, "local_epochs": config.overhead_local_epochs}
    plans = [(str(count), count, job) for count in config.overhead_sites]
    if config.overhead_baseline_polling and config.overhead_sites:
        # The same run with NVFlare's own polling: what the job's shorter intervals save.
        count = config.overhead_sites[0]
        plans.append((f"{count}, NVFlare's default polling", count, {**job, **NVFLARE_POLLING}))
    for label, count, plan in plans:
        if count == config.sites and plan == fl_job and "fedavg" in runs:
            overhead_runs[label] = {"run": "fedavg", "sites": count, **runs["fedavg"].figures["overhead"]}
            continue
        count_data, _ = site_data(data_dir, count, config.seed, config.patients, config.organs)
        name = f"overhead-{count}-sites" + ("-nvflare-polling" if plan is not job else "")
        try:
            measured, run_root = run_federated(name, count_data, work_dir, count, config, plan)
            figures = overhead(round_figures(server_job_dir(run_root)))
        except (RuntimeError, OSError, ValueError, KeyError) as err:
            failed[name] = _failure(name, err)
            continue
        overhead_runs[label] = {
            "run": name,
            "sites": count,
            **figures,
            "wall_seconds": measured.wall_seconds,
            "peak_rss_mib": measured.peak_rss_mib,
        }

    heldout = (
        heldout_scores(
            heldout_evaluator(data_dir, profile, config.heldout_patients, sites=config.sites),
            {name: run.model for name, run in runs.items()},
        )
        if config.heldout_patients
        else {}
    )
    results = summarise(config, runs, overhead_runs, time.perf_counter() - started)
    results["failed_runs"] = failed
    results["heldout"] = heldout
    results["systems"] = systems_table(results, heldout)
    results["skipped_peers"] = skipped
    results["peer_targets"] = peer_targets(results["systems"]) if config.peers else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{config.name}.json").write_text(json.dumps(json_safe(results), indent=2) + "\n")
    (out_dir / f"{config.name}.md").write_text(format_report(results))
    logger.info("bench: wrote %s and %s", out_dir / f"{config.name}.json", out_dir / f"{config.name}.md")
    return results


def _failure(name: str, err: BaseException) -> str:
    reason = one_line(err, 400)
    logger.error("bench: run %s failed, the benchmark goes on without it: %s", name, reason)
    return reason


def _federated_run(
    name: str,
    measured: Measured,
    run_root: Path,
    evaluator: Evaluator,
    config: BenchConfig,
    fedbn: tuple[list[Path], Path] | None = None,
) -> BenchRun:
    """Score and measure one federated run; ``fedbn``: the sites' caches and where their models go."""
    server_job = server_job_dir(run_root)
    global_file = final_global_model(server_job)
    if fedbn:
        # FedBN: each site's validation cases with the global model and that site's own BatchNorm.
        caches, folder = fedbn
        models = fedbn_site_models(global_file, caches, evaluator.profile, config.rounds - 1)
        save_site_models(models, folder)
        evaluation = evaluator.evaluate_site_weights(models)
    else:
        evaluation = evaluator.evaluate(global_file)
    model: Any = models if fedbn else global_file
    rounds = round_figures(server_job)
    return BenchRun(
        name,
        "federated",
        evaluation,
        measured,
        {
            "overhead": overhead(rounds),
            "data_pipeline": data_pipeline(rounds),
            "wire_bytes": wire_bytes(run_root),
            "wire_dtypes": wire_dtypes(run_root),
            "seconds_to_target": time_to_dice(
                rounds, evaluation["union_val_dice"], measured.started_at, config.target_dice
            ),
            "round_union_dice": [r["received_model_union_dice"] for r in rounds[1:]]
            + [evaluation["union_val_dice"]],
        },
        model,
    )


def run_peer_systems(
    config: BenchConfig,
    sites: list[SiteCases],
    profile: SegProfile,
    evaluator: Evaluator,
    work: Path,
    runs: dict[str, BenchRun],
    failed: dict[str, str],
) -> dict[str, str]:
    """Run each of ``config.peers`` on the bench's sites (``bench.peers``) into ``runs`` as ``peer-<name>``;
    returns the peers skipped, with the reason (a failed peer goes to ``failed``, as a federated run)."""
    skipped: dict[str, str] = {}
    if not config.peers:
        return skipped
    if len(profile.organs) > 1:
        reason = (
            f"skipped: the peers' MONAI code (benchmarks/peers/) takes the one-organ task, not the "
            f"{len(profile.organs)} organs of this run"
        )
        logger.warning("bench: peers %s", reason)
        return {f"peer-{peer}": reason for peer in config.peers}
    spec = write_task_spec(
        work / "peers", sites, profile, config.rounds, config.local_epochs, config.training_seed
    )
    for peer in config.peers:
        name, out = f"peer-{peer}", work / f"peer-{peer}"
        plan = peer_plan(peer, spec, out)
        if plan.command is None:
            print(plan.skipped)
            logger.warning("bench: %s", plan.skipped)
            skipped[name] = str(plan.skipped)
            continue
        logger.info("bench: %s (%s)", name, " ".join(plan.command))
        try:
            measured = run_peer(plan, out, work / f"{name}.log")
            weights = load_final_model(out)
            evaluation = evaluator.evaluate_weights(weights)
            figures = peer_figures(out, measured, evaluation["union_val_dice"], config.target_dice)
        except (RuntimeError, OSError, ValueError, KeyError) as err:
            failed[name] = _failure(name, err)
            continue
        runs[name] = BenchRun(
            name,
            "peer",
            evaluation,
            measured,
            {"peer": figures, "seconds_to_target": figures["seconds_to_target"]},
            weights,
        )
    return skipped


def summarise(
    config: BenchConfig, runs: dict[str, BenchRun], overhead_runs: dict[str, dict[str, Any]], seconds: float
) -> dict[str, Any]:
    """The results document (what ``<name>.json`` holds)."""
    union = {name: run.evaluation["union_val_dice"] for name, run in runs.items()}
    central = union.get("central")
    federated = [name for name, run in runs.items() if run.kind == "federated"]
    local = [name for name, run in runs.items() if run.kind == "local"]
    fedavg = runs.get("fedavg")
    best_fl = max(federated, key=lambda n: union[n]) if federated else None
    central_time = runs["central"].figures.get("seconds_to_target") if "central" in runs else None
    fedavg_time = fedavg.figures.get("seconds_to_target") if fedavg else None
    demo_overhead = fedavg.figures["overhead"] if fedavg else {}
    return {
        "name": config.name,
        "config": dataclasses.asdict(config),
        "machine": machine(),
        "seconds": round(seconds, 1),
        "union_val_dice": union,
        "union_over_central": {name: _ratio(dice, central) for name, dice in union.items()},
        "site_val_dice": {name: run.evaluation["site_val_dice"] for name, run in runs.items()},
        "fedavg_over_central_dice": _ratio(union.get("fedavg"), central),
        "best_fl_variant": best_fl,
        "best_fl_over_central_dice": _ratio(union[best_fl], central) if best_fl else None,
        "fl_beats_every_local_model": (
            all(union[best_fl] > union[name] for name in local) if best_fl and local else None
        ),
        "fedavg_beats_every_local_model": (
            all(union["fedavg"] > union[name] for name in local) if "fedavg" in union and local else None
        ),
        "overhead_ratio": demo_overhead.get("overhead_ratio"),
        "fixed_seconds_per_round": demo_overhead.get("fixed_seconds_per_round"),
        "target_dice": config.target_dice,
        "seconds_to_target": {name: run.figures.get("seconds_to_target") for name, run in runs.items()},
        "fedavg_over_central_time_to_target": _ratio(fedavg_time, central_time),
        "overhead_by_sites": overhead_runs,
        "runs": {
            name: {
                "kind": run.kind,
                "wall_seconds": run.measured.wall_seconds,
                "peak_rss_mib": run.measured.peak_rss_mib,
                "processes": run.measured.processes,
                "peak_total_rss_mib": run.measured.peak_total_rss_mib,
                "log": str(run.measured.log),
                **run.figures,
            }
            for name, run in runs.items()
        },
    }


def machine() -> dict[str, Any]:
    """The machine and the numerical packages a run's figures depend on.

    Two hosts of the same kind can give different floating-point results (the CPU picks the kernels), so a
    benchmark that moved is first checked against these.
    """
    cpuinfo = _read_text(Path("/proc/cpuinfo")).splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor(),
    )
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "cpu_features": cpu_features(flags),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "dose3d_fl": __version__,
        "packages": {name: _version(name) for name in NUMERIC_PACKAGES},
    }


def cpu_features(flags: list[str]) -> dict[str, Any]:
    """The vector instructions that decide which CPU kernels torch runs, so that two hosts sold under one name
    (``AMD EPYC``) can be told apart.

    Args:
        flags: the ``flags`` of ``/proc/cpuinfo`` (empty where there is none).

    Returns:
        ``torch_kernels``: the instruction set torch dispatches its kernels for (``torch.backends.cpu``:
        ``DEFAULT``, ``AVX2``, ``AVX512``, ...); ``flags``: which of ``CPU_FLAGS`` the CPU reports (bfloat16
        and AMX units change what reduced-precision arithmetic costs).
    """
    import torch  # the bench's runs import it anyway; this module's import stays light

    return {
        "torch_kernels": torch.backends.cpu.get_cpu_capability(),
        "flags": [flag for flag in CPU_FLAGS if flag in set(flags)],
    }


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or ``None`` when either is missing or the reference is 0 or NaN."""
    if value is None or not reference or math.isnan(reference):
        return None
    return value / reference
