"""The server's hash-chained transfer log and ``dose3d audit verify``."""

from __future__ import annotations

import json
from pathlib import Path

from dose3d_fl.cli import main
from dose3d_fl.fl.server.transfer_log import TransferLog, verify_chain


def _log(path: Path, lines: int = 4) -> Path:
    log = TransferLog(path)
    for r in range(lines):
        log.append(
            {"round": r, "site": f"site-{r % 2 + 1}", "status": "accepted", "sha256": "ab" * 32, "bytes": 10}
        )
    return path


def test_intact_chain_verifies_and_continues_after_reopening(tmp_path: Path, capsys) -> None:
    path = _log(tmp_path / "transfer_log.jsonl")
    TransferLog(path).append({"round": 4, "site": "site-1", "status": "rejected", "reason": "NaN"})
    assert verify_chain(path).ok and verify_chain(path).lines == 5
    assert main(["audit", "verify", str(path)]) == 0
    assert "chain intact (5 line(s))" in capsys.readouterr().out


def test_edited_line_is_named(tmp_path: Path, capsys) -> None:
    path = _log(tmp_path / "transfer_log.jsonl")
    lines = path.read_text().splitlines()
    entry = json.loads(lines[2])
    entry["status"] = "rejected"  # someone rewrites history
    lines[2] = json.dumps(entry, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")

    check = verify_chain(path)
    assert (check.first_bad_line, check.reason) == (3, "content does not match its hash (line edited)")
    assert main(["audit", "verify", str(path)]) == 1
    assert "chain broken at line 3 of 4" in capsys.readouterr().out


def test_removed_line_is_named(tmp_path: Path) -> None:
    path = _log(tmp_path / "transfer_log.jsonl")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    check = verify_chain(path)
    assert check.first_bad_line == 2 and "previous line" in check.reason


def test_missing_log_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["audit", "verify", str(tmp_path / "nope.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().out
