"""Session fixtures shared by several test packages."""

from __future__ import annotations

import pytest
from filelock import FileLock

from tests.clinical.trained_site import TrainedSite, build_trained_site, shared_trained_site

# The longest test files, longest first (pytest --durations on 2 cores: module fixtures and calls together,
# from about 350 s down to about 35 s). make test hands whole files to its two workers in collection order
# (``--dist loadfile --no-loadscope-reorder``), so these start first and the many short files fill in at the
# end, instead of a long file starting last while the other worker has nothing left (longest processing time
# first). Every other file keeps its place after them.
LONGEST_FIRST = (
    "tests/bench/test_bench_quick.py",
    "tests/fl/server/test_robust_simulation.py",
    "tests/fl/test_gan_simulate.py",
    "tests/bench/test_gpu_check.py",
    "tests/fl/test_simulate.py",
    "tests/clinical/test_segment.py",
    "tests/fl/server/test_resilient.py",
    "tests/fl/policy/test_dp_simulation.py",
    "tests/fl/server/test_long_round.py",
    "tests/fl/test_organs_simulation.py",
    "tests/fl/policy/test_site_policy_simulation.py",
    "tests/cli/test_fl.py",
    "tests/bench/test_bench_failed_run.py",
    "tests/gan/test_gan_augment.py",
    "tests/fl/server/test_persistor.py",
    # make test's second run, the real server and client processes (-m deploy)
    "tests/deploy/test_faults.py",
    "tests/deploy/test_resume_fault.py",
    "tests/deploy/test_provisioned.py",
    "tests/deploy/test_poc.py",
    "tests/deploy/test_submit_wait.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the files of ``LONGEST_FIRST`` first, in its order; a stable sort keeps every other order."""
    rank = {path: index for index, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


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
