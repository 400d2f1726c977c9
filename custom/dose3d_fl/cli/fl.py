"""The federated commands of ``dose3d``: ``fl export``, ``fl simulate``, ``fl resume`` and ``fl site-model``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dose3d_fl.cli.common import fail
from dose3d_fl.fl import DEFAULT_LOCAL_EPOCHS, DEFAULT_ROUNDS, LOCAL_LR_SCALE

if TYPE_CHECKING:
    from dose3d_fl.fl.gan_job import GanJobConfig
    from dose3d_fl.fl.seg_job import SegJobConfig

SEG_AGGREGATIONS = "fedavg, median or trimmed-mean"


def _cmd_fl_export(args: argparse.Namespace) -> int:
    try:
        if args.job == "gan":
            from dose3d_fl.fl.gan_job import export_gan_job

            print(export_gan_job(args.out, gan_job_config(args)))
            return 0
        from dose3d_fl.fl.seg_job import export_seg_job

        print(export_seg_job(args.out, seg_job_config(args)))
    except ValueError as err:
        return fail(str(err))
    return 0


def _cmd_fl_resume(args: argparse.Namespace) -> int:
    from dose3d_fl.fl.server.resume import make_resume_job

    try:
        target = make_resume_job(args.job, args.out)
    except (OSError, ValueError) as err:
        return fail(str(err))
    print(target)
    print(f"submit it to the server that ran the job, e.g. dose3d poc submit {target} --wait")
    return 0


def _cmd_fl_site_model(args: argparse.Namespace) -> int:
    from dose3d_fl.clinical.model_file import ModelFileError
    from dose3d_fl.fl.site.model import write_site_model
    from dose3d_fl.fl.site.trainers import site_state_folder

    try:
        folder = args.state or site_state_folder(args.site, args.workspace)
        out = write_site_model(args.global_model, folder, args.out, args.profile)
    except (ModelFileError, OSError, KeyError, ValueError) as err:
        return fail(str(err).strip("'\""))
    print(out)
    print(f"segment with it: dose3d segment --model {out} ...")
    return 0


def gan_job_config(args: argparse.Namespace) -> GanJobConfig:
    """The GAN job of ``dose3d fl simulate|export --job gan``'s options (the job defaults where one is not given).

    Raises:
        ValueError: an option value that only the segmentation job takes (``--aggregation median``).
    """
    from dose3d_fl.fl.gan_job import AGGREGATIONS, GanJobConfig

    aggregation = args.aggregation or "generator-only"
    if aggregation not in AGGREGATIONS:
        raise ValueError(
            f"--aggregation {aggregation} is for the seg job; the gan job takes {' or '.join(AGGREGATIONS)}"
        )
    return GanJobConfig(
        aggregation=aggregation,
        **_given(
            num_rounds=args.rounds,
            local_epochs=args.local_epochs,
            profile=args.profile,
            min_clients=getattr(args, "min_clients", None),
        ),
    )


def _cmd_fl_simulate_gan(args: argparse.Namespace) -> int:
    from dose3d_fl.fl.gan_simulate import GanSimulationConfig, format_gan_summary, simulate_gan

    try:
        job = gan_job_config(args)
    except ValueError as err:
        return fail(str(err))
    start = time.perf_counter()
    summary = simulate_gan(
        GanSimulationConfig(workspace=args.workspace, sites=args.sites, job=job, seed=args.seed)
    )
    print(format_gan_summary(summary))
    _print_run_footer(
        args, f"{job.num_rounds} rounds x {job.local_epochs} local epochs ({job.aggregation})", start
    )
    return 0


def seg_job_config(args: argparse.Namespace) -> SegJobConfig:
    """The segmentation job of ``dose3d fl simulate|export``'s options (the job defaults where one is not given).

    Raises:
        ValueError: an option value the job refuses, or one that only the GAN job takes.
    """
    from dose3d_fl.fl.seg_job import AGGREGATION_ALIASES, AGGREGATIONS, SegJobConfig

    aggregation = args.aggregation or "fedavg"
    if AGGREGATION_ALIASES.get(aggregation, aggregation) not in AGGREGATIONS:
        raise ValueError(
            f"--aggregation {aggregation} is for the gan job; the seg job takes {SEG_AGGREGATIONS}"
        )
    return SegJobConfig(
        num_rounds=args.rounds or DEFAULT_ROUNDS,
        local_epochs=args.local_epochs or DEFAULT_LOCAL_EPOCHS,
        profile=args.profile or "cpu-small",
        resume=getattr(args, "resume", False),
        fedprox_mu=args.fedprox_mu,
        transfer=args.transfer,
        quantization=args.quantization,
        local_lr_scale=args.local_lr_scale,
        keep_optimizer_state=args.keep_optimizer_state,
        fedbn=args.fedbn,
        aggregation=aggregation,
        **_given(
            trim_fraction=args.trim_fraction,
            max_norm_ratio=args.max_norm_ratio,
            min_clients=getattr(args, "min_clients", None),
        ),
    )


def _given(**options: object) -> dict[str, object]:
    """The options that were given (not ``None``); the others keep the job's defaults."""
    return {name: value for name, value in options.items() if value is not None}


def _cmd_fl_simulate(args: argparse.Namespace) -> int:
    if args.job == "gan":
        return _cmd_fl_simulate_gan(args)
    from dose3d_fl.fl.policy.privacy import DPConfig
    from dose3d_fl.fl.simulate import SimulationConfig, format_simulation_summary, simulate_seg

    try:
        job = seg_job_config(args)
    except ValueError as err:
        return fail(str(err))
    dp = None
    if args.dp_noise is not None:
        dp = DPConfig(
            clip_norm=args.dp_clip,
            noise_multiplier=args.dp_noise,
            epsilon_budget=args.dp_budget,
            delta=args.dp_delta,
        )
    start = time.perf_counter()
    summary = simulate_seg(
        SimulationConfig(workspace=args.workspace, sites=args.sites, job=job, seed=args.seed, dp=dp)
    )
    print(format_simulation_summary(summary))
    aggregation = "" if job.aggregation == "fedavg" else f" ({job.aggregation.replace('_', '-')} aggregation)"
    _print_run_footer(args, f"{job.num_rounds} rounds x {job.local_epochs} local epochs{aggregation}", start)
    return 0


def _print_run_footer(args: argparse.Namespace, what: str, start: float) -> None:
    print(
        f"{args.sites} sites x {what} in "
        f"{time.perf_counter() - start:.0f} s wall (simulator start and cross-site evaluation included)"
    )
    print(f"summary: {Path(args.workspace) / 'summary.json'}")


def _aggregation(text: str) -> str:
    """``--aggregation``'s type: ``trimmed_mean`` (the Python spelling) is read as ``trimmed-mean``."""
    return "trimmed-mean" if text == "trimmed_mean" else text


def _add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The job arguments ``fl simulate`` and ``fl export`` share (each travels with the job).

    Options left out take the job's defaults (``SegJobConfig``, ``GanJobConfig``); NVFlare is not imported
    here, so the help shows the server's defaults as text (tests/cli/test_fl.py keeps them equal).
    """
    parser.add_argument(
        "--job", choices=("seg", "gan"), default="seg", help="seg_fedavg (default) or gan_fedavg"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help=f"FedAvg rounds (default {DEFAULT_ROUNDS}; gan: 10)"
    )
    parser.add_argument(
        "--local-epochs",
        type=int,
        default=None,
        help=f"local epochs per round at each site (default {DEFAULT_LOCAL_EPOCHS}; gan: 2)",
    )
    parser.add_argument("--profile", default=None, help="segmentation or GAN profile (default cpu-small)")
    parser.add_argument(
        "--aggregation",
        type=_aggregation,
        choices=("fedavg", "median", "trimmed-mean", "both", "generator-only"),
        default=None,
        help="seg job: fedavg (default; weighted mean), or a robust coordinate-wise median or trimmed-mean, "
        "weighted by the sites' steps (docs/privacy.md); gan job: average generator and critic (both), or "
        "the generator only (generator-only, default; critics stay local)",
    )
    variants = parser.add_argument_group("seg job variants (docs/performance.md, docs/privacy.md)")
    variants.add_argument(
        "--trim-fraction",
        type=float,
        default=None,
        help="trimmed-mean: share of the sites cut at each end per coordinate (default 0.2: 1 of 5)",
    )
    variants.add_argument(
        "--max-norm-ratio",
        type=float,
        default=None,
        help="the server rejects an update farther from the global model than this many times the median "
        "of the other sites' (default 10)",
    )
    variants.add_argument(
        "--fedprox-mu", type=float, default=0.0, help="FedProx proximal coefficient (default 0: FedAvg)"
    )
    variants.add_argument(
        "--transfer", choices=("full", "diff"), default="full", help="sites send weights or differences"
    )
    variants.add_argument(
        "--quantization",
        choices=("", "float16"),
        default="",
        help="models travel as float16 (default float32)",
    )
    variants.add_argument(
        "--local-lr-scale",
        type=float,
        default=LOCAL_LR_SCALE,
        help=f"factor on the profile's learning rate at the sites (default {LOCAL_LR_SCALE:g})",
    )
    variants.add_argument(
        "--keep-optimizer-state",
        action="store_true",
        help="sites carry their Adam moments over rounds (default: afresh every round)",
    )
    variants.add_argument(
        "--fedbn",
        action="store_true",
        help="FedBN: each site keeps its own BatchNorm layers (scanner differences); the server is unchanged",
    )


def _add_simulate_parser(fl: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = fl.add_parser("simulate", help="run a job in the NVFlare simulator on synthetic sites")
    _add_job_arguments(simulate)
    simulate.add_argument("--sites", type=int, default=3, help="simulated sites (default 3)")
    simulate.add_argument("--workspace", type=Path, default=Path("runs/simulate"))
    simulate.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    dp = simulate.add_argument_group(
        "differential privacy at every simulated site (fl/policy/dp.py; a real site sets it in local/privacy.json)"
    )
    dp.add_argument("--dp-noise", type=float, help="noise multiplier sigma (enables DP)")
    dp.add_argument("--dp-clip", type=float, default=5.0, help="L2 bound C of a site's update (default 5)")
    dp.add_argument(
        "--dp-budget", type=float, default=1e12, help="epsilon budget per site (default: no limit)"
    )
    dp.add_argument("--dp-delta", type=float, default=1e-5, help="delta (default 1e-5)")
    simulate.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last round checkpoint of a simulation in this workspace (WS/checkpoints)",
    )
    simulate.set_defaults(func=_cmd_fl_simulate)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fl`` (``export``, ``simulate``, ``resume``, ``site-model``) to the ``dose3d`` sub-commands."""
    fl = sub.add_parser("fl", help="federated learning with NVIDIA FLARE").add_subparsers(
        dest="fl_command", required=True
    )
    export = fl.add_parser(
        "export",
        help="export a job folder (no paths, no secrets); without options, the committed jobs/",
    )
    export.add_argument("--out", type=Path, default=Path("jobs"), help="parent folder (default jobs/)")
    _add_job_arguments(export)
    export.add_argument(
        "--min-clients", type=int, default=None, help="sites that must answer each round (default 3)"
    )
    export.set_defaults(func=_cmd_fl_export)
    _add_simulate_parser(fl)
    resume = fl.add_parser(
        "resume", help="write a copy of a job that continues from the server's last round checkpoint"
    )
    resume.add_argument(
        "--job", type=Path, default=Path("jobs/seg_fedavg"), help="job folder (default jobs/seg_fedavg)"
    )
    resume.add_argument(
        "--out",
        type=Path,
        default=Path("runs/resume"),
        help="parent folder of the resume job (default runs/resume)",
    )
    resume.set_defaults(func=_cmd_fl_resume)
    site_model = fl.add_parser(
        "site-model",
        help="at a site after a FedBN job: the global model with this site's own BatchNorm, for dose3d segment",
    )
    site_model.add_argument(
        "--global", dest="global_model", type=Path, required=True, help="FL_global_model.pt of the job"
    )
    site_model.add_argument("--out", type=Path, required=True, help="model file to write")
    where = site_model.add_mutually_exclusive_group(required=True)
    where.add_argument("--site", help="this site's NVFlare client name (its state: <cache_dir>/fl_state)")
    where.add_argument("--state", type=Path, help="the site's local state folder, if not found by --site")
    site_model.add_argument(
        "--workspace", type=Path, default=None, help="the site's workspace (default: working directory)"
    )
    site_model.add_argument("--profile", default=None, help="profile of a model file that stores none")
    site_model.set_defaults(func=_cmd_fl_site_model)
