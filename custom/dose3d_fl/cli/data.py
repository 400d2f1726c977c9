"""The data commands of ``dose3d``: ``synth``, ``ingest`` and ``summary``."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dose3d_fl.cli.common import fail, organ_list, patient_counts

if TYPE_CHECKING:
    from dose3d_fl.data.tg263 import SiteRoiMapping


def _cmd_synth(args: argparse.Namespace) -> int:
    if args.sites is not None and args.sites < 1:
        return fail("--sites must be at least 1")
    if args.site_local is not None and not args.organs_at_risk:
        return fail("--site-local writes the sites' roi_names.json for --organs-at-risk; add it")
    from dose3d_fl.synth.hospital import DEFAULT_PATIENTS, patients_per_site, synthesize_federation

    sites = args.sites or (len(args.patients) if args.patients else len(DEFAULT_PATIENTS))
    try:
        patients = patients_per_site(sites, args.patients)
    except ValueError:
        return fail(f"--patients lists {len(args.patients)} site(s) but --sites is {sites}")
    start = time.perf_counter()
    folders = synthesize_federation(
        args.out,
        patients,
        seed=args.seed,
        workers=args.workers,
        show_progress=True,
        organs_at_risk=args.organs_at_risk,
    )
    elapsed = time.perf_counter() - start
    for site, count in zip(folders, patients, strict=True):
        print(f"{site}: {count} patients")
    if args.site_local is not None:
        from dose3d_fl.synth.demo_sites import write_site_roi_names

        for index, site in enumerate(folders):
            written = write_site_roi_names(args.site_local / Path(site).name, index)
            if written is not None:
                print(f"{Path(site).name}: its physicist's ROI name mapping -> {written}")
    print(f"synthesised {sum(patients)} patients at {sites} sites in {elapsed:.1f} s")
    return 0


def site_roi_names(given: Path | None) -> SiteRoiMapping:
    """The site's ``roi_names.json``: ``given``, else the one next to the site's ``dose3d_site.json``.

    Looked for in the folder of ``$DOSE3D_SITE_CONFIG`` and in ``./local`` (the site workspace's local folder);
    none found: an empty mapping (the alias table alone).

    Raises:
        RoiMappingError: the file is not a valid mapping (one line naming the file and the entry).
        FileNotFoundError: ``given`` does not exist.
    """
    from dose3d_fl.data.tg263 import SiteRoiMapping, find_site_mapping, load_site_mapping
    from dose3d_fl.fl.site.config import SITE_CONFIG_ENV

    if given is not None:
        if not given.is_file():
            raise FileNotFoundError(f"--roi-names {given}: no such file")
        return load_site_mapping(given)
    folders = [Path(os.environ[SITE_CONFIG_ENV]).parent] if os.environ.get(SITE_CONFIG_ENV) else []
    for folder in [*folders, Path("local")]:
        mapping = find_site_mapping(folder)
        if mapping.entries:
            return mapping
    return SiteRoiMapping()


def _cmd_ingest(args: argparse.Namespace) -> int:
    from dose3d_fl.data.ingest import IngestConfig, IngestError, ingest_site
    from dose3d_fl.data.summary import SiteDataSummary, format_summary_table

    if args.roi is not None and args.roi_names is not None:
        return fail("--roi names the label's ROI exactly, so --roi-names does not apply; give one of them")
    start = time.perf_counter()
    try:
        config = IngestConfig(
            organs=tuple(args.organs) if args.organs else None,
            roi=args.roi,
            roi_names=None if args.roi is not None else site_roi_names(args.roi_names),
            allow_automatic_labels=args.allow_automatic_labels,
        )
        report = ingest_site(args.input, args.out, config, show_progress=True)
    except (IngestError, ValueError, FileNotFoundError) as err:
        return fail(str(err))
    elapsed = time.perf_counter() - start
    manifest = report.manifest
    for rejection in manifest.rejected:
        print(f"rejected {rejection.source}: {rejection.reason}")
    for case in manifest.cases:
        for other in case.set_aside:
            print(f"set aside {other.source}: {other.reason}")
        for flag in case.flags:
            print(f"flagged {case.id} ({case.structure_set}): {flag.reason}")
    for name in manifest.unmapped_rois:
        print(f"{name.message} [{name.structure_sets} structure set(s)]")
    if manifest.roi_names_file:
        print(f"ROI names mapped with {manifest.roi_names_file} and the TG-263 alias table")
    print(
        f"{args.input}: {len(manifest.cases)} case(s) ({len(report.converted)} converted, {len(report.reused)} "
        f"unchanged, {len(manifest.flagged_cases)} flagged), {len(manifest.rejected)} rejected, "
        f"{manifest.skipped_non_dicom} non-DICOM file(s) skipped in {elapsed:.1f} s "
        f"-> {Path(args.out) / 'manifest.json'}"
    )
    print(format_summary_table([SiteDataSummary.from_manifest(Path(args.out).name, manifest)]))
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from dose3d_fl.data.summary import format_summary_table, summarise_caches

    try:
        print(format_summary_table(summarise_caches(args.caches)))
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``synth``, ``ingest`` and ``summary`` to the ``dose3d`` sub-commands."""
    synth = sub.add_parser("synth", help="write synthetic multi-site CT + RTSTRUCT DICOM")
    synth.add_argument(
        "--out", type=Path, required=True, help="output folder; site-1, site-2, ... are created in it"
    )
    synth.add_argument(
        "--sites", type=int, default=None, help="number of sites (default 3, or as many as --patients)"
    )
    synth.add_argument(
        "--patients", type=patient_counts, default=None, help="patients per site, e.g. 12,8,5 (default)"
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed (output is deterministic for a seed)")
    synth.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    synth.add_argument(
        "--organs-at-risk",
        action="store_true",
        help="delineate spleen, liver, kidneys, stomach, pancreas and aorta, each site with its own ROI names "
        "(TG-263, upper-case local, Polish) and some organs not drawn for some patients; default BODY and "
        "SPLEEN at every site",
    )
    synth.add_argument(
        "--site-local",
        type=Path,
        default=None,
        help="with --organs-at-risk: write each site's roi_names.json, where the TG-263 alias table does not "
        "map all its names (site 2's PANC), to DIR/site-i/ (the site's local folder, for dose3d ingest "
        "--roi-names)",
    )
    synth.set_defaults(func=_cmd_synth)

    ingest = sub.add_parser(
        "ingest", help="validate a site's DICOM export and convert it to NIfTI training cases"
    )
    ingest.add_argument("--input", type=Path, required=True, help="the site's DICOM folder (any layout)")
    ingest.add_argument(
        "--out", type=Path, required=True, help="cache folder for NIfTI files and manifest.json"
    )
    ingest.add_argument(
        "--organs",
        type=organ_list,
        default=None,
        help="the task's organs, TG-263 names in label order, e.g. Spleen,Liver,Kidney_L (default Spleen); "
        "each structure set's ROI names are mapped to them by the site's roi_names.json and the TG-263 alias "
        "table, never guessed (docs/organs.md)",
    )
    ingest.add_argument(
        "--roi-names",
        type=Path,
        default=None,
        help="the site's local ROI name -> TG-263 mapping (default: roi_names.json next to the site's "
        "dose3d_site.json: the folder of $DOSE3D_SITE_CONFIG, or ./local)",
    )
    ingest.add_argument(
        "--roi",
        default=None,
        help="a one-organ task whose ROI is named exactly (any case), instead of mapped: e.g. --roi SPLEEN",
    )
    ingest.add_argument(
        "--allow-automatic-labels",
        action="store_true",
        help="let automatic contours (e.g. dose3d segment's RTSTRUCT) label a series that has no person's "
        "delineation (default: never train on a model's output)",
    )
    ingest.set_defaults(func=_cmd_ingest)

    summary = sub.add_parser("summary", help="print the data summary of one or more site caches")
    summary.add_argument("caches", type=Path, nargs="+", help="cache folders written by `dose3d ingest`")
    summary.set_defaults(func=_cmd_summary)
