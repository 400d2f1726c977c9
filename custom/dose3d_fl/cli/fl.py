"""The federated commands of ``dose3d``: ``fl export``, ``fl simulate``, ``fl resume``, ``fl site-model`` and ``audit verify``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dose3d_fl.cli.common import fail
from dose3d_fl.fl import DEFAULT_LOCAL_EPOCHS, DEFAULT_ROUNDS, LOCAL_LR_SCALE

if TYPE_CHECKING:
    from dose3d_fl.fl.seg_job import SegJobConfig


def _cmd_fl_export(args: argparse.Namespace) -> int:
    if args.job == "gan":
        from dose3d_fl.fl.gan_job import export_gan_job

        print(export_gan_job(args.out))
        return 0
    from dose3d_fl.fl.seg_job import export_seg_job

    print(export_seg_job(args.out))
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


def _cmd_fl_simulate_gan(args: argparse.Namespace) -> int:
    from dose3d_fl.fl.gan_job import DEFAULT_GAN_LOCAL_EPOCHS, DEFAULT_GAN_ROUNDS, GanJobConfig
    from dose3d_fl.fl.gan_simulate import GanSimulationConfig, format_gan_summary, simulate_gan

    rounds = args.rounds or DEFAULT_GAN_ROUNDS
    epochs = args.local_epochs or DEFAULT_GAN_LOCAL_EPOCHS
    job = GanJobConfig(
        num_rounds=rounds,
        local_epochs=epochs,
        profile=args.profile or "cpu-small",
        aggregation=args.aggregation,
    )
    start = time.perf_counter()
    summary = simulate_gan(
        GanSimulationConfig(workspace=args.workspace, sites=args.sites, job=job, seed=args.seed)
    )
    print(format_gan_summary(summary))
    _print_run_footer(args, f"{rounds} rounds x {epochs} local epochs ({args.aggregation})", start)
    return 0


def seg_job_config(args: argparse.Namespace) -> SegJobConfig:
    """The segmentation job of ``dose3d fl simulate``'s options (the job defaults where one is not given)."""
    from dose3d_fl.fl.seg_job import SegJobConfig

    return SegJobConfig(
        num_rounds=args.rounds or DEFAULT_ROUNDS,
        local_epochs=args.local_epochs or DEFAULT_LOCAL_EPOCHS,
        profile=args.profile or "cpu-small",
        resume=args.resume,
        fedprox_mu=args.fedprox_mu,
        transfer=args.transfer,
        quantization=args.quantization,
        local_lr_scale=args.local_lr_scale,
        keep_optimizer_state=args.keep_optimizer_state,
        fedbn=args.fedbn,
    )


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
    _print_run_footer(args, f"{job.num_rounds} rounds x {job.local_epochs} local epochs", start)
    return 0


def _print_run_footer(args: argparse.Namespace, what: str, start: float) -> None:
    print(
        f"{args.sites} sites x {what} in "
        f"{time.perf_counter() - start:.0f} s wall (simulator start and cross-site evaluation included)"
    )
    print(f"summary: {Path(args.workspace) / 'summary.json'}")


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from dose3d_fl.fl.server.transfer_log import verify_chain

    if not args.log.is_file():
        print(f"error: {args.log} does not exist (the server writes transfer_log.jsonl in its job workspace)")
        return 2
    check = verify_chain(args.log)
    if check.ok:
        print(f"{args.log}: chain intact ({check.lines} line(s))")
        return 0
    print(f"{args.log}: chain broken at line {check.first_bad_line} of {check.lines}: {check.reason}")
    return 1


def _add_simulate_parser(fl: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = fl.add_parser("simulate", help="run a job in the NVFlare simulator on synthetic sites")
    simulate.add_argument(
        "--job", choices=("seg", "gan"), default="seg", help="seg_fedavg (default) or gan_fedavg"
    )
    simulate.add_argument("--sites", type=int, default=3, help="simulated sites (default 3)")
    simulate.add_argument(
        "--rounds", type=int, default=None, help=f"FedAvg rounds (default {DEFAULT_ROUNDS}; gan: 10)"
    )
    simulate.add_argument(
        "--local-epochs",
        type=int,
        default=None,
        help=f"local epochs per round at each site (default {DEFAULT_LOCAL_EPOCHS}; gan: 2)",
    )
    simulate.add_argument("--workspace", type=Path, default=Path("runs/simulate"))
    simulate.add_argument("--profile", default=None, help="segmentation or GAN profile (default cpu-small)")
    simulate.add_argument(
        "--aggregation",
        choices=("both", "generator-only"),
        default="generator-only",
        help="gan job: average generator and critic, or the generator only (default; critics stay local)",
    )
    simulate.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    variants = simulate.add_argument_group("seg job variants (docs/performance.md)")
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
    export = fl.add_parser("export", help="export a job folder (no paths, no secrets)")
    export.add_argument("--out", type=Path, default=Path("jobs"), help="parent folder (default jobs/)")
    export.add_argument(
        "--job", choices=("seg", "gan"), default="seg", help="seg_fedavg (default) or gan_fedavg"
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


def register_audit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit`` (``verify``) to the ``dose3d`` sub-commands."""
    audit = sub.add_parser("audit", help="check the server's transfer log").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser(
        "verify", help="check the hash chain of a transfer_log.jsonl; name the first bad line"
    )
    verify.add_argument("log", type=Path)
    verify.set_defaults(func=_cmd_audit_verify)
