"""Site-owned configuration: found in the documented order, with a clear error when absent."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pytest

from dose3d_fl.fl.site.config import SITE_CONFIG_DIR_ENV, SITE_CONFIG_ENV, SiteConfig, find_site_config


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SITE_CONFIG_ENV, raising=False)
    monkeypatch.delenv(SITE_CONFIG_DIR_ENV, raising=False)


def test_workspace_local_config_is_found(tmp_path: Path) -> None:
    path = SiteConfig(cache_dir="/data/cache", num_threads=2).save(
        tmp_path / "ws" / "local" / "dose3d_site.json"
    )
    assert find_site_config("hospital-a", tmp_path / "ws") == path
    assert SiteConfig.load(path) == SiteConfig(cache_dir="/data/cache", num_threads=2)


def test_explicit_file_wins_over_workspace_and_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SiteConfig(cache_dir="a").save(tmp_path / "ws" / "local" / "dose3d_site.json")
    SiteConfig(cache_dir="b").save(tmp_path / "dir" / "site-1.json")
    explicit = SiteConfig(cache_dir="c").save(tmp_path / "explicit.json")
    monkeypatch.setenv(SITE_CONFIG_DIR_ENV, str(tmp_path / "dir"))
    assert find_site_config("site-1", tmp_path / "ws") == tmp_path / "ws" / "local" / "dose3d_site.json"
    monkeypatch.setenv(SITE_CONFIG_ENV, str(explicit))
    assert find_site_config("site-1", tmp_path / "ws") == explicit


def test_simulator_directory_is_per_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    SiteConfig(cache_dir="one").save(tmp_path / "dir" / "site-1.json")
    SiteConfig(cache_dir="two").save(tmp_path / "dir" / "site-2.json")
    monkeypatch.setenv(SITE_CONFIG_DIR_ENV, str(tmp_path / "dir"))
    assert SiteConfig.load(find_site_config("site-2", tmp_path / "empty")).cache_dir == "two"


def test_missing_config_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        find_site_config("hospital-b", tmp_path)
    message = str(err.value)
    assert "hospital-b" in message and str(tmp_path / "local" / "dose3d_site.json") in message
    assert "\n" not in message


@pytest.mark.parametrize("content", ["{not json", '{"num_threads": 2}', "[1, 2]"])
def test_bad_config_is_refused_with_the_file_named(tmp_path: Path, content: str) -> None:
    path = tmp_path / "dose3d_site.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"dose3d_site\.json"):
        SiteConfig.load(path)


def test_an_unknown_key_is_named_with_the_key_it_resembles(tmp_path: Path) -> None:
    path = tmp_path / "dose3d_site.json"
    path.write_text(json.dumps({"cache_dir": "c", "num_thread": 4}))
    with pytest.raises(ValueError, match=r"unknown key 'num_thread' \(did you mean 'num_threads'\?\)"):
        SiteConfig.load(path)


def test_the_committed_example_is_a_valid_site_configuration() -> None:
    example = Path(__file__).resolve().parents[3] / "sites" / "local" / "dose3d_site.json"
    assert SiteConfig.load(example).cache_dir == "/srv/dose3d/cache"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="thread affinity is Linux's")
def test_a_site_pins_the_thread_that_trains_and_only_that_one(tmp_path: Path) -> None:
    cores = sorted(os.sched_getaffinity(0))
    config = SiteConfig.load(SiteConfig(cache_dir="c", cpu_cores=cores[-1:]).save(tmp_path / "site.json"))
    assert config.cpu_cores == cores[-1:]
    seen: list[set[int]] = []

    def client_script() -> None:
        config.pin_cpu_cores()
        seen.append(os.sched_getaffinity(0))

    thread = threading.Thread(target=client_script)
    thread.start()
    thread.join()
    assert seen == [set(cores[-1:])]
    assert sorted(os.sched_getaffinity(0)) == cores  # the caller's thread keeps all its cores
    SiteConfig(cache_dir="c").pin_cpu_cores()  # none configured: nothing changes
    assert sorted(os.sched_getaffinity(0)) == cores


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="thread affinity is Linux's")
@pytest.mark.parametrize("cores", [[4096], [0, 4096], ["one"], 1])
def test_cores_this_machine_lacks_are_named_and_training_runs_unpinned(
    cores: list, caplog: pytest.LogCaptureFixture
) -> None:
    before = os.sched_getaffinity(0)
    with caplog.at_level(logging.WARNING):
        SiteConfig(cache_dir="c", cpu_cores=cores).pin_cpu_cores()
    assert os.sched_getaffinity(0) == before
    [record] = caplog.records
    assert f"cpu_cores {cores} ignored" in record.getMessage() and "dose3d_site.json" in record.getMessage()
