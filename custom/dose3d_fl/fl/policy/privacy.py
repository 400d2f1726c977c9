"""A site's ``local/privacy.json``: the one scope, ``dose3d``, that every job at the site runs in.

The scope lists the site's own filters (``dose3d_fl.fl.policy.filters``, ``dose3d_fl.fl.policy.dp``,
``dose3d_fl.fl.policy.receipts``): the weights-only guard always, the Gaussian mechanism when the site sets a
privacy budget, the signed receipt of what those release, and the payload audit last, so it records what
actually leaves. ``default_scope`` is ``dose3d`` and no other scope exists, so a job that names
no scope gets it and a job naming another scope is refused by the site.

``sites/local/privacy.json`` is :func:`site_privacy_policy` with its defaults (a test keeps them equal).
NVFlare's simulator does not apply site scopes (its client run manager drops the job's scope), so
``dose3d fl simulate`` adds the very same filters, built by :func:`policy_filters`, to the simulated job as
job filters; POC and provisioned sites enforce them from ``local/privacy.json``.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCOPE = "dose3d"
GUARD = "dose3d_fl.fl.policy.filters.WeightsOnlyGuard"
AUDIT = "dose3d_fl.fl.policy.filters.PayloadAudit"
GAUSSIAN_DP = "dose3d_fl.fl.policy.dp.GaussianDP"
RECEIPTS = "dose3d_fl.fl.policy.receipts.SiteReceipts"
# The tasks of the dose3d jobs (job filters name tasks; NVFlare has no wildcard for them).
JOB_TASKS = ("train", "validate", "submit_model")


@dataclass(frozen=True)
class DPConfig:
    """A site's differential-privacy settings (``dose3d_fl.fl.policy.dp.GaussianDP``).

    Args:
        clip_norm: L2 bound ``C`` of one update.
        noise_multiplier: ``sigma``; noise standard deviation ``sigma * 2C`` (the sensitivity under replace-one
            adjacency is ``2C``; ``dose3d_fl.fl.policy.dp``).
        epsilon_budget: the site's total epsilon across rounds and jobs.
        delta: the guarantee's delta.
        seed: fixed noise, for experiments only.
        ledger: the site's ledger file, relative to its workspace root unless absolute; ``{site}`` is replaced
            by the site's name.
    """

    clip_norm: float
    noise_multiplier: float
    epsilon_budget: float
    delta: float = 1e-5
    seed: int | None = None
    ledger: str = "local/dp_ledger.json"


def site_privacy_policy(
    dp: DPConfig | None = None, audit_path: str = "payload_audit.jsonl", keep_payloads: bool = False
) -> dict[str, Any]:
    """The ``privacy.json`` content for a site.

    Args:
        dp: differential privacy settings, or ``None`` for none.
        audit_path: the payload audit log, relative to the site's workspace root.
        keep_payloads: also keep every serialised message sent (for an offline byte scan; model-sized files).
    """
    result_filters: list[dict[str, Any]] = [{"path": GUARD, "args": {}, "direction": "out"}]
    data_filters: list[dict[str, Any]] = [{"path": GUARD, "args": {}, "direction": "in"}]
    if dp is not None:
        dp_args = {k: v for k, v in dp.__dict__.items() if v is not None}
        result_filters.append({"path": GAUSSIAN_DP, "args": dp_args, "direction": "out"})
        data_filters.append({"path": GAUSSIAN_DP, "args": dp_args, "direction": "in"})
    # Receipts sign what the guard and DP release, before the audit records what leaves (policy/receipts.py).
    result_filters.append({"path": RECEIPTS, "args": {}, "direction": "out"})
    data_filters.append({"path": RECEIPTS, "args": {}, "direction": "in"})
    audit_args: dict[str, Any] = {"path": audit_path}
    if keep_payloads:
        audit_args["keep_payloads"] = True
    result_filters.append({"path": AUDIT, "args": audit_args, "direction": "out"})
    return {
        "scopes": [
            {
                "name": SCOPE,
                "properties": {
                    "policy": "dose3d-fl: only model weights and scalar metrics leave this site, and every "
                    "message sent is recorded"
                },
                "task_data_filters": data_filters,
                "task_result_filters": result_filters,
            }
        ],
        "default_scope": SCOPE,
    }


def write_privacy_policy(local_dir: Path, **kwargs: Any) -> Path:
    """Write ``local_dir/privacy.json`` (arguments as :func:`site_privacy_policy`)."""
    path = Path(local_dir) / "privacy.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(site_privacy_policy(**kwargs), indent=2) + "\n")
    return path


def policy_filters(policy: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Instantiate the filters of a policy's default scope: ``(task data filters, task result filters)``."""
    scope = next(s for s in policy["scopes"] if s["name"] == policy["default_scope"])

    def build(entry: dict[str, Any]) -> Any:
        module, _, name = entry["path"].rpartition(".")
        return getattr(importlib.import_module(module), name)(**entry.get("args", {}))

    return [build(e) for e in scope["task_data_filters"]], [build(e) for e in scope["task_result_filters"]]
