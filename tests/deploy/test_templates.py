"""The provisioning project and the site/server policy templates say what the deployment guide promises."""

from __future__ import annotations

import json

from dose3d_fl.deploy.provision import ProvisionConfig, customise_project, load_project
from tests.deploy.conftest import REPO

SITE_LOCAL = REPO / "sites" / "local"


def test_project_has_a_server_placeholder_three_sites_three_admin_roles_and_mtls() -> None:
    project = load_project(REPO / "server" / "project.yml")
    by_type: dict[str, list[dict]] = {}
    for participant in project["participants"]:
        by_type.setdefault(participant["type"], []).append(participant)
    (server,) = by_type["server"]
    assert server["name"].endswith("example.org") and server["connection_security"] == "mtls"
    assert [c["name"] for c in by_type["client"]] == ["hospital-a", "hospital-b", "hospital-c"]
    assert {a["role"] for a in by_type["admin"]} == {"project_admin", "org_admin", "lead"}


def test_customised_project_keeps_the_server_name_and_replaces_sites_and_admins() -> None:
    project = load_project(REPO / "server" / "project.yml")
    custom = customise_project(
        project,
        ProvisionConfig(
            server_host="localhost", fed_learn_port=9100, sites=("x-1",), admins={"a@b.org": ("b", "lead")}
        ),
    )
    server = next(p for p in custom["participants"] if p["type"] == "server")
    assert server["default_host"] == "localhost" and server["fed_learn_port"] == 9100
    assert [p["org"] for p in custom["participants"] if p["type"] == "client"] == ["x_1"]
    assert [p["name"] for p in custom["participants"] if p["type"] == "admin"] == ["a@b.org"]
    assert project["participants"][0].get("default_host") is None  # the original is untouched


def test_only_lead_and_project_admin_may_bring_their_own_code() -> None:
    for policy_file in (SITE_LOCAL / "authorization.json", REPO / "server" / "local" / "authorization.json"):
        permissions = json.loads(policy_file.read_text())["permissions"]
        may_ship_code = {
            role for role, rights in permissions.items() if rights == "any" or rights.get("byoc") == "any"
        }
        assert may_ship_code == {"project_admin", "lead"}, policy_file
        assert "submit_job" not in permissions["member"]


def test_privacy_policy_defines_the_project_scope_as_default() -> None:
    privacy = json.loads((SITE_LOCAL / "privacy.json").read_text())
    assert privacy["default_scope"] == "dose3d"
    assert [s["name"] for s in privacy["scopes"]] == ["dose3d"]


def test_sites_allow_slow_model_transfers_and_keep_their_data_path_local() -> None:
    resources = json.loads((SITE_LOCAL / "resources.json").read_text())
    assert resources["client"]["communication_timeout"] >= 600
    site = json.loads((SITE_LOCAL / "dose3d_site.json").read_text())
    assert set(site) == {"cache_dir", "num_threads", "device"}
