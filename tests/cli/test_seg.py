"""``dose3d train`` arguments: epochs and threads are checked before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from dose3d_fl.cli import main


@pytest.mark.parametrize("option", [["--epochs", "-1"], ["--threads", "0"]])
def test_train_refuses_bad_counts_in_one_line(
    option: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--cache", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), *option]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == ["dose3d: error: --epochs must be >= 0 and --threads >= 1"]
    assert not (tmp_path / "out").exists()
