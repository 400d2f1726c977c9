"""Two small synthetic sites with organs at risk, ingested for a three-organ task, for the multi-organ tests.

Real synthetic DICOM (``dose3d synth --organs-at-risk``) through the real ingestion: site 1 names its ROIs
by TG-263, site 2 in an upper-case local style whose ``PANC`` only its ``roi_names.json`` maps; with seed 0
site 2's third patient has neither liver nor pancreas drawn (``synth.contouring.contoured_organs``).
"""

from __future__ import annotations

from pathlib import Path

from dose3d_fl.synth.demo_sites import prepare_site_data

ORGANS = ("Spleen", "Liver", "Pancreas")
PATIENTS = (3, 3)


def organ_sites(workspace: Path, organs: tuple[str, ...] = ORGANS) -> list[Path]:
    """``workspace/data/cache/site-1`` and ``site-2`` (3 patients each, seed 0), ingested for ``organs``."""
    return prepare_site_data(workspace, len(PATIENTS), 0, list(PATIENTS), organs=organs)
