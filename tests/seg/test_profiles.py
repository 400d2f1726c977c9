"""Segmentation profiles: named recipes, validation of their values, serialisation into checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from dose3d_fl.seg.checkpoint import SegCheckpoint, load_checkpoint, save_checkpoint
from dose3d_fl.seg.network import build_network
from dose3d_fl.seg.profiles import PROFILES, SegProfile, get_profile


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_round_trips_through_json_and_a_checkpoint(tmp_path, name):
    profile = get_profile(name)
    assert SegProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile

    weights = build_network(profile).state_dict()
    path = save_checkpoint(tmp_path / "model.pt", SegCheckpoint(weights, profile, {"epochs": 3}))
    loaded = load_checkpoint(path)
    assert loaded.profile == profile
    assert loaded.meta == {"epochs": 3}
    assert loaded.model.keys() == weights.keys()
    assert all(torch.equal(loaded.model[key], weights[key]) for key in weights)
    # The persisted layout NVFlare's tools expect: a dict with the state dict under "model".
    assert set(torch.load(path, weights_only=True)) == {"model", "profile", "meta"}


def test_spleen_profile_is_the_monai_bundle_recipe():
    spleen = get_profile("spleen")
    assert spleen.pixdim == (1.5, 1.5, 2.0)
    assert (spleen.hu_min, spleen.hu_max) == (-57.0, 164.0)
    assert spleen.roi_size == (96, 96, 96)
    assert spleen.channels == (16, 32, 64, 128, 256)
    assert spleen.strides == (2, 2, 2, 2)
    assert (spleen.num_res_units, spleen.norm, spleen.loss, spleen.sw_overlap) == (2, "batch", "dice_ce", 0.5)


def test_default_profile_is_cpu_small_at_4_mm():
    assert get_profile().name == "cpu-small"
    assert get_profile().pixdim == (4.0, 4.0, 4.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"flip_axes": (0,)}, "left and right"),
        ({"strides": (2, 2)}, "strides"),
        ({"loss": "focal"}, "loss"),
        ({"norm": "group"}, "norm"),
        ({"hu_min": 200.0}, "hu_min"),
        ({"lr_schedule": "step"}, "lr_schedule"),
    ],
)
def test_invalid_profiles_are_refused_with_the_reason(changes, message):
    with pytest.raises(ValueError, match=message):
        get_profile().replace(**changes)


def test_unknown_names_and_fields_are_refused():
    with pytest.raises(ValueError, match="cpu-small"):
        get_profile("gpu-huge")
    with pytest.raises(ValueError, match="colour"):
        SegProfile.from_dict({**get_profile().to_dict(), "colour": "blue"})


def test_incompatibilities_name_fields_that_change_weights_or_input():
    base = get_profile()
    assert base.incompatibilities(base.replace(lr=0.1, seed=7)) == []
    assert base.incompatibilities(base.replace(pixdim=(2.0, 2.0, 2.0), channels=(4, 8, 16, 32))) == [
        "pixdim",
        "channels",
    ]


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a dose3d segmentation checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_cosine_schedule_decays_from_lr_to_the_floor():
    profile = get_profile().replace(lr=1e-3, lr_schedule="cosine", min_lr_ratio=0.1)
    assert profile.learning_rate(0.0) == pytest.approx(1e-3)
    assert profile.learning_rate(0.5) == pytest.approx(0.55e-3)
    assert profile.learning_rate(1.0) == pytest.approx(1e-4)
    assert profile.learning_rate(2.0) == pytest.approx(1e-4)  # a resumed run past its planned end
    assert profile.replace(lr_schedule="constant").learning_rate(0.9) == 1e-3


def test_a_profile_names_its_organs_and_the_network_has_a_class_per_organ() -> None:
    spleen = get_profile()
    assert spleen.organs == ("Spleen",) and spleen.out_channels == 2
    three = spleen.replace(organs=("Spleen", "Liver", "Pancreas"))
    assert three.out_channels == 4
    assert build_network(three)(torch.zeros(1, 1, 48, 48, 48)).shape[1] == 4
    assert spleen.incompatibilities(three) == ["organs", "out_channels"]
    # Same organs, another order: other classes, so other weights.
    assert "organs" in three.incompatibilities(three.replace(organs=("Liver", "Spleen", "Pancreas")))
    with pytest.raises(ValueError, match="did you mean Spleen"):
        spleen.replace(organs=("Splen",))
    with pytest.raises(ValueError, match="more than once"):
        spleen.replace(organs=("Liver", "Liver"))


def test_a_checkpoint_without_organs_is_the_spleen_task_and_out_channels_must_fit() -> None:
    """Checkpoints written before profiles named their organs hold ``out_channels`` 2 and no ``organs``."""
    old = {key: value for key, value in get_profile().to_dict().items() if key != "organs"}
    assert old["out_channels"] == 2
    assert SegProfile.from_dict(old).organs == ("Spleen",)
    three = get_profile().replace(organs=("Spleen", "Liver", "Pancreas")).to_dict()
    assert three["out_channels"] == 4 and SegProfile.from_dict(three).organs == (
        "Spleen",
        "Liver",
        "Pancreas",
    )
    with pytest.raises(ValueError, match="out_channels 3 but names no organs"):
        SegProfile.from_dict({**old, "out_channels": 3})
