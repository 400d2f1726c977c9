"""The ``dose3d`` command: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from dose3d_fl import __version__


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
    from dose3d_fl.data.synth import DEFAULT_PATIENTS, synthesize_federation

    sites = args.sites or (len(args.patients) if args.patients else len(DEFAULT_PATIENTS))
    if args.patients is None:
        patients = [DEFAULT_PATIENTS[i % len(DEFAULT_PATIENTS)] for i in range(sites)]
    elif len(args.patients) == 1:
        patients = args.patients * sites
    else:
        patients = args.patients
    if len(patients) != sites:
        return _fail(f"--patients lists {len(patients)} site(s) but --sites is {sites}")
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
    from dose3d_fl.fl.seg_job import export_seg_job

    print(export_seg_job(args.out))
    return 0


def _cmd_fl_simulate(args: argparse.Namespace) -> int:
    from dose3d_fl.fl.seg_job import SegJobConfig
    from dose3d_fl.fl.simulate import SimulationConfig, format_simulation_summary, simulate_seg

    job = SegJobConfig(num_rounds=args.rounds, local_epochs=args.local_epochs, profile=args.profile)
    summary = simulate_seg(
        SimulationConfig(workspace=args.workspace, sites=args.sites, job=job, seed=args.seed)
    )
    print(format_simulation_summary(summary))
    print(f"summary: {Path(args.workspace) / 'summary.json'}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from dose3d_fl.seg.profiles import get_profile
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
    train.set_defaults(func=_cmd_train)

    fl = sub.add_parser("fl", help="federated learning with NVIDIA FLARE").add_subparsers(
        dest="fl_command", required=True
    )
    export = fl.add_parser("export", help="export the seg_fedavg job folder (no paths, no secrets)")
    export.add_argument("--out", type=Path, default=Path("jobs"), help="parent folder (default jobs/)")
    export.set_defaults(func=_cmd_fl_export)
    simulate = fl.add_parser("simulate", help="run seg_fedavg in the NVFlare simulator on synthetic sites")
    simulate.add_argument("--sites", type=int, default=3)
    simulate.add_argument("--rounds", type=int, default=5)
    simulate.add_argument("--local-epochs", type=int, default=1)
    simulate.add_argument("--workspace", type=Path, default=Path("runs/simulate"))
    simulate.add_argument("--profile", default="cpu-small")
    simulate.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    simulate.set_defaults(func=_cmd_fl_simulate)
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
