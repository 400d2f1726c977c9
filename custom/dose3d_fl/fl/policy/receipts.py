"""Signed receipts: each site signs what it sent and keeps its own chain, so the server cannot rewrite the log.

The server's transfer log (``dose3d_fl.fl.server.transfer_log``) is written by the server; a hash chain
alone does not stop whoever holds the server from rewriting a line and re-chaining the rest. Receipts make
the sites witnesses:

- **Sent**: for every ``train`` result it sends, a site appends a ``sent`` entry to its own chain (job, site,
  round, sha256 of the tensors released, their bytes, the site filters applied, and ``prev``: the site's
  chain head) and signs it with a key it holds. The signed entry travels in the result's DXO meta
  (:data:`RECEIPT_META`); the server verifies it and records it in its log line.
- **Decision**: with the next round's task the server tells each site what it decided about the site's last
  update (:data:`DECISIONS_META`: accepted, rejected, ...). The site appends a ``decision`` entry to its
  chain, so its next signed receipt commits to the decision through ``prev``.
- **Head**: the site keeps the hash of its newest entry (``head``). ``dose3d audit verify LOG --site
  SITE=DIR`` rebuilds each site's chain from the log and the site's public key: a rewritten decision, a
  changed or removed record, or records cut off the end no longer lead to the head the site holds.

Keys: a provisioned or POC site signs with its provisioned key (``startup/client.key``, RSA-PSS/SHA-256); a
site without one (the simulator) generates an Ed25519 key on first use in its state folder. Both are
``cryptography`` keys; the public key is written next to the chain (``public_key.pem``) for the auditor.

What receipts do not cover: the server's decision on a site's update of the *last* round reaches the site
with no next task, so only the server's countersignature attests it; results of tasks other than ``train``
(cross-site evaluation) are not receipted; and a site that colludes with the server can sign anything.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from nvflare.apis.dxo import MetaKey, from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FilterKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable

from dose3d_fl.files import write_text_atomic
from dose3d_fl.fl.policy.filters import direction, job_id_of, site_of, task_of
from dose3d_fl.fl.policy.payload import WEIGHT_KINDS, params_digest

logger = logging.getLogger("dose3d.site_policy")

RECEIPT_META = "dose3d_receipt"
DECISIONS_META = "dose3d_decisions"
RECEIPTS_DIR = "receipts"
CHAIN_NAME = "chain.jsonl"
HEAD_NAME = "head"
KEY_NAME = "site_key.pem"
PUBLIC_KEY_NAME = "public_key.pem"
GENESIS = "0" * 64
RECEIPTED_TASKS = ("train",)


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes that are hashed and signed: sorted keys, no spaces."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """sha256 of an entry's canonical JSON."""
    return hashlib.sha256(canonical(entry)).hexdigest()


def decision_entry(sent_hash: str, round_: int, sha256: str, status: str) -> dict[str, Any]:
    """The chain entry a site appends when the server tells it its decision on the update ``sent_hash``."""
    return {"kind": "decision", "round": round_, "sha256": sha256, "status": status, "prev": sent_hash}


def public_pem(key: Any) -> str:
    """A public (or the public half of a private) key as SubjectPublicKeyInfo PEM text."""
    public = key.public_key() if hasattr(key, "private_bytes") else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def sign(private_key: Any, data: bytes) -> str:
    """Base64 signature of ``data``: Ed25519, or RSA-PSS with SHA-256 for a provisioned RSA key."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        signature = private_key.sign(
            data,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH),
            hashes.SHA256(),
        )
    elif isinstance(private_key, ed25519.Ed25519PrivateKey):
        signature = private_key.sign(data)
    else:
        raise TypeError(f"cannot sign with a {type(private_key).__name__}: use an Ed25519 or RSA key")
    return base64.b64encode(signature).decode()


def verify(public_key_pem: str, data: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64) is a valid signature of ``data`` under the PEM public key."""
    try:
        public = serialization.load_pem_public_key(public_key_pem.encode())
        raw = base64.b64decode(signature, validate=True)
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(
                raw,
                data,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH),
                hashes.SHA256(),
            )
        elif isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(raw, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def load_or_create_key(folder: Path, provisioned_key: Path | None = None, name: str = KEY_NAME) -> Any:
    """The private key a party signs with: its provisioned key when there is one, else a key of its own.

    Args:
        folder: where a generated Ed25519 key is kept (mode 0600) and looked up again.
        provisioned_key: a provisioned kit's PEM key (``startup/client.key`` or ``startup/server.key``).
        name: the generated key's file name.
    """
    if provisioned_key is not None and provisioned_key.is_file():
        return serialization.load_pem_private_key(provisioned_key.read_bytes(), None)  # unencrypted kit keys
    path = Path(folder) / name
    if path.is_file():
        return serialization.load_pem_private_key(path.read_bytes(), None)
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


class SiteChain:
    """A site's own hash chain of ``sent`` and ``decision`` entries, and its head (kept at the site).

    Args:
        folder: the site's receipts folder (``<cache>/fl_state/receipts`` by default).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()

    @property
    def head(self) -> str:
        """The hash of the newest entry (64 zeros before the first)."""
        path = self.folder / HEAD_NAME
        return path.read_text().strip() if path.is_file() else GENESIS

    def last(self, kind: str) -> tuple[dict[str, Any], str] | None:
        """The newest entry of ``kind`` with its hash, if any."""
        path = self.folder / CHAIN_NAME
        if not path.is_file():
            return None
        for line in reversed(path.read_text().splitlines()):
            record = json.loads(line)
            if record["entry"].get("kind") == kind:
                return record["entry"], record["hash"]
        return None

    def append(self, entry: dict[str, Any]) -> str:
        """Chain ``entry`` (its ``prev`` must be the head), write it and move the head; returns its hash."""
        with self._lock:
            if entry.get("prev") != self.head:
                raise ValueError("a chain entry must point at the current head")
            digest = entry_hash(entry)
            self.folder.mkdir(parents=True, exist_ok=True)
            with (self.folder / CHAIN_NAME).open("a") as out:
                out.write(json.dumps({"entry": entry, "hash": digest}, sort_keys=True) + "\n")
            write_text_atomic(self.folder / HEAD_NAME, digest + "\n")
            return digest


@dataclass(frozen=True)
class Receipt:
    """A signed ``sent`` entry as it travels in a result's meta."""

    entry: dict[str, Any]
    signature: str
    public_key: str

    def to_meta(self) -> dict[str, Any]:
        return {"entry": self.entry, "signature": self.signature, "public_key": self.public_key}

    @classmethod
    def from_meta(cls, value: Any) -> Receipt | None:
        if not isinstance(value, dict) or not {"entry", "signature", "public_key"} <= set(value):
            return None
        return cls(dict(value["entry"]), str(value["signature"]), str(value["public_key"]))

    def check(self, site: str, round_: int, sha256: str) -> str:
        """``"ok"``, or what does not hold for a result of ``site`` in ``round_`` with tensors ``sha256``."""
        if not verify(self.public_key, canonical(self.entry), self.signature):
            return "the receipt's signature does not verify"
        if self.entry.get("site") != site:
            return f"the receipt names site {self.entry.get('site')!r}"
        if self.entry.get("round") != round_:
            return f"the receipt is for round {self.entry.get('round')}"
        if self.entry.get("sha256") != sha256:
            return "the tensors received differ from those the site signed (a lossy transfer encoding, or altered)"
        return "ok"


class SiteReceipts(Filter):
    """Site filter: signs a receipt for every ``train`` result and records the server's decisions.

    Put it in the site's scope after the guard and any DP filter (it receipts the tensors those release) and
    before the payload audit (which records the receipt that leaves). In the task data direction it records
    the server's decision on the site's last update.

    Args:
        folder: the receipts folder; relative to the site's workspace root unless absolute. Empty: the site's
            state folder (``<cache_dir>/fl_state/receipts``, from its ``dose3d_site.json``).
    """

    def __init__(self, folder: str = "") -> None:
        super().__init__()
        self.folder = folder

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        try:
            dxo = from_shareable(shareable)
        except ValueError:
            return shareable  # a bare reply: nothing to receipt
        site = site_of(fl_ctx)
        # Only a decision for this site, or a training update, needs the site's chain (and its configuration).
        if direction(fl_ctx) == FilterKey.IN:
            decisions = (dxo.meta or {}).get(DECISIONS_META)
            if isinstance(decisions, dict) and site in decisions:
                self._record_decision(SiteChain(self._folder(site, fl_ctx)), decisions[site], site)
            return shareable
        if task_of(fl_ctx) not in RECEIPTED_TASKS or dxo.data_kind not in WEIGHT_KINDS:
            return shareable
        folder = self._folder(site, fl_ctx)
        chain = SiteChain(folder)
        workspace = _workspace(fl_ctx)
        key = load_or_create_key(folder, workspace / "startup" / "client.key" if workspace else None)
        pem = public_pem(key)
        if not (folder / PUBLIC_KEY_NAME).is_file():
            write_text_atomic(folder / PUBLIC_KEY_NAME, pem)
        sha256, nbytes = params_digest(dxo.data or {})
        entry = {
            "kind": "sent",
            "job": job_id_of(fl_ctx),
            "site": site,
            "round": shareable.get_header("current_round"),
            "task": task_of(fl_ctx),
            "sha256": sha256,
            "bytes": nbytes,
            "filters": list((dxo.meta or {}).get(MetaKey.FILTER_HISTORY) or []),
            "prev": chain.head,
        }
        chain.append(entry)
        dxo.set_meta_prop(RECEIPT_META, Receipt(entry, sign(key, canonical(entry)), pem).to_meta())
        dxo.add_filter_history(type(self).__name__)
        return dxo.update_shareable(shareable)

    def _folder(self, site: str, fl_ctx: FLContext) -> Path:
        workspace = _workspace(fl_ctx)
        if self.folder:
            path = Path(self.folder)
            return path if path.is_absolute() or workspace is None else workspace / path
        from dose3d_fl.fl.site.config import load_site_config  # the site's own configuration, at the site

        return load_site_config(site, workspace).state_dir / RECEIPTS_DIR

    @staticmethod
    def _record_decision(chain: SiteChain, decision: dict[str, Any], site: str) -> None:
        last_sent = chain.last("sent")
        if last_sent is None or chain.head != last_sent[1]:
            return  # no update awaiting a decision (already recorded, or none sent yet)
        entry, sent_hash = last_sent
        if decision.get("round") != entry["round"] or decision.get("sha256") != entry["sha256"]:
            logger.warning(
                "%s: the server's decision names round %s, not this site's last update (round %s); not recorded",
                site,
                decision.get("round"),
                entry["round"],
            )
            return
        with contextlib.suppress(ValueError):  # another thread recorded it first
            chain.append(
                decision_entry(sent_hash, entry["round"], entry["sha256"], str(decision.get("status")))
            )


def _workspace(fl_ctx: FLContext) -> Path | None:
    engine = fl_ctx.get_engine()
    return Path(engine.get_workspace().get_root_dir()) if engine is not None else None
