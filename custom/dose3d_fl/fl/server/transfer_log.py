"""The server's transfer log: one hash-chained, countersigned JSON line per update a site sent.

Each line is a JSON object with the record's fields plus ``prev`` (the previous line's ``hash``; 64 zeros
for the first line), ``hash`` (sha256 of the line's canonical JSON without ``hash`` and
``countersignature``) and ``countersignature`` (the server's signature of ``hash``). Editing, inserting,
deleting or reordering a line breaks the chain at that line, and :func:`verify_chain` names it.

Whoever holds the server can still rewrite a line and re-chain and re-sign the rest. What stops that is the
sites' signed receipts (``dose3d_fl.fl.policy.receipts``), recorded in the lines: :func:`verify_site`
rebuilds one site's own chain from the log, given the site's public key and the head the site holds, and
names the first record that does not lead to it (a rewritten decision, a changed or missing record, or
records cut off the end).

The server writes ``transfer_log.jsonl`` in its job workspace, so it comes back with a downloaded job result;
``dose3d audit verify LOG [--site SITE=RECEIPTS_DIR ...]`` checks it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dose3d_fl.fl.policy.receipts import GENESIS, Receipt, decision_entry, entry_hash, verify

LOG_NAME = "transfer_log.jsonl"
SERVER_KEY_NAME = "server_key.pem"
SERVER_KEY_DIR = "dose3d_server"
UNSIGNED = ("hash", "countersignature")


def _digest(record: dict[str, Any]) -> str:
    return entry_hash({k: v for k, v in record.items() if k not in UNSIGNED})


class TransferLog:
    """Append-only writer of a hash-chained JSONL file (continues an existing chain).

    Args:
        path: the log file; its folder is created on the first append.
        countersign: signs a line's ``hash`` (base64); ``None`` writes no countersignature.
    """

    def __init__(self, path: Path, countersign: Callable[[bytes], str] | None = None) -> None:
        self.path = Path(path)
        self._countersign = countersign
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
            if self._countersign is not None:
                entry["countersignature"] = self._countersign(entry["hash"].encode())
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


def verify_chain(path: Path, server_key: str | None = None) -> ChainCheck:
    """Check every line's hash and link (and countersignature, given the server's public key PEM)."""
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
        claimed = entry["hash"]
        if _digest(entry) != claimed:
            return ChainCheck(len(lines), number, "content does not match its hash (line edited)")
        if server_key is not None and not verify(
            server_key, claimed.encode(), str(entry.get("countersignature"))
        ):
            return ChainCheck(len(lines), number, "the server's countersignature does not verify")
        previous = claimed
    return ChainCheck(len(lines))


def verify_site(path: Path, site: str, public_key: str, head: str) -> ChainCheck:
    """Rebuild ``site``'s own chain of receipts and decisions from the log and check it ends at ``head``.

    Args:
        path: the transfer log.
        site: the site's name as the log records it.
        public_key: the site's public key (PEM), as the site gives it (``public_key.pem``).
        head: the site's chain head (its ``head`` file).

    Every line of ``site`` must carry a receipt signed with that key, and each receipt's ``prev`` must be the
    chain so far: the previous receipt, or the decision the log records for it. The first line that breaks
    this is named; a chain that does not end at ``head`` means records were cut off the end or changed.
    """
    lines = Path(path).read_text().splitlines()
    expected = GENESIS
    pending: tuple[dict[str, Any], Receipt] | None = None  # the site's last line: its decision may follow
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            return ChainCheck(len(lines), number, f"not valid JSON ({err.msg})")
        if record.get("site") != site or "sha256" not in record:
            continue
        receipt = Receipt.from_meta(record.get("receipt"))
        if receipt is None:
            return ChainCheck(len(lines), number, f"{site}'s update carries no signed receipt")
        if receipt.public_key.strip() != public_key.strip():
            return ChainCheck(len(lines), number, f"the receipt is not signed with {site}'s key")
        reason = receipt.check(site, record.get("round"), record["sha256"])
        if reason != "ok" and not reason.startswith("the tensors received"):
            return ChainCheck(len(lines), number, reason)
        candidates = {expected}
        if pending is not None:
            candidates.add(entry_hash(_decision_of(pending, expected)))
        if receipt.entry.get("prev") not in candidates:
            return ChainCheck(
                len(lines),
                number,
                f"{site}'s receipt does not follow its previous record in the log (that record's status or "
                "content was changed, or a record of this site was removed)",
            )
        expected = entry_hash(receipt.entry)
        pending = (record, receipt)
    ends = {expected}
    if pending is not None:
        ends.add(entry_hash(_decision_of(pending, expected)))
    if head.strip() not in ends:
        return ChainCheck(
            len(lines),
            len(lines) + 1,
            f"the log does not end at {site}'s head: its newest records were cut off, or changed",
        )
    return ChainCheck(len(lines))


def _decision_of(pending: tuple[dict[str, Any], Receipt], sent_hash: str) -> dict[str, Any]:
    record, receipt = pending
    return decision_entry(sent_hash, record["round"], receipt.entry["sha256"], record["status"])
