"""The in-process Client API's hand-over waits are shortened on a real NVFlare API object and backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from nvflare.app_common.executors.client_api import in_process_backend
from nvflare.client.in_process.api import InProcessClientAPI

from dose3d_fl.fl.site.polling import (
    NVFLARE_RESULT_POLL_INTERVAL,
    RESULT_POLL_INTERVAL,
    shorten_client_polls,
)


@pytest.fixture
def backend_interval() -> Iterator[None]:
    """Restore the backend module's constant: it is process-wide."""
    before = in_process_backend._RESULT_POLL_INTERVAL
    yield
    in_process_backend._RESULT_POLL_INTERVAL = before


def test_nvflare_still_has_both_waits_at_half_a_second() -> None:
    """Fails on an NVFlare upgrade that renames or changes either wait: revisit client_polling then."""
    api = InProcessClientAPI(task_metadata={}, result_check_interval=NVFLARE_RESULT_POLL_INTERVAL)
    assert api.result_check_interval == NVFLARE_RESULT_POLL_INTERVAL
    assert in_process_backend._RESULT_POLL_INTERVAL == NVFLARE_RESULT_POLL_INTERVAL


def test_both_waits_are_shortened(backend_interval: None) -> None:
    api = InProcessClientAPI(task_metadata={}, result_check_interval=NVFLARE_RESULT_POLL_INTERVAL)
    assert shorten_client_polls(api)
    assert api.result_check_interval == RESULT_POLL_INTERVAL
    assert in_process_backend._RESULT_POLL_INTERVAL == RESULT_POLL_INTERVAL


def test_another_client_api_engine_is_left_alone(backend_interval: None) -> None:
    assert not shorten_client_polls(object())
    assert in_process_backend._RESULT_POLL_INTERVAL == NVFLARE_RESULT_POLL_INTERVAL


def test_a_non_positive_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        shorten_client_polls(object(), 0)
