"""The ``dose3d`` command: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dose3d_fl import __version__
from dose3d_fl.fl import DEFAULT_LOCAL_EPOCHS, DEFAULT_ROUNDS, LOCAL_LR_SCALE

if TYPE_CHECKING:
    from dose3d_fl.bench.runner import BenchConfig
    from dose3d_fl.fl.seg_job import SegJobConfig


def _patients(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--patients expects comma-separated integers, got {text!r}"
        ) from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--patients needs at least one patient per site, got {text!r}")
    return counts


def _cmd_synth(args: argparse.Namespace) -> int:
    from dose3d_fl.data.synth import DEFAULT_PATIENTS, patients_per_site, synthesize_federation

    sites = args.sites or (len(args.patients) if args.patients else len(DEFAULT_PATIENTS))
    try:
        patients = patients_per_site(sites, args.patients)
    except ValueError:
        return _fail(f"--patients lists {len(args.patients)} site(s) but --sites is {sites}")
    start = time.perf_counter()
    folders = synthesize_federation(
        args.out, patients, seed=args.seed, workers=args.workers, show_progress=True
    )
    elapsed = time.perf_counter() - start
    for site, count in zip(folders, patients, strict=True):
        print(f"{site}: {count} patients")
    print(f"synthesised {sum(patients)} patients at {sites} sites in {elapsed:.1f} s")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from dose3d_fl.data.ingest import IngestConfig, IngestError, ingest_site
    from dose3d_fl.data.summary import SiteDataSummary, format_summary_table

    start = time.perf_counter()
    try:
        report = ingest_site(args.input, args.out, IngestConfig(roi=args.roi), show_progress=True)
    except IngestError as err:
        return _fail(str(err))
    elapsed = time.perf_counter() - start
    manifest = report.manifest
    for rejection in manifest.rejected:
        print(f"rejected {rejection.source}: {rejection.reason}")
    print(
        f"{args.input}: {len(manifest.cases)} case(s) ({len(report.converted)} converted, {len(report.reused)} "
        f"unchanged), {len(manifest.rejected)} rejected, {manifest.skipped_non_dicom} non-DICOM file(s) skipped "
        f"in {elapsed:.1f} s -> {Path(args.out) / 'manifest.json'}"
    )
    print(format_summary_table([SiteDataSummary.from_manifest(Path(args.out).name, manifest)]))
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from dose3d_fl.data.summary import format_summary_table, summarise_caches

    try:
        print(format_summary_table(summarise_caches(args.caches)))
    except (FileNotFoundError, ValueError) as err:
        return _fail(str(err))
    return 0


def _cmd_fl_export(args: argparse.Namespace) -> int:
    if args.job == "gan":
        from dose3d_fl.fl.gan_job import export_gan_job

        print(export_gan_job(args.out))
        return 0
    from dose3d_fl.fl.seg_job import export_seg_job

    print(export_seg_job(args.out))
    return 0


def _cmd_fl_resume(args: argparse.Namespace) -> int:
    from dose3d_fl.fl.resume import make_resume_job

    try:
        target = make_resume_job(args.job, args.out)
    except (OSError, ValueError) as err:
        return _fail(str(err))
    print(target)
    print(f"submit it to the server that ran the job, e.g. dose3d poc submit {target} --wait")
    return 0


def _cmd_fl_site_model(args: argparse.Namespace) -> int:
    from dose3d_fl.clinical.model_file import ModelFileError
    from dose3d_fl.fl.site_model import write_site_model
    from dose3d_fl.fl.site_trainer import site_state_folder

    try:
        folder = args.state or site_state_folder(args.site, args.workspace)
        out = write_site_model(args.global_model, folder, args.out, args.profile)
    except (ModelFileError, OSError, KeyError, ValueError) as err:
        return _fail(str(err).strip("'\""))
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
    print(
        f"{args.sites} sites x {rounds} rounds x {epochs} local epochs ({args.aggregation}) in "
        f"{time.perf_counter() - start:.0f} s wall (simulator start and cross-site evaluation included)"
    )
    print(f"summary: {Path(args.workspace) / 'summary.json'}")
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
    from dose3d_fl.fl.privacy_policy import DPConfig
    from dose3d_fl.fl.simulate import SimulationConfig, format_simulation_summary, simulate_seg

    try:
        job = seg_job_config(args)
    except ValueError as err:
        return _fail(str(err))
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
    print(
        f"{args.sites} sites x {job.num_rounds} rounds x {job.local_epochs} local epochs in "
        f"{time.perf_counter() - start:.0f} s wall (simulator start and cross-site evaluation included)"
    )
    print(f"summary: {Path(args.workspace) / 'summary.json'}")
    return 0


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from dose3d_fl.fl.transfer_log import verify_chain

    if not args.log.is_file():
        print(f"error: {args.log} does not exist (the server writes transfer_log.jsonl in its job workspace)")
        return 2
    check = verify_chain(args.log)
    if check.ok:
        print(f"{args.log}: chain intact ({check.lines} line(s))")
        return 0
    print(f"{args.log}: chain broken at line {check.first_bad_line} of {check.lines}: {check.reason}")
    return 1


def bench_config(args: argparse.Namespace) -> BenchConfig:
    """What ``dose3d bench`` runs: the default benchmark or ``--quick``, with the options applied."""
    import dataclasses

    from dose3d_fl.bench.runner import QUICK, BenchConfig

    config = QUICK if args.quick else BenchConfig()
    if args.name:
        config = dataclasses.replace(config, name=args.name)
    if args.nvflare_polling:
        config = dataclasses.replace(config, overhead_baseline_polling=True)
    return config


def _cmd_bench(args: argparse.Namespace) -> int:
    from dose3d_fl.bench.runner import run_benchmark

    config = bench_config(args)
    work = args.work or Path("runs") / f"bench-{config.name}"
    results = run_benchmark(config, args.out, work)
    print((args.out / f"{config.name}.md").read_text())
    print(f"results: {args.out / f'{config.name}.json'} ({results['seconds']:.0f} s); runs and logs: {work}")
    if results.get("failed_runs"):
        return _fail(f"{len(results['failed_runs'])} run(s) failed: {', '.join(results['failed_runs'])}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from dose3d_fl.seg.profiles import get_profile
    from dose3d_fl.seg.synthetic import SyntheticMix
    from dose3d_fl.seg.training_run import METRICS_NAME, MODEL_NAME, train_on_caches

    try:
        profile = get_profile(args.profile).replace(seed=args.seed)
        metrics = train_on_caches(
            args.cache,
            args.out,
            profile,
            args.epochs,
            num_threads=args.threads,
            hu_baseline=args.hu_baseline,
            synthetic=(
                SyntheticMix(args.synthetic, args.synthetic_ratio, only=args.synthetic_only, seed=args.seed)
                if args.synthetic
                else None
            ),
            on_validation=lambda entry: print(
                f"epoch {entry['epoch']}: loss {entry['loss']:.4f}, val Dice {entry['val_dice']:.4f} "
                f"({entry['train_seconds']:.0f} s training)",
                flush=True,
            ),
        )
    except (FileNotFoundError, ValueError) as err:
        return _fail(str(err))
    for site, dice in metrics["site_val_dice"].items():
        print(f"{site}: val Dice {dice:.4f} ({metrics['val_cases'][site]} case(s))")
    if "hu_threshold_baseline" in metrics:
        base = metrics["hu_threshold_baseline"]
        print(
            f"best single HU interval [{base['hu_min']:.0f}, {base['hu_max']:.0f}) HU: "
            f"val Dice {base['val_dice']:.4f}"
        )
    print(
        f"val Dice {metrics['val_dice']:.4f} on {sum(metrics['val_cases'].values())} case(s) after "
        f"{metrics['epochs']} epoch(s), {metrics['seconds']:.0f} s -> {args.out / MODEL_NAME}, "
        f"{args.out / METRICS_NAME}"
    )
    return 0


def _cmd_gan_train(args: argparse.Namespace) -> int:
    from dose3d_fl.gan.profiles import get_gan_profile
    from dose3d_fl.gan.training_run import GAN_METRICS_NAME, GAN_MODEL_NAME, train_gan_on_caches

    try:
        metrics = train_gan_on_caches(
            args.cache,
            args.out,
            get_gan_profile(args.profile).replace(seed=args.seed),
            args.epochs,
            num_threads=args.threads,
            on_epoch=lambda e: print(
                f"epoch {e['epoch']}: W {e['wasserstein']:.3f}, MMD {e['mmd']:.2f}, MS-SSIM {e['msssim']:.3f}, "
                f"diversity {e['diversity']:.3f}, label ok {e['label_ok']:.2f}",
                flush=True,
            ),
        )
    except (FileNotFoundError, ValueError) as err:
        return _fail(str(err))
    print(
        f"{metrics['steps']} steps, {metrics['seconds']:.0f} s -> {args.out / GAN_MODEL_NAME}, {args.out / GAN_METRICS_NAME}"
    )
    return 0


def _cmd_gan_sample(args: argparse.Namespace) -> int:
    from dose3d_fl.gan.sampling import sample_from_model

    if not args.cache and not args.skip_memorization_check:
        return _fail(
            "pass --cache CACHE (this site's cache: samples that copy a training crop are dropped before "
            "anything is written), or --skip-memorization-check"
        )
    try:
        report, source = sample_from_model(
            args.model, args.n, args.out, caches=args.cache or (), profile=args.profile, seed=args.seed
        )
    except (FileNotFoundError, ValueError) as err:
        return _fail(str(err))
    print(f"model {args.model}: {source}")
    check = (
        f"{report.dropped_memorized} dropped as copies of a training crop"
        if report.checked_memorization
        else "memorization check skipped"
    )
    print(f"wrote {len(report.pairs)} image/label pair(s) to {args.out} ({check}); mid-slices: {report.grid}")
    return 0


def _add_gan_parsers(sub: argparse._SubParsersAction) -> None:
    gan = sub.add_parser("gan", help="paired 3D GAN (CT crop + organ mask)").add_subparsers(
        dest="gan_command", required=True
    )
    train = gan.add_parser("train", help="train the GAN on one site cache (local) or several pooled")
    train.add_argument("--cache", type=Path, nargs="+", required=True, help="site cache folder(s)")
    train.add_argument("--epochs", type=int, default=20, help="epochs of the profile's steps (default 20)")
    train.add_argument("--profile", default="cpu-small", help="GAN profile: cpu-small (default), gpu")
    train.add_argument("--out", type=Path, default=Path("runs/gan"), help="output folder (default runs/gan)")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    train.set_defaults(func=_cmd_gan_train)
    sample = gan.add_parser("sample", help="write synthetic image/label NIfTI pairs and a PNG of mid-slices")
    sample.add_argument(
        "--model",
        type=Path,
        required=True,
        help="gan.pt of `dose3d gan train` or the job's FL_global_model.pt",
    )
    sample.add_argument("--n", type=int, required=True, help="pairs to draw")
    sample.add_argument("--out", type=Path, required=True, help="output folder (created)")
    sample.add_argument(
        "--cache", type=Path, nargs="+", default=None, help="this site's cache(s), for the memorization check"
    )
    sample.add_argument(
        "--skip-memorization-check", action="store_true", help="write samples without comparing them to data"
    )
    sample.add_argument("--profile", default=None, help="GAN profile of a model file that stores none")
    sample.add_argument("--seed", type=int, default=0, help="noise seed")
    sample.set_defaults(func=_cmd_gan_sample)


def _cmd_segment(args: argparse.Namespace) -> int:
    from dose3d_fl.clinical.ct_input import InputSeriesError
    from dose3d_fl.clinical.inference import DeviceUnavailableError
    from dose3d_fl.clinical.model_file import ModelFileError
    from dose3d_fl.clinical.segment import SegmentConfig, segment_ct
    from dose3d_fl.data.ct_series import CaseRejectedError

    config = SegmentConfig(
        model=args.model,
        dicom=args.dicom,
        out=args.out,
        roi_name=args.roi_name,
        profile=args.profile,
        series_uid=args.series,
        device=args.device,
        dicom_seg=args.dicom_seg,
    )
    try:
        result = segment_ct(config)
    except (ModelFileError, InputSeriesError, CaseRejectedError, DeviceUnavailableError) as err:
        return _fail(str(err))
    print(f"model {args.model}: {result.profile_source}")
    print(f"series {result.series_instance_uid}: {result.slices} slices")
    if result.other_files:
        print(
            f"note: {result.other_files} other file(s) under {args.dicom} are not slices of this series "
            "(other series, structure sets, non-DICOM or damaged files); check that none is a missing slice"
        )
    if result.voxels == 0:
        print(
            f"warning: no {args.roi_name} found; the RTSTRUCT holds the ROI without contours", file=sys.stderr
        )
    seconds = ", ".join(f"{stage} {value:.1f} s" for stage, value in result.seconds.items())
    print(f"{args.roi_name}: {result.volume_ml:.1f} mL on {result.contour_slices} slice(s) ({seconds})")
    for path in (result.rtstruct, result.mask, result.preview, result.segmentation):
        if path is not None:
            print(path)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from dose3d_fl.report.build import ReportConfig, build_report
    from dose3d_fl.report.locate import RunNotFoundError

    try:
        report = build_report(
            ReportConfig(run=args.run, out=args.out, compare=dict(args.compare), max_overlays=args.overlays)
        )
    except (RunNotFoundError, FileNotFoundError, ValueError) as err:
        return _fail(str(err))
    print(report)
    return 0


def _named_dir(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"--compare expects NAME=DIR, got {text!r}")
    return name, Path(folder)


def _poc_config(args: argparse.Namespace):
    from dose3d_fl.deploy.poc import PocConfig, site_names

    sites = site_names(args.sites) if getattr(args, "sites", None) else PocConfig().sites
    patients = tuple(args.patients) if getattr(args, "patients", None) else None
    return PocConfig(
        root=args.root,
        sites=sites,
        port=getattr(args, "port", 8002),
        patients=patients,
        seed=getattr(args, "seed", 0),
    )


def _cmd_poc_up(args: argparse.Namespace) -> int:
    from dose3d_fl.deploy.poc import PROJECT_ADMIN, PocError, poc_up

    config = _poc_config(args)
    try:
        kits = poc_up(config, on_progress=print)
    except (PocError, ValueError, FileNotFoundError) as err:
        return _fail(str(err))
    print(f"POC running: server localhost:{kits.fed_learn_port}, clients {', '.join(kits.clients)}")
    print(f"admin console: {kits.admins[PROJECT_ADMIN] / 'startup' / 'fl_admin.sh'} (see poc/README.md)")
    print(f"submit a job: dose3d poc submit seg_fedavg --wait --root {args.root}")
    print(f"stop it with: dose3d poc down --root {args.root}")
    return 0


def _cmd_poc_submit(args: argparse.Namespace) -> int:
    from nvflare.fuel.flare_api.api_spec import AuthorizationError, InvalidJobDefinition, NoConnection

    from dose3d_fl.deploy.poc import PocError, poc_submit, resolve_job

    try:
        job = resolve_job(args.job)
        outcome = poc_submit(
            _poc_config(args),
            job,
            wait=args.wait,
            timeout=args.timeout,
            on_status=lambda status, seconds: print(f"[{seconds:6.0f} s] {status}", flush=True),
            on_progress=lambda line: print(f"  server: {line}", flush=True),
            admin_name=args.admin,
        )
    except (PocError, TimeoutError, AuthorizationError, InvalidJobDefinition, NoConnection) as err:
        return _fail(str(err))
    print(f"job {outcome.job_id}: {outcome.status}")
    if outcome.result_dir is not None:
        print(f"result: {outcome.result_dir}")
    return 0 if outcome.completed or not args.wait else 1


def _cmd_poc_status(args: argparse.Namespace) -> int:
    from dose3d_fl.deploy.poc import poc_status

    status = poc_status(_poc_config(args))
    for name, (pid, alive) in status.processes.items():
        print(f"{name:<24} pid {pid:<8} {'running' if alive else 'stopped'}")
    if status.error:
        print(status.error)
        return 1
    print(f"connected clients: {', '.join(status.clients) or '(none)'}")
    for job in status.jobs:
        print(f"job {job['job_id']}  {job['name']}  {job['status']}")
    return 0


def _cmd_poc_down(args: argparse.Namespace) -> int:
    from dose3d_fl.deploy.poc import PocError, poc_down

    try:
        pids = poc_down(_poc_config(args))
    except PocError as err:
        return _fail(str(err))
    print(f"stopped {len(pids)} process(es): {pids}" if pids else "no POC process was running")
    return 0


def _cmd_provision(args: argparse.Namespace) -> int:
    from dose3d_fl.deploy.provision import ProvisionConfig, provision

    try:
        kits = provision(
            ProvisionConfig(
                project_file=args.project,
                workspace=args.workspace,
                server_host=args.server_host,
                fed_learn_port=args.port,
            )
        )
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        return _fail(str(err))
    print(f"server kit: {kits.server}")
    for name, kit in {**kits.clients, **kits.admins}.items():
        print(f"{name} kit: {kit}")
    print("give each participant its own kit only; sites continue with sites/DEPLOY.md")
    return 0


def _add_deploy_parsers(sub: argparse._SubParsersAction) -> None:
    poc = sub.add_parser(
        "poc", help="a federation on this host: NVFlare POC with real processes"
    ).add_subparsers(dest="poc_command", required=True)
    root_help = "POC folder (default runs/poc)"
    up = poc.add_parser("up", help="prepare the POC workspace and data, start server and clients")
    up.add_argument("--root", type=Path, default=Path("runs/poc"), help=root_help)
    up.add_argument("--sites", type=int, default=3, help="number of sites hospital-a, ... (default 3)")
    up.add_argument("--port", type=int, default=8002, help="server port on localhost (default 8002)")
    up.add_argument(
        "--patients", type=_patients, default=None, help="synthetic patients per site when data are missing"
    )
    up.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    up.set_defaults(func=_cmd_poc_up)
    submit = poc.add_parser("submit", help="submit a job folder through the FLARE API")
    submit.add_argument("job", help="job folder, or a job name under jobs/ (e.g. seg_fedavg)")
    submit.add_argument(
        "--wait", action="store_true", help="wait, download the result, exit 0 only if completed"
    )
    submit.add_argument("--timeout", type=float, default=0.0, help="seconds to wait (default 0: no limit)")
    submit.add_argument(
        "--admin", default="admin@dose3d.org", help="submit as this POC admin (default: the project admin)"
    )
    submit.add_argument("--root", type=Path, default=Path("runs/poc"), help=root_help)
    submit.set_defaults(func=_cmd_poc_submit)
    status = poc.add_parser("status", help="processes, connected clients and jobs")
    status.add_argument("--root", type=Path, default=Path("runs/poc"), help=root_help)
    status.set_defaults(func=_cmd_poc_status)
    down = poc.add_parser("down", help="stop every POC process (jobs included) by PID")
    down.add_argument("--root", type=Path, default=Path("runs/poc"), help=root_help)
    down.set_defaults(func=_cmd_poc_down)

    prov = sub.add_parser(
        "provision", help="startup kits for a real federation (nvflare provision + site policy)"
    )
    prov.add_argument("-p", "--project", type=Path, default=Path("server/project.yml"), help="project file")
    prov.add_argument(
        "-w", "--workspace", type=Path, default=Path("runs/provision"), help="output (default runs/provision)"
    )
    prov.add_argument("--server-host", default=None, help="host clients connect to, if not the server's name")
    prov.add_argument("--port", type=int, default=None, help="server port (default: the project's)")
    prov.set_defaults(func=_cmd_provision)


def _fail(message: str) -> int:
    print(f"dose3d: error: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dose3d`` command."""
    parser = argparse.ArgumentParser(
        prog="dose3d", description="Federated 3D CT segmentation for radiotherapy sites"
    )
    parser.add_argument("--version", action="version", version=f"dose3d-fl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write synthetic multi-site CT + RTSTRUCT DICOM")
    synth.add_argument(
        "--out", type=Path, required=True, help="output folder; site-1, site-2, ... are created in it"
    )
    synth.add_argument(
        "--sites", type=int, default=None, help="number of sites (default 3, or as many as --patients)"
    )
    synth.add_argument(
        "--patients", type=_patients, default=None, help="patients per site, e.g. 12,8,5 (default)"
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed (output is deterministic for a seed)")
    synth.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    synth.set_defaults(func=_cmd_synth)

    ingest = sub.add_parser(
        "ingest", help="validate a site's DICOM export and convert it to NIfTI training cases"
    )
    ingest.add_argument("--input", type=Path, required=True, help="the site's DICOM folder (any layout)")
    ingest.add_argument(
        "--out", type=Path, required=True, help="cache folder for NIfTI files and manifest.json"
    )
    ingest.add_argument(
        "--roi", default="SPLEEN", help="RTSTRUCT ROI used as label (default SPLEEN, any case)"
    )
    ingest.set_defaults(func=_cmd_ingest)

    summary = sub.add_parser("summary", help="print the data summary of one or more site caches")
    summary.add_argument("caches", type=Path, nargs="+", help="cache folders written by `dose3d ingest`")
    summary.set_defaults(func=_cmd_summary)

    train = sub.add_parser(
        "train",
        help="train a segmentation model on one site cache (local) or several pooled (centralised)",
    )
    train.add_argument(
        "--cache", type=Path, nargs="+", required=True, help="site cache folder(s) written by `dose3d ingest`"
    )
    train.add_argument("--epochs", type=int, default=40, help="passes over the training cases (default 40)")
    train.add_argument(
        "--profile", default="cpu-small", help="segmentation profile: cpu-small (default), spleen"
    )
    train.add_argument(
        "--out", type=Path, default=Path("runs/train"), help="output folder (default runs/train)"
    )
    train.add_argument(
        "--seed", type=int, default=0, help="random seed (also draws a cache's split.json on first use)"
    )
    train.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: robust on shared cores)"
    )
    train.add_argument(
        "--hu-baseline", action="store_true", help="also report the best single HU interval's Dice"
    )
    train.add_argument(
        "--synthetic", type=Path, default=None, help="folder of synthetic pairs (dose3d gan sample) to add"
    )
    train.add_argument(
        "--synthetic-ratio",
        type=float,
        default=1.0,
        help="synthetic cases per real training case (default 1)",
    )
    train.add_argument(
        "--synthetic-only", action="store_true", help="train on the synthetic pairs alone (test on real)"
    )
    train.set_defaults(func=_cmd_train)

    fl = sub.add_parser("fl", help="federated learning with NVIDIA FLARE").add_subparsers(
        dest="fl_command", required=True
    )
    export = fl.add_parser("export", help="export a job folder (no paths, no secrets)")
    export.add_argument("--out", type=Path, default=Path("jobs"), help="parent folder (default jobs/)")
    export.add_argument(
        "--job", choices=("seg", "gan"), default="seg", help="seg_fedavg (default) or gan_fedavg"
    )
    export.set_defaults(func=_cmd_fl_export)
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
    variants = simulate.add_argument_group("seg job variants (README, Performance)")
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
        "differential privacy at every simulated site (fl/dp.py; a real site sets it in local/privacy.json)"
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

    bench = sub.add_parser(
        "bench",
        help="benchmark: central vs local-only vs FedAvg/FedProx, overhead, data pipeline, weight exchange",
    )
    bench.add_argument(
        "--quick", action="store_true", help="2 rounds x 1 epoch, 3-site overhead only (a few minutes)"
    )
    bench.add_argument("--name", default=None, help="results name (default: default, or quick)")
    bench.add_argument(
        "--nvflare-polling",
        action="store_true",
        help="also run the first overhead setting with NVFlare's default polling intervals (about 80 s)",
    )
    bench.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        help="results folder (default benchmarks/results)",
    )
    bench.add_argument("--work", type=Path, default=None, help="runs and logs (default runs/bench-<name>)")
    bench.set_defaults(func=_cmd_bench)
    audit = sub.add_parser("audit", help="check the server's transfer log").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser(
        "verify", help="check the hash chain of a transfer_log.jsonl; name the first bad line"
    )
    verify.add_argument("log", type=Path)
    verify.set_defaults(func=_cmd_audit_verify)

    segment = sub.add_parser(
        "segment", help="segment a new patient's CT series into an RTSTRUCT (+ mask NIfTI and preview PNG)"
    )
    segment.add_argument(
        "--model", type=Path, required=True, help="dose3d train's model.pt or NVFlare's FL_global_model.pt"
    )
    segment.add_argument("--dicom", type=Path, required=True, help="folder holding the CT series")
    segment.add_argument("--out", type=Path, required=True, help="output folder (created)")
    segment.add_argument("--roi-name", default="SPLEEN", help="ROI name in the RTSTRUCT (default SPLEEN)")
    segment.add_argument(
        "--profile", default=None, help="profile of a model file that stores none (default cpu-small)"
    )
    segment.add_argument("--series", default=None, help="SeriesInstanceUID when the folder holds several")
    segment.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    segment.add_argument(
        "--dicom-seg", action="store_true", help="also write the mask as a DICOM Segmentation (seg.dcm)"
    )
    segment.set_defaults(func=_cmd_segment)

    report = sub.add_parser("report", help="write report.html + PNGs for a finished federated run")
    report.add_argument("run", type=Path, help="simulator workspace or downloaded job result folder")
    report.add_argument("--out", type=Path, default=None, help="output folder (default RUN/report)")
    report.add_argument(
        "--compare",
        type=_named_dir,
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a `dose3d train --out DIR` run to compare with (repeatable)",
    )
    report.add_argument(
        "--overlays", type=int, default=3, help="sample cases drawn with the global model (default 3)"
    )
    report.set_defaults(func=_cmd_report)
    _add_gan_parsers(sub)
    _add_deploy_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dose3d`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command == "synth" and args.sites is not None and args.sites < 1:
        return _fail("--sites must be at least 1")
    if args.command == "train" and (args.epochs < 0 or args.threads < 1):
        return _fail("--epochs must be >= 0 and --threads >= 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
