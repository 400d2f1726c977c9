"""What a site lets leave: its ``privacy.json`` scope, the weights-only guard and payload audit filters,
the payload rules behind them, the jobs' metric allow-lists, the Gaussian DP mechanism with its ledger, and
float16 transfer.

The names below are imported on first use (``dose3d_fl._lazy``).
"""

from __future__ import annotations

from dose3d_fl._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "privacy": ["DPConfig", "site_privacy_policy", "write_privacy_policy", "policy_filters"],
        "filters": ["WeightsOnlyGuard", "PayloadAudit"],
        "payload": ["check_weights_only", "describe_result", "params_digest"],
        "dp": ["GaussianDP", "PrivacyLedger", "clip_and_noise"],
        "metrics": ["declare_metrics", "declared_metrics"],
        "quantization": ["Float16Quantizer", "Float16Dequantizer"],
    },
)
