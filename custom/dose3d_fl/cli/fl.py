"""The federated commands of ``dose3d``: ``fl export``, ``fl simulate``, ``fl resume`` and ``fl site-model``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dose3d_fl.cli.common import fail, organ_list
from dose3d_fl.fl import DEFAULT_LOCAL_EPOCHS, DEFAULT_ROUNDS, LOCAL_LR_SCALE

if TYPE_CHECKING:
    from dose3d_fl.fl.gan_job import GanJobConfig
    from dose3d_fl.fl.policy.privacy import DPConfig
    from dose3d_fl.fl.seg_job import SegJobConfig
    from dose3d_fl.fl.simulate import SimulationConfig

SEG_AGGREGATIONS = "fedavg, median or trimmed-mean"
# Where `fl export --dp-noise` writes the site policy, under --out (a site's local/ folder holds it).
SITE_POLICY_DIR = "site_local"
# --dp-clip's and --dp-budget's defaults: C = 5, and no limit on epsilon (a real site sets its own budget).
DEFAULT_DP_CLIP = 5.0
DEFAULT_DP_BUDGET = 1e12
DP_OPTIONS = (("dp_clip", "--dp-clip"), ("dp_budget", "--dp-budget"), ("dp_delta", "--dp-delta"))
# Options of the segmentation job that the GAN job does not take: (argparse dest, flag).
SEG_ONLY_OPTIONS = (
    ("min_responses", "--min-responses"),
    ("round_timeout", "--round-timeout"),
    ("trim_fraction", "--trim-fraction"),
    ("max_norm_ratio", "--max-norm-ratio"),
    ("fedprox_mu", "--fedprox-mu"),
    ("transfer", "--transfer"),
    ("quantization", "--quantization"),
    ("local_lr_scale", "--local-lr-scale"),
    ("keep_optimizer_state", "--keep-optimizer-state"),
    ("fedbn", "--fedbn"),
    ("silobn", "--silobn"),
    ("train_seed", "--train-seed"),
    ("dp_noise", "--dp-noise"),
    *DP_OPTIONS,
    ("organs", "--organs"),
    ("resume", "--resume"),
)


def _cmd_fl_export(args: argparse.Namespace) -> int:
    try:
        if args.job == "gan":
            from dose3d_fl.fl.gan_job import export_gan_job

            print(export_gan_job(args.out, gan_job_config(args)))
            return 0
        dp = dp_config(args)
        from dose3d_fl.fl.seg_job import export_seg_job

        print(export_seg_job(args.out, seg_job_config(args)))
    except ValueError as err:
        return fail(str(err))
    if dp is not None:
        from dose3d_fl.fl.policy.privacy import write_privacy_policy

        policy = write_privacy_policy(Path(args.out) / SITE_POLICY_DIR, dp=dp)
        print(policy)
        print(
            "differential privacy is each site's own filter, not the job's: every site copies this file into "
            "its local/ folder (docs/privacy.md)"
        )
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
        ValueError: an option that only the segmentation job takes (``--aggregation median``, ``--fedbn``,
            ``--dp-noise``, ...).
    """
    from dose3d_fl.fl.gan_job import AGGREGATIONS, GanJobConfig

    given = [flag for dest, flag in SEG_ONLY_OPTIONS if getattr(args, dest, None) not in (None, False)]
    if given:
        raise ValueError(
            f"{given[0]} is for the seg job; the gan job takes --rounds, --local-epochs, --profile and "
            "--aggregation (export: --min-clients too)"
        )
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
        if args.min_clients is not None:
            raise ValueError("--min-clients: the gan simulation trains every simulated site; set --sites")
        if args.channels_last:
            raise ValueError("--channels-last is for the seg job's trainer; the gan job trains contiguous")
        if args.cpu_bfloat16:
            raise ValueError("--cpu-bfloat16 is for the seg job's trainer; the gan job trains in float32")
    except ValueError as err:
        return fail(str(err))
    start = time.perf_counter()
    summary = simulate_gan(
        GanSimulationConfig(
            workspace=args.workspace,
            sites=args.sites,
            job=job,
            seed=args.seed,
            pin_cores=not args.no_pin_cores,
        )
    )
    print(format_gan_summary(summary))
    _print_run_footer(
        args,
        f"{job.num_rounds} rounds x {job.local_epochs} local epochs ({job.aggregation})",
        start,
        "gan_fedavg",
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
        aggregation=aggregation,
        **_given(
            fedprox_mu=args.fedprox_mu,
            transfer=args.transfer,
            quantization=args.quantization,
            local_lr_scale=args.local_lr_scale,
            keep_optimizer_state=args.keep_optimizer_state or None,
            fedbn=args.fedbn or None,
            silobn=args.silobn or None,
            trim_fraction=args.trim_fraction,
            max_norm_ratio=args.max_norm_ratio,
            min_clients=args.min_clients,
            min_responses=args.min_responses,
            round_timeout=args.round_timeout,
            organs=tuple(args.organs) if getattr(args, "organs", None) else None,
            train_seed=args.train_seed,
        ),
    )


def _given(**options: object) -> dict[str, object]:
    """The options that were given (not ``None``); the others keep the job's defaults."""
    return {name: value for name, value in options.items() if value is not None}


def dp_config(args: argparse.Namespace) -> DPConfig | None:
    """The differential privacy of ``--dp-noise`` and its companions (``None`` without ``--dp-noise``).

    Raises:
        ValueError: a value the site's Gaussian mechanism refuses (``dose3d_fl.fl.policy.dp.GaussianDP``).
    """
    if args.dp_noise is None:
        given = [flag for dest, flag in DP_OPTIONS if getattr(args, dest) is not None]
        if given:
            raise ValueError(f"{given[0]} needs --dp-noise (the noise multiplier that turns DP on)")
        return None
    from dose3d_fl.fl.policy.privacy import DPConfig

    dp = DPConfig(
        noise_multiplier=args.dp_noise,
        clip_norm=DEFAULT_DP_CLIP if args.dp_clip is None else args.dp_clip,
        epsilon_budget=DEFAULT_DP_BUDGET if args.dp_budget is None else args.dp_budget,
        **_given(delta=args.dp_delta),
    )
    if dp.clip_norm <= 0 or dp.noise_multiplier <= 0 or dp.epsilon_budget <= 0 or not 0 < dp.delta < 1:
        raise ValueError(
            "differential privacy needs --dp-noise, --dp-clip and --dp-budget above 0 and --dp-delta between "
            f"0 and 1, got {dp.noise_multiplier:g}, {dp.clip_norm:g}, {dp.epsilon_budget:g} and {dp.delta:g}"
        )
    return dp


def _cmd_fl_simulate(args: argparse.Namespace) -> int:
    if args.job == "gan":
        return _cmd_fl_simulate_gan(args)
    from dose3d_fl.fl.simulate import format_simulation_summary, simulate_seg

    try:
        config = simulation_config(args)
    except ValueError as err:
        return fail(str(err))
    job = config.job
    start = time.perf_counter()
    summary = simulate_seg(config)
    print(format_simulation_summary(summary))
    aggregation = "" if job.aggregation == "fedavg" else f" ({job.aggregation.replace('_', '-')} aggregation)"
    _print_run_footer(
        args, f"{job.num_rounds} rounds x {job.local_epochs} local epochs{aggregation}", start, "seg_fedavg"
    )
    return 0


def simulation_config(args: argparse.Namespace) -> SimulationConfig:
    """The seg job's simulation from ``dose3d fl simulate``'s arguments.

    Raises:
        ValueError: an option out of range, in one line.
    """
    from dose3d_fl.fl.simulate import SimulationConfig

    return SimulationConfig(
        workspace=args.workspace,
        sites=args.sites,
        job=seg_job_config(args),
        seed=args.seed,
        dp=dp_config(args),
        min_clients=args.min_clients,
        pin_cores=not args.no_pin_cores,
        channels_last=args.channels_last,
        cpu_bfloat16=args.cpu_bfloat16,
    )


def _print_run_footer(args: argparse.Namespace, what: str, start: float, job_name: str) -> None:
    from dose3d_fl.fl.simulate import tensorboard_dir

    print(
        f"{args.sites} sites x {what} in "
        f"{time.perf_counter() - start:.0f} s wall (simulator start and cross-site evaluation included)"
    )
    print(f"summary: {Path(args.workspace) / 'summary.json'}")
    events = tensorboard_dir(Path(args.workspace), job_name)
    if events.is_dir():
        print(f"TensorBoard (the sites' streamed metrics): tensorboard --logdir {events}")


def _aggregation(text: str) -> str:
    """``--aggregation``'s type: ``trimmed_mean`` (the Python spelling) is read as ``trimmed-mean``."""
    return "trimmed-mean" if text == "trimmed_mean" else text


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """The job options of ``fl simulate`` and ``fl export``: one builder, so the two commands cannot drift.

    Everything here travels with the job, except differential privacy, which each site enforces from its own
    ``local/privacy.json``: ``simulate`` gives it to every simulated site, ``export`` writes that file beside
    the job. Options left out take the job's defaults (``SegJobConfig``, ``GanJobConfig``); NVFlare is not
    imported here, so the help shows the server's defaults as text (tests/cli/test_fl.py keeps them equal).
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
        "--organs",
        type=organ_list,
        default=None,
        help="seg job: the task's organs, TG-263 names in label order, e.g. Spleen,Liver,Kidney_L,Kidney_R "
        "(default: the profile's, Spleen); each site maps its own ROI names to them (docs/organs.md)",
    )
    parser.add_argument(
        "--aggregation",
        type=_aggregation,
        choices=("fedavg", "median", "trimmed-mean", "both", "generator-only"),
        default=None,
        help="seg job: fedavg (default; weighted mean), or a robust coordinate-wise median or trimmed-mean, "
        "weighted by the sites' steps (docs/privacy.md); gan job: average generator and critic (both), or "
        "the generator only (generator-only, default; critics stay local)",
    )
    parser.add_argument(
        "--min-clients",
        type=int,
        default=None,
        help="sites the job needs: it starts when this many are connected and each round trains this many "
        "(default 3; simulate: every simulated site)",
    )
    rounds = parser.add_argument_group("rounds and lost sites, seg job (docs/reliability.md)")
    rounds.add_argument(
        "--min-responses",
        type=int,
        default=None,
        help="results a round needs to close (default 2, at most --min-clients); a round that closes with "
        "fewer stops the job, which `dose3d fl resume` continues",
    )
    rounds.add_argument(
        "--round-timeout",
        type=int,
        default=None,
        help="seconds a round waits for the sites before it closes with the results it has (default 7200; "
        "0: no limit); set it above the slowest site's round",
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
        "--fedprox-mu", type=float, default=None, help="FedProx proximal coefficient (default 0: FedAvg)"
    )
    variants.add_argument(
        "--transfer",
        choices=("full", "diff"),
        default=None,
        help="sites send weights (full, default) or differences",
    )
    variants.add_argument(
        "--quantization",
        type=lambda text: "" if text == "float32" else text,
        choices=("", "float16", "int8"),
        metavar="{float32,float16,int8}",
        default=None,
        help="models travel as float16, as int8 (training rounds; sites send updates with error feedback), "
        "or float32 (default)",
    )
    variants.add_argument(
        "--local-lr-scale",
        type=float,
        default=None,
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
    variants.add_argument(
        "--silobn",
        action="store_true",
        help="SiloBN: each site keeps only its BatchNorm statistics; their scale and shift are federated",
    )
    variants.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="seed of the initial model and of the sites' random crops and augmentation (default: the "
        "profile's); --seed is the synthetic data's",
    )
    dp = parser.add_argument_group(
        "differential privacy, seg job: each site's own filter, from its local/privacy.json (docs/privacy.md)"
    )
    dp.add_argument(
        "--dp-noise",
        type=float,
        default=None,
        help="noise multiplier sigma (enables DP); simulate: at every simulated site; export: writes "
        f"OUT/{SITE_POLICY_DIR}/privacy.json for the sites",
    )
    dp.add_argument(
        "--dp-clip",
        type=float,
        default=None,
        help=f"L2 bound C of a site's update (default {DEFAULT_DP_CLIP:g})",
    )
    dp.add_argument(
        "--dp-budget", type=float, default=None, help="epsilon budget per site (default: no limit)"
    )
    dp.add_argument("--dp-delta", type=float, default=None, help="delta (default 1e-5)")


def _add_simulate_parser(fl: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = fl.add_parser("simulate", help="run a job in the NVFlare simulator on synthetic sites")
    add_job_options(simulate)
    simulate.add_argument("--sites", type=int, default=3, help="simulated sites (default 3)")
    simulate.add_argument("--workspace", type=Path, default=Path("runs/simulate"))
    simulate.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    simulate.add_argument(
        "--no-pin-cores",
        action="store_true",
        help="leave the simulated sites to the operating system; by default, when they outnumber the cores, "
        "each trains on a core of its own, balanced by cases (docs/performance.md)",
    )
    simulate.add_argument(
        "--channels-last",
        action="store_true",
        help="the sites train in torch's channels_last_3d memory format (faster for one trainer on a CPU "
        "thread; no gain measured for three sites on 2 cores; figures differ by rounding), docs/performance.md",
    )
    simulate.add_argument(
        "--cpu-bfloat16",
        action="store_true",
        help="the sites train under bfloat16 autocast on the CPU (faster where the cores have bfloat16 units; "
        "the pancreas scored lower on held-out patients), docs/performance.md",
    )
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
    add_job_options(export)
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
