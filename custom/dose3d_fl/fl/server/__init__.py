"""What runs at the server during a job: the FedAvg workflow with update checks, resilient rounds that
checkpoint for resume, robust aggregators, and the tamper-evident transfer log.

The names below are imported on first use (``dose3d_fl._lazy``).
"""

from __future__ import annotations

from dose3d_fl._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "controller": ["SegFedAvg"],
        "resilient": ["ResilientFedAvg", "NotEnoughSitesError", "load_resume_checkpoint"],
        "aggregators": ["RobustAggregator"],
        "update_checks": ["check_update", "update_outliers"],
        "transfer_log": ["TransferLog", "verify_chain"],
        "resume": ["make_resume_job"],
    },
)
