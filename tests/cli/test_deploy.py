"""``dose3d poc submit``: a FLARE API refusal or lost connection ends in one error line, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from dose3d_fl.cli import main
from dose3d_fl.deploy import poc
from dose3d_fl.deploy.admin import SUBMIT_ERRORS


@pytest.mark.parametrize("error", SUBMIT_ERRORS, ids=lambda error: error.__name__)
def test_a_submission_error_is_one_line(
    error: type[Exception],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise error("the server said no")

    monkeypatch.setattr(poc, "resolve_job", lambda job: tmp_path / job)
    monkeypatch.setattr(poc, "poc_submit", refuse)
    assert main(["poc", "submit", "seg_fedavg", "--root", str(tmp_path / "poc")]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.splitlines() == ["dose3d: error: the server said no"]
