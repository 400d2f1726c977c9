"""Signed receipts: a site signs each update it sends and keeps its own chain, so a rewritten log is caught.

The site side runs NVFlare's real filter chain objects on real messages (``tests/fl/site_messages.py``); the
server side writes the log the way ``SegFedAvg`` does (the receipt and the status of each update), so the
attacks below act on the file ``dose3d audit verify`` reads. The simulator run in ``tests/fl/test_simulate.py``
checks the same on a real job.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from nvflare.apis.dxo import from_shareable
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from dose3d_fl.cli import main
from dose3d_fl.fl.policy.payload import params_digest
from dose3d_fl.fl.policy.receipts import (
    DECISIONS_META,
    HEAD_NAME,
    PUBLIC_KEY_NAME,
    RECEIPT_META,
    Receipt,
    SiteChain,
    SiteReceipts,
    canonical,
    public_pem,
    sign,
    verify,
)
from dose3d_fl.fl.server.transfer_log import TransferLog, verify_chain, verify_site
from tests.fl.site_messages import IN, OUT, context, tiny_model, train_result

STATUSES = ("accepted", "rejected", "accepted", "accepted")


def _task(round_: int, decisions: dict | None) -> object:
    meta = {DECISIONS_META: decisions} if decisions else {}
    return FLModelUtils.to_shareable(
        FLModel(params=tiny_model(), current_round=round_, total_rounds=4, meta=meta)
    )


def _federation(
    tmp_path: Path, statuses: tuple[str, ...] = STATUSES
) -> tuple[Path, Path, ed25519.Ed25519PrivateKey]:
    """One site through ``len(statuses)`` rounds, the server logging each update with the given status."""
    folder = tmp_path / "site-1" / "receipts"
    site_filter = SiteReceipts(folder=str(folder))
    server_key = ed25519.Ed25519PrivateKey.generate()
    log = TransferLog(tmp_path / "transfer_log.jsonl", countersign=lambda data: sign(server_key, data))
    decisions: dict | None = None
    for round_, status in enumerate(statuses):
        site_filter.process(_task(round_, decisions), context(IN))
        result = train_result(tiny_model())
        result.set_header("current_round", round_)
        sent = site_filter.process(result, context(OUT))
        model = FLModelUtils.from_shareable(sent)
        receipt = Receipt.from_meta(model.meta[RECEIPT_META])
        digest, nbytes = params_digest(model.params)
        log.append(
            {
                "round": round_,
                "site": "site-1",
                "status": status,
                "sha256": digest,
                "bytes": nbytes,
                "receipt": receipt.to_meta(),
                "receipt_check": receipt.check("site-1", round_, digest),
            }
        )
        decisions = {"site-1": {"round": round_, "sha256": receipt.entry["sha256"], "status": status}}
    return tmp_path / "transfer_log.jsonl", folder, server_key


def _rechain(path: Path, lines: list[dict], server_key: ed25519.Ed25519PrivateKey) -> None:
    """What whoever holds the server can do: write any records and chain and countersign them anew."""
    path.unlink()
    log = TransferLog(path, countersign=lambda data: sign(server_key, data))
    for line in lines:
        log.append({k: v for k, v in line.items() if k not in ("prev", "hash", "countersignature")})


def _site_check(path: Path, folder: Path):
    return verify_site(
        path, "site-1", (folder / PUBLIC_KEY_NAME).read_text(), (folder / HEAD_NAME).read_text()
    )


def test_receipt_is_signed_by_the_site_and_names_what_it_sent(tmp_path: Path) -> None:
    folder = tmp_path / "receipts"
    result = train_result(tiny_model())
    result.set_header("current_round", 3)
    sent = SiteReceipts(folder=str(folder)).process(result, context(OUT, job_id="job-7"))
    dxo = from_shareable(sent)
    receipt = Receipt.from_meta(dxo.meta[RECEIPT_META])
    assert receipt.entry["sha256"] == params_digest(dxo.data)[0]
    assert (receipt.entry["job"], receipt.entry["site"], receipt.entry["round"]) == ("job-7", "site-1", 3)
    assert verify(receipt.public_key, canonical(receipt.entry), receipt.signature)
    assert receipt.public_key == (folder / PUBLIC_KEY_NAME).read_text()
    assert SiteChain(folder).head != "0" * 64
    assert (folder / "site_key.pem").stat().st_mode & 0o077 == 0  # the private key is the site's alone
    forged = {**receipt.entry, "sha256": "0" * 64}
    assert not verify(receipt.public_key, canonical(forged), receipt.signature)
    assert receipt.check("site-1", 3, "1" * 64).startswith("the tensors received differ")


def test_validation_results_are_not_receipted(tmp_path: Path) -> None:
    metrics = FLModelUtils.to_shareable(FLModel(metrics={"val_dice": 0.5}))
    sent = SiteReceipts(folder=str(tmp_path)).process(metrics, context(OUT, task="validate"))
    assert RECEIPT_META not in (from_shareable(sent).meta or {})


def test_honest_log_verifies_for_the_site_and_the_countersignatures(tmp_path: Path, capsys) -> None:
    path, folder, server_key = _federation(tmp_path)
    assert _site_check(path, folder).ok
    assert verify_chain(path, public_pem(server_key)).ok
    key = tmp_path / "server.pem"
    key.write_text(public_pem(server_key))
    assert main(["audit", "verify", str(path), "--site", f"site-1={folder}", "--server-key", str(key)]) == 0
    assert "site-1: every update receipted and signed" in capsys.readouterr().out


def test_rewriting_a_rejection_and_rechaining_is_caught_by_the_sites_receipts(tmp_path: Path, capsys) -> None:
    path, folder, server_key = _federation(tmp_path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[1]["status"] == "rejected"
    lines[1]["status"] = "accepted"  # the operator hides that round 2's update was refused
    _rechain(path, lines, server_key)

    assert verify_chain(path, public_pem(server_key)).ok  # the server's own chain and signatures hold
    check = _site_check(path, folder)
    assert check.first_bad_line == 3 and "does not follow its previous record" in check.reason
    assert main(["audit", "verify", str(path), "--site", f"site-1={folder}"]) == 1
    assert "site-1: does not hold at line 3" in capsys.readouterr().out


def test_truncating_the_log_is_caught_by_the_sites_head(tmp_path: Path) -> None:
    path, folder, server_key = _federation(tmp_path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    _rechain(path, lines[:-1], server_key)  # the last update disappears, the chain is rebuilt
    assert verify_chain(path).ok
    check = _site_check(path, folder)
    assert not check.ok and "cut off" in check.reason


def test_a_changed_receipt_or_a_foreign_key_is_named(tmp_path: Path) -> None:
    path, folder, server_key = _federation(tmp_path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[2]["receipt"]["entry"]["filters"] = ["GaussianDP"]  # claim the site applied DP
    _rechain(path, lines, server_key)
    check = _site_check(path, folder)
    assert (check.first_bad_line, check.reason) == (3, "the receipt's signature does not verify")

    other = public_pem(ed25519.Ed25519PrivateKey.generate())
    check = verify_site(path, "site-1", other, (folder / HEAD_NAME).read_text())
    assert check.first_bad_line == 1 and "not signed with site-1's key" in check.reason


def test_a_decision_that_does_not_name_the_sites_update_is_not_recorded(tmp_path: Path) -> None:
    folder = tmp_path / "receipts"
    site_filter = SiteReceipts(folder=str(folder))
    result = train_result(tiny_model())
    result.set_header("current_round", 0)
    site_filter.process(result, context(OUT))
    head = SiteChain(folder).head
    site_filter.process(
        _task(1, {"site-1": {"round": 0, "sha256": "f" * 64, "status": "accepted"}}), context(IN)
    )
    assert SiteChain(folder).head == head


@pytest.mark.parametrize("text", ["site-1", "=dir", "site-1="])
def test_audit_site_option_needs_site_and_folder(text: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["audit", "verify", "log.jsonl", "--site", text])
    assert "expected SITE=RECEIPTS_DIR" in capsys.readouterr().err
