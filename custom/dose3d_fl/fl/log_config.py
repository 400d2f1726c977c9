"""Console logging of a dose3d simulator run: one line per round, warnings and errors; files keep everything.

NVFlare's own modes (``concise``, ``full``) still print several lines per round and site. This configuration
is NVFlare's default one (same file handlers: ``log.txt``, ``error_log.txt``, ``log.json`` in each
workspace) with the console limited by ``RoundLinesFilter`` to the round logger of
``dose3d_fl.fl.server.controller`` and to warnings and errors, less two known harmless warnings.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from nvflare.fuel.utils.log_utils import default_log_dict

from dose3d_fl.fl.server.controller import ROUND_LOGGER

LOG_CONFIG_NAME = "log_config.json"
# Warnings every run prints that ask nothing of a person: MONAI's optional GPU DICOM decoder is absent, and
# the Client API saying that the job ended (END_RUN) when it did.
QUIET_WARNINGS = {
    "nvimgcodec_pydicom_plugin": "nvImageCodec is not available",
    "InProcessClientAPI": "END_RUN received",
}


class RoundLinesFilter(logging.Filter):
    """Passes the round lines (``dose3d.rounds``) and warnings/errors, except the ``QUIET_WARNINGS``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == ROUND_LOGGER:
            return True
        if record.levelno <= logging.INFO:
            return False
        # NVFlare names loggers by module path and class (``nvflare.client.in_process.api.InProcessClientAPI``).
        quiet = QUIET_WARNINGS.get(record.name.rsplit(".", 1)[-1])
        return record.levelno > logging.WARNING or quiet is None or quiet not in record.getMessage()


def round_lines_log_config() -> dict[str, Any]:
    """NVFlare's default logging ``dictConfig`` with a console that shows round lines and warnings."""
    config = copy.deepcopy(default_log_dict)
    config["filters"]["RoundLinesFilter"] = {"()": f"{__name__}.RoundLinesFilter"}
    console = config["handlers"]["consoleHandler"]
    console["filters"] = ["RoundLinesFilter"]
    config["formatters"]["consoleFormatter"]["fmt"] = "%(asctime)s %(message)s"
    return config


def write_log_config(folder: Path) -> Path:
    """Write ``round_lines_log_config()`` to ``folder/log_config.json`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOG_CONFIG_NAME
    path.write_text(json.dumps(round_lines_log_config(), indent=2) + "\n")
    return path
