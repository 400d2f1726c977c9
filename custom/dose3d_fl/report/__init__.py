"""``dose3d report``: an HTML report of a finished federated run, every number from the run's own files.

No NVFlare import: the report reads the files a run leaves behind. Names are re-exported lazily, so importing
the package does not load torch.
"""

from dose3d_fl._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "build": ["REPORT_NAME", "ReportConfig", "build_report"],
        "case_metrics": [
            "CaseMetrics",
            "MaskComparison",
            "compare_masks",
            "evaluate_site",
            "worst_and_median",
        ],
        "locate": ["RunFiles", "RunNotFoundError", "locate_run"],
        "overlays": ["CaseReview", "review_cases"],
        "provenance": ["ModelProvenance", "read_provenance"],
        "run_metrics": ["CrossSiteDice", "RoundDice", "read_cross_site", "read_round_dice"],
    },
)
