"""Session fixtures shared by several test packages."""

from __future__ import annotations

import pytest
from filelock import FileLock

from tests.clinical.trained_site import TrainedSite, build_trained_site, shared_trained_site


@pytest.fixture(scope="session")
def trained_site(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> TrainedSite:
    """A cpu-small model trained on a 12-patient synthetic site, with a held-out patient (about 80 s).

    Under pytest-xdist the first worker that needs it builds it and the others wait for it and share it.
    """
    if worker_id == "master":
        return build_trained_site(tmp_path_factory.mktemp("trained_site"))
    root = tmp_path_factory.getbasetemp().parent / "trained_site"
    with FileLock(f"{root}.lock"):
        return shared_trained_site(root)
