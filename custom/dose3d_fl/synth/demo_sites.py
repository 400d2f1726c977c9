"""Demo sites: synthesise a federation's DICOM and ingest it into site caches, once.

The simulator (``dose3d fl simulate``), the POC (``dose3d poc up``) and the benchmark all start from the same
synthetic sites; this is the one place that makes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from dose3d_fl.data.ingest import ingest_site
from dose3d_fl.data.manifest import MANIFEST_NAME
from dose3d_fl.synth.hospital import patients_per_site, synthesize_federation

__all__ = ["demo_site_names", "prepare_caches", "prepare_site_data"]

logger = logging.getLogger(__name__)


def demo_site_names(sites: int) -> list[str]:
    """``site-1 .. site-N``, the names ``dose3d synth`` gives its site folders."""
    return [f"site-{i}" for i in range(1, sites + 1)]


def prepare_caches(
    caches: Mapping[str, Path],
    dicom_dir: Path,
    seed: int,
    patients: Sequence[int] | None = None,
    on_progress: Callable[[str], None] = logger.info,
) -> dict[str, Path]:
    """Synthesise and ingest the sites whose cache has no manifest yet; return site -> cache folder.

    Args:
        caches: each site's cache folder.
        dicom_dir: where the synthetic DICOM of the missing sites is written (``site-1 ..``, in order).
        seed: synthetic data seed.
        patients: patients per missing site (one count for all, or one per site); default the demo's, cycled.

    Raises:
        ValueError: several patient counts, but not one per site that has no data.
    """
    missing = [site for site, cache in caches.items() if not (Path(cache) / MANIFEST_NAME).is_file()]
    if missing:
        try:
            counts = patients_per_site(len(missing), patients)
        except ValueError:
            raise ValueError(
                f"{len(patients or ())} patient counts given for {len(missing)} sites without data"
            ) from None
        on_progress(f"synthesising {counts} patients for {missing} into {dicom_dir}")
        folders = synthesize_federation(dicom_dir, counts, seed=seed, show_progress=True)
        for site, folder in zip(missing, folders, strict=True):
            on_progress(f"ingesting {folder} -> {caches[site]}")
            ingest_site(folder, caches[site], show_progress=True)
    return {site: Path(cache) for site, cache in caches.items()}


def prepare_site_data(
    workspace: Path, sites: int, seed: int, patients: Sequence[int] | None = None
) -> list[Path]:
    """The demo layout: ``workspace/data/dicom/site-i`` synthesised and ingested into ``workspace/data/cache``.

    Sites whose cache exists are kept. Returns the cache folders, ``site-1`` first.
    """
    cache = Path(workspace) / "data" / "cache"
    caches = prepare_caches(
        {name: cache / name for name in demo_site_names(sites)},
        Path(workspace) / "data" / "dicom",
        seed,
        patients,
    )
    return list(caches.values())
