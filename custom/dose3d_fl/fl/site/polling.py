"""Shorter hand-over waits inside NVFlare's in-process Client API (about 0.5 s of every round).

NVFlare 2.9 runs a site's training script on a thread of the client job process. Two loops hand the work
across by sleeping a fixed 0.5 s between checks:

* the script's ``flare.receive()`` (and ``flare.is_running()``) waiting for the next task, and
* the executor waiting for the script's result after ``flare.send()``.

Each costs on average 0.25 s per round, at every site: together about 0.5 s of the 1.3 s fixed cost per
round the benchmark measured (``benchmarks/``, docs/performance.md). NVFlare 2.9 fixed both intervals: the
first is an attribute of the API object (``InProcessClientAPI.result_check_interval``, a constructor
argument the executor sets to 0.5), the second a module constant of the in-process backend whose comment
says the legacy executor's knob (``result_pull_interval``) was dropped from the public surface on purpose.
Checking a flag every 50 ms costs nothing measurable, so ``shorten_client_polls`` sets both. It changes
only the client job process it runs in; where NVFlare no longer has either name it changes nothing and
logs one warning (``tests/fl/test_client_polling.py`` fails on such an NVFlare upgrade).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

RESULT_POLL_INTERVAL = 0.05
# What NVFlare 2.9 uses for both waits.
NVFLARE_RESULT_POLL_INTERVAL = 0.5
_BACKEND_CONSTANT = "_RESULT_POLL_INTERVAL"


def shorten_client_polls(api: object, interval: float = RESULT_POLL_INTERVAL) -> bool:
    """Make the in-process Client API's two hand-over waits check every ``interval`` seconds.

    Args:
        api: the Client API engine, ``flare.init().api``. Other engines (an external-process script) are
            left alone: their waits are elsewhere.
        interval: seconds between checks (NVFlare 2.9: 0.5).

    Returns:
        Whether both waits were shortened.

    Raises:
        ValueError: ``interval`` is not positive.
    """
    if interval <= 0:
        raise ValueError(f"the result poll interval must be > 0 s, got {interval}")
    from nvflare.app_common.executors.client_api import in_process_backend
    from nvflare.client.in_process.api import InProcessClientAPI

    if not isinstance(api, InProcessClientAPI):
        return False
    if not hasattr(api, "result_check_interval") or not hasattr(in_process_backend, _BACKEND_CONSTANT):
        logger.warning(
            "this NVFlare has no in-process result poll interval to set; rounds keep NVFlare's own waits"
        )
        return False
    api.result_check_interval = interval
    setattr(in_process_backend, _BACKEND_CONSTANT, interval)
    logger.debug("in-process Client API result polls every %.3f s", interval)
    return True
