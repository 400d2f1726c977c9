"""``dose3d fl site-model``: a FedBN site's model file from the global model and the site's own state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dose3d_fl.cli import main
from dose3d_fl.clinical.model_file import load_segmentation_model
from dose3d_fl.fl.site.fedbn import batch_norm_keys
from dose3d_fl.fl.site.model import write_site_model
from dose3d_fl.fl.site.state import SiteState
from dose3d_fl.seg.checkpoint import SegCheckpoint, save_checkpoint
from dose3d_fl.seg.network import build_network
from dose3d_fl.seg.trainer import SegTrainer
from tests.seg.cases import TINY_PROFILE, write_case


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, dict]:
    """A site that trained one local round and saved its state twice, and a global model file."""
    root = tmp_path_factory.mktemp("site")
    train = [write_case(root / "cache", f"t{i}", seed=i) for i in range(2)]
    trainer = SegTrainer(train, [], TINY_PROFILE, num_threads=1, show_progress=False)
    initial = trainer.get_weights()
    state = SiteState(root / "cache" / "fl_state", TINY_PROFILE.name)
    keys = batch_norm_keys(trainer.model)  # a FedBN site
    state.save(trainer, 3, keys)
    trainer.train_epochs(1)
    state.save(trainer, 4, keys)
    global_weights = {k: v + 1 if v.is_floating_point() else v for k, v in initial.items()}
    global_file = save_checkpoint(root / "FL_global_model.pt", SegCheckpoint(global_weights, TINY_PROFILE))
    return global_file, root / "cache" / "fl_state", global_weights, trainer.get_weights()


def test_the_site_model_is_the_global_model_with_the_newest_site_norm(site, tmp_path: Path) -> None:
    global_file, folder, global_weights, site_weights = site
    assert SiteState(folder, TINY_PROFILE.name).latest_round() == 4
    out = write_site_model(global_file, folder, tmp_path / "model.pt")
    model = load_segmentation_model(out)
    assert model.profile == TINY_PROFILE  # dose3d segment reads the profile from the file
    keys = batch_norm_keys(build_network(TINY_PROFILE))
    for key, value in model.weights.items():
        assert torch.equal(value, site_weights[key] if key in keys else global_weights[key]), key


def test_the_command_writes_the_file_and_names_what_is_missing(
    site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    global_file, folder, _, _ = site
    out = tmp_path / "site-model.pt"
    assert (
        main(["fl", "site-model", "--global", str(global_file), "--state", str(folder), "--out", str(out)])
        == 0
    )
    assert load_segmentation_model(out).weights
    capsys.readouterr()
    empty = tmp_path / "no-state"
    empty.mkdir()
    code = main(["fl", "site-model", "--global", str(global_file), "--state", str(empty), "--out", str(out)])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "no local training state of profile 'tiny'" in error
    code = main(
        ["fl", "site-model", "--global", str(tmp_path / "gone.pt"), "--state", str(folder), "--out", str(out)]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "gone.pt not found" in error


def test_the_site_model_names_the_federation_job_and_round(site, tmp_path: Path) -> None:
    from dose3d_fl.clinical.models import weights_sha256

    _, folder, global_weights, _ = site
    provenance = {"profile": TINY_PROFILE.name, "job_id": "0f1e", "job_name": "seg_fedavg", "round": 34,
                  "sha256": weights_sha256(global_weights)}  # fmt: skip
    global_file = tmp_path / "FL_global_model.pt"
    torch.save(
        {"model": global_weights, "profile": TINY_PROFILE.to_dict(), "provenance": provenance}, global_file
    )
    record = load_segmentation_model(write_site_model(global_file, folder, tmp_path / "site.pt")).record
    assert record.kind == "FedBN site model" and record.training() == "seg_fedavg round 34"
    assert record.job_id == "0f1e" and not record.hash_mismatch


def _site_state(tmp_path: Path, site_keys: frozenset[str] | None) -> tuple[Path, dict, dict]:
    """A site state of one trained round (``site_keys`` None: saved before they were recorded) and a global model
    file whose every float differs from the site's."""
    train = [write_case(tmp_path / "cache", f"t{i}", seed=i) for i in range(2)]
    trainer = SegTrainer(train, [], TINY_PROFILE, num_threads=1, show_progress=False)
    trainer.train_epochs(1)
    state = SiteState(tmp_path / "state", TINY_PROFILE.name)
    path = state.save(trainer, 0, site_keys or frozenset())
    if site_keys is None:
        saved = torch.load(path, weights_only=False)
        del saved["site_keys"]
        torch.save(saved, path)
    site_weights = trainer.get_weights()
    global_weights = {k: v + 1 if v.is_floating_point() else v for k, v in site_weights.items()}
    save_checkpoint(tmp_path / "FL_global_model.pt", SegCheckpoint(global_weights, TINY_PROFILE))
    return tmp_path / "FL_global_model.pt", global_weights, site_weights


def test_a_silobn_site_model_takes_only_the_site_statistics(tmp_path: Path) -> None:
    network = build_network(TINY_PROFILE)
    statistics = batch_norm_keys(network, statistics_only=True)
    global_file, global_weights, site_weights = _site_state(tmp_path, statistics)
    model = load_segmentation_model(write_site_model(global_file, tmp_path / "state", tmp_path / "site.pt"))
    for key, value in model.weights.items():
        assert torch.equal(value, site_weights[key] if key in statistics else global_weights[key]), key
    scale = next(k for k in batch_norm_keys(network) - statistics if k.endswith(".weight"))
    assert not torch.equal(model.weights[scale], site_weights[scale])  # the federated scale, not the site's
    assert model.record.kind == "SiloBN site model"


def test_a_state_saved_before_site_keys_were_recorded_reads_as_fedbn(tmp_path: Path) -> None:
    global_file, global_weights, site_weights = _site_state(tmp_path, None)
    model = load_segmentation_model(write_site_model(global_file, tmp_path / "state", tmp_path / "site.pt"))
    keys = batch_norm_keys(build_network(TINY_PROFILE))
    for key, value in model.weights.items():
        assert torch.equal(value, site_weights[key] if key in keys else global_weights[key]), key


def test_a_fedavg_site_has_no_model_of_its_own(tmp_path: Path) -> None:
    global_file, _, _ = _site_state(tmp_path, frozenset())
    with pytest.raises(ValueError, match="kept no weights of its own"):
        write_site_model(global_file, tmp_path / "state", tmp_path / "site.pt")
