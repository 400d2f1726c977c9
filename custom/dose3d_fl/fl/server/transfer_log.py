"""The server's tamper-evident transfer log: one hash-chained JSON line per update a site sent.

Each line is a JSON object with the record's fields plus ``prev`` (the previous line's ``hash``; 64 zeros
for the first line) and ``hash`` (sha256 of the line's canonical JSON without ``hash``). Editing, inserting,
deleting or reordering a line breaks the chain at that line, and :func:`verify_chain` names it. Cutting lines
off the end cannot be detected from the file alone: compare the line count with the rounds of the job.

The server writes ``transfer_log.jsonl`` in its job workspace, so it comes back with a downloaded job result;
``dose3d audit verify LOG`` checks it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG_NAME = "transfer_log.jsonl"
GENESIS = "0" * 64


def _digest(record: dict[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class TransferLog:
    """Append-only writer of a hash-chained JSONL file (continues an existing chain).

    Args:
        path: the log file; its folder is created on the first append.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._last = GENESIS
        if self.path.is_file():
            lines = self.path.read_text().splitlines()
            if lines:
                self._last = json.loads(lines[-1])["hash"]

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Chain ``record`` to the previous line, write it, and return the line as written."""
        with self._lock:
            entry = {**record, "prev": self._last}
            entry["hash"] = _digest(entry)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as out:
                out.write(json.dumps(entry, sort_keys=True) + "\n")
            self._last = entry["hash"]
            return entry


@dataclass(frozen=True)
class ChainCheck:
    """Result of :func:`verify_chain`.

    Args:
        lines: lines read.
        first_bad_line: 1-based number of the first line that breaks the chain, ``None`` when intact.
        reason: what is wrong with that line.
    """

    lines: int
    first_bad_line: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.first_bad_line is None


def verify_chain(path: Path) -> ChainCheck:
    """Check every line's hash and link; report the first line that does not hold."""
    previous = GENESIS
    lines = Path(path).read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            return ChainCheck(len(lines), number, f"not valid JSON ({err.msg})")
        if not isinstance(entry, dict) or "hash" not in entry or "prev" not in entry:
            return ChainCheck(len(lines), number, "missing 'hash' or 'prev'")
        if entry["prev"] != previous:
            return ChainCheck(
                len(lines), number, "'prev' does not match the previous line (line removed, added or moved)"
            )
        claimed = entry.pop("hash")
        if _digest(entry) != claimed:
            return ChainCheck(len(lines), number, "content does not match its hash (line edited)")
        previous = claimed
    return ChainCheck(len(lines))
