"""Demo sites: synthesise a federation's DICOM and ingest it into site caches, once.

The simulator (``dose3d fl simulate``), the POC (``dose3d poc up``) and the benchmark all start from the same
synthetic sites; this is the one place that makes them. The sites delineate organs at risk, each its own way
(``synth.contouring``: TG-263 names, upper-case local names, Polish names; some organs not drawn for some
patients), and each is ingested for the task's organs (TG-263 names; default the spleen alone). A site whose
names the TG-263 alias table does not all map (site 2's ``PANC``) gets the ``roi_names.json`` its physicist
would write, in its local folder (``data/local/site-i/``), and ingestion reads it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from dose3d_fl.data.ingest import IngestConfig, ingest_site
from dose3d_fl.data.manifest import MANIFEST_NAME, Manifest
from dose3d_fl.data.tg263 import ROI_NAMES_FILE, find_site_mapping, standard_name
from dose3d_fl.synth.contouring import ORGANS_AT_RISK, convention_for_site
from dose3d_fl.synth.hospital import patients_per_site, synthesize_federation

__all__ = [
    "DEMO_ORGANS",
    "demo_site_names",
    "prepare_caches",
    "prepare_site_data",
    "write_site_roi_names",
]

logger = logging.getLogger(__name__)

# The organs of `make demo`'s task: every organ at risk the synthetic sites delineate.
DEMO_ORGANS = tuple(spec.tg263 for spec in ORGANS_AT_RISK)
DEFAULT_ORGANS = ("Spleen",)


def demo_site_names(sites: int) -> list[str]:
    """``site-1 .. site-N``, the names ``dose3d synth`` gives its site folders."""
    return [f"site-{i}" for i in range(1, sites + 1)]


def write_site_roi_names(local_dir: Path, index: int) -> Path | None:
    """Write synthetic site ``index``'s (0-based) ``roi_names.json`` into ``local_dir`` where it needs one.

    A site needs the file when the TG-263 alias table does not map all its names to what they mean (site 2:
    ``PANC``). The file is the whole table its physicist would write (``SiteConvention.roi_names_json``).

    Returns:
        The file written, or None when the site's names need none.
    """
    mapping = convention_for_site(index).roi_names_json()
    if all(standard_name(local) == tg263 for local, tg263 in mapping.items()):
        return None
    path = Path(local_dir) / ROI_NAMES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mapping, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _cache_organs(cache: Path) -> list[str] | None:
    try:
        return Manifest.load(cache).organs
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def prepare_caches(
    caches: Mapping[str, Path],
    dicom_dir: Path,
    seed: int,
    patients: Sequence[int] | None = None,
    on_progress: Callable[[str], None] = logger.info,
    organs: Sequence[str] | None = None,
    local_dir: Path | None = None,
) -> dict[str, Path]:
    """Synthesise and ingest the sites whose cache has no manifest yet; return site -> cache folder.

    A site whose cache lacks some of the task's organs is ingested again for the task from ``dicom_dir/<site>``
    when that folder exists (else its cache is used as it is: an organ it lacks is unlabelled there). A cache
    holding more organs than the task is used as it is: the task reads its own organs from it, the others are
    background (``dose3d_fl.data.cases``).

    Args:
        caches: each site's cache folder.
        dicom_dir: where the synthetic DICOM of the missing sites is written (``site-1 ..``, in order).
        seed: synthetic data seed.
        patients: patients per missing site (one count for all, or one per site); default the demo's, cycled.
        on_progress: called with one line per step.
        organs: the task's organs (TG-263 names); default the spleen alone.
        local_dir: the sites' local folders (``local_dir/<site>/roi_names.json``); default ``dicom_dir``'s
            sibling ``local``.

    Raises:
        ValueError: several patient counts, but not one per site that has no data.
    """
    organs = tuple(organs or DEFAULT_ORGANS)
    local_dir = Path(local_dir) if local_dir is not None else Path(dicom_dir).parent / "local"
    missing = [site for site, cache in caches.items() if not (Path(cache) / MANIFEST_NAME).is_file()]
    if missing:
        try:
            counts = patients_per_site(len(missing), patients)
        except ValueError:
            raise ValueError(
                f"{len(patients or ())} patient counts given for {len(missing)} sites without data"
            ) from None
        on_progress(f"synthesising {counts} patients for {missing} into {dicom_dir}")
        folders = synthesize_federation(dicom_dir, counts, seed=seed, show_progress=True, organs_at_risk=True)
        for index, (site, folder) in enumerate(zip(missing, folders, strict=True)):
            write_site_roi_names(local_dir / site, index)
            _ingest(folder, caches[site], organs, local_dir / site, on_progress)
    for site, cache in caches.items():
        have = _cache_organs(Path(cache))
        if site not in missing and have is not None and not set(organs) <= set(have):
            folder = Path(dicom_dir) / site
            if folder.is_dir():
                _ingest(folder, Path(cache), organs, local_dir / site, on_progress)
            else:
                logger.warning(
                    "%s: cache holds %s, the task %s; no DICOM at %s to ingest again",
                    site,
                    have,
                    organs,
                    folder,
                )
    return {site: Path(cache) for site, cache in caches.items()}


def _ingest(
    folder: Path, cache: Path, organs: tuple[str, ...], local: Path, on_progress: Callable[[str], None]
) -> None:
    mapping = find_site_mapping(local)
    names = f" with {mapping.source}" if mapping.entries else ""
    on_progress(f"ingesting {folder} -> {cache} for {', '.join(organs)}{names}")
    ingest_site(folder, cache, IngestConfig(organs=organs, roi_names=mapping), show_progress=True)


def prepare_site_data(
    workspace: Path,
    sites: int,
    seed: int,
    patients: Sequence[int] | None = None,
    organs: Sequence[str] | None = None,
) -> list[Path]:
    """The demo layout: ``workspace/data/dicom/site-i`` synthesised and ingested into ``workspace/data/cache``
    for the task's ``organs`` (default the spleen alone), with ``workspace/data/local/site-i`` the sites' local
    folders (``roi_names.json``).

    Sites whose cache exists are kept (ingested again if it lacks some of the organs). Returns the cache folders,
    ``site-1`` first.
    """
    cache = Path(workspace) / "data" / "cache"
    caches = prepare_caches(
        {name: cache / name for name in demo_site_names(sites)},
        Path(workspace) / "data" / "dicom",
        seed,
        patients,
        organs=organs,
        local_dir=Path(workspace) / "data" / "local",
    )
    return list(caches.values())
