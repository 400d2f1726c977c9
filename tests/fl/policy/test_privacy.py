"""The site privacy policy: the committed template is the generated default and builds real filters."""

from __future__ import annotations

import json
from pathlib import Path

from dose3d_fl.fl.policy.dp import GaussianDP
from dose3d_fl.fl.policy.filters import PayloadAudit, WeightsOnlyGuard
from dose3d_fl.fl.policy.privacy import DPConfig, policy_filters, site_privacy_policy
from dose3d_fl.fl.policy.receipts import SiteReceipts

REPO = Path(__file__).resolve().parents[3]


def test_committed_site_template_is_the_default_policy() -> None:
    committed = json.loads((REPO / "sites" / "local" / "privacy.json").read_text())
    assert committed == site_privacy_policy()


def test_default_policy_guards_and_audits_every_result() -> None:
    data, results = policy_filters(site_privacy_policy())
    assert [type(f) for f in data] == [WeightsOnlyGuard, SiteReceipts]
    assert [type(f) for f in results] == [
        WeightsOnlyGuard,
        SiteReceipts,
        PayloadAudit,
    ]  # the audit last: what really leaves


def test_dp_policy_noises_after_the_guard_and_before_the_audit() -> None:
    policy = site_privacy_policy(DPConfig(clip_norm=5.0, noise_multiplier=1.0, epsilon_budget=8.0))
    data, results = policy_filters(policy)
    assert [type(f) for f in results] == [WeightsOnlyGuard, GaussianDP, SiteReceipts, PayloadAudit]
    assert [type(f) for f in data] == [WeightsOnlyGuard, GaussianDP, SiteReceipts]
    dp = results[1]
    assert (dp.clip_norm, dp.noise_multiplier, dp.epsilon_budget, dp.delta) == (5.0, 1.0, 8.0, 1e-5)
    scope = policy["scopes"][0]
    assert policy["default_scope"] == scope["name"] and len(policy["scopes"]) == 1
    assert all(f["direction"] == "out" for f in scope["task_result_filters"])
