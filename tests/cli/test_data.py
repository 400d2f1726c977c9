"""``dose3d synth`` arguments: the site and patient counts are checked before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from dose3d_fl.cli import main


def test_synth_refuses_zero_sites_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--out", str(tmp_path / "out"), "--sites", "0"]) == 2
    assert capsys.readouterr().err.splitlines() == ["dose3d: error: --sites must be at least 1"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("patients", "message"),
    [
        ("12,x", "--patients expects comma-separated integers, got '12,x'"),
        ("4,0", "--patients needs at least one patient per site, got '4,0'"),
        (",", "--patients needs at least one patient per site, got ','"),
    ],
)
def test_synth_patients_must_be_positive_counts(
    patients: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", str(tmp_path / "out"), "--patients", patients])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"dose3d synth: error: argument --patients: {message}"
    assert not (tmp_path / "out").exists()
