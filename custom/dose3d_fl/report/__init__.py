"""``dose3d report``: an HTML report of a finished federated run, every number from the run's own files.

No NVFlare import: the report reads the files a run leaves behind.
"""

from dose3d_fl.report.build import REPORT_NAME, ReportConfig, build_report
from dose3d_fl.report.locate import RunFiles, RunNotFoundError, locate_run
from dose3d_fl.report.run_metrics import CrossSiteDice, RoundDice, read_cross_site, read_round_dice

__all__ = [
    "REPORT_NAME",
    "CrossSiteDice",
    "ReportConfig",
    "RoundDice",
    "RunFiles",
    "RunNotFoundError",
    "build_report",
    "locate_run",
    "read_cross_site",
    "read_round_dice",
]
