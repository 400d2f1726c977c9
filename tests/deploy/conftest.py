"""Fixtures for tests that run real NVFlare processes on loopback: tiny site data and a tiny job."""

from __future__ import annotations

from pathlib import Path

import pytest

from dose3d_fl.data.ingest import ingest_site
from dose3d_fl.fl.seg_job import SegJobConfig, export_seg_job
from tests.data.dicom_builders import SMALL, make_study

REPO = Path(__file__).resolve().parents[2]


def make_tiny_cache(dicom: Path, cache: Path, seed: int, cases: int = 3) -> Path:
    """A site cache of ``cases`` coarse 12-slice studies (enough for a train/val split)."""
    for case in range(cases):
        make_study(SMALL, seed=seed * 100 + case).write(dicom / f"case{case}")
    ingest_site(dicom, cache)
    return cache


@pytest.fixture(scope="session")
def tiny_seg_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """seg_fedavg exported with 1 round, 1 local epoch, 2 sites and no TensorBoard."""
    return export_seg_job(
        tmp_path_factory.mktemp("jobs"),
        SegJobConfig(num_rounds=1, min_clients=2, local_epochs=1, tensorboard=False),
    )
