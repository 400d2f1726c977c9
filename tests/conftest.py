"""Session fixtures shared by several test packages."""

from __future__ import annotations

import pytest

from tests.clinical.trained_site import TrainedSite, build_trained_site


@pytest.fixture(scope="session")
def trained_site(tmp_path_factory: pytest.TempPathFactory) -> TrainedSite:
    """A cpu-small model trained on a 12-patient synthetic site, with a held-out patient (about 80 s)."""
    return build_trained_site(tmp_path_factory.mktemp("trained_site"))
