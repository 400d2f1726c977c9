"""Which model and profile ``dose3d report`` segments the validation cases with."""

from __future__ import annotations

from pathlib import Path

import torch

from dose3d_fl.report.build import _inference_model
from dose3d_fl.report.locate import RunFiles
from dose3d_fl.seg.network import build_network
from dose3d_fl.seg.profiles import get_profile


def _global_model(path: Path, profile_dict: dict | None) -> Path:
    profile = get_profile("cpu-small").replace(organs=("Spleen", "Liver"))
    data = {"model": build_network(profile).state_dict()}
    if profile_dict is not None:
        data["profile"] = profile_dict
    torch.save(data, path)
    return path


def test_a_multi_organ_model_is_used_with_the_profile_it_stores(tmp_path: Path) -> None:
    stored = get_profile("cpu-small").replace(organs=("Spleen", "Liver"))
    files = RunFiles(tmp_path, tmp_path, global_model=_global_model(tmp_path / "m.pt", stored.to_dict()),
                     profile_name="cpu-small")  # fmt: skip
    model, reason = _inference_model(files)
    assert reason is None and model.profile.organs == ("Spleen", "Liver")


def test_a_model_without_a_profile_takes_the_job_profile_or_says_why_not(tmp_path: Path) -> None:
    path = _global_model(tmp_path / "m.pt", None)
    model, reason = _inference_model(RunFiles(tmp_path, tmp_path, global_model=path, profile_name=None))
    assert model is None and "stores no profile" in reason
    model, reason = _inference_model(
        RunFiles(tmp_path, tmp_path, global_model=path, profile_name="cpu-small")
    )
    assert reason is None and model.profile.name == "cpu-small"


def test_only_a_fallback_profile_gives_way_to_the_stored_one(tmp_path: Path) -> None:
    import pytest

    from dose3d_fl.clinical.model_file import ModelFileError, load_segmentation_model

    stored = get_profile("cpu-small").replace(organs=("Spleen", "Liver"))
    path = _global_model(tmp_path / "m.pt", stored.to_dict())
    with pytest.raises(ModelFileError, match="drop --profile"):
        load_segmentation_model(path, "cpu-small")
    assert load_segmentation_model(path, "cpu-small", fallback=True).profile == stored
