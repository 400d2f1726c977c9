"""Sites sharing one machine: threads, and a core each, balanced by cases, when they outnumber the cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from dose3d_fl.data.manifest import CaseEntry, Manifest
from dose3d_fl.fl import shared_machine
from dose3d_fl.fl.shared_machine import balance_sites, case_count, shared_machine_configs
from dose3d_fl.fl.simulate import write_site_configs
from dose3d_fl.fl.site.config import SiteConfig


def _cache_with_cases(folder: Path, cases: int) -> Path:
    entry = dict(
        image="i.nii.gz", label="l.nii.gz", spacing=[1.0] * 3, shape=[8] * 3, roi="SPLEEN", roi_volume_ml=1.0,
        orientation="LPS", source="s", structure_set="rs.dcm", fingerprint="f",
    )  # fmt: skip
    Manifest(roi="SPLEEN", cases=[CaseEntry(id=f"c{i}", **entry) for i in range(cases)]).save(folder)
    return folder


def test_more_sites_than_cores_are_pinned_one_core_each_balanced_by_cases() -> None:
    # the demo's sites (12, 8 and 5 cases) on two cores: the largest alone, the two smaller ones together
    assert balance_sites({"site-3": 5, "site-1": 12, "site-2": 8}, [0, 1]) == {
        "site-1": [0],
        "site-2": [1],
        "site-3": [1],
    }
    assert balance_sites({"a": 1, "b": 1, "c": 1, "d": 1}, [2, 5]) == {"a": [2], "b": [5], "c": [2], "d": [5]}
    with pytest.raises(ValueError, match="no cores"):
        balance_sites({"a": 1}, [])


def test_sites_are_pinned_only_when_they_outnumber_the_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    caches = {f"site-{i}": _cache_with_cases(tmp_path / f"site-{i}", n) for i, n in ((1, 12), (2, 8), (3, 5))}
    monkeypatch.setattr(shared_machine, "available_cores", lambda: [0, 1])
    configs = shared_machine_configs(caches)
    assert {site: (c.num_threads, c.cpu_cores) for site, c in configs.items()} == {
        "site-1": (1, [0]),
        "site-2": (1, [1]),
        "site-3": (1, [1]),
    }
    assert all(c.cpu_cores is None for c in shared_machine_configs(caches, pin_cores=False).values())
    assert not any(c.channels_last for c in configs.values())
    trained = shared_machine_configs(caches, training={"channels_last": True, "cpu_bfloat16": True}).values()
    assert all(c.channels_last and c.cpu_bfloat16 for c in trained)
    monkeypatch.setattr(shared_machine, "available_cores", lambda: list(range(6)))
    assert {(c.num_threads, c.cpu_cores) for c in shared_machine_configs(caches).values()} == {(2, None)}
    assert case_count(tmp_path / "no-cache") == 1  # unreadable: counted as one case, never a crash


def test_the_simulator_writes_each_site_its_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    caches = [_cache_with_cases(tmp_path / f"site-{i}", n) for i, n in ((1, 12), (2, 8), (3, 5))]
    monkeypatch.setattr(shared_machine, "available_cores", lambda: [0, 1])
    folder = write_site_configs(tmp_path / "ws", caches)
    assert SiteConfig.load(folder / "site-1.json") == SiteConfig(
        cache_dir=str(caches[0].resolve()), num_threads=1, cpu_cores=[0]
    )
    assert sorted(p.name for p in folder.iterdir()) == ["site-1.json", "site-2.json", "site-3.json"]
